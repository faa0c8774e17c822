package rollout

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/flotilla/flotilla/internal/store"
)

// fieldErrors flattens the errors.Join of ValidatePolicy.
func fieldErrors(t *testing.T, err error) []*FieldError {
	t.Helper()
	if err == nil {
		return nil
	}
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{err}
	}
	var out []*FieldError
	for _, e := range errs {
		var fe *FieldError
		if !errors.As(e, &fe) {
			t.Fatalf("%v is not a *FieldError", e)
		}
		out = append(out, fe)
	}
	return out
}

func TestValidatePolicy(t *testing.T) {
	valid := store.DefaultPolicy()
	with := func(f func(*store.Policy)) store.Policy {
		p := valid
		f(&p)
		return p
	}
	tests := []struct {
		name   string
		p      store.Policy
		fields []string // fields in error, in order; nil = valid
	}{
		{"default", valid, nil},
		{"zero policy", store.Policy{}, nil},
		{"everything set", with(func(p *store.Policy) {
			p.MaxUpdatesPerPeriod = 10
			p.MaxInProgress = 5
			p.RolloutPercent = 12.5
			p.RampDuration = 48 * time.Hour
			p.Windows = []string{"Mon-Fri 09:00-17:00", "Sat 22:00-02:00"}
			p.TimeZone = "Europe/Berlin"
			p.OnDemandBypassesLimits = true
		}), nil},
		{"percent bounds", with(func(p *store.Policy) { p.RolloutPercent = 0 }), nil},
		{"negative rate limit", with(func(p *store.Policy) { p.MaxUpdatesPerPeriod = -1 }), []string{"max_updates_per_period"}},
		{"negative period", with(func(p *store.Policy) { p.Period = -time.Hour }), []string{"period"}},
		{"rate limit without period", with(func(p *store.Policy) {
			p.MaxUpdatesPerPeriod = 1
			p.Period = 0
		}), []string{"period"}},
		{"rate limit with negative period reported once", with(func(p *store.Policy) {
			p.MaxUpdatesPerPeriod = 1
			p.Period = -time.Minute
		}), []string{"period"}},
		{"period without rate limit is fine", with(func(p *store.Policy) { p.Period = 0 }), nil},
		{"negative in-progress", with(func(p *store.Policy) { p.MaxInProgress = -3 }), []string{"max_in_progress"}},
		{"percent above 100", with(func(p *store.Policy) { p.RolloutPercent = 100.5 }), []string{"rollout_percent"}},
		{"percent below 0", with(func(p *store.Policy) { p.RolloutPercent = -1 }), []string{"rollout_percent"}},
		{"percent NaN", with(func(p *store.Policy) { p.RolloutPercent = math.NaN() }), []string{"rollout_percent"}},
		{"negative ramp", with(func(p *store.Policy) { p.RampDuration = -1 }), []string{"ramp_duration"}},
		{"negative timeout", with(func(p *store.Policy) { p.UpdateTimeout = -time.Second }), []string{"update_timeout"}},
		{"negative auto-pause", with(func(p *store.Policy) { p.AutoPauseFailures = -1 }), []string{"auto_pause_failures"}},
		{"bad windows", with(func(p *store.Policy) {
			p.Windows = []string{"Mon-Fri 09:00-17:00", "Mon-Fry 09:00-17:00", "Sun 25:00-26:00"}
		}), []string{"windows[1]", "windows[2]"}},
		{"unknown time zone", with(func(p *store.Policy) { p.TimeZone = "Mars/Olympus" }), []string{"time_zone"}},
		{"Local time zone", with(func(p *store.Policy) { p.TimeZone = "Local" }), []string{"time_zone"}},
		{"many problems at once", store.Policy{
			MaxUpdatesPerPeriod: 5,
			MaxInProgress:       -1,
			RolloutPercent:      200,
			Windows:             []string{"nope"},
			TimeZone:            "Nowhere/Special",
		}, []string{"period", "max_in_progress", "rollout_percent", "windows[0]", "time_zone"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidatePolicy(tt.p)
			var got []string
			for _, fe := range fieldErrors(t, err) {
				got = append(got, fe.Field)
			}
			if diff := cmp.Diff(tt.fields, got); diff != "" {
				t.Fatalf("fields with errors (-want +got):\n%s\nerror: %v", diff, err)
			}
			if err != nil && !errors.Is(err, ErrInvalidPolicy) {
				t.Errorf("%v does not match ErrInvalidPolicy", err)
			}
		})
	}
}

func TestFieldErrorMessages(t *testing.T) {
	err := ValidatePolicy(store.Policy{
		MaxInProgress: -1,
		Windows:       []string{"Mon-Fry 09:00-17:00"},
		TimeZone:      "Mars/Olympus",
	})
	fes := fieldErrors(t, err)
	if len(fes) != 3 {
		t.Fatalf("got %d errors, want 3: %v", len(fes), err)
	}
	want := []FieldError{
		{Field: "max_in_progress", Value: "-1"},
		{Field: "windows[0]", Value: "Mon-Fry 09:00-17:00"},
		{Field: "time_zone", Value: "Mars/Olympus"},
	}
	for i, fe := range fes {
		if fe.Field != want[i].Field || fe.Value != want[i].Value {
			t.Errorf("error %d: Field %q Value %q, want %q %q", i, fe.Field, fe.Value, want[i].Field, want[i].Value)
		}
	}
	if got, want := fes[0].Error(), "invalid policy: max_in_progress: must not be negative (got -1)"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if got, want := fes[1].Error(), `invalid policy: windows[0]: window "Mon-Fry 09:00-17:00": unknown day "Fry"`; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if !strings.HasPrefix(fes[2].Error(), `invalid policy: time_zone: time zone "Mars/Olympus"`) {
		t.Errorf("Error() = %q", fes[2].Error())
	}
	// The window error stays reachable through the FieldError.
	if !errors.Is(err, ErrInvalidWindow) {
		t.Error("joined error does not match ErrInvalidWindow")
	}
	if !errors.Is(fes[1], ErrInvalidPolicy) || !errors.Is(fes[1], ErrInvalidWindow) {
		t.Error("window FieldError does not match both sentinels")
	}
	if errors.Is(fes[0], ErrInvalidWindow) {
		t.Error("max_in_progress error matches ErrInvalidWindow")
	}
}
