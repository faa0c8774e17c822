package replica

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flotilla/flotilla/internal/etcdtest"
	"github.com/flotilla/flotilla/internal/testenv"
)

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestLeaderRunsOnce: three replicas campaign for one job; it runs on one
// at a time, and moves when the leader goes away.
func TestLeaderRunsOnce(t *testing.T) {
	c := etcdtest.Start(t, 1)
	var running, most, starts atomic.Int32
	var mu sync.Mutex
	owner := -1
	job := func(i int) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			n := running.Add(1)
			starts.Add(1)
			for {
				m := most.Load()
				if n <= m || most.CompareAndSwap(m, n) {
					break
				}
			}
			mu.Lock()
			owner = i
			mu.Unlock()
			<-ctx.Done()
			running.Add(-1)
			return nil
		}
	}
	cancels := make([]context.CancelFunc, 3)
	dones := make([]chan struct{}, 3)
	for i := range 3 {
		ctx, cancel := context.WithCancel(context.Background())
		cancels[i], dones[i] = cancel, make(chan struct{})
		cli := c.Client(t)
		go func() {
			defer close(dones[i])
			_ = Leader(ctx, cli, DefaultPrefix, "sweep", 2, quiet(), nil, job(i))
		}()
	}
	t.Cleanup(func() {
		for i := range 3 {
			cancels[i]()
			<-dones[i]
		}
	})
	testenv.Until(t, 10*time.Second, "a leader runs the job", func() bool { return running.Load() == 1 })
	mu.Lock()
	first := owner
	mu.Unlock()
	cancels[first]()
	<-dones[first]
	testenv.Until(t, 10*time.Second, "another replica takes over", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return running.Load() == 1 && owner != first
	})
	if m := most.Load(); m != 1 {
		t.Errorf("the job ran on %d replicas at once", m)
	}
	if s := starts.Load(); s != 2 {
		t.Errorf("the job started %d times, want 2 (once per leader)", s)
	}
}

func TestBus(t *testing.T) {
	c := etcdtest.Start(t, 1)
	a, b := NewBus(c.Client(t), DefaultPrefix, quiet()), NewBus(c.Client(t), DefaultPrefix, quiet())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var calls, other atomic.Int32
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = b.Watch(ctx, "config", func() { calls.Add(1) })
	}()
	go func() { _ = b.Watch(ctx, "something-else", func() { other.Add(1) }) }()
	// The watch may start after the first publish; publish until seen.
	testenv.Until(t, 10*time.Second, "a publish reaches the other replica", func() bool {
		if err := a.Publish(ctx, "config"); err != nil {
			t.Fatal(err)
		}
		return calls.Load() > 0
	})
	if other.Load() != 0 {
		t.Errorf("a watch of another topic was called %d times", other.Load())
	}
	cancel()
	<-done
}

func TestSharedSecret(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := context.Background()
	first, err := SharedSecret(ctx, c.Client(t), DefaultPrefix, "dashboard", []byte("key-of-replica-one"))
	if err != nil {
		t.Fatal(err)
	}
	second, err := SharedSecret(ctx, c.Client(t), DefaultPrefix, "dashboard", []byte("key-of-replica-two"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first, []byte("key-of-replica-one")) || !bytes.Equal(second, first) {
		t.Errorf("secrets %q and %q, want both the first replica's", first, second)
	}
}

func TestRevocations(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, b := NewRevocations(c.Client(t), DefaultPrefix, quiet()), NewRevocations(c.Client(t), DefaultPrefix, quiet())
	var wg sync.WaitGroup
	for _, r := range []*Revocations{a, b} {
		wg.Add(1)
		go func() { defer wg.Done(); _ = r.Run(ctx) }()
	}
	defer wg.Wait()
	defer cancel()
	<-a.Ready()
	<-b.Ready()
	if err := a.Revoke(ctx, "s1", time.Now().Add(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := a.Revoke(ctx, "s2", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if !a.Revoked("s1") {
		t.Error("a revocation is not visible at once on its own replica")
	}
	testenv.Until(t, 10*time.Second, "a revocation reaches the other replica", func() bool { return b.Revoked("s1") && b.Revoked("s2") })
	if b.Revoked("s3") {
		t.Error("an unknown session counts as revoked")
	}
	// A replica started later loads what is there.
	late := NewRevocations(c.Client(t), DefaultPrefix, quiet())
	wg.Add(1)
	go func() { defer wg.Done(); _ = late.Run(ctx) }()
	<-late.Ready()
	if !late.Revoked("s2") {
		t.Error("a replica started later does not see an earlier revocation")
	}
	// The lease ends with the session; the record goes with it.
	testenv.Until(t, 15*time.Second, "an expired revocation is forgotten", func() bool { return !b.Revoked("s1") })
	if !b.Revoked("s2") {
		t.Error("a live revocation was forgotten")
	}
}
