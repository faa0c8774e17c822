package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	v1 "github.com/flotilla/flotilla/api/v1"
	"github.com/flotilla/flotilla/internal/fleetlock"
	"github.com/flotilla/flotilla/internal/gpt"
)

// TestCoordinatedReboots: a server and five agent processes in a reboot
// group with max 2 update to 1.1.0, once with REBOOT_STRATEGY=etcd-lock
// (the agents talk to the server's embedded etcd) and once with
// fleetlock (HTTP to the server). The harness records when each machine
// starts rebooting and when it is healthy again: never more than 2 at
// once; all reach 1.1.0; the lock ends empty.
func TestCoordinatedReboots(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test builds and runs the binary; skipped with -short")
	}
	for _, strategy := range []string{"etcd-lock", "fleetlock"} {
		t.Run(strategy, func(t *testing.T) {
			e := newFleetEnv(t)
			if e.srv.EtcdURL() == "" {
				t.Fatal("the server did not log its etcd client URL")
			}
			e.srv.cli(t, "lock", "set-max", "2", "--group", "workers")
			hosts := make([]*host, 5)
			for i := range hosts {
				h := newHost(t, e)
				h.extra = []string{"--reboot-strategy", strategy, "--reboot-group", "workers",
					"--lock-interval", "100ms", "--health-min-uptime", "1500ms", "--check-interval", "1h"}
				if strategy == "etcd-lock" {
					h.extra = append(h.extra, "--etcd-endpoints", e.srv.EtcdURL())
				} else {
					h.extra = append(h.extra, "--fleetlock-url", e.srv.url+"/fleetlock")
				}
				h.start(t)
				hosts[i] = h
			}
			for _, h := range hosts {
				waitInstanceStatus(t, e.srv, h.id, "idle", "1.0.0")
			}
			e.publish("1.1.0")
			for _, h := range hosts {
				h.check(t)
			}

			var mu sync.Mutex
			var spans []span
			errs := make(chan error, len(hosts))
			var wg sync.WaitGroup
			for _, h := range hosts {
				wg.Add(1)
				go func() {
					defer wg.Done()
					sp, err := h.coordinatedReboot(t)
					mu.Lock()
					spans = append(spans, sp)
					mu.Unlock()
					errs <- err
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			most := maxOverlap(spans)
			if most > 2 {
				t.Fatalf("%d machines were rebooting at once; max is 2", most)
			}
			if most < 2 {
				t.Logf("note: at most %d machine rebooted at a time (the lock allowed 2)", most)
			}
			var st v1.GroupStatus
			e.srv.cliJSON(t, &st, "group", "status", "--app", appID, "--name", "stable")
			if st.ByVersion["1.1.0"] != 5 || st.ByStatus["complete"] != 5 {
				t.Fatalf("group status: %+v", st)
			}
			var lg v1.LockGroup
			if err := pollFor(30*time.Second, func() bool {
				out, err := e.srv.cliErr("lock", "status", "--group", "workers", "-o", "json")
				return err == nil && json.Unmarshal([]byte(out), &lg) == nil && len(lg.Holders) == 0 && lg.Available == 2
			}); err != nil {
				t.Fatalf("the lock did not end empty: %+v", lg)
			}
			out := e.srv.cli(t, "lock", "status", "--group", "workers")
			if !strings.HasPrefix(out, "Available: 2\nMax: 2\n") {
				t.Fatalf("lock status output:\n%s", out)
			}
		})
	}
}

// span is one machine's reboot: from its reboot command (the marker file's
// modification time) to the moment its new boot passed the health gate
// (the agent's own log line), both taken on the machine, not when the
// harness noticed them.
type span struct{ start, end time.Time }

// maxOverlap is the most spans open at one instant.
func maxOverlap(spans []span) int {
	type edge struct {
		at    time.Time
		delta int
	}
	var edges []edge
	for _, s := range spans {
		edges = append(edges, edge{s.start, +1}, edge{s.end, -1})
	}
	sort.Slice(edges, func(i, j int) bool {
		if edges[i].at.Equal(edges[j].at) {
			return edges[i].delta < edges[j].delta // an end before a start at the same instant
		}
		return edges[i].at.Before(edges[j].at)
	})
	cur, most := 0, 0
	for _, e := range edges {
		cur += e.delta
		most = max(most, cur)
	}
	return most
}

var healthPassedRE = regexp.MustCompile(`time=(\S+) level=INFO msg="health gate passed`)

// coordinatedReboot waits for the agent to reboot (which it does only
// holding a slot), simulates the reboot, waits until the new boot is
// healthy on 1.1.0, and returns the reboot's span.
func (h *host) coordinatedReboot(t *testing.T) (span, error) {
	var sp span
	marker := filepath.Join(h.dir, "reboot-requested")
	var fi os.FileInfo
	if err := pollFor(120*time.Second, func() bool {
		var err error
		fi, err = os.Stat(marker)
		return err == nil
	}); err != nil {
		return sp, fmt.Errorf("host %s never rebooted; log:\n%s", h.id, h.log.String())
	}
	sp.start = fi.ModTime()
	os.Remove(marker)
	h.kill()
	out, err := runErr(t, "boot", "select", "--disk", h.disk)
	if err != nil {
		return sp, err
	}
	f := strings.Fields(out)
	if len(f) != 2 || f[0] != gpt.LabelUSRB {
		return sp, fmt.Errorf("host %s: boot select printed %q", h.id, out)
	}
	h.booted, h.bootID = f[1], uuid.NewString()
	h.start(t)
	err = pollFor(60*time.Second, func() bool {
		s, err := runErr(t, "agent", "status", "--socket", h.socket(), "-o", "json")
		return err == nil && strings.Contains(s, `"boot_healthy": true`) && strings.Contains(s, `"current_version": "1.1.0"`)
	})
	if err != nil {
		return sp, fmt.Errorf("host %s never became healthy on 1.1.0; log:\n%s", h.id, h.log.String())
	}
	m := healthPassedRE.FindAllStringSubmatch(h.log.String(), -1)
	if len(m) == 0 {
		return sp, fmt.Errorf("host %s: no \"health gate passed\" line in its log", h.id)
	}
	if sp.end, err = time.Parse(time.RFC3339Nano, m[len(m)-1][1]); err != nil {
		return sp, fmt.Errorf("host %s: health gate time: %w", h.id, err)
	}
	return sp, nil
}

// TestThreeServersShareReboots: three flotilla server processes form a
// three-member embedded etcd cluster, as CoreOS ran etcd on its own
// machines. A reboot group's max set through one server is what the others
// serve; with one server down the other two still grant and release slots
// over FleetLock.
func TestThreeServersShareReboots(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test builds and runs the binary; skipped with -short")
	}
	ports := freeLoopbackPorts(t, 6)
	url := func(p int) string { return fmt.Sprintf("http://127.0.0.1:%d", p) }
	var cluster []string
	for i := 0; i < 3; i++ {
		cluster = append(cluster, fmt.Sprintf("s%d=%s", i, url(ports[2*i+1])))
	}
	srvs := make([]*serverProc, 3)
	for i := range srvs {
		srvs[i] = launchServer(t, t.TempDir(), "--etcd-name", fmt.Sprintf("s%d", i),
			"--etcd-client-url", url(ports[2*i]), "--etcd-peer-url", url(ports[2*i+1]),
			"--etcd-initial-cluster", strings.Join(cluster, ","), "--fleetlock-wait", "0s")
	}
	for _, s := range srvs {
		s.waitListening(t)
	}
	srvs[0].cli(t, "lock", "set-max", "2", "--group", "web")
	var lg v1.LockGroup
	srvs[1].cliJSON(t, &lg, "lock", "status", "--group", "web")
	if lg.Max != 2 {
		t.Fatalf("max set on server 0, server 1 says %d", lg.Max)
	}
	fl := func(s *serverProc) *fleetlock.Client { return &fleetlock.Client{BaseURL: s.url + "/fleetlock"} }
	ctx := context.Background()
	if err := fl(srvs[0]).PreReboot(ctx, "web", "m1"); err != nil {
		t.Fatal(err)
	}
	if err := fl(srvs[1]).PreReboot(ctx, "web", "m2"); err != nil {
		t.Fatal(err)
	}
	if err := fl(srvs[2]).PreReboot(ctx, "web", "m3"); !fleetlock.IsFull(err) {
		t.Fatalf("third machine through a third server: %v, want full", err)
	}

	// One server (and its etcd member) goes down: two of three keep quorum.
	srvs[2].stop(t)
	if err := fl(srvs[0]).SteadyState(ctx, "web", "m1"); err != nil {
		t.Fatalf("release with one member down: %v", err)
	}
	if err := fl(srvs[1]).PreReboot(ctx, "web", "m3"); err != nil {
		t.Fatalf("grant with one member down: %v", err)
	}
	srvs[0].cliJSON(t, &lg, "lock", "status", "--group", "web")
	if len(lg.Holders) != 2 || lg.Available != 0 {
		t.Fatalf("after failover: %+v", lg)
	}
}

func freeLoopbackPorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var lns []net.Listener
	for len(ports) < n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}
