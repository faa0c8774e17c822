package dashboard

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/internal/updatesvc"
)

// The group page's "versions over time" chart: a stacked area of how many
// machines ran each version, drawn as SVG on the server from the store's
// periodic version samples plus the live breakdown as the last point.

// chartRanges are the time ranges the chart offers, in menu order.
var chartRanges = []struct {
	Key   string
	Label string
	Span  time.Duration
}{
	{"1h", "1 hour", time.Hour},
	{"6h", "6 hours", 6 * time.Hour},
	{"24h", "24 hours", 24 * time.Hour},
	{"7d", "7 days", 7 * 24 * time.Hour},
}

const (
	defaultChartRange = "24h"
	chartWidth        = 640.0
	chartHeight       = 180.0
	// chartPadLeft leaves room for the y axis labels, chartPadBottom for
	// the x axis labels.
	chartPadLeft   = 44.0
	chartPadBottom = 20.0
	chartPadTop    = 6.0
	// chartMaxPoints bounds the points per band: more than one per two
	// pixels draws nothing visible and only grows the page.
	chartMaxPoints = 320
	// chartMaxBands is how many versions get their own band; the rest are
	// summed into "other" (a group mid-way through several releases).
	chartMaxBands = 6
)

// chartPalette are distinguishable for the common forms of color
// blindness (Okabe and Ito); the legend names every band as well, so no
// version is identified by color alone.
var chartPalette = []string{"#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#999999"}

// chartSpan returns the span for a range key and whether the key is known.
func chartSpan(key string) (time.Duration, bool) {
	for _, r := range chartRanges {
		if r.Key == key {
			return r.Span, true
		}
	}
	return 0, false
}

// chart is what the template draws.
type chart struct {
	Width, Height float64
	Bands         []chartBand // bottom band first
	XTicks        []chartTick
	YTicks        []chartTick
	PlotLeft      float64
	PlotBottom    float64
	Points        int // sample moments drawn
	Empty         bool
}

// chartBand is one version's area.
type chartBand struct {
	Version string
	Color   string
	Path    string // SVG path data
	Latest  int    // machines on this version at the last point
	Peak    int
}

type chartTick struct {
	X, Y   float64
	Label  string
	Anchor string // SVG text-anchor: the outer x labels stay inside the chart
}

// chartPoint is the breakdown at one moment.
type chartPoint struct {
	at     time.Time
	counts map[string]int
}

