package rebootlock

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flotilla/flotilla/internal/etcdtest"
)

func TestNewConfig(t *testing.T) {
	c := etcdtest.Start(t, 1)
	cli := c.Client(t)
	if _, err := New(nil, Config{}, nil, nil); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("nil client: %v", err)
	}
	if _, err := New(cli, Config{WaiterTTL: time.Millisecond}, nil, nil); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("tiny TTL: %v", err)
	}
	m, err := New(cli, Config{Prefix: "/x"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{Prefix: "/x/", WaiterTTL: DefaultWaiterTTL, DefaultMax: 1, DefaultHoldDeadline: time.Hour, SweepInterval: 15 * time.Second}
	if diff := cmp.Diff(want, m.cfg); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}
	// Registering twice on one registry is an error, not a panic.
	reg := prometheus.NewRegistry()
	if _, err := New(cli, Config{}, nil, reg); err != nil {
		t.Fatal(err)
	}
	if _, err := New(cli, Config{}, nil, reg); err == nil {
		t.Error("second New on the same registry succeeded")
	}
}

func TestLockRecursiveAndFull(t *testing.T) {
	c := etcdtest.Start(t, 1)
	cli := c.Client(t)
	m := newTestManager(t, cli, Config{})
	ev := recordEvents(m)
	ctx := opCtx(t)

	a := mustLock(t, m, DefaultGroup, "a")
	if a.Token <= 0 || a.Phase != PhaseGranted || a.BootID != "boot-a" || a.ID != "a" || a.Group != DefaultGroup {
		t.Fatalf("holder: %+v", a)
	}
	// The token is the key's create revision.
	resp, err := cli.Get(ctx, m.holderKey(DefaultGroup, "a"))
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.Kvs[0].CreateRevision; got != a.Token {
		t.Errorf("token %d, key create revision %d", a.Token, got)
	}
	rev := resp.Header.Revision

	// Recursive: same record, no write.
	again := mustLock(t, m, DefaultGroup, "a")
	if diff := cmp.Diff(a, again); diff != "" {
		t.Errorf("relock (-first +second):\n%s", diff)
	}
	resp, err = cli.Get(ctx, "nothing")
	if err != nil {
		t.Fatal(err)
	}
	if resp.Header.Revision != rev {
		t.Errorf("recursive lock wrote: revision %d -> %d", rev, resp.Header.Revision)
	}

	errB := mustFull(t, m, DefaultGroup, "b")
	errC := mustFull(t, m, DefaultGroup, "c")
	for _, want := range []string{"1 of max 1 slots held", "queue position 1 of 1"} {
		if !strings.Contains(errB.Error(), want) {
			t.Errorf("b's error %q lacks %q", errB, want)
		}
	}
	if !strings.Contains(errC.Error(), "queue position 2 of 2") {
		t.Errorf("c's error %q lacks its position", errC)
	}

	st, err := m.Status(ctx, DefaultGroup)
	if err != nil {
		t.Fatal(err)
	}
	if st.Max != 1 || st.Available != 0 || len(st.Holders) != 1 || st.Holders[0].ID != "a" {
		t.Errorf("status: %+v", st)
	}
	var ws []string
	for _, w := range st.Waiters {
		ws = append(ws, fmt.Sprintf("%s@%d", w.ID, w.Position))
		if w.Since.IsZero() {
			t.Errorf("waiter %s without since", w.ID)
		}
	}
	if diff := cmp.Diff([]string{"b@1", "c@2"}, ws); diff != "" {
		t.Errorf("waiters (-want +got):\n%s", diff)
	}

	// Holder lookup.
	h, ok, err := m.Holder(ctx, DefaultGroup, "a")
	if err != nil || !ok || h.Token != a.Token {
		t.Errorf("Holder(a) = %+v, %v, %v", h, ok, err)
	}
	if _, ok, err := m.Holder(ctx, DefaultGroup, "b"); ok || err != nil {
		t.Errorf("Holder(b) = %v, %v", ok, err)
	}

	// Unlock of a non-holder drops it from the queue.
	released, err := m.Unlock(ctx, DefaultGroup, "b")
	if err != nil || released {
		t.Errorf("unlock b = %v, %v", released, err)
	}
	released, err = m.Unlock(ctx, DefaultGroup, "a")
	if err != nil || !released {
		t.Errorf("unlock a = %v, %v", released, err)
	}
	// c is now first (b left the queue) and takes the slot.
	if h := mustLock(t, m, DefaultGroup, "c"); h.ID != "c" {
		t.Errorf("c: %+v", h)
	}
	if got := metricValue(t, m.metrics.grants.WithLabelValues(DefaultGroup)); got != 2 {
		t.Errorf("grants_total = %v, want 2", got)
	}
	if diff := cmp.Diff([]string{EventGranted, EventReleased, EventGranted}, ev.kinds()); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}

	// Invalid input.
	if _, err := m.Lock(ctx, "a/b", "x", LockInfo{}); !errors.Is(err, ErrInvalidGroup) {
		t.Errorf("bad group: %v", err)
	}
	if _, err := m.Lock(ctx, DefaultGroup, "x/y", LockInfo{}); !errors.Is(err, ErrInvalidID) {
		t.Errorf("bad id: %v", err)
	}
}

