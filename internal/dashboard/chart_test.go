package dashboard

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/flotilla/flotilla/internal/store"
)

var chartNow = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func sample(ago time.Duration, version string, n int) store.VersionSample {
	return store.VersionSample{AppID: "a", Group: "g", Version: version, Count: n, At: chartNow.Add(-ago)}
}

// pathPoints returns the coordinates a path visits, reading M x y, H x and
// V y commands.
func pathPoints(t *testing.T, d string) (xs, ys []float64) {
	t.Helper()
	for _, m := range regexp.MustCompile(`([MHV])([-0-9.]+)(?: ([-0-9.]+))?`).FindAllStringSubmatch(d, -1) {
		a, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			t.Fatalf("path %q: %v", d, err)
		}
		switch m[1] {
		case "M":
			b, _ := strconv.ParseFloat(m[3], 64)
			xs, ys = append(xs, a), append(ys, b)
		case "H":
			xs = append(xs, a)
		case "V":
			ys = append(ys, a)
		}
	}
	return xs, ys
}

func TestBuildChart(t *testing.T) {
	plotTop, plotBottom := chartPadTop, chartHeight-chartPadBottom
	tests := []struct {
		name    string
		samples []store.VersionSample
		current map[string]int
		span    time.Duration
		// bands: version → latest count, bottom band first
		bands  []string
		latest []int
		peak   []int
		points int
		empty  bool
	}{
		{
			name:   "no machines at all",
			span:   time.Hour,
			empty:  true,
			points: 1,
		},
		{
			name: "a rollout: old version drains into the new one",
			samples: []store.VersionSample{
				sample(50*time.Minute, "1.0.0", 10),
				sample(30*time.Minute, "1.0.0", 6), sample(30*time.Minute, "1.0.1", 4),
				sample(10*time.Minute, "1.0.1", 10),
			},
			current: map[string]int{"1.0.1": 10},
			span:    time.Hour,
			bands:   []string{"1.0.0", "1.0.1"},
			latest:  []int{0, 10},
			peak:    []int{10, 10},
			points:  4,
		},
		{
			name: "samples before the range are left out",
			samples: []store.VersionSample{
				sample(2*time.Hour, "0.9.0", 99),
				sample(30*time.Minute, "1.0.0", 3),
			},
			current: map[string]int{"1.0.0": 3},
			span:    time.Hour,
			bands:   []string{"1.0.0"},
			latest:  []int{3},
			peak:    []int{3},
			points:  2,
		},
		{
			name: "versions beyond the band limit are summed as other",
			samples: []store.VersionSample{
				sample(30*time.Minute, "1.0.0", 1), sample(30*time.Minute, "1.0.1", 2), sample(30*time.Minute, "1.0.2", 3),
				sample(30*time.Minute, "1.0.3", 4), sample(30*time.Minute, "1.0.4", 5), sample(30*time.Minute, "1.0.5", 6),
				sample(30*time.Minute, "1.0.6", 7),
			},
			current: map[string]int{"1.0.6": 28},
			span:    time.Hour,
			// The five biggest by peak keep their bands, oldest at the
			// bottom; 1.0.0 and 1.0.1 become "other", drawn on top.
			bands:  []string{"1.0.2", "1.0.3", "1.0.4", "1.0.5", "1.0.6", "2 other versions"},
			latest: []int{0, 0, 0, 0, 28, 0},
			peak:   []int{3, 4, 5, 6, 28, 3},
			points: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := buildChart(tt.samples, tt.current, chartNow, tt.span)
			if c.Empty != tt.empty || c.Points != tt.points {
				t.Fatalf("Empty %t Points %d, want %t %d", c.Empty, c.Points, tt.empty, tt.points)
			}
			if len(c.Bands) != len(tt.bands) {
				t.Fatalf("%d bands, want %d: %+v", len(c.Bands), len(tt.bands), c.Bands)
			}
			for i, b := range c.Bands {
				if b.Version != tt.bands[i] || b.Latest != tt.latest[i] || b.Peak != tt.peak[i] {
					t.Errorf("band %d = %s latest %d peak %d, want %s %d %d", i, b.Version, b.Latest, b.Peak, tt.bands[i], tt.latest[i], tt.peak[i])
				}
				xs, ys := pathPoints(t, b.Path)
				for _, x := range xs {
					if x < chartPadLeft-0.05 || x > chartWidth+0.05 {
						t.Errorf("band %s x %v outside the plot", b.Version, x)
					}
				}
				for _, y := range ys {
					if y < plotTop-0.05 || y > plotBottom+0.05 {
						t.Errorf("band %s y %v outside the plot", b.Version, y)
					}
				}
				// Every band reaches "now" at the right edge.
				if right := slices.Max(xs); right < chartWidth-0.05 {
					t.Errorf("band %s ends at x %v, not at the right edge", b.Version, right)
				}
			}
			if !tt.empty && (len(c.YTicks) != 3 || c.YTicks[0].Label != "0") {
				t.Errorf("y ticks %+v", c.YTicks)
			}
		})
	}
}

// TestBuildChartStacks checks the geometry: the top of the stack at the
// last point is the total, and a band's height is its count.
func TestBuildChartStacks(t *testing.T) {
	c := buildChart(nil, map[string]int{"1.0.0": 3, "1.0.1": 7}, chartNow, time.Hour)
	// yMax = 10: the total fills the plot exactly.
	plotH := chartHeight - chartPadBottom - chartPadTop
	_, ys0 := pathPoints(t, c.Bands[0].Path)
	_, ys1 := pathPoints(t, c.Bands[1].Path)
	if got, want := ys0[0], chartPadTop+plotH*0.7; fmt.Sprintf("%.1f", got) != fmt.Sprintf("%.1f", want) {
		t.Errorf("1.0.0 band top %v, want %v (3 of 10 machines)", got, want)
	}
	if got, want := ys1[0], chartPadTop; fmt.Sprintf("%.1f", got) != fmt.Sprintf("%.1f", want) {
		t.Errorf("1.0.1 band top %v, want %v (the whole stack)", got, want)
	}
}

func TestBuildChartThins(t *testing.T) {
	var samples []store.VersionSample
	for i := 7 * 24 * 60; i > 0; i-- { // one sample a minute for a week
		samples = append(samples, sample(time.Duration(i)*time.Minute, "1.0.0", 5))
	}
	c := buildChart(samples, map[string]int{"1.0.0": 5}, chartNow, 7*24*time.Hour)
	if c.Points > chartMaxPoints || c.Points < chartMaxPoints/2 {
		t.Errorf("%d points drawn from %d samples, want at most %d and not far fewer", c.Points, len(samples), chartMaxPoints)
	}
}

func TestNiceCeil(t *testing.T) {
	for _, tt := range []struct{ in, want int }{{0, 1}, {1, 1}, {2, 2}, {3, 5}, {7, 10}, {10, 10}, {11, 20}, {99999, 100000}, {100001, 200000}} {
		if got := niceCeil(tt.in); got != tt.want {
			t.Errorf("niceCeil(%d) = %d, want %d", tt.in, got, tt.want)
		}
	}
}
