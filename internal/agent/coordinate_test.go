package agent

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flotilla/flotilla/internal/etcdtest"
	"github.com/flotilla/flotilla/internal/rebootlock"
)

// TestQuorumAwareReboot: a machine that is an etcd member of a real
// three-member cluster holds its slot but does not reboot while another
// member is down (its reboot would leave one of three), and goes ahead once
// the member is back.
func TestQuorumAwareReboot(t *testing.T) {
	c := etcdtest.Start(t, 3)
	cli := c.Client(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	locks, err := rebootlock.New(cli, rebootlock.Config{}, log, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	coord := &EtcdCoordinator{Locks: locks, Group: "etcd", ID: "server-0", BootID: "boot-1",
		Interval: 50 * time.Millisecond, EtcdMember: c.Member(0).Name, Etcd: cli, Log: log}

	c.Kill(1)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	err = coord.BeforeReboot(ctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("with member 1 down BeforeReboot returned %v, want to keep waiting", err)
	}
	h, held, err := locks.Holder(context.Background(), "etcd", "server-0")
	if err != nil || !held || h.Phase != rebootlock.PhaseGranted {
		t.Fatalf("while waiting for quorum: holder %+v held=%v err=%v, want the slot held but not rebooting", h, held, err)
	}

	if err := c.Restart(1); err != nil {
		t.Fatal(err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := coord.BeforeReboot(ctx); err != nil {
		t.Fatalf("with all members healthy: %v", err)
	}
	h, _, err = locks.Holder(ctx, "etcd", "server-0")
	if err != nil || h.Phase != rebootlock.PhaseRebooting {
		t.Fatalf("after BeforeReboot: %+v %v, want phase rebooting", h, err)
	}

	// After the reboot (a new boot id) and a healthy boot the slot goes back.
	after := *coord
	after.BootID = "boot-2"
	if err := after.AfterHealthy(ctx); err != nil {
		t.Fatal(err)
	}
	if _, held, _ := locks.Holder(ctx, "etcd", "server-0"); held {
		t.Fatal("slot still held after a healthy boot")
	}
	// The same boot that took a slot keeps it (it has not rebooted yet).
	if err := coord.BeforeReboot(ctx); err != nil {
		t.Fatal(err)
	}
	if err := coord.AfterHealthy(ctx); err != nil {
		t.Fatal(err)
	}
	if _, held, _ := locks.Holder(ctx, "etcd", "server-0"); !held {
		t.Fatal("AfterHealthy in the boot that took the slot released it before the reboot")
	}
}
