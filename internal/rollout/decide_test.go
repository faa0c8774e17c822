package rollout

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/flotilla/flotilla/internal/store"
)

const testVersion = "3815.2.0"

// machineInBucket finds a machine id whose Bucket for testVersion lies in
// [lo, hi), so percentage cases do not depend on hand-picked hashes.
func machineInBucket(t *testing.T, lo, hi float64) string {
	t.Helper()
	for i := 0; i < 100000; i++ {
		id := fmt.Sprintf("machine-%d", i)
		if b := Bucket(id, testVersion); b >= lo && b < hi {
			return id
		}
	}
	t.Fatalf("no machine id with bucket in [%v, %v)", lo, hi)
	return ""
}

func TestDecide(t *testing.T) {
	// Monday 4 March 2024, 10:00 UTC.
	now := time.Date(2024, 3, 4, 10, 0, 0, 0, time.UTC)
	low := machineInBucket(t, 0, 10)    // early in the rollout order
	mid30 := machineInBucket(t, 25, 35) // in at 50 %, out at 20 %
	mid70 := machineInBucket(t, 65, 75) // out at 50 %
	late := machineInBucket(t, 99, 100) // last in the rollout order

	open := store.Policy{RolloutPercent: 100}
	with := func(f func(*store.Policy)) store.Policy {
		p := open
		f(&p)
		return p
	}
	const (
		weekend  = "Sat,Sun 00:00-24:00" // closed on Monday
		business = "Mon-Fri 09:00-17:00" // open on Monday 10:00
	)
	limits := func(p *store.Policy) {
		p.MaxUpdatesPerPeriod = 10
		p.Period = time.Hour
		p.MaxInProgress = 5
	}
	full := store.GroupCounts{GrantedInPeriod: 10, InProgress: 5}

	tests := []struct {
		name       string
		in         Input
		want       Reason
		wantDetail string // substring of Detail; "" = not checked
	}{
		{name: "everyone, no limits", in: Input{Policy: open}, want: ReasonGranted, wantDetail: "update granted"},
		{name: "default policy grants", in: Input{Policy: store.DefaultPolicy()}, want: ReasonGranted},

		// 1. Pause, never bypassed, before everything else.
		{name: "paused", in: Input{Policy: with(func(p *store.Policy) { p.Paused = true })}, want: ReasonPaused, wantDetail: "paused"},
		{name: "paused and outside window", in: Input{Policy: with(func(p *store.Policy) {
			p.Paused = true
			p.Windows = []string{weekend}
		})}, want: ReasonPaused},
		{name: "paused and every limit hit", in: Input{Policy: with(func(p *store.Policy) {
			p.Paused = true
			p.RolloutPercent = 0
			limits(p)
		}), Counts: full}, want: ReasonPaused},
		{name: "paused, on-demand bypass", in: Input{OnDemand: true, Policy: with(func(p *store.Policy) {
			p.Paused = true
			p.OnDemandBypassesLimits = true
		})}, want: ReasonPaused},

		// 2. Windows, never bypassed.
		{name: "outside window", in: Input{Policy: with(func(p *store.Policy) { p.Windows = []string{weekend} })},
			want: ReasonOutsideWindow, wantDetail: "next window opens Sat 2024-03-09 00:00 UTC"},
		{name: "inside window", in: Input{Policy: with(func(p *store.Policy) { p.Windows = []string{weekend, business} })},
			want: ReasonGranted},
		{name: "outside window in time zone", in: Input{Policy: with(func(p *store.Policy) {
			p.Windows = []string{business}
			p.TimeZone = "America/Los_Angeles" // 02:00 there
		})}, want: ReasonOutsideWindow, wantDetail: "America/Los_Angeles"},
		{name: "outside window, on-demand bypass", in: Input{OnDemand: true, Policy: with(func(p *store.Policy) {
			p.Windows = []string{weekend}
			p.OnDemandBypassesLimits = true
		})}, want: ReasonOutsideWindow},
		{name: "outside window before percentage", in: Input{Policy: with(func(p *store.Policy) {
			p.Windows = []string{weekend}
			p.RolloutPercent = 0
		})}, want: ReasonOutsideWindow},
		{name: "outside window before limits", in: Input{Policy: with(func(p *store.Policy) {
			p.Windows = []string{weekend}
			limits(p)
		}), Counts: full}, want: ReasonOutsideWindow},
		{name: "window start is inclusive", in: Input{Now: time.Date(2024, 3, 4, 9, 0, 0, 0, time.UTC),
			Policy: with(func(p *store.Policy) { p.Windows = []string{business} })}, want: ReasonGranted},
		{name: "window end is exclusive", in: Input{Now: time.Date(2024, 3, 4, 17, 0, 0, 0, time.UTC),
			Policy: with(func(p *store.Policy) { p.Windows = []string{business} })}, want: ReasonOutsideWindow},
		{name: "invalid window holds", in: Input{Policy: with(func(p *store.Policy) { p.Windows = []string{"Mon-Fry 09:00-17:00"} })},
			want: ReasonOutsideWindow, wantDetail: `unknown day "Fry"`},
		{name: "invalid time zone holds", in: Input{Policy: with(func(p *store.Policy) {
			p.Windows = []string{business}
			p.TimeZone = "Mars/Olympus"
		})}, want: ReasonOutsideWindow, wantDetail: "Mars/Olympus"},

		// 3. Percentage.
		{name: "zero percent", in: Input{MachineID: low, Policy: with(func(p *store.Policy) { p.RolloutPercent = 0 })},
			want: ReasonPercentage, wantDetail: "covers 0 % of machines"},
		{name: "inside percentage", in: Input{MachineID: mid30, Policy: with(func(p *store.Policy) { p.RolloutPercent = 50 })},
			want: ReasonGranted},
		{name: "outside percentage", in: Input{MachineID: mid70, Policy: with(func(p *store.Policy) { p.RolloutPercent = 50 })},
			want: ReasonPercentage, wantDetail: "covers 50 % of machines"},
		{name: "zero percent, on-demand bypass", in: Input{OnDemand: true, MachineID: mid70, Policy: with(func(p *store.Policy) {
			p.RolloutPercent = 0
			p.OnDemandBypassesLimits = true
		})}, want: ReasonGranted, wantDetail: "on-demand"},
		{name: "zero percent, on-demand without bypass", in: Input{OnDemand: true, MachineID: mid70, Policy: with(func(p *store.Policy) {
			p.RolloutPercent = 0
		})}, want: ReasonPercentage},
		{name: "zero percent, bypass set but not on-demand", in: Input{MachineID: mid70, Policy: with(func(p *store.Policy) {
			p.RolloutPercent = 0
			p.OnDemandBypassesLimits = true
		})}, want: ReasonPercentage},
		{name: "percentage before limits", in: Input{MachineID: mid70, Policy: with(func(p *store.Policy) {
			p.RolloutPercent = 50
			limits(p)
		}), Counts: full}, want: ReasonPercentage},

		// Ramps over 10 h, from 20 % or from 0 %.
		{name: "ramp at 0 % of duration", in: Input{MachineID: mid30, RolloutStartedAt: now, Policy: with(func(p *store.Policy) {
			p.RolloutPercent = 20
			p.RampDuration = 10 * time.Hour
		})}, want: ReasonPercentage},
		{name: "ramp at 0 % of duration, early machine", in: Input{MachineID: low, RolloutStartedAt: now, Policy: with(func(p *store.Policy) {
			p.RolloutPercent = 20
			p.RampDuration = 10 * time.Hour
		})}, want: ReasonGranted},
		{name: "ramp at 50 % of duration, in", in: Input{MachineID: mid30, RolloutStartedAt: now.Add(-5 * time.Hour), Policy: with(func(p *store.Policy) {
			p.RolloutPercent = 0
			p.RampDuration = 10 * time.Hour
		})}, want: ReasonGranted},
		{name: "ramp at 50 % of duration, out", in: Input{MachineID: mid70, RolloutStartedAt: now.Add(-5 * time.Hour), Policy: with(func(p *store.Policy) {
			p.RolloutPercent = 0
			p.RampDuration = 10 * time.Hour
		})}, want: ReasonPercentage, wantDetail: "covers 50 % of machines"},
		{name: "ramp at 100 % of duration", in: Input{MachineID: late, RolloutStartedAt: now.Add(-10 * time.Hour), Policy: with(func(p *store.Policy) {
			p.RolloutPercent = 0
			p.RampDuration = 10 * time.Hour
		})}, want: ReasonGranted},
		{name: "ramp not started", in: Input{MachineID: mid30, Policy: with(func(p *store.Policy) {
			p.RolloutPercent = 0
			p.RampDuration = 10 * time.Hour
		})}, want: ReasonPercentage},

		// 4. Rate limit.
		{name: "rate limit reached", in: Input{Policy: with(limits), Counts: store.GroupCounts{GrantedInPeriod: 10}},
			want: ReasonRateLimit, wantDetail: "10 of 10 updates per 1h already granted"},
		{name: "rate limit exceeded", in: Input{Policy: with(limits), Counts: store.GroupCounts{GrantedInPeriod: 12}},
			want: ReasonRateLimit},
		{name: "rate limit not reached", in: Input{Policy: with(limits), Counts: store.GroupCounts{GrantedInPeriod: 9, InProgress: 4}},
			want: ReasonGranted},
		{name: "rate limit zero is unlimited", in: Input{Policy: with(func(p *store.Policy) { p.Period = time.Hour }),
			Counts: store.GroupCounts{GrantedInPeriod: 1 << 30}}, want: ReasonGranted},
		{name: "rate limit without period", in: Input{Policy: with(func(p *store.Policy) { p.MaxUpdatesPerPeriod = 1 }),
			Counts: store.GroupCounts{GrantedInPeriod: 1}}, want: ReasonRateLimit, wantDetail: "in the current period"},
		{name: "rate limit period wording", in: Input{Policy: with(func(p *store.Policy) {
			p.MaxUpdatesPerPeriod = 3
			p.Period = 90 * time.Minute
		}), Counts: store.GroupCounts{GrantedInPeriod: 3}}, want: ReasonRateLimit, wantDetail: "3 of 3 updates per 1h30m already granted"},
		{name: "rate limit before in-progress limit", in: Input{Policy: with(limits), Counts: full}, want: ReasonRateLimit},

		// 5. In-progress limit.
		{name: "in-progress limit reached", in: Input{Policy: with(limits), Counts: store.GroupCounts{InProgress: 5}},
			want: ReasonInProgressLimit, wantDetail: "5 of at most 5 updates already in progress"},
		{name: "in-progress zero is unlimited", in: Input{Policy: open, Counts: store.GroupCounts{InProgress: 1 << 30}},
			want: ReasonGranted},

		// On-demand bypass of 4 and 5.
		{name: "limits hit, on-demand bypass", in: Input{OnDemand: true, Policy: with(func(p *store.Policy) {
			limits(p)
			p.OnDemandBypassesLimits = true
		}), Counts: full}, want: ReasonGranted},
		{name: "limits hit, on-demand without bypass", in: Input{OnDemand: true, Policy: with(limits), Counts: full},
			want: ReasonRateLimit},
		{name: "in-progress hit, on-demand without bypass", in: Input{OnDemand: true, Policy: with(limits),
			Counts: store.GroupCounts{InProgress: 5}}, want: ReasonInProgressLimit},
		{name: "everything passes with windows and limits", in: Input{MachineID: mid30, Policy: with(func(p *store.Policy) {
			limits(p)
			p.RolloutPercent = 50
			p.Windows = []string{business}
			p.TimeZone = "Europe/Berlin"
		}), Counts: store.GroupCounts{GrantedInPeriod: 9, InProgress: 4}}, want: ReasonGranted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := tt.in
			if in.Now.IsZero() {
				in.Now = now
			}
			if in.MachineID == "" {
				in.MachineID = late
			}
			if in.TargetVersion == "" {
				in.TargetVersion = testVersion
			}
			got := Decide(in)
			if got.Reason != tt.want || got.Grant != (tt.want == ReasonGranted) {
				t.Fatalf("Decide = %+v, want reason %q", got, tt.want)
			}
			if !strings.Contains(got.Detail, tt.wantDetail) {
				t.Errorf("Detail = %q, want it to contain %q", got.Detail, tt.wantDetail)
			}
			if got.Detail == "" {
				t.Error("empty Detail")
			}
		})
	}
}