func TestFIFO(t *testing.T) {
	c := etcdtest.Start(t, 1)
	m := newTestManager(t, c.Client(t), Config{})
	ctx := opCtx(t)
	const g = "workers"

	mustLock(t, m, g, "a")
	mustFull(t, m, g, "b") // b queues first
	mustFull(t, m, g, "c")
	if _, err := m.Unlock(ctx, g, "a"); err != nil {
		t.Fatal(err)
	}
	// c polls first after the release, but b was first in line.
	if err := mustFull(t, m, g, "c"); !strings.Contains(err.Error(), "0 of max 1 slots held, queue position 2 of 2") {
		t.Errorf("c: %v", err)
	}
	mustLock(t, m, g, "b")
	mustFull(t, m, g, "c")
	if err := m.Release(ctx, g, "b", mustHolder(t, m, g, "b").Token); err != nil {
		t.Fatal(err)
	}
	mustLock(t, m, g, "c")
}

func mustHolder(t testing.TB, m *Manager, group, id string) Holder {
	t.Helper()
	h, ok, err := m.Holder(opCtx(t), group, id)
	if err != nil || !ok {
		t.Fatalf("holder %s: %v %v", id, ok, err)
	}
	return h
}

func TestWaiterLeaseExpires(t *testing.T) {
	t.Parallel()
	c := etcdtest.Start(t, 1)
	cli := c.Client(t)
	m := newTestManager(t, cli, Config{WaiterTTL: 2 * time.Second})
	ctx := opCtx(t)
	const g = "default"

	mustLock(t, m, g, "a")
	mustFull(t, m, g, "gone") // queues, then never asks again
	mustFull(t, m, g, "c")
	if _, err := m.Unlock(ctx, g, "a"); err != nil {
		t.Fatal(err)
	}
	// c keeps polling (which keeps its own lease alive); "gone" blocks it
	// until its lease expires, then c is first.
	start := time.Now()
	waitFor(t, 15*time.Second, func() error {
		_, err := m.Lock(opCtx(t), g, "c", LockInfo{})
		return err
	})
	if d := time.Since(start); d < time.Second {
		t.Errorf("c granted after %v, before gone's lease (2s) could expire", d)
	}
	st, err := m.Status(ctx, g)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Waiters) != 0 || len(st.Holders) != 1 || st.Holders[0].ID != "c" {
		t.Errorf("status: %+v", st)
	}
}

func TestWaiterLeaseRenewedByPolling(t *testing.T) {
	t.Parallel()
	c := etcdtest.Start(t, 1)
	m := newTestManager(t, c.Client(t), Config{WaiterTTL: 2 * time.Second})
	const g = "default"
	mustLock(t, m, g, "a")
	mustFull(t, m, g, "b")
	mustFull(t, m, g, "c")
	// b polls every 200 ms for 4 s (twice its TTL) and stays ahead of c.
	deadline := time.Now().Add(4 * time.Second)
	for time.Now().Before(deadline) {
		if err := mustFull(t, m, g, "b"); !strings.Contains(err.Error(), "position 1 of") {
			t.Fatalf("b lost its place: %v", err)
		}
		time.Sleep(200 * time.Millisecond) // the polling interval, not a wait for a condition
	}
}