// buildChart turns samples (oldest first, as ListVersionSamples returns
// them) and the current breakdown into a chart covering [now-span, now].
// It is a pure function so that its geometry can be tested without a
// browser.
func buildChart(samples []store.VersionSample, current map[string]int, now time.Time, span time.Duration) chart {
	c := chart{Width: chartWidth, Height: chartHeight, PlotLeft: chartPadLeft, PlotBottom: chartHeight - chartPadBottom}
	from := now.Add(-span)

	// Group the samples into moments, then thin them to at most
	// chartMaxPoints by keeping the last moment of each time bucket.
	var points []chartPoint
	for _, s := range samples {
		if s.At.Before(from) || s.At.After(now) {
			continue
		}
		if len(points) == 0 || !points[len(points)-1].at.Equal(s.At) {
			points = append(points, chartPoint{at: s.At, counts: map[string]int{}})
		}
		points[len(points)-1].counts[s.Version] += s.Count
	}
	points = thin(points, from, span, chartMaxPoints-1)
	points = append(points, chartPoint{at: now, counts: current})
	c.Points = len(points)

	// Bands: the versions with the most machines at any point get their
	// own, ordered oldest version at the bottom; the rest become "other".
	peak := map[string]int{}
	maxTotal := 0
	for _, p := range points {
		total := 0
		for v, n := range p.counts {
			peak[v] = max(peak[v], n)
			total += n
		}
		maxTotal = max(maxTotal, total)
	}
	if maxTotal == 0 {
		c.Empty = true
		return c
	}
	versions := make([]string, 0, len(peak))
	for v := range peak {
		versions = append(versions, v)
	}
	slices.SortFunc(versions, func(a, b string) int {
		if d := peak[b] - peak[a]; d != 0 {
			return d
		}
		return updatesvc.CompareVersions(a, b)
	})
	var other []string
	if len(versions) > chartMaxBands {
		versions, other = versions[:chartMaxBands-1], versions[chartMaxBands-1:]
	}
	slices.SortFunc(versions, updatesvc.CompareVersions)
	keys := versions
	if len(other) > 0 {
		keys = append(slices.Clone(versions), "")
	}
	countOf := func(p chartPoint, key string) int {
		if key != "" {
			return p.counts[key]
		}
		n := 0
		for _, v := range other {
			n += p.counts[v]
		}
		return n
	}

	plotW := chartWidth - chartPadLeft
	plotH := chartHeight - chartPadBottom - chartPadTop
	yMax := niceCeil(maxTotal)
	x := func(t time.Time) float64 {
		return chartPadLeft + plotW*float64(t.Sub(from))/float64(span)
	}
	y := func(n int) float64 { return chartPadTop + plotH*(1-float64(n)/float64(yMax)) }

	// Each band is the area between the running total below it and the
	// running total including it, drawn as steps: a sample holds until the
	// next one.
	below := make([]int, len(points))
	for i, key := range keys {
		top := make([]int, len(points))
		for j, p := range points {
			top[j] = below[j] + countOf(p, key)
		}
		var d strings.Builder
		for j, p := range points {
			px := x(p.at)
			if j == 0 {
				fmt.Fprintf(&d, "M%s %s", num(px), num(y(top[j])))
				continue
			}
			fmt.Fprintf(&d, "H%s V%s", num(px), num(y(top[j])))
		}
		for j := len(points) - 1; j >= 0; j-- {
			fmt.Fprintf(&d, " V%s", num(y(below[j])))
			if j > 0 {
				fmt.Fprintf(&d, " H%s", num(x(points[j].at)))
			}
		}
		// Close along the bottom of the first step.
		fmt.Fprintf(&d, " H%s Z", num(x(points[0].at)))
		name := key
		if key == "" {
			name = fmt.Sprintf("%d other versions", len(other))
		}
		peakN := 0
		for j := range points {
			peakN = max(peakN, top[j]-below[j])
		}
		c.Bands = append(c.Bands, chartBand{
			Version: name, Color: chartPalette[i%len(chartPalette)], Path: d.String(),
			Latest: top[len(top)-1] - below[len(below)-1], Peak: peakN,
		})
		below = top
	}

	for _, n := range []int{0, yMax / 2, yMax} {
		c.YTicks = append(c.YTicks, chartTick{X: chartPadLeft - 6, Y: y(n), Label: strconv.Itoa(n)})
	}
	for i := range 5 {
		t := from.Add(span * time.Duration(i) / 4)
		anchor := "middle"
		switch i {
		case 0:
			anchor = "start"
		case 4:
			anchor = "end"
		}
		c.XTicks = append(c.XTicks, chartTick{X: x(t), Y: chartHeight - 4, Label: tickLabel(t, span), Anchor: anchor})
	}
	return c
}

// thin keeps at most n points, the last one of each of n equal time
// buckets over [from, from+span].
func thin(points []chartPoint, from time.Time, span time.Duration, n int) []chartPoint {
	if len(points) <= n {
		return points
	}
	out := points[:0:0]
	bucket := -1
	for _, p := range points {
		b := int(int64(n) * int64(p.at.Sub(from)) / int64(span))
		if b == bucket {
			out[len(out)-1] = p
			continue
		}
		bucket = b
		out = append(out, p)
	}
	return out
}

// niceCeil rounds n up to 1, 2 or 5 times a power of ten, so the y axis
// has round labels.
func niceCeil(n int) int {
	if n <= 1 {
		return 1
	}
	for p := 1; ; p *= 10 {
		for _, m := range []int{1, 2, 5} {
			if m*p >= n {
				return m * p
			}
		}
	}
}

func tickLabel(t time.Time, span time.Duration) string {
	t = t.UTC()
	if span > 24*time.Hour {
		return t.Format("Jan 2 15:04")
	}
	return t.Format("15:04")
}

func num(f float64) string { return strconv.FormatFloat(f, 'f', 1, 64) }
