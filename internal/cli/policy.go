package cli

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	v1 "github.com/flotilla/flotilla/api/v1"
	"github.com/flotilla/flotilla/internal/store"
)

// policyFlags are the rollout policy flags shared by group create and
// group set-policy. Only flags the user set are applied.
type policyFlags struct {
	maxUpdates     int
	period         time.Duration
	rate           string
	maxInProgress  int
	percent        float64
	ramp           time.Duration
	windows        []string
	clearWindows   bool
	timezone       string
	timeout        time.Duration
	autoPause      int
	onDemandBypass bool

	// changed holds the names of the flags set on the command line; filled
	// by record in RunE.
	changed map[string]bool
}

var policyFlagNames = []string{
	"max-updates", "period", "rate", "max-in-progress", "percent", "ramp",
	"window", "clear-windows", "timezone", "timeout", "auto-pause-failures", "on-demand-bypass",
}

func (p *policyFlags) bind(cmd *cobra.Command) {
	f := cmd.Flags()
	f.IntVar(&p.maxUpdates, "max-updates", 0, "grant at most N updates per --period (0 = unlimited)")
	f.DurationVar(&p.period, "period", 0, "sliding window of --max-updates, e.g. 1h")
	f.StringVar(&p.rate, "rate", "", "shorthand for --max-updates and --period: N/DUR, e.g. 20/1h")
	f.IntVar(&p.maxInProgress, "max-in-progress", 0, "at most N updates granted but not finished (0 = unlimited)")
	f.Float64Var(&p.percent, "percent", 0, "share of machines (0-100) eligible when a rollout starts")
	f.DurationVar(&p.ramp, "ramp", 0, "grow --percent linearly to 100 over this duration (0 = no ramp)")
	f.StringArrayVar(&p.windows, "window", nil, `weekly update window, e.g. "Mon-Fri 09:00-17:00" (repeatable; replaces the list)`)
	f.BoolVar(&p.clearWindows, "clear-windows", false, "remove all update windows (updates at any time)")
	f.StringVar(&p.timezone, "timezone", "", "IANA time zone of the windows, e.g. Europe/Berlin (default UTC)")
	f.DurationVar(&p.timeout, "timeout", 0, "mark a granted update timed-out after this long (0 = never)")
	f.IntVar(&p.autoPause, "auto-pause-failures", 0, "pause the group after N failed machines in a rollout (0 = off)")
	f.BoolVar(&p.onDemandBypass, "on-demand-bypass", false, "let on-demand update checks bypass rate, in-progress and percent limits")
}

// record notes which policy flags were set.
func (p *policyFlags) record(cmd *cobra.Command) {
	p.changed = map[string]bool{}
	for _, name := range policyFlagNames {
		if cmd.Flags().Changed(name) {
			p.changed[name] = true
		}
	}
}

// patch validates the flags that were set and returns them as a policy
// patch; ok is false when no policy flag was set.
func (p *policyFlags) patch() (patch v1.PolicyPatch, ok bool, err error) {
	set := p.changed
	if len(set) == 0 {
		return patch, false, nil
	}
	if set["rate"] {
		if set["max-updates"] || set["period"] {
			return patch, false, usagef("--rate cannot be combined with --max-updates or --period")
		}
		n, d, err := parseRate(p.rate)
		if err != nil {
			return patch, false, err
		}
		patch.MaxUpdatesPerPeriod = &n
		patch.Period = ptr(d.String())
	}
	if set["max-updates"] {
		if p.maxUpdates < 0 {
			return patch, false, usagef("--max-updates must not be negative")
		}
		patch.MaxUpdatesPerPeriod = ptr(p.maxUpdates)
	}
	if set["period"] {
		if p.period <= 0 {
			return patch, false, usagef("--period must be positive")
		}
		patch.Period = ptr(p.period.String())
	}
	if set["max-in-progress"] {
		if p.maxInProgress < 0 {
			return patch, false, usagef("--max-in-progress must not be negative")
		}
		patch.MaxInProgress = ptr(p.maxInProgress)
	}
	if set["percent"] {
		if p.percent < 0 || p.percent > 100 {
			return patch, false, usagef("--percent must be between 0 and 100")
		}
		patch.RolloutPercent = ptr(p.percent)
	}
	if set["ramp"] {
		if p.ramp < 0 {
			return patch, false, usagef("--ramp must not be negative")
		}
		patch.RampDuration = ptr(p.ramp.String())
	}
	switch {
	case set["window"] && set["clear-windows"]:
		return patch, false, usagef("--window and --clear-windows exclude each other (--window replaces all windows)")
	case set["window"]:
		ws := make([]string, 0, len(p.windows))
		for _, w := range p.windows {
			if strings.TrimSpace(w) == "" {
				return patch, false, usagef("--window must not be empty")
			}
			ws = append(ws, strings.TrimSpace(w))
		}
		patch.Windows = &ws
	case set["clear-windows"]:
		if p.clearWindows {
			patch.Windows = &[]string{}
		}
	}
	if set["timezone"] {
		patch.TimeZone = ptr(p.timezone)
	}
	if set["timeout"] {
		if p.timeout < 0 {
			return patch, false, usagef("--timeout must not be negative")
		}
		patch.UpdateTimeout = ptr(p.timeout.String())
	}
	if set["auto-pause-failures"] {
		if p.autoPause < 0 {
			return patch, false, usagef("--auto-pause-failures must not be negative")
		}
		patch.AutoPauseFailures = ptr(p.autoPause)
	}
	if set["on-demand-bypass"] {
		patch.OnDemandBypassesLimits = ptr(p.onDemandBypass)
	}
	return patch, patch != (v1.PolicyPatch{}), nil
}