func TestHoldersSurviveRestart(t *testing.T) {
	c := etcdtest.Start(t, 1)
	cli := c.Client(t)
	m := newTestManager(t, cli, Config{WaiterTTL: time.Second})
	ctx := opCtx(t)
	h := mustLock(t, m, DefaultGroup, "a")
	if _, err := m.MarkRebooting(ctx, DefaultGroup, "a", h.Token); err != nil {
		t.Fatal(err)
	}
	cli.Close() // the server process goes away

	// The etcd member restarts too; the holder has no lease to lose.
	c.Kill(0)
	if err := c.Restart(0); err != nil {
		t.Fatal(err)
	}
	m2 := newTestManager(t, c.Client(t), Config{WaiterTTL: time.Second})
	// Longer than any waiter TTL: still held.
	waitFor(t, 10*time.Second, func() error {
		got, ok, err := m2.Holder(opCtx(t), DefaultGroup, "a")
		if err != nil {
			return err
		}
		if !ok || got.Token != h.Token || got.Phase != PhaseRebooting || got.RebootingAt.IsZero() {
			return fmt.Errorf("holder after restart: %+v %v", got, ok)
		}
		return nil
	})
	again := mustLock(t, m2, DefaultGroup, "a")
	if again.Token != h.Token {
		t.Errorf("relock after restart: token %d, want %d", again.Token, h.Token)
	}
	mustFull(t, m2, DefaultGroup, "b")
}

func TestSetMax(t *testing.T) {
	c := etcdtest.Start(t, 1)
	m := newTestManager(t, c.Client(t), Config{})
	ev := recordEvents(m)
	ctx := opCtx(t)
	const g = "db"

	mustLock(t, m, g, "a")
	mustFull(t, m, g, "b")
	// Raising max applies to the very next request.
	if err := m.SetMax(ctx, g, 2); err != nil {
		t.Fatal(err)
	}
	mustLock(t, m, g, "b")
	mustFull(t, m, g, "c")

	// Lowering it revokes nothing but blocks new grants until holders leave.
	if err := m.SetMax(ctx, g, 1); err != nil {
		t.Fatal(err)
	}
	st, err := m.Status(ctx, g)
	if err != nil {
		t.Fatal(err)
	}
	if st.Max != 1 || st.Available != 0 || len(st.Holders) != 2 {
		t.Errorf("status after lowering: %+v", st)
	}
	if _, err := m.Unlock(ctx, g, "a"); err != nil {
		t.Fatal(err)
	}
	mustFull(t, m, g, "c") // b still holds the only slot
	if _, err := m.Unlock(ctx, g, "b"); err != nil {
		t.Fatal(err)
	}
	mustLock(t, m, g, "c")

	// 0 stops all reboots.
	if err := m.SetMax(ctx, g, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Unlock(ctx, g, "c"); err != nil {
		t.Fatal(err)
	}
	mustFull(t, m, g, "d")
	if err := m.SetMax(ctx, g, 1001); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("max 1001: %v", err)
	}
	if got := ev.count(EventMaxChanged); got != 3 {
		t.Errorf("%d max-changed events, want 3", got)
	}

	// SetMax keeps the rest of the config.
	if err := m.SetConfig(ctx, g, GroupConfig{Max: 1, HoldDeadline: time.Minute, AutoRelease: true}); err != nil {
		t.Fatal(err)
	}
	if err := m.SetMax(ctx, g, 4); err != nil {
		t.Fatal(err)
	}
	st, err = m.Status(ctx, g)
	if err != nil {
		t.Fatal(err)
	}
	if st.Max != 4 || st.HoldDeadline != time.Minute || !st.AutoRelease {
		t.Errorf("status after SetMax: %+v", st)
	}
}

