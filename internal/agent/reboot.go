package agent

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// Rebooter performs the reboot itself. The real one runs a command
// (systemctl reboot); tests and dev mode simulate it.
type Rebooter interface {
	Reboot(ctx context.Context, reason string) error
}

// Coordinator is the seam for coordinated strategies (etcd-lock,
// fleetlock): BeforeReboot blocks until this machine may go down (it holds
// a slot); AfterHealthy gives the slot back once the new boot passed its
// health gate — not merely when it came up.
type Coordinator interface {
	BeforeReboot(ctx context.Context) error
	AfterHealthy(ctx context.Context) error
}

// CommandRebooter runs Argv to reboot, e.g. ["systemctl", "reboot"].
type CommandRebooter struct {
	Argv []string
}

// Reboot runs the command and returns its error with its output.
func (c CommandRebooter) Reboot(ctx context.Context, reason string) error {
	if len(c.Argv) == 0 {
		return fmt.Errorf("reboot: no reboot command configured")
	}
	cmd := exec.CommandContext(ctx, c.Argv[0], c.Argv[1:]...)
	cmd.Env = append(cmd.Environ(), "FLOTILLA_REBOOT_REASON="+reason)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("reboot: %s: %w: %s", strings.Join(c.Argv, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// rebootRetry is how long the agent waits for a reboot it asked for before
// asking again.
const rebootRetry = 5 * time.Minute

// maybeReboot applies REBOOT_STRATEGY once an update waits for its reboot.
// It returns when to look again, and false when there is nothing to do.
func (a *Agent) maybeReboot(ctx context.Context) (time.Duration, bool) {
	if a.status() != StatusUpdatedNeedReboot || ctx.Err() != nil {
		return 0, false
	}
	c := a.readConf()
	strategy := strings.TrimSpace(c.Get(KeyRebootStrategy))
	if strategy == "" {
		strategy = StrategyReboot
	}
	switch strategy {
	case StrategyOff:
		a.noteOnce("reboot required; REBOOT_STRATEGY=off, so the machine waits for an operator to reboot it")
		return 0, false
	case StrategyReboot:
	case StrategyEtcdLock, StrategyFleet:
		if a.cfg.Coordinators[strategy] == nil {
			a.noteOnce("reboot required; REBOOT_STRATEGY=" + strategy + " needs a reboot coordinator, which this agent was not configured with")
			return 0, false
		}
	default:
		a.noteOnce(fmt.Sprintf("reboot required; unknown REBOOT_STRATEGY=%q (want reboot, etcd-lock, fleetlock or off); not rebooting", strategy))
		return 0, false
	}
	window, err := ParseRebootWindows(c)
	if err != nil {
		a.noteOnce("reboot required but the reboot window is invalid, so the machine does not reboot: " + err.Error())
		return 0, false
	}
	now := a.cfg.Now()
	if !window.Contains(now) {
		next := window.Next(now)
		a.noteOnce("reboot required; waiting for the reboot window opening " + next.Format(time.RFC3339))
		return next.Sub(now), true
	}
	if !a.rebootAt.IsZero() && now.Sub(a.rebootAt) < rebootRetry {
		return rebootRetry - now.Sub(a.rebootAt), true
	}
	if coord := a.cfg.Coordinators[strategy]; coord != nil {
		if err := coord.BeforeReboot(ctx); err != nil {
			a.log.Warn("reboot coordinator refused for now", "err", err)
			return time.Minute, true
		}
		// The lock may have taken long; the window is checked again right
		// before rebooting.
		if now = a.cfg.Now(); !window.Contains(now) {
			return window.Next(now).Sub(now), true
		}
	}
	if a.cfg.Rebooter == nil {
		a.noteOnce("reboot required; no reboot action configured")
		return 0, false
	}
	a.rebootAt = now
	a.mu.Lock()
	version := ""
	if a.st.RebootPending != nil {
		version = a.st.RebootPending.Version
	}
	a.mu.Unlock()
	a.log.Info("rebooting to apply the update", "version", version, "strategy", strategy)
	if err := a.cfg.Rebooter.Reboot(ctx, "update to "+version); err != nil {
		a.log.Error("reboot failed", "err", err)
	}
	return rebootRetry, true
}

// rollbackReboot reboots a boot that failed its health gate, so the
// bootloader falls back to the previous slot (the failed one has no tries
// left and is not marked good).
func (a *Agent) rollbackReboot(ctx context.Context, reason string) {
	if strings.TrimSpace(a.readConf().Get(KeyRebootStrategy)) == StrategyOff {
		a.log.Error("the update failed its health gate; REBOOT_STRATEGY=off, so reboot the machine to roll back", "reason", reason)
		return
	}
	if a.cfg.Rebooter == nil {
		a.log.Error("the update failed its health gate and no reboot action is configured; reboot to roll back", "reason", reason)
		return
	}
	a.log.Warn("rebooting to roll back to the previous slot", "reason", reason)
	if err := a.cfg.Rebooter.Reboot(ctx, "health gate failed: "+reason); err != nil {
		a.log.Error("rollback reboot failed", "err", err)
	}
}

// noteOnce logs a waiting reason when it changes, not on every tick.
func (a *Agent) noteOnce(msg string) {
	a.mu.Lock()
	same := a.lastNote == msg
	a.lastNote = msg
	a.mu.Unlock()
	if !same {
		a.log.Info(msg)
	}
}

// releaseSlot tells the reboot coordinator that this boot is healthy, so a
// slot taken before the reboot goes back. It is not called while an
// applied update waits for its reboot in this boot: that slot is needed.
func (a *Agent) releaseSlot(ctx context.Context) {
	a.mu.Lock()
	waiting := a.st.RebootPending != nil && a.st.RebootPending.BootID == a.cfg.BootID
	a.mu.Unlock()
	if waiting {
		return
	}
	strategy := strings.TrimSpace(a.readConf().Get(KeyRebootStrategy))
	coord := a.cfg.Coordinators[strategy]
	if coord == nil {
		return
	}
	if err := coord.AfterHealthy(ctx); err != nil && ctx.Err() == nil {
		a.log.Warn("reboot coordinator: release after a healthy boot failed", "err", err)
	}
}
