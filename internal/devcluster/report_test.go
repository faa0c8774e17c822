package devcluster

import (
	"strings"
	"testing"

	"github.com/flotilla/flotilla/internal/store"
)

func TestJudge(t *testing.T) {
	st := func(kv ...any) map[store.Status]int {
		m := map[store.Status]int{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(store.Status)] = kv[i+1].(int)
		}
		return m
	}
	tests := []struct {
		name string
		r    Report
		want Outcome
	}{
		{"all complete", Report{Machines: 3, Registered: 3, ByVersion: map[string]int{"1.0.1": 3}, ByStatus: st(store.StatusComplete, 3)}, OutcomeComplete},
		{"last one still holds its reboot slot", Report{Machines: 3, Registered: 3, ByVersion: map[string]int{"1.0.1": 3}, ByStatus: st(store.StatusComplete, 3), Rebooting: 1}, OutcomeRunning},
		{"one still on the old version", Report{Machines: 3, Registered: 3, ByVersion: map[string]int{"1.0.1": 2, "1.0.0": 1}, ByStatus: st(store.StatusComplete, 2, store.StatusIdle, 1)}, OutcomeRunning},
		{"one installed, waiting for reboot", Report{Machines: 3, Registered: 3, ByVersion: map[string]int{"1.0.1": 2, "1.0.0": 1}, ByStatus: st(store.StatusComplete, 2, store.StatusInstalled, 1)}, OutcomeRunning},
		{"not every machine registered", Report{Machines: 3, Registered: 2, ByVersion: map[string]int{"1.0.1": 2}, ByStatus: st(store.StatusComplete, 2)}, OutcomeRunning},
		{"paused after a rollback, settled", Report{Machines: 3, Registered: 3, ByVersion: map[string]int{"1.0.1": 1, "1.0.0": 2}, ByStatus: st(store.StatusComplete, 1, store.StatusRolledBack, 1, store.StatusOnHold, 1), Paused: true, Failed: []string{"node-002"}}, OutcomePaused},
		{"paused, but one update still in flight", Report{Machines: 3, Registered: 3, ByVersion: map[string]int{"1.0.0": 3}, ByStatus: st(store.StatusDownloading, 1, store.StatusRolledBack, 1, store.StatusOnHold, 1), Paused: true, Failed: []string{"node-002"}}, OutcomeRunning},
		{"paused by hand, nothing failed", Report{Machines: 3, Registered: 3, ByVersion: map[string]int{"1.0.0": 3}, ByStatus: st(store.StatusOnHold, 3), Paused: true}, OutcomeRunning},
		{"failed but not paused", Report{Machines: 3, Registered: 3, ByVersion: map[string]int{"1.0.0": 3}, ByStatus: st(store.StatusError, 1, store.StatusOnHold, 2), Failed: []string{"node-001"}}, OutcomeRunning},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := judge(tt.r, "1.0.1"); got != tt.want {
				t.Errorf("judge = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestMaxHeld(t *testing.T) {
	acts := []store.Activity{
		{Kind: "lock-granted", Message: "granted slot (token 3, 1 of max 2 held)"},
		{Kind: "lock-granted", Message: "granted slot (token 5, 2 of max 2 held)"},
		{Kind: "lock-released", Message: "released slot (token 3)"},
		// A message that only looks like a grant does not count.
		{Kind: "lock-max-changed", Message: "granted slot (token 9, 7 of max 9 held)"},
		{Kind: "lock-granted", Message: "granted slot (token 7, 1 of max 2 held)"},
	}
	if got := maxHeld(acts); got != 2 {
		t.Errorf("maxHeld = %d, want 2", got)
	}
	if got := maxHeld(nil); got != 0 {
		t.Errorf("maxHeld(nil) = %d", got)
	}
}

func TestProgressLine(t *testing.T) {
	r := Report{Machines: 10, ByVersion: map[string]int{"1.0.1": 3, "1.0.0": 7},
		ByStatus:  map[store.Status]int{store.StatusComplete: 3, store.StatusInstalled: 3, store.StatusDownloading: 1, store.StatusOnHold: 3},
		Rebooting: 2, Paused: true}
	got := progressLine(r, "1.0.1")
	for _, want := range []string{"1.0.1 on 3/10", "complete 3", "downloading 1", "waiting for reboot 1", "rebooting 2", "on hold 3", "PAUSED"} {
		if !strings.Contains(got, want) {
			t.Errorf("progress line %q lacks %q", got, want)
		}
	}
	if strings.Contains(got, "error") || strings.Contains(got, "idle") {
		t.Errorf("progress line %q shows empty categories", got)
	}
}

func TestValidate(t *testing.T) {
	ok := Defaults()
	ok.DataDir = t.TempDir()
	if err := ok.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, tt := range []struct {
		name string
		mod  func(*Options)
		want string
	}{
		{"no machines", func(o *Options) { o.Machines = 0 }, "--machines"},
		{"no reboots", func(o *Options) { o.MaxReboots = 0 }, "--max-reboots"},
		{"more failing than machines", func(o *Options) { o.Fail = 11 }, "--fail"},
		{"not newer", func(o *Options) { o.ToVersion = "1.0.0" }, "not newer"},
		{"no data dir", func(o *Options) { o.DataDir = "" }, "data directory"},
	} {
		o := ok
		tt.mod(&o)
		if err := o.Validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want an error about %q", tt.name, err, tt.want)
		}
	}
}
