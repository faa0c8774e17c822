package agent

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// recorder is a Coordinator and Drainer that logs calls in order.
type recorder struct {
	calls    []string
	drainErr error
	block    bool // Drain waits for ctx
}

func (r *recorder) BeforeReboot(context.Context) error { r.calls = append(r.calls, "lock"); return nil }
func (r *recorder) AfterHealthy(context.Context) error {
	r.calls = append(r.calls, "unlock")
	return nil
}
func (r *recorder) Undrain(context.Context) error { r.calls = append(r.calls, "undrain"); return nil }
func (r *recorder) Drain(ctx context.Context) error {
	r.calls = append(r.calls, "drain")
	if r.block {
		<-ctx.Done()
		return ctx.Err()
	}
	return r.drainErr
}

func TestDrainCoordinatorOrder(t *testing.T) {
	r := &recorder{}
	d := &DrainCoordinator{Coordinator: r, Drainer: r, Log: slog.New(slog.DiscardHandler)}
	if err := d.BeforeReboot(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := d.AfterHealthy(t.Context()); err != nil {
		t.Fatal(err)
	}
	// The slot first (no draining while waiting in line), units back only
	// after the slot is given back.
	if got := strings.Join(r.calls, ","); got != "lock,drain,unlock,undrain" {
		t.Fatalf("calls = %s", got)
	}
}

func TestDrainCoordinatorTimeout(t *testing.T) {
	r := &recorder{block: true}
	d := &DrainCoordinator{Coordinator: r, Drainer: r, Timeout: 50 * time.Millisecond, Log: slog.New(slog.DiscardHandler)}
	start := time.Now()
	// A drain that cannot finish does not hold the update back forever.
	if err := d.BeforeReboot(t.Context()); err != nil {
		t.Fatalf("BeforeReboot after a drain timeout = %v, want nil", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("drain timeout not applied")
	}
	// But a cancelled reboot is not a reboot.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	r.block = false
	r.drainErr = errors.New("boom")
	if err := d.BeforeReboot(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("BeforeReboot with ctx cancelled = %v", err)
	}
}
