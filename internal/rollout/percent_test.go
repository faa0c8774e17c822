package rollout

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/flotilla/flotilla/internal/store"
)

func TestCurrentPercent(t *testing.T) {
	start := time.Date(2024, 3, 4, 10, 0, 0, 0, time.UTC)
	ramp := func(pct float64, d time.Duration) store.Policy {
		return store.Policy{RolloutPercent: pct, RampDuration: d}
	}
	tests := []struct {
		name      string
		p         store.Policy
		startedAt time.Time
		now       time.Time
		want      float64
	}{
		{"no ramp", ramp(25, 0), start, start.Add(100 * time.Hour), 25},
		{"everyone", ramp(100, 0), start, start, 100},
		{"zero policy is nobody", store.Policy{}, start, start, 0},
		{"clamped above", ramp(150, 0), start, start, 100},
		{"clamped below", ramp(-5, 0), start, start, 0},
		{"NaN is zero", ramp(math.NaN(), 0), start, start, 0},
		{"negative ramp is no ramp", ramp(10, -time.Hour), start, start.Add(time.Hour), 10},
		{"ramp at 0 %", ramp(0, 10*time.Hour), start, start, 0},
		{"ramp at 50 %", ramp(0, 10*time.Hour), start, start.Add(5 * time.Hour), 50},
		{"ramp at 100 %", ramp(0, 10*time.Hour), start, start.Add(10 * time.Hour), 100},
		{"ramp after the end", ramp(0, 10*time.Hour), start, start.Add(30 * time.Hour), 100},
		{"ramp from 20 % at half time", ramp(20, 10*time.Hour), start, start.Add(5 * time.Hour), 60},
		{"ramp from 20 % at 0", ramp(20, 10*time.Hour), start, start, 20},
		{"ramp not started", ramp(10, 10*time.Hour), time.Time{}, start, 10},
		{"now before start (skew)", ramp(10, 10*time.Hour), start, start.Add(-time.Hour), 10},
		{"ramp from 100 %", ramp(100, 10*time.Hour), start, start, 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := CurrentPercent(tt.p, tt.startedAt, tt.now)
			if math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("CurrentPercent = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestBucketGolden pins the hash scheme: changing it would reshuffle every
// running rollout, moving machines out of cohorts they were admitted to.
func TestBucketGolden(t *testing.T) {
	tests := []struct {
		id, version string
		want        float64
	}{
		{"e8cb1a8e1d7e4b8f9e4c1a2b3c4d5e6f", "3815.2.0", bucketGoldenA},
		{"e8cb1a8e1d7e4b8f9e4c1a2b3c4d5e6f", "3815.2.1", bucketGoldenB},
	}
	for _, tt := range tests {
		if got := Bucket(tt.id, tt.version); got != tt.want {
			t.Errorf("Bucket(%q, %q) = %v, want %v", tt.id, tt.version, got, tt.want)
		}
	}
}

// Computed independently: first 8 bytes of SHA-256("<id>\x00<version>"),
// big-endian, shifted right by 11, divided by 2^53, times 100.
const (
	bucketGoldenA = 44.80505965843417
	bucketGoldenB = 13.173863891358216
)

func TestBucketStableAndInRange(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 1000; i++ {
		id := fmt.Sprintf("%016x%016x", r.Uint64(), r.Uint64())
		b := Bucket(id, "1.0.0")
		if b < 0 || b >= 100 {
			t.Fatalf("Bucket(%q) = %v, outside [0, 100)", id, b)
		}
		if again := Bucket(id, "1.0.0"); again != b {
			t.Fatalf("Bucket(%q) not stable: %v then %v", id, b, again)
		}
	}
	// The separator keeps concatenations apart.
	if Bucket("ab", "c") == Bucket("a", "bc") {
		t.Error(`Bucket("ab", "c") == Bucket("a", "bc")`)
	}
}

func TestEligibleDistribution(t *testing.T) {
	const n = 10000
	r := rand.New(rand.NewPCG(42, 7))
	inA, inB, inBoth := 0, 0, 0
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("%016x%016x", r.Uint64(), r.Uint64())
		a := Eligible(id, "3815.2.0", 25)
		b := Eligible(id, "3815.2.1", 25)
		if a {
			inA++
		}
		if b {
			inB++
		}
		if a && b {
			inBoth++
		}
		// A growing percentage never drops a machine.
		if a && !Eligible(id, "3815.2.0", 25.5) {
			t.Fatalf("%s eligible at 25 %% but not at 25.5 %%", id)
		}
	}
	for _, got := range []int{inA, inB} {
		if got < n*23/100 || got > n*27/100 {
			t.Errorf("%d of %d eligible at 25 %%, want 23–27 %%", got, n)
		}
	}
	// Independent cohorts per version overlap in about 25 % × 25 % = 6.25 %;
	// the same cohort every time would overlap in 25 %.
	if inBoth > n*9/100 {
		t.Errorf("%d of %d eligible for both versions, want about 6.25 %%: cohorts do not change per version", inBoth, n)
	}
}

func TestEligibleEdges(t *testing.T) {
	tests := []struct {
		percent float64
		want    bool
	}{
		{100, true},
		{100.5, true},
		{math.Inf(1), true},
		{0, false},
		{-1, false},
		{math.NaN(), false},
	}
	for _, tt := range tests {
		for i := 0; i < 100; i++ {
			id := fmt.Sprintf("machine-%d", i)
			if got := Eligible(id, "1.0.0", tt.percent); got != tt.want {
				t.Fatalf("Eligible(%q, %v) = %v, want %v", id, tt.percent, got, tt.want)
			}
		}
	}
}
