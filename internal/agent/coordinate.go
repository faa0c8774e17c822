package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flotilla/flotilla/internal/fleetlock"
	"github.com/flotilla/flotilla/internal/rebootlock"
)

// pollDelay is how long a coordinator waits between attempts: a base
// with ±25 % jitter so a fleet waiting for the same slot does not ask in
// lockstep.
func pollDelay(base time.Duration) time.Duration {
	return base + time.Duration((rand.Float64()-0.5)*0.5*float64(base))
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// FleetLockCoordinator takes a reboot slot from a FleetLock server (any:
// flotilla's, airlock, poseidon/fleetlock) before rebooting and gives it
// back once the new boot is healthy.
type FleetLockCoordinator struct {
	Client *fleetlock.Client
	Group  string
	ID     string
	// Interval between attempts while the group is full (default 15 s).
	Interval time.Duration
	Log      *slog.Logger
}

// BeforeReboot asks until a slot is granted or ctx ends.
func (c *FleetLockCoordinator) BeforeReboot(ctx context.Context) error {
	iv := c.Interval
	if iv <= 0 {
		iv = 15 * time.Second
	}
	for {
		err := c.Client.PreReboot(ctx, c.Group, c.ID)
		if err == nil {
			c.Log.Info("fleetlock: reboot slot granted", "group", c.Group)
			return nil
		}
		if fleetlock.IsFull(err) {
			c.Log.Debug("fleetlock: group full; waiting", "group", c.Group)
		} else {
			c.Log.Warn("fleetlock: pre-reboot failed; retrying", "err", err)
		}
		if err := sleepCtx(ctx, pollDelay(iv)); err != nil {
			return fmt.Errorf("fleetlock: waiting for a reboot slot: %w", err)
		}
	}
}

// AfterHealthy reports steady state until the server accepts it.
func (c *FleetLockCoordinator) AfterHealthy(ctx context.Context) error {
	iv := c.Interval
	if iv <= 0 {
		iv = 15 * time.Second
	}
	for {
		err := c.Client.SteadyState(ctx, c.Group, c.ID)
		if err == nil {
			return nil
		}
		c.Log.Warn("fleetlock: steady-state failed; retrying", "err", err)
		if err := sleepCtx(ctx, pollDelay(iv)); err != nil {
			return fmt.Errorf("fleetlock: steady-state: %w", err)
		}
	}
}

// EtcdCoordinator talks to etcd directly (REBOOT_STRATEGY=etcd-lock). The
// slot is a persistent holder record: it survives the reboot, is fenced by
// its token right before rebooting, and is released only by a later boot
// (a different boot id) that passed the health gate.
type EtcdCoordinator struct {
	Locks  *rebootlock.Manager
	Group  string
	ID     string
	BootID string
	// Interval between attempts while the group is full (default 5 s).
	Interval time.Duration
	// EtcdMember, when set, is this machine's etcd member name: it reboots
	// only while every other member is healthy, so an update never costs
	// the cluster its quorum.
	EtcdMember string
	Etcd       *clientv3.Client
	Log        *slog.Logger
}

// BeforeReboot takes (or confirms) the slot, waits for a healthy etcd
// cluster when this machine is a member, and marks the slot "rebooting" in
// a transaction fenced by the slot's token.
func (c *EtcdCoordinator) BeforeReboot(ctx context.Context) error {
	iv := c.Interval
	if iv <= 0 {
		iv = 5 * time.Second
	}
	for {
		h, err := c.Locks.Lock(ctx, c.Group, c.ID, rebootlock.LockInfo{BootID: c.BootID})
		switch {
		case err == nil:
			if qerr := c.quorumSafe(ctx); qerr != nil {
				c.Log.Info("etcd-lock: holding a slot but waiting for the etcd cluster", "reason", qerr)
				break
			}
			if h.BootID != "" && h.BootID != c.BootID {
				// The record is from an earlier boot: this boot never
				// released it (crash before the gate). It is ours; take
				// it over for this boot by releasing and locking again.
				if err := c.Locks.Release(ctx, c.Group, c.ID, h.Token); err != nil && !errors.Is(err, rebootlock.ErrNotHolder) {
					c.Log.Warn("etcd-lock: cannot renew the slot of an earlier boot", "err", err)
				}
				continue
			}
			if _, err := c.Locks.MarkRebooting(ctx, c.Group, c.ID, h.Token); err != nil {
				c.Log.Warn("etcd-lock: slot lost right before rebooting; asking again", "err", err)
				break
			}
			c.Log.Info("etcd-lock: reboot slot held", "group", c.Group, "token", h.Token)
			return nil
		case errors.Is(err, rebootlock.ErrFull):
			c.Log.Debug("etcd-lock: group full; waiting", "group", c.Group, "err", err)
		default:
			c.Log.Warn("etcd-lock: lock failed; retrying", "err", err)
		}
		if err := sleepCtx(ctx, pollDelay(iv)); err != nil {
			return fmt.Errorf("etcd-lock: waiting for a reboot slot: %w", err)
		}
	}
}

// AfterHealthy releases the slot if an earlier boot took it: the changed
// boot id is the evidence that the reboot happened, the health gate the
// evidence that it worked. A slot taken in this boot (not rebooted yet) is
// kept.
func (c *EtcdCoordinator) AfterHealthy(ctx context.Context) error {
	iv := c.Interval
	if iv <= 0 {
		iv = 5 * time.Second
	}
	for {
		h, held, err := c.Locks.Holder(ctx, c.Group, c.ID)
		if err == nil {
			if !held || h.BootID == c.BootID {
				return nil
			}
			err = c.Locks.Release(ctx, c.Group, c.ID, h.Token)
			if err == nil || errors.Is(err, rebootlock.ErrNotHolder) || errors.Is(err, rebootlock.ErrTokenMismatch) {
				c.Log.Info("etcd-lock: reboot slot released after a healthy boot", "group", c.Group)
				return nil
			}
		}
		c.Log.Warn("etcd-lock: release failed; retrying", "err", err)
		if err := sleepCtx(ctx, pollDelay(iv)); err != nil {
			return fmt.Errorf("etcd-lock: release: %w", err)
		}
	}
}

// quorumSafe is nil when this machine is not an etcd member, or when every
// other member answers a status request.
func (c *EtcdCoordinator) quorumSafe(ctx context.Context) error {
	if c.EtcdMember == "" || c.Etcd == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ml, err := c.Etcd.MemberList(ctx)
	if err != nil {
		return fmt.Errorf("member list: %w", err)
	}
	for _, m := range ml.Members {
		if m.Name == c.EtcdMember {
			continue
		}
		if len(m.ClientURLs) == 0 {
			return fmt.Errorf("member %q has not started", m.Name)
		}
		ok := false
		for _, u := range m.ClientURLs {
			if _, err := c.Etcd.Status(ctx, u); err == nil {
				ok = true
				break
			}
		}
		if !ok {
			return fmt.Errorf("member %q is not healthy; rebooting now could cost the cluster its quorum", m.Name)
		}
	}
	return nil
}
