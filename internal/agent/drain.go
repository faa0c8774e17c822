package agent

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// Drainer moves work off this machine before a coordinated reboot and
// lets it come back after; the unit agent (fleet.UnitAgent) is one.
type Drainer interface {
	// Drain returns once the work that asked to be moved has left.
	Drain(ctx context.Context) error
	// Undrain lets the machine take work again.
	Undrain(ctx context.Context) error
}

// DefaultDrainTimeout bounds how long a reboot waits for units to move.
const DefaultDrainTimeout = 5 * time.Minute

// DrainCoordinator wraps a Coordinator so that the machine drains after it
// got its reboot slot and before the slot is used, and undrains once the
// new boot is healthy. Draining only after the grant keeps a machine that
// waits in line for a slot from pushing its units around for nothing.
type DrainCoordinator struct {
	Coordinator
	Drainer Drainer
	// Timeout bounds the drain (DefaultDrainTimeout). A drain that does
	// not finish in time — no other machine can take the units — does not
	// block the update forever: the machine reboots with the units that
	// are left, as it would without MoveBeforeReboot.
	Timeout time.Duration
	Log     *slog.Logger
}

// BeforeReboot takes the slot, then drains.
func (d *DrainCoordinator) BeforeReboot(ctx context.Context) error {
	if err := d.Coordinator.BeforeReboot(ctx); err != nil {
		return err
	}
	timeout := d.Timeout
	if timeout <= 0 {
		timeout = DefaultDrainTimeout
	}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	err := d.Drainer.Drain(dctx)
	switch {
	case err == nil:
		d.Log.Info("units moved off before the reboot", "took", time.Since(start).Round(time.Millisecond))
	case ctx.Err() != nil:
		return fmt.Errorf("drain before reboot: %w", ctx.Err())
	default:
		d.Log.Warn("drain before reboot did not finish; rebooting with the units that are left", "err", err)
	}
	return nil
}

// AfterHealthy gives the slot back, then lets units come back. It runs
// after every healthy boot, so a machine that rebooted while draining (or
// crashed) takes units again.
func (d *DrainCoordinator) AfterHealthy(ctx context.Context) error {
	if err := d.Coordinator.AfterHealthy(ctx); err != nil {
		return err
	}
	if err := d.Drainer.Undrain(ctx); err != nil {
		return fmt.Errorf("undrain after healthy boot: %w", err)
	}
	return nil
}
