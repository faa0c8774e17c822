package agent

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/flotilla/flotilla/internal/gpt"
)

// HealthConfig is the gate a new boot must pass before its slot is marked
// good. update_engine's gate was "the daemon stayed up 45 s"; here it is
// explicit: required units, check commands and a minimum uptime.
type HealthConfig struct {
	// MinUptime is how long the machine must have been up.
	MinUptime time.Duration
	// Timeout is the uptime after which a gate that has not passed has
	// failed; a failed update boot is rolled back by rebooting.
	Timeout time.Duration
	// Interval is how often the gate is evaluated.
	Interval time.Duration
	// Units must all be "active" (systemd ActiveState).
	Units []string
	// Commands must all exit 0 (run with sh -c, 30 s each).
	Commands []string
	// Checker reads unit states; the CLI uses systemd over D-Bus.
	Checker UnitChecker
	// Uptime returns the time since boot; nil reads /proc/uptime.
	Uptime func() time.Duration
}

// DefaultHealthConfig is 60 s of uptime and nothing else.
func DefaultHealthConfig() HealthConfig {
	return HealthConfig{MinUptime: 60 * time.Second, Timeout: 10 * time.Minute, Interval: 5 * time.Second}
}

// UnitChecker reports a systemd unit's ActiveState ("active", "failed"…).
type UnitChecker interface {
	ActiveState(ctx context.Context, unit string) (string, error)
}

type noUnitChecker struct{}

func (noUnitChecker) ActiveState(context.Context, string) (string, error) {
	return "", fmt.Errorf("no systemd connection to check units with")
}

// ProcUptime reads /proc/uptime.
func ProcUptime() time.Duration {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	s, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return 0
	}
	return time.Duration(s * float64(time.Second))
}

// evaluate runs the gate once and says why it did not pass.
func (a *Agent) evaluate(ctx context.Context, uptime time.Duration) (bool, string) {
	h := a.cfg.Health
	if uptime < h.MinUptime {
		return false, fmt.Sprintf("uptime %s < %s", uptime.Round(time.Second), h.MinUptime)
	}
	for _, u := range h.Units {
		st, err := h.Checker.ActiveState(ctx, u)
		if err != nil {
			return false, fmt.Sprintf("unit %s: %v", u, err)
		}
		if st != "active" {
			return false, fmt.Sprintf("unit %s is %s", u, st)
		}
	}
	for _, c := range h.Commands {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		cmd := exec.CommandContext(cctx, "sh", "-c", c)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		cancel()
		if err != nil {
			msg := strings.TrimSpace(out.String())
			if len(msg) > 200 {
				msg = msg[:200] + "…"
			}
			return false, fmt.Sprintf("check %q: %v %s", c, err, msg)
		}
	}
	return true, ""
}

// runHealthGate decides whether this boot is good. It closes healthDone
// when checks may go on: after the slot was marked good, when there is
// nothing to mark, or after a failed gate on a boot that was not an update.
func (a *Agent) runHealthGate(ctx context.Context) {
	done := func() { close(a.healthDone) }
	a.mu.Lock()
	good := a.st.GoodBootID == a.cfg.BootID
	updateBoot := a.st.PreviousVersion != ""
	a.mu.Unlock()
	if a.cfg.Disk == "" || a.cfg.BootedPartUUID == "" || good {
		a.metrics.healthy.Set(1)
		done()
		a.releaseSlot(ctx)
		return
	}
	booted, err := a.bootedPartition()
	if err != nil {
		a.log.Warn("health gate skipped: cannot read the booted slot", "err", err)
		done()
		return
	}
	if booted.Attributes.Successful() {
		a.metrics.healthy.Set(1)
		_ = a.update(a.confirmBoot)
		done()
		a.releaseSlot(ctx)
		return
	}
	uptime := a.cfg.Health.Uptime
	if uptime == nil {
		uptime = ProcUptime
	}
	a.log.Info("health gate: waiting before marking this slot good", "slot", booted.Name,
		"min_uptime", a.cfg.Health.MinUptime, "units", a.cfg.Health.Units, "commands", len(a.cfg.Health.Commands))
	interval := a.cfg.Health.Interval
	if interval <= 0 {
		interval = 5 * time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	lastReason := ""
	for {
		up := uptime()
		ok, reason := a.evaluate(ctx, up)
		if ok {
			if err := a.markGood(); err != nil {
				a.log.Error("health gate passed but the slot could not be marked good", "err", err)
			} else {
				a.metrics.healthy.Set(1)
				a.log.Info("health gate passed; slot marked good", "slot", booted.Name, "uptime", up.Round(time.Second))
				done()
				a.releaseSlot(ctx)
				return
			}
		} else if reason != lastReason {
			a.log.Info("health gate not passed yet", "reason", reason)
			lastReason = reason
		}
		if up > a.cfg.Health.Timeout {
			a.metrics.healthy.Set(-1)
			a.log.Error("HEALTH GATE FAILED: this boot did not become healthy in time", "timeout", a.cfg.Health.Timeout, "reason", reason)
			_ = a.update(func(s *State) { s.HealthFailedBoot = a.cfg.BootID })
			if !updateBoot {
				// Nothing to roll back to that is known to be better.
				done()
				return
			}
			a.rollbackReboot(ctx, reason)
			return
		}
		select {
		case <-ctx.Done():
			done()
			return
		case <-t.C:
		}
	}
}

func (a *Agent) bootedPartition() (gpt.Partition, error) {
	d, err := gpt.OpenReadOnly(a.cfg.Disk)
	if err != nil {
		return gpt.Partition{}, err
	}
	defer d.Close()
	t, err := d.Table()
	if err != nil {
		return gpt.Partition{}, err
	}
	g, err := gpt.ParseGUID(a.cfg.BootedPartUUID)
	if err != nil {
		return gpt.Partition{}, fmt.Errorf("booted partuuid: %w", err)
	}
	p, ok := t.ByGUID(g)
	if !ok {
		return gpt.Partition{}, fmt.Errorf("no partition %s on %s", a.cfg.BootedPartUUID, a.cfg.Disk)
	}
	return p, nil
}

// markGood sets successful=1, tries=0 and gives the booted slot the top
// priority, in one GPT write — unless it already is so.
func (a *Agent) markGood() error {
	d, err := gpt.Open(a.cfg.Disk)
	if err != nil {
		return fmt.Errorf("mark good: %w", err)
	}
	defer d.Close()
	t, err := d.Table()
	if err != nil {
		return fmt.Errorf("mark good: %w", err)
	}
	g, err := gpt.ParseGUID(a.cfg.BootedPartUUID)
	if err != nil {
		return fmt.Errorf("mark good: %w", err)
	}
	changed, err := gpt.MarkGood(t, g)
	if err != nil {
		return fmt.Errorf("mark good: %w", err)
	}
	if changed {
		if err := d.Commit(t); err != nil {
			return fmt.Errorf("mark good: %w", err)
		}
	}
	return a.update(a.confirmBoot)
}

// confirmBoot records that this boot is good; an update on trial in it
// is confirmed.
func (a *Agent) confirmBoot(s *State) {
	s.GoodBootID = a.cfg.BootID
	if s.RebootPending != nil && s.RebootPending.TrialBootID == a.cfg.BootID {
		s.RebootPending = nil
	}
}
