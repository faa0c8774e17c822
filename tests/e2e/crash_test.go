package e2e

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/flotilla/flotilla/api/v1"
	"github.com/flotilla/flotilla/omaha"
)

// TestCrashLosesNothingAcknowledged kills the server with SIGKILL in the
// middle of a rollout and checks, after a restart on the same data, that
// every machine's stored status is at least the last step the server had
// acknowledged to it.
func TestCrashLosesNothingAcknowledged(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test builds and runs the binary; skipped with -short")
	}
	ctx := context.Background()
	dataDir := t.TempDir()
	p := startServer(t, dataDir, "--sqlite-sync", "FULL")
	p.cli(t, "package", "create", "--app", appID, "--version", "1.0.0", "--url", "http://127.0.0.1:1/p/", "--file", "u.gz", "--size", "10",
		"--sha256", "3twpmKMOhUE4jamEnUBDF37BM70/RU3ZA6de281oiNs=")
	p.cli(t, "package", "create", "--app", appID, "--version", "2.0.0", "--url", "http://127.0.0.1:1/p/", "--file", "u.gz", "--size", "10",
		"--sha256", "3twpmKMOhUE4jamEnUBDF37BM70/RU3ZA6de281oiNs=")
	setupGroup(t, p, "crash")
	p.cli(t, "channel", "set-package", "--app", appID, "--name", "crash-ch", "--package", "2.0.0")

	// The statuses a machine passes through, in order, and the request
	// that moves it there.
	order := []string{"granted", "downloading", "downloaded", "installed", "complete"}
	rank := map[string]int{}
	for i, s := range order {
		rank[s] = i + 1
	}
	ms := newSims(p, "e5", "crash", "1.0.0", 40)
	acked := make([]atomic.Int32, len(ms)) // rank of the last acknowledged step
	var total atomic.Int32
	var wg sync.WaitGroup
	for i, m := range ms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Each step is acknowledged when its answer arrives; once the
			// server is gone every request fails and the machine stops.
			st, _, err := m.check(ctx)
			if err != nil || st != "ok" {
				return
			}
			acked[i].Store(1)
			total.Add(1)
			for step, ev := range []omaha.Event{{Type: 13, Result: 1}, {Type: 14, Result: 1}, {Type: 3, Result: 1}} {
				if err := m.event(ctx, ev); err != nil {
					return
				}
				acked[i].Store(int32(step + 2))
				total.Add(1)
			}
			m.prev, m.version = m.version, "2.0.0"
			if _, _, err := m.check(ctx); err != nil {
				return
			}
			acked[i].Store(5)
			total.Add(1)
		}()
	}
	// Kill once about half of the 200 steps were acknowledged.
	deadline := time.Now().Add(30 * time.Second)
	for total.Load() < 100 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // poll with a deadline
	}
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.done
	wg.Wait()
	if n := total.Load(); n < 50 {
		t.Fatalf("only %d steps acknowledged before the kill; the test did not exercise anything", n)
	}

	p2 := startServer(t, dataDir, "--sqlite-sync", "FULL")
	var list v1.InstanceList
	p2.cliJSON(t, &list, "instance", "list", "--app", appID, "--group", "crash", "--all")
	stored := map[string]string{}
	for _, in := range list.Instances {
		stored[in.MachineID] = in.Status
	}
	lost := 0
	for i, m := range ms {
		want := int(acked[i].Load())
		if want == 0 {
			continue
		}
		got := rank[stored[m.id]]
		if got < want {
			lost++
			t.Errorf("machine %s: acknowledged %s, stored %q after the crash", m.id, order[want-1], stored[m.id])
		}
	}
	t.Logf("%d steps acknowledged before SIGKILL; %d machines lost an acknowledged step", total.Load(), lost)
	p2.stop(t)
}
