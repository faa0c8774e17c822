package rollout

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/flotilla/flotilla/internal/store"
)

// ErrInvalidPolicy matches (errors.Is) every error ValidatePolicy returns.
var ErrInvalidPolicy = errors.New("invalid policy")

// FieldError is one problem with one policy field. Field is the field's
// JSON name as API clients write it ("max_in_progress", "windows[1]"),
// Value the offending value as text, Err what is wrong with it.
//
// A FieldError matches ErrInvalidPolicy under errors.Is, and unwraps to Err
// (for windows, an error matching ErrInvalidWindow).
type FieldError struct {
	Field string
	Value string
	Err   error
}

func (e *FieldError) Error() string {
	return "invalid policy: " + e.Field + ": " + e.Err.Error()
}

// Unwrap returns the underlying problem.
func (e *FieldError) Unwrap() error { return e.Err }

// Is makes every FieldError match ErrInvalidPolicy without putting the
// sentinel into Err's chain and message.
func (e *FieldError) Is(target error) bool { return target == ErrInvalidPolicy }

// ValidatePolicy checks a policy before it is stored, so that Decide never
// meets a policy it has to guess about. It returns nil or one *FieldError
// per problem, joined with errors.Join so that an operator sees every
// mistake at once. It rejects:
//
//   - negative max_updates_per_period, max_in_progress, auto_pause_failures;
//   - negative period, ramp_duration, update_timeout;
//   - max_updates_per_period > 0 with period <= 0 (a limit per no time);
//   - rollout_percent outside 0–100 (or NaN);
//   - windows that do not parse (see ParseWindow);
//   - a time_zone that is not "" or a loadable IANA name ("Local" is
//     refused, as it would depend on the server's configuration).
func ValidatePolicy(p store.Policy) error {
	var errs []error
	add := func(field, value string, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Value: value, Err: fmt.Errorf(format, args...)})
	}
	nonNegInt := func(field string, v int) {
		if v < 0 {
			add(field, strconv.Itoa(v), "must not be negative (got %d)", v)
		}
	}
	nonNegDur := func(field string, d time.Duration) {
		if d < 0 {
			add(field, d.String(), "must not be negative (got %s)", d)
		}
	}

	nonNegInt("max_updates_per_period", p.MaxUpdatesPerPeriod)
	nonNegDur("period", p.Period)
	if p.MaxUpdatesPerPeriod > 0 && p.Period == 0 {
		add("period", p.Period.String(), "must be positive when max_updates_per_period is set")
	}
	nonNegInt("max_in_progress", p.MaxInProgress)
	if r := p.RolloutPercent; math.IsNaN(r) || r < 0 || r > 100 {
		v := strconv.FormatFloat(r, 'g', -1, 64)
		add("rollout_percent", v, "must be between 0 and 100 (got %s)", v)
	}
	nonNegDur("ramp_duration", p.RampDuration)
	nonNegDur("update_timeout", p.UpdateTimeout)
	nonNegInt("auto_pause_failures", p.AutoPauseFailures)
	for i, s := range p.Windows {
		if _, err := ParseWindow(s); err != nil {
			errs = append(errs, &FieldError{Field: fmt.Sprintf("windows[%d]", i), Value: s, Err: err})
		}
	}
	if _, err := loadLocation(p.TimeZone); err != nil {
		errs = append(errs, &FieldError{Field: "time_zone", Value: p.TimeZone, Err: err})
	}
	return errors.Join(errs...)
}
