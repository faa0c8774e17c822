package e2e

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkAgentIdle measures what an idle agent costs a machine: its
// resident memory and CPU use over a quiet period after its first check
// (reported as rss-MB and cpu-% metrics; ns/op is the observation time).
//
//	go test -run '^$' -bench AgentIdle -benchtime 1x ./tests/e2e
func BenchmarkAgentIdle(b *testing.B) {
	for i := 0; i < b.N; i++ {
		measureAgentIdle(b, 30*time.Second)
	}
}

func measureAgentIdle(b *testing.B, quiet time.Duration) {
	b.Helper()
	e := newFleetEnv(b)
	h := newHost(b, e)
	h.start(b)
	if err := pollFor(60*time.Second, func() bool {
		out, err := e.srv.cliErr("instance", "list", "--app", appID, "-o", "json")
		return err == nil && strings.Contains(out, h.id)
	}); err != nil {
		b.Fatal("agent never checked in")
	}
	pid := h.cmd.Process.Pid
	cpu0 := procCPU(b, pid)
	start := time.Now()
	b.ResetTimer()
	time.Sleep(quiet) // the measurement itself: an idle period
	b.StopTimer()
	cpu := procCPU(b, pid) - cpu0
	b.ReportMetric(procRSSMB(b, pid), "rss-MB")
	b.ReportMetric(100*cpu.Seconds()/time.Since(start).Seconds(), "cpu-%")
}

// procCPU is user+system time of a process from /proc/PID/stat.
func procCPU(b *testing.B, pid int) time.Duration {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		b.Fatal(err)
	}
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	// USER_HZ is 100 on Linux.
	return time.Duration(ut+st) * 10 * time.Millisecond
}

func procRSSMB(b *testing.B, pid int) float64 {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	b.Fatal("no VmRSS")
	return 0
}