// randomInput draws inputs that exercise every check, with counts near the
// limits so both sides of each comparison occur.
func randomInput(r *rand.Rand) Input {
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	pick := func(xs ...string) string { return xs[r.IntN(len(xs))] }
	var windows []string
	switch r.IntN(5) {
	case 1:
		windows = []string{"Mon-Fri 09:00-17:00"}
	case 2:
		windows = []string{"Sat,Sun 00:00-24:00", "daily 22:00-02:00"}
	case 3:
		windows = []string{pick("Mon-Fry 09:00-17:00", "daily 00:00-24:00")}
	}
	p := store.Policy{
		Paused:                 r.IntN(8) == 0,
		MaxUpdatesPerPeriod:    r.IntN(4),
		Period:                 time.Duration(r.IntN(3)) * time.Hour,
		MaxInProgress:          r.IntN(4),
		RolloutPercent:         []float64{0, 10, 50, 100, r.Float64() * 100}[r.IntN(5)],
		RampDuration:           time.Duration(r.IntN(3)) * 24 * time.Hour,
		Windows:                windows,
		TimeZone:               pick("", "UTC", "Europe/Berlin", "Asia/Kolkata", "Mars/Olympus"),
		OnDemandBypassesLimits: r.IntN(2) == 0,
	}
	var started time.Time
	if r.IntN(4) != 0 {
		started = base.Add(time.Duration(r.IntN(365*24)) * time.Hour)
	}
	return Input{
		Now:              base.Add(time.Duration(r.IntN(366*24*60)) * time.Minute),
		Policy:           p,
		RolloutStartedAt: started,
		MachineID:        fmt.Sprintf("%016x", r.Uint64()),
		TargetVersion:    pick("1.0.0", "2.0.0", "3815.2.0"),
		OnDemand:         r.IntN(3) == 0,
		Counts:           store.GroupCounts{GrantedInPeriod: r.IntN(5), InProgress: r.IntN(5)},
	}
}

