package rollout

import (
	"fmt"
	"strings"
	"time"

	"github.com/flotilla/flotilla/internal/store"
)

// Input is everything a decision needs. Decide reads nothing else, in
// particular not the clock.
type Input struct {
	Now              time.Time
	Policy           store.Policy
	RolloutStartedAt time.Time // when the group started rolling out TargetVersion
	MachineID        string
	TargetVersion    string
	OnDemand         bool              // installsource="ondemandupdate"
	Counts           store.GroupCounts // grants in the current period, updates in progress
}

// Reason says why a machine was granted an update or held back. The words
// are part of the API (shown to operators, used in metrics labels).
type Reason string

// Reasons, one per check of Decide.
const (
	ReasonGranted         Reason = "granted"
	ReasonPaused          Reason = "paused"
	ReasonOutsideWindow   Reason = "outside-window"    // outside every update window, or the windows are invalid
	ReasonPercentage      Reason = "percentage"        // machine not yet in the rollout percentage
	ReasonRateLimit       Reason = "rate-limit"        // max updates per period reached
	ReasonInProgressLimit Reason = "in-progress-limit" // max updates in progress reached
)

// Decision is the outcome of Decide.
type Decision struct {
	Grant  bool
	Reason Reason
	// Detail is one human sentence in lower case without a final period, so
	// callers can embed it, e.g. "10 of 10 updates per 1h already granted".
	Detail string
}

// Decide decides whether the machine described by in is granted an update
// to in.TargetVersion now. It applies the checks in this order and returns
// at the first one that holds the machine back:
//
//  1. Policy.Paused → ReasonPaused.
//  2. Policy.Windows (in Policy.TimeZone): outside every window →
//     ReasonOutsideWindow. No windows means always open. Windows or a time
//     zone that do not parse also hold, with ReasonOutsideWindow: failing
//     closed keeps a typo from updating machines outside their maintenance
//     window (ValidatePolicy rejects such policies before they are stored).
//  3. Percentage: Eligible(MachineID, TargetVersion, CurrentPercent(…))
//     must hold, else ReasonPercentage.
//  4. Policy.MaxUpdatesPerPeriod > 0 and Counts.GrantedInPeriod >= it →
//     ReasonRateLimit. 0 means unlimited.
//  5. Policy.MaxInProgress > 0 and Counts.InProgress >= it →
//     ReasonInProgressLimit. 0 means unlimited.
//  6. Grant, ReasonGranted.
//
// With OnDemand and Policy.OnDemandBypassesLimits, checks 3–5 are skipped;
// checks 1 and 2 never are.
//
// Decide is monotonic in in.Counts, which callers rely on: counts are read
// only by checks 4 and 5, which can only hold. So a hold returned for zero
// counts is the final decision whatever the real counts are, and larger
// counts never turn a hold into a grant. Callers may therefore call Decide
// with zero counts to reject cheaply, and again with the real counts inside
// the transaction that records the grant.
func Decide(in Input) Decision {
	p := in.Policy
	if p.Paused {
		return hold(ReasonPaused, "updates are paused for this group")
	}
	if len(p.Windows) > 0 {
		if d, held := checkWindows(p, in.Now); held {
			return d
		}
	}
	bypass := in.OnDemand && p.OnDemandBypassesLimits
	if !bypass {
		pct := CurrentPercent(p, in.RolloutStartedAt, in.Now)
		if !Eligible(in.MachineID, in.TargetVersion, pct) {
			return hold(ReasonPercentage, fmt.Sprintf(
				"machine is not yet in the rollout of %s: its position is %.2f and the rollout covers %s of machines",
				in.TargetVersion, Bucket(in.MachineID, in.TargetVersion), formatPercent(pct)))
		}
		if limit := p.MaxUpdatesPerPeriod; limit > 0 && in.Counts.GrantedInPeriod >= limit {
			per := "in the current period"
			if p.Period > 0 {
				per = "per " + formatDuration(p.Period)
			}
			return hold(ReasonRateLimit, fmt.Sprintf("%d of %d updates %s already granted",
				in.Counts.GrantedInPeriod, limit, per))
		}
		if limit := p.MaxInProgress; limit > 0 && in.Counts.InProgress >= limit {
			return hold(ReasonInProgressLimit, fmt.Sprintf("%d of at most %d updates already in progress",
				in.Counts.InProgress, limit))
		}
	}
	detail := "update granted"
	if bypass {
		detail = "on-demand update granted; rollout percentage and limits bypassed"
	}
	return Decision{Grant: true, Reason: ReasonGranted, Detail: detail}
}

func hold(r Reason, detail string) Decision {
	return Decision{Grant: false, Reason: r, Detail: detail}
}

// checkWindows returns a hold when now is outside every update window or
// the windows cannot be evaluated.
func checkWindows(p store.Policy, now time.Time) (Decision, bool) {
	open, err := InWindows(p.Windows, p.TimeZone, now)
	if err != nil {
		return hold(ReasonOutsideWindow, fmt.Sprintf(
			"update windows cannot be evaluated, so all updates are held: %v", err)), true
	}
	if open {
		return Decision{}, false
	}
	tz := p.TimeZone
	if tz == "" {
		tz = "UTC"
	}
	detail := fmt.Sprintf("outside the update windows (%s, %s)", strings.Join(p.Windows, "; "), tz)
	if next, ok, err := NextWindowStart(p.Windows, p.TimeZone, now); err == nil && ok {
		detail += "; the next window opens " + next.Format("Mon 2006-01-02 15:04 MST")
	}
	return hold(ReasonOutsideWindow, detail), true
}

// formatDuration prints durations the way people write them: "1h", not
// "1h0m0s".
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func formatPercent(p float64) string {
	s := fmt.Sprintf("%.2f", p)
	s = strings.TrimRight(s, "0")
	s = strings.TrimSuffix(s, ".")
	return s + " %"
}