func TestTokens(t *testing.T) {
	c := etcdtest.Start(t, 1)
	m := newTestManager(t, c.Client(t), Config{})
	ev := recordEvents(m)
	ctx := opCtx(t)
	const g = "default"

	h1 := mustLock(t, m, g, "a")
	if _, err := m.MarkRebooting(ctx, g, "a", h1.Token+1); !errors.Is(err, ErrTokenMismatch) {
		t.Errorf("mark with wrong token: %v", err)
	}
	if err := m.ForceUnlock(ctx, g, "a", "admin@example"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.MarkRebooting(ctx, g, "a", h1.Token); !errors.Is(err, ErrNotHolder) {
		t.Errorf("mark after force unlock: %v", err)
	}
	// The machine asks again and gets a new grant: the old token is dead.
	h2 := mustLock(t, m, g, "a")
	if h2.Token == h1.Token {
		t.Fatalf("relock kept token %d", h1.Token)
	}
	if _, err := m.MarkRebooting(ctx, g, "a", h1.Token); !errors.Is(err, ErrTokenMismatch) {
		t.Errorf("mark with old token: %v", err)
	}
	if err := m.Release(ctx, g, "a", h1.Token); !errors.Is(err, ErrTokenMismatch) {
		t.Errorf("release with old token: %v", err)
	}
	mh, err := m.MarkRebooting(ctx, g, "a", h2.Token)
	if err != nil {
		t.Fatal(err)
	}
	if mh.Phase != PhaseRebooting || mh.RebootingAt.IsZero() || mh.Token != h2.Token || mh.AcquiredAt != h2.AcquiredAt {
		t.Errorf("marked: %+v (granted %+v)", mh, h2)
	}
	if err := m.Release(ctx, g, "a", h2.Token); err != nil {
		t.Fatal(err)
	}
	// Released already: a retried Release succeeds.
	if err := m.Release(ctx, g, "a", h2.Token); err != nil {
		t.Errorf("second release: %v", err)
	}
	if err := m.ForceUnlock(ctx, g, "a", "admin"); !errors.Is(err, ErrNotHolder) {
		t.Errorf("force unlock of nobody: %v", err)
	}
	if released, err := m.Unlock(ctx, g, "a"); err != nil || released {
		t.Errorf("unlock of nobody: %v %v", released, err)
	}
	want := []string{EventGranted, EventForceReleased, EventGranted, EventReleased}
	if diff := cmp.Diff(want, ev.kinds()); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
}

func TestOverdueAndAutoRelease(t *testing.T) {
	c := etcdtest.Start(t, 1)
	m := newTestManager(t, c.Client(t), Config{})
	ev := recordEvents(m)
	ctx := opCtx(t)
	const g = "default"

	h := mustLock(t, m, g, "a")
	if h.Overdue {
		t.Fatal("overdue at once")
	}
	if err := m.sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if ev.count(EventOverdue) != 0 {
		t.Fatal("overdue before the deadline")
	}
	if got := metricValue(t, m.metrics.holders.WithLabelValues(g)); got != 1 {
		t.Errorf("holders gauge %v", got)
	}

	// Two hours later (default deadline 1h): reported once, slot kept.
	m.now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	for range 2 {
		if err := m.sweep(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := ev.count(EventOverdue); got != 1 {
		t.Errorf("%d overdue events, want 1", got)
	}
	if got := metricValue(t, m.metrics.overdue.WithLabelValues(g)); got != 1 {
		t.Errorf("overdue gauge %v", got)
	}
	st, err := m.Status(ctx, g)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Holders) != 1 || !st.Holders[0].Overdue {
		t.Fatalf("status: %+v", st)
	}

	// Opt in: the sweeper releases it.
	if err := m.SetConfig(ctx, g, GroupConfig{Max: 1, HoldDeadline: 30 * time.Minute, AutoRelease: true}); err != nil {
		t.Fatal(err)
	}
	if err := m.sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := m.Holder(ctx, g, "a"); ok {
		t.Error("overdue holder kept with auto_release")
	}
	if got := ev.count(EventAutoReleased); got != 1 {
		t.Errorf("%d auto-released events", got)
	}
	if got := metricValue(t, m.metrics.overdue.WithLabelValues(g)); got != 0 {
		t.Errorf("overdue gauge %v after release", got)
	}

	// A fresh grant (new token) is reported again when it becomes overdue.
	m.now = time.Now
	mustLock(t, m, g, "a")
	if err := m.SetConfig(ctx, g, GroupConfig{Max: 1, HoldDeadline: 30 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	m.now = func() time.Time { return time.Now().Add(time.Hour) }
	if err := m.sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if got := ev.count(EventOverdue); got != 2 {
		t.Errorf("%d overdue events, want 2", got)
	}
}

func TestRunSweeps(t *testing.T) {
	c := etcdtest.Start(t, 1)
	cli := c.Client(t)
	m := newTestManager(t, cli, Config{SweepInterval: 50 * time.Millisecond})
	ev := recordEvents(m)
	ctx := opCtx(t)
	if err := m.SetConfig(ctx, "fast", GroupConfig{Max: 1, HoldDeadline: 300 * time.Millisecond, AutoRelease: true}); err != nil {
		t.Fatal(err)
	}
	mustLock(t, m, "fast", "a")

	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- m.Run(runCtx) }()
	waitFor(t, 10*time.Second, func() error {
		if n := ev.count(EventAutoReleased); n != 1 {
			return fmt.Errorf("%d auto-released events", n)
		}
		return nil
	})
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run returned %v", err)
	}
	if ev.count(EventOverdue) != 1 {
		t.Errorf("events: %v", ev.kinds())
	}
}

func TestStatusAndGroups(t *testing.T) {
	c := etcdtest.Start(t, 1)
	cli := c.Client(t)
	m := newTestManager(t, cli, Config{DefaultMax: 3, DefaultHoldDeadline: 2 * time.Hour})
	ctx := opCtx(t)

	st, err := m.Status(ctx, "fresh")
	if err != nil {
		t.Fatal(err)
	}
	want := GroupStatus{Group: "fresh", Max: 3, Available: 3, HoldDeadline: 2 * time.Hour, Holders: []Holder{}, Waiters: []Waiter{}}
	if diff := cmp.Diff(want, st); diff != "" {
		t.Errorf("fresh group (-want +got):\n%s", diff)
	}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"holders":[]`) {
		t.Errorf("JSON %s: holders should be [] not null", b)
	}

	if gs, err := m.Groups(ctx); err != nil || len(gs) != 0 {
		t.Errorf("no groups yet: %v %v", gs, err)
	}
	mustLock(t, m, "a", "x")
	mustLock(t, m, "a-b", "x")
	if err := m.SetMax(ctx, "z.1", 2); err != nil {
		t.Fatal(err)
	}
	// Keys outside the layout are ignored.
	if _, err := cli.Put(ctx, m.groupsPrefix()+"stray", "x"); err != nil {
		t.Fatal(err)
	}
	gs, err := m.Groups(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"a", "a-b", "z.1"}, gs); diff != "" {
		t.Errorf("groups (-want +got):\n%s", diff)
	}

	// A corrupt config fails closed.
	if _, err := cli.Put(ctx, m.configKey("bad"), "{"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Lock(ctx, "bad", "x", LockInfo{}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("lock with corrupt config: %v", err)
	}
	// A corrupt holder still counts.
	if _, err := cli.Put(ctx, m.holderKey("c", "junk"), "not json"); err != nil {
		t.Fatal(err)
	}
	if err := m.SetMax(ctx, "c", 1); err != nil {
		t.Fatal(err)
	}
	mustFull(t, m, "c", "x")
}

// TestGrantRejectsStaleSnapshot drives the grant Txn directly with a
// snapshot that went stale between read and write. FIFO ordering makes such
// races rare through Lock (only the first waiters ever try to grant), so
// without this test a missing compare could go unnoticed.
func TestGrantRejectsStaleSnapshot(t *testing.T) {
	c := etcdtest.Start(t, 1)
	cli := c.Client(t)
	m := newTestManager(t, cli, Config{})
	ctx := opCtx(t)
	const g = "default"

	tests := []struct {
		name   string
		change func() // runs between the read and the grant
	}{
		{"holder created", func() {
			// Another server granted a slot to x meanwhile.
			if _, err := cli.Put(ctx, m.holderKey(g, "x"), `{"id":"x","phase":"granted"}`); err != nil {
				t.Fatal(err)
			}
		}},
		{"max lowered", func() {
			if err := m.SetMax(ctx, g, 0); err != nil {
				t.Fatal(err)
			}
		}},
		{"waiter expired", func() {
			if _, err := cli.Delete(ctx, m.waiterKey(g, "a")); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := cli.Delete(ctx, m.groupPrefix(g), clientv3.WithPrefix()); err != nil {
				t.Fatal(err)
			}
			if err := m.enqueue(ctx, g, "a", 0); err != nil {
				t.Fatal(err)
			}
			s, err := m.read(ctx, g)
			if err != nil {
				t.Fatal(err)
			}
			w, ok := s.waiter("a")
			if !ok || !s.decide("a").Grant {
				t.Fatalf("snapshot: a should be granted: %+v", s)
			}
			tt.change()
			if _, ok, err := m.grant(ctx, g, "a", LockInfo{}, s, w); err != nil || ok {
				t.Fatalf("grant on a stale snapshot: ok=%v err=%v", ok, err)
			}
			if _, held, _ := m.Holder(ctx, g, "a"); held {
				t.Fatal("a holds a slot")
			}
		})
	}
}