// TestDecideMonotonicInCounts checks the property callers rely on to reject
// cheaply before reading counts: counts only ever turn a grant into a hold.
func TestDecideMonotonicInCounts(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	reasons := map[Reason]int{}
	for i := 0; i < 20000; i++ {
		in := randomInput(r)
		got := Decide(in)
		reasons[got.Reason]++

		zero := in
		zero.Counts = store.GroupCounts{}
		cheap := Decide(zero)
		// A hold with zero counts is the final answer for any counts.
		if !cheap.Grant {
			if diff := cmp.Diff(cheap, got); diff != "" {
				t.Fatalf("zero-count hold differs from the real decision for %+v (-zero +real):\n%s", in, diff)
			}
		}
		// A grant with real counts implies a grant with zero counts.
		if got.Grant && !cheap.Grant {
			t.Fatalf("granted with counts %+v but held with zero counts: %+v", in.Counts, in)
		}
		// More of either count never turns a hold into a grant.
		more := in
		more.Counts.GrantedInPeriod += r.IntN(3)
		more.Counts.InProgress += r.IntN(3)
		if Decide(more).Grant && !got.Grant {
			t.Fatalf("larger counts %+v granted where %+v held: %+v", more.Counts, in.Counts, in)
		}
	}
	// The generator must reach every reason, or the property is vacuous.
	for _, r := range []Reason{ReasonGranted, ReasonPaused, ReasonOutsideWindow, ReasonPercentage, ReasonRateLimit, ReasonInProgressLimit} {
		if reasons[r] == 0 {
			t.Errorf("no generated input gave reason %q (got %v)", r, reasons)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	tests := map[time.Duration]string{
		time.Hour:                    "1h",
		24 * time.Hour:               "24h",
		90 * time.Minute:             "1h30m",
		30 * time.Minute:             "30m",
		45 * time.Second:             "45s",
		time.Hour + 5*time.Second:    "1h0m5s",
		10*time.Minute + time.Second: "10m1s",
	}
	for d, want := range tests {
		if got := formatDuration(d); got != want {
			t.Errorf("formatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

// BenchmarkDecide measures the hot path: every update check of a group with
// windows in a time zone, a percentage and limits.
func BenchmarkDecide(b *testing.B) {
	in := Input{
		Now: time.Date(2024, 3, 4, 10, 0, 0, 0, time.UTC),
		Policy: store.Policy{
			MaxUpdatesPerPeriod: 10,
			Period:              time.Hour,
			MaxInProgress:       5,
			RolloutPercent:      100,
			Windows:             []string{"Mon-Fri 09:00-17:00", "Sat 22:00-02:00"},
			TimeZone:            "Europe/Berlin",
		},
		MachineID:     "e8cb1a8e1d7e4b8f9e4c1a2b3c4d5e6f",
		TargetVersion: testVersion,
	}
	for b.Loop() {
		if !Decide(in).Grant {
			b.Fatal("not granted")
		}
	}
}