// parseRate parses N/DUR ("20/1h", "5/30m", "100/d"); a bare unit means
// one of it.
func parseRate(s string) (int, time.Duration, error) {
	bad := usagef("--rate %q: want N/DURATION, e.g. 20/1h", s)
	ns, ds, ok := strings.Cut(s, "/")
	if !ok {
		return 0, 0, bad
	}
	n, err := strconv.Atoi(strings.TrimSpace(ns))
	if err != nil || n < 0 {
		return 0, 0, bad
	}
	ds = strings.TrimSpace(ds)
	if ds == "s" || ds == "m" || ds == "h" || ds == "d" {
		ds = "1" + ds
	}
	d, ok := parseAge(ds)
	if !ok || d <= 0 {
		return 0, 0, bad
	}
	return n, d, nil
}

func ptr[T any](v T) *T { return &v }

// defaultPolicy is store.DefaultPolicy in wire form.
func defaultPolicy() v1.Policy {
	p := store.DefaultPolicy()
	return v1.Policy{
		Paused:                 p.Paused,
		MaxUpdatesPerPeriod:    p.MaxUpdatesPerPeriod,
		Period:                 p.Period.String(),
		MaxInProgress:          p.MaxInProgress,
		RolloutPercent:         p.RolloutPercent,
		RampDuration:           p.RampDuration.String(),
		Windows:                append([]string{}, p.Windows...),
		TimeZone:               p.TimeZone,
		UpdateTimeout:          p.UpdateTimeout.String(),
		AutoPauseFailures:      p.AutoPauseFailures,
		OnDemandBypassesLimits: p.OnDemandBypassesLimits,
	}
}

// applyPatch returns p with the non-nil fields of patch.
func applyPatch(p v1.Policy, patch v1.PolicyPatch) v1.Policy {
	set := func(dst *string, v *string) {
		if v != nil {
			*dst = *v
		}
	}
	if patch.MaxUpdatesPerPeriod != nil {
		p.MaxUpdatesPerPeriod = *patch.MaxUpdatesPerPeriod
	}
	set(&p.Period, patch.Period)
	if patch.MaxInProgress != nil {
		p.MaxInProgress = *patch.MaxInProgress
	}
	if patch.RolloutPercent != nil {
		p.RolloutPercent = *patch.RolloutPercent
	}
	set(&p.RampDuration, patch.RampDuration)
	if patch.Windows != nil {
		p.Windows = *patch.Windows
	}
	set(&p.TimeZone, patch.TimeZone)
	set(&p.UpdateTimeout, patch.UpdateTimeout)
	if patch.AutoPauseFailures != nil {
		p.AutoPauseFailures = *patch.AutoPauseFailures
	}
	if patch.OnDemandBypassesLimits != nil {
		p.OnDemandBypassesLimits = *patch.OnDemandBypassesLimits
	}
	return p
}

// Human descriptions of policy fields, shared by group show and list.

func describeRate(p v1.Policy) string {
	if p.MaxUpdatesPerPeriod <= 0 {
		return "unlimited"
	}
	return fmt.Sprintf("%d/%s", p.MaxUpdatesPerPeriod, humanDuration(p.Period))
}

func describeMaxInProgress(p v1.Policy) string {
	if p.MaxInProgress <= 0 {
		return "unlimited"
	}
	return strconv.Itoa(p.MaxInProgress)
}

func describePercent(p v1.Policy) string {
	s := percent(p.RolloutPercent)
	if d, err := time.ParseDuration(p.RampDuration); err == nil && d > 0 && p.RolloutPercent < 100 {
		s += ", ramping to 100% over " + humanDuration(p.RampDuration)
	}
	return s
}

func describeWindows(p v1.Policy) string {
	if len(p.Windows) == 0 {
		return "always"
	}
	tz := p.TimeZone
	if tz == "" {
		tz = "UTC"
	}
	return strings.Join(p.Windows, "; ") + " (" + tz + ")"
}

func describeTimeout(p v1.Policy) string {
	if d, err := time.ParseDuration(p.UpdateTimeout); err == nil && d == 0 {
		return "never"
	}
	return humanDuration(p.UpdateTimeout)
}

func describeAutoPause(p v1.Policy) string {
	switch {
	case p.AutoPauseFailures <= 0:
		return "off"
	case p.AutoPauseFailures == 1:
		return "after 1 failed machine"
	}
	return fmt.Sprintf("after %d failed machines", p.AutoPauseFailures)
}

func describeOnDemand(p v1.Policy) string {
	if p.OnDemandBypassesLimits {
		return "bypasses rate, in-progress and percent limits"
	}
	return "subject to all limits"
}

// addPolicy adds the policy lines to a fields block.
func addPolicy(f *fields, p v1.Policy) {
	f.heading("Policy")
	f.add("  Rate", describeRate(p))
	f.add("  Max in progress", describeMaxInProgress(p))
	f.add("  Rollout percent", describePercent(p))
	f.add("  Windows", describeWindows(p))
	f.add("  Update timeout", describeTimeout(p))
	f.add("  Auto-pause", describeAutoPause(p))
	f.add("  On-demand checks", describeOnDemand(p))
}
