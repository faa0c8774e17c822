package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	v1 "github.com/flotilla/flotilla/api/v1"
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
				run(t, "agent", "check", "--socket", h.socket())
			}

			var mu sync.Mutex
			rebooting, most := 0, 0
			errs := make(chan error, len(hosts))
			var wg sync.WaitGroup
			for _, h := range hosts {
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs <- h.coordinatedReboot(t, func(delta int) {
						mu.Lock()
						rebooting += delta
						most = max(most, rebooting)
						mu.Unlock()
					})
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
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

// coordinatedReboot waits for the agent to reboot (which it does only
// holding a slot), simulates the reboot, and waits until the new boot is
// healthy on 1.1.0. track(+1) and track(-1) bracket the reboot.
func (h *host) coordinatedReboot(t *testing.T, track func(int)) error {
	marker := filepath.Join(h.dir, "reboot-requested")
	if err := pollFor(120*time.Second, func() bool { _, err := os.Stat(marker); return err == nil }); err != nil {
		return fmt.Errorf("host %s never rebooted; log:\n%s", h.id, h.log.String())
	}
	track(+1)
	os.Remove(marker)
	h.kill()
	out, err := runErr(t, "boot", "select", "--disk", h.disk)
	if err != nil {
		return err
	}
	f := strings.Fields(out)
	if len(f) != 2 || f[0] != gpt.LabelUSRB {
		return fmt.Errorf("host %s: boot select printed %q", h.id, out)
	}
	h.booted, h.bootID = f[1], uuid.NewString()
	h.start(t)
	err = pollFor(60*time.Second, func() bool {
		s, err := runErr(t, "agent", "status", "--socket", h.socket(), "-o", "json")
		return err == nil && strings.Contains(s, `"boot_healthy": true`) && strings.Contains(s, `"current_version": "1.1.0"`)
	})
	track(-1)
	if err != nil {
		return fmt.Errorf("host %s never became healthy on 1.1.0; log:\n%s", h.id, h.log.String())
	}
	return nil
}
