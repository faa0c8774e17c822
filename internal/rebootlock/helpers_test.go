package rebootlock

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// newTestManager returns a Manager on cli with its own registry.
func newTestManager(t testing.TB, cli *clientv3.Client, cfg Config) *Manager {
	t.Helper()
	m, err := New(cli, cfg, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// opCtx bounds one call in a test.
func opCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// waitFor polls cond every 20 ms until it returns nil or timeout passes,
// then fails with cond's last error.
func waitFor(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %v: %v", timeout, err)
		}
		select {
		case <-t.Context().Done():
			t.Fatal(t.Context().Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// events records a Manager's events.
type events struct {
	mu   sync.Mutex
	list []Event
}

func recordEvents(m *Manager) *events {
	e := &events{}
	m.OnEvent(func(ev Event) {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.list = append(e.list, ev)
	})
	return e
}

// kinds returns the kinds recorded so far, in order.
func (e *events) kinds() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var ks []string
	for _, ev := range e.list {
		ks = append(ks, ev.Kind)
	}
	return ks
}

func (e *events) count(kind string) int {
	n := 0
	for _, k := range e.kinds() {
		if k == kind {
			n++
		}
	}
	return n
}

// mustLock locks and fails the test unless granted.
func mustLock(t testing.TB, m *Manager, group, id string) Holder {
	t.Helper()
	h, err := m.Lock(opCtx(t), group, id, LockInfo{BootID: "boot-" + id})
	if err != nil {
		t.Fatalf("lock %s: %v", id, err)
	}
	return h
}

// mustFull locks and fails the test unless refused with ErrFull.
func mustFull(t testing.TB, m *Manager, group, id string) error {
	t.Helper()
	_, err := m.Lock(opCtx(t), group, id, LockInfo{})
	if !errors.Is(err, ErrFull) {
		t.Fatalf("lock %s: got %v, want ErrFull", id, err)
	}
	return err
}

// metricValue reads a gauge or counter.
func metricValue(t testing.TB, c prometheus.Metric) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	switch {
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Counter != nil:
		return m.Counter.GetValue()
	}
	t.Fatalf("metric %v is neither gauge nor counter", c.Desc())
	return 0
}
