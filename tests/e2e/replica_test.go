package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/flotilla/flotilla/internal/etcdtest"
	"github.com/flotilla/flotilla/internal/testenv"
	"github.com/flotilla/flotilla/omaha"
)

// replicaSet is several `flotilla server` processes sharing one
// PostgreSQL database (a fresh schema) and one etcd, which runs in the
// test process so that any replica can be killed without taking etcd
// down with it.
type replicaSet struct {
	dsn   string
	procs []*serverProc
	omaha []*omaha.Client // one per replica
}

func startReplicas(t *testing.T, n int) *replicaSet {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test builds and runs the binary; skipped with -short")
	}
	dsn := testenv.PostgresDSN(t)
	etcd := etcdtest.Start(t, 1)
	args := []string{"--database", dsn, "--etcd-endpoints", etcd.Endpoints()[0]}
	rs := &replicaSet{dsn: dsn}
	// The first replica seeds the database and writes admin.token into its
	// data dir; the others, started together, find the store seeded.
	rs.procs = append(rs.procs, startServer(t, t.TempDir(), args...))
	// os/exec copies stdout through its own goroutine, which may lag
	// behind the log line that said the server is listening.
	if err := pollFor(10*time.Second, func() bool { return containsToken(rs.procs[0].stdout.String()) }); err != nil {
		t.Fatalf("first replica printed no admin token: %q", rs.procs[0].stdout.String())
	}
	token, err := os.ReadFile(filepath.Join(rs.procs[0].dataDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	for range n - 1 {
		rs.procs = append(rs.procs, launchServer(t, t.TempDir(), args...))
	}
	for _, p := range rs.procs[1:] {
		p.waitListening(t)
		if out := p.stdout.String(); containsToken(out) {
			t.Errorf("replica on an already seeded database printed an admin token: %q", out)
		}
		// The token lives in the store: the first replica's works here.
		if err := os.WriteFile(filepath.Join(p.dataDir, "admin.token"), token, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range rs.procs {
		rs.omaha = append(rs.omaha, &omaha.Client{URL: p.url + "/v1/update/", HTTP: &http.Client{Timeout: 30 * time.Second}})
	}
	p := rs.procs[0]
	for _, v := range []string{"1.0.0", "2.0.0"} {
		p.cli(t, "package", "create", "--app", appID, "--version", v, "--url", "http://127.0.0.1:1/p/", "--file", "u.gz", "--size", "10",
			"--sha256", "3twpmKMOhUE4jamEnUBDF37BM70/RU3ZA6de281oiNs=")
	}
	return rs
}

func containsToken(stdout string) bool { return strings.Contains(stdout, "Created admin API token") }

// sims returns n machines of group track on 1.0.0; machine i talks to
// replica i mod len(replicas) of the replicas given.
func (rs *replicaSet) sims(prefix, track string, n int, replicas ...int) []*sim {
	out := make([]*sim, n)
	for i := range out {
		out[i] = &sim{c: rs.omaha[replicas[i%len(replicas)]], id: fmt.Sprintf("%s%0*x", prefix, 32-len(prefix), i+1),
			track: track, version: "1.0.0"}
	}
	return out
}

func (rs *replicaSet) count(t *testing.T, sql string, args ...any) int {
	t.Helper()
	return testenv.QueryInt(t, rs.dsn, sql, args...)
}

// startRollout creates group name (policy flags as for group create)
// through replica 0 and points its channel at 2.0.0.
func (rs *replicaSet) startRollout(t *testing.T, name string, policy ...string) {
	t.Helper()
	setupGroup(t, rs.procs[0], name, policy...)
	rs.procs[0].cli(t, "channel", "set-package", "--app", appID, "--name", name+"-ch", "--package", "2.0.0")
}

// TestReplicas runs three replicas on one PostgreSQL database and one
// etcd and checks that decisions depending on shared state come out as on
// one server: rate limits, auto-pause, grants per machine, configuration
// caches; and that a replica killed mid-rollout loses nothing it
// acknowledged while the others finish the rollout.
func TestReplicas(t *testing.T) {
	rs := startReplicas(t, 3)
	ctx := context.Background()

	t.Run("RateLimitExact", func(t *testing.T) {
		rs.startRollout(t, "rl", "--max-updates", "10", "--period", "1h")
		ms := rs.sims("a1", "rl", 50, 0, 1)
		var granted atomic.Int32
		// Two rounds: granted machines check again, which must not grant
		// twice or let others in.
		for range 2 {
			parallel(t, ms, func(m *sim) error {
				st, _, err := m.check(ctx)
				if st == "ok" {
					granted.Add(1)
				}
				return err
			})
		}
		n := rs.count(t, `SELECT count(*) FROM status_history WHERE group_name = 'rl' AND status = 'granted'`)
		machines := rs.count(t, `SELECT count(DISTINCT machine_id) FROM status_history WHERE group_name = 'rl' AND status = 'granted'`)
		t.Logf("50 machines on two replicas, 10/h: %d granted status changes, %d machines granted, %d ok answers in two rounds",
			n, machines, granted.Load())
		if n != 10 || machines != 10 {
			t.Errorf("%d grants to %d machines, want 10 to 10", n, machines)
		}
	})

	t.Run("AutoPauseOnce", func(t *testing.T) {
		rs.startRollout(t, "ap", "--auto-pause-failures", "3")
		ms := rs.sims("a2", "ap", 30, 0, 1, 2)
		parallel(t, ms, func(m *sim) error {
			st, _, err := m.check(ctx)
			if err != nil || st != "ok" {
				return fmt.Errorf("check: %s %v", st, err)
			}
			return nil
		})
		// Every machine reports its failure through the next replica, all
		// at once, so failures past the threshold race on all three.
		for i, m := range ms {
			m.c = rs.omaha[(i+1)%3]
		}
		parallel(t, ms, func(m *sim) error {
			return m.event(ctx, omaha.Event{Type: 3, Result: 0, ErrorCode: 268435466})
		})
		n := rs.count(t, `SELECT count(*) FROM activity WHERE group_name = 'ap' AND kind = 'rollout-failed'`)
		paused := rs.count(t, `SELECT count(*) FROM app_groups WHERE name = 'ap' AND paused_reason LIKE 'auto-paused%'`)
		t.Logf("30 failures through three replicas, threshold 3: %d rollout-failed activities", n)
		if n != 1 || paused != 1 {
			t.Errorf("%d rollout-failed activities, group auto-paused %d, want 1 and 1", n, paused)
		}
	})

	t.Run("PauseSeenByOtherReplica", func(t *testing.T) {
		rs.startRollout(t, "bus")
		ms := rs.sims("a3", "bus", 200, 1)
		// Replica 1 loads the group into its cache with this check.
		loaded := time.Now()
		if st, _, err := ms[0].check(ctx); err != nil || st != "ok" {
			t.Fatalf("first check on replica 1: %s %v", st, err)
		}
		rs.procs[0].cli(t, "group", "pause", "--app", appID, "--name", "bus", "--reason", "replica test")
		paused := time.Now()
		// The announcement travels through etcd asynchronously; poll with
		// fresh machines (each check that still sees the old policy
		// grants one) well within the 10 s cache TTL.
		var seen time.Duration
		for _, m := range ms[1:] {
			st, _, err := m.check(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if st == "noupdate" {
				seen = time.Since(paused)
				break
			}
			if time.Since(paused) > 5*time.Second {
				break
			}
		}
		t.Logf("replica 1 saw the pause made through replica 0 after %s", seen)
		if seen == 0 {
			t.Fatal("replica 1 still grants updates 5s after the group was paused through replica 0")
		}
		if time.Since(loaded) >= 10*time.Second {
			t.Fatal("the test took as long as the cache TTL: it does not tell whether the announcement worked")
		}
	})

	// A pause is also checked inside the granting transaction, so it would
	// hold even with a stale cache; a promotion is not: a replica with a
	// stale snapshot keeps offering nothing until its cache expires. So this
	// is what tells whether the announcement through etcd works.
	t.Run("PromotionSeenByOtherReplica", func(t *testing.T) {
		rs.startRollout(t, "promo")
		ms := rs.sims("a5", "promo", 200, 1)
		for _, m := range ms {
			m.version = "2.0.0"
		}
		// Replica 1 caches the channel at 2.0.0: nothing newer to offer.
		loaded := time.Now()
		if st, _, err := ms[0].check(ctx); err != nil || st != "noupdate" {
			t.Fatalf("first check on replica 1: %s %v", st, err)
		}
		rs.procs[0].cli(t, "package", "create", "--app", appID, "--version", "3.0.0", "--url", "http://127.0.0.1:1/p/", "--file", "u.gz", "--size", "10",
			"--sha256", "3twpmKMOhUE4jamEnUBDF37BM70/RU3ZA6de281oiNs=")
		rs.procs[0].cli(t, "channel", "set-package", "--app", appID, "--name", "promo-ch", "--package", "3.0.0")
		promoted := time.Now()
		var seen time.Duration
		// Machines that were told "noupdate" ask again, as they would.
		for i := 0; seen == 0 && time.Since(promoted) < 5*time.Second; i++ {
			st, _, err := ms[1+i%(len(ms)-1)].check(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if st == "ok" {
				seen = time.Since(promoted)
			}
		}
		t.Logf("replica 1 offered the version promoted through replica 0 after %s", seen)
		if seen == 0 {
			t.Fatal("replica 1 still offers nothing 5s after a promotion through replica 0")
		}
		if time.Since(loaded) >= 10*time.Second {
			t.Fatal("the test took as long as the cache TTL: it does not tell whether the announcement worked")
		}
	})

	t.Run("KillReplicaMidRollout", func(t *testing.T) {
		rs.startRollout(t, "kill")
		const n = 60
		ms := rs.sims("a4", "kill", n, 0)
		// send routes a machine's step k to replica (i+k) mod 3, and on an
		// error to the next, as a load balancer routes around a replica
		// that stops answering.
		send := func(i, k int, fn func() error) error {
			var err error
			for try := range 3 {
				ms[i].c = rs.omaha[(i+k+try)%3]
				if err = fn(); err == nil {
					return nil
				}
			}
			return err
		}
		type ack struct{ typ, result int }
		acked := make([][]ack, n)
		var steps atomic.Int32
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i, m := range ms {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var st string
				if err := send(i, 0, func() (err error) { st, _, err = m.check(ctx); return err }); err != nil || st != "ok" {
					errs <- fmt.Errorf("machine %d: check: %q %v", i, st, err)
					return
				}
				steps.Add(1)
				for k, ev := range []omaha.Event{{Type: 13, Result: 1}, {Type: 14, Result: 1}, {Type: 3, Result: 1}} {
					if err := send(i, k+1, func() error { return m.event(ctx, ev) }); err != nil {
						errs <- fmt.Errorf("machine %d: event %d: %v", i, ev.Type, err)
						return
					}
					acked[i] = append(acked[i], ack{ev.Type, ev.Result})
					steps.Add(1)
				}
				m.prev, m.version = m.version, "2.0.0"
				if err := send(i, 4, func() (err error) { st, _, err = m.check(ctx); return err }); err != nil || st != "noupdate" {
					errs <- fmt.Errorf("machine %d: check on 2.0.0: %q %v", i, st, err)
					return
				}
				steps.Add(1)
			}()
		}
		// SIGKILL replica 2 once about a third of the 300 steps are done.
		deadline := time.Now().Add(60 * time.Second)
		for steps.Load() < 100 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond) // poll with a deadline
		}
		atKill := steps.Load()
		if err := rs.procs[2].cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-rs.procs[2].done
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if atKill < 30 || atKill >= 5*n {
			t.Fatalf("replica killed after %d of %d steps: not mid-rollout", atKill, 5*n)
		}
		lost := 0
		for i, m := range ms {
			for _, a := range acked[i] {
				stored := rs.count(t, `SELECT count(*) FROM events WHERE machine_id = $1 AND type = $2 AND result = $3`, m.id, a.typ, a.result)
				if stored == 0 {
					lost++
					t.Errorf("machine %s: event %d/%d acknowledged but not stored", m.id, a.typ, a.result)
				}
			}
		}
		done := rs.count(t, `SELECT count(*) FROM instances WHERE group_name = 'kill' AND version = '2.0.0' AND status = 'complete'`)
		finished := rs.count(t, `SELECT count(*) FROM activity WHERE group_name = 'kill' AND kind = 'rollout-finished'`)
		t.Logf("replica 2 SIGKILLed after %d of %d steps; %d acknowledged events lost; %d/%d machines complete on 2.0.0; %d rollout-finished",
			atKill, 5*n, lost, done, n, finished)
		if done != n || finished != 1 {
			t.Errorf("%d of %d machines complete on 2.0.0, %d rollout-finished activities; want all and 1", done, n, finished)
		}
	})
}
