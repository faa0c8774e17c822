package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkFleetAgentIdle50Units measures what the unit agent costs a
// machine at rest: a `flotilla agent --units` process running 50
// process-driver units, beside the same agent with no units and an idle
// `sleep` process, over a quiet period (FLOTILLA_BENCH_QUIET, default
// 30s) with production timings (presence TTL 10s, grace 30s). Metrics:
// CPU as % of one core and RSS of each, and of the server.
//
//	go test -run '^$' -bench FleetAgentIdle -benchtime 1x ./tests/e2e
func BenchmarkFleetAgentIdle50Units(b *testing.B) {
	quiet := 30 * time.Second
	if v := os.Getenv("FLOTILLA_BENCH_QUIET"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			b.Fatalf("FLOTILLA_BENCH_QUIET=%q: %v", v, err)
		}
		quiet = d
	}
	for i := 0; i < b.N; i++ {
		srv := startServer(b, b.TempDir())
		busy := startUnitHost(b, "busy", srv.EtcdURL(), "--public-ip", "127.0.0.1")
		empty := startUnitHost(b, "empty", srv.EtcdURL(), "--public-ip", "127.0.0.2")
		unit := "[Service]\nExecStart=/bin/sleep 100000\n[X-Fleet]\nMachineID=busy\n"
		path := filepath.Join(b.TempDir(), "idle@.service")
		if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
			b.Fatal(err)
		}
		srv.cli(b, "unit", "submit", path)
		args := []string{"unit", "start", "--block-timeout", "2m"}
		for j := 1; j <= 50; j++ {
			args = append(args, fmt.Sprintf("idle@%d.service", j))
		}
		srv.cli(b, args...)
		ref := exec.Command("sleep", "100000")
		if err := ref.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = ref.Process.Kill(); _ = ref.Wait() })

		pids := map[string]int{"agent-50-units": busy.cmd.Process.Pid, "agent-0-units": empty.cmd.Process.Pid,
			"sleep": ref.Process.Pid, "server": srv.cmd.Process.Pid}
		before := map[string]time.Duration{}
		for k, pid := range pids {
			before[k] = procCPU(b, pid)
		}
		start := time.Now()
		b.ResetTimer()
		time.Sleep(quiet) // the measurement itself: an idle period
		b.StopTimer()
		el := time.Since(start)
		for k, pid := range pids {
			cpu := procCPU(b, pid) - before[k]
			b.ReportMetric(100*cpu.Seconds()/el.Seconds(), k+"-cpu-%")
			b.ReportMetric(procRSSMB(b, pid), k+"-rss-MB")
		}
	}
}
