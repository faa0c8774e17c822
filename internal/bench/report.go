package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Report formats of OmahaResult.Write.
const (
	FormatTable    = "table"
	FormatJSON     = "json"
	FormatMarkdown = "markdown"
)

// Write prints the result in format (FormatTable, FormatJSON or
// FormatMarkdown). Table and markdown end with a warning line for every
// measurement that had failed requests.
func (r OmahaResult) Write(w io.Writer, format string) error {
	var err error
	switch format {
	case FormatJSON:
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		err = enc.Encode(r)
	case FormatTable, FormatMarkdown:
		err = r.writeText(w, format == FormatMarkdown)
	default:
		return fmt.Errorf("write report: unknown format %q: want table, json or markdown", format)
	}
	if err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// columns of the check-mode table.
var checkColumns = []string{"server", "concurrency", "requests", "seconds", "req/s", "p50", "p90", "p99", "max", "failed", "responses", "vs reference"}

func (r OmahaResult) writeText(w io.Writer, md bool) error {
	ew := &errWriter{w: w}
	fmt.Fprintf(ew, "%s mode: %s\n\n", r.Mode, r.describeTarget())
	if r.Rollout != nil {
		r.Rollout.writeText(ew, md)
	} else {
		t := newTextTable(ew, md, checkColumns)
		for _, p := range r.Phases {
			ratio := "-"
			if p.Reference != nil {
				ratio = strconv.FormatFloat(p.Ratio, 'f', 2, 64)
			}
			t.row(statsCells(p.Server, ratio)...)
			if p.Reference != nil {
				t.row(statsCells(*p.Reference, "1.00")...)
			}
		}
		t.flush()
	}
	var warnings []string
	for _, p := range r.Phases {
		warnings = append(warnings, failureWarning(p.Server)...)
		if p.Reference != nil {
			warnings = append(warnings, failureWarning(*p.Reference)...)
		}
	}
	if r.Rollout != nil {
		warnings = append(warnings, failureWarning(r.Rollout.Stats)...)
	}
	if len(warnings) > 0 {
		fmt.Fprintln(ew)
		for _, s := range warnings {
			fmt.Fprintln(ew, s)
		}
	}
	return ew.err
}

func statsCells(s Stats, ratio string) []string {
	return []string{
		s.Server, strconv.Itoa(s.Concurrency), strconv.FormatInt(s.Requests, 10),
		strconv.FormatFloat(s.Elapsed.Seconds(), 'f', 1, 64), strconv.FormatFloat(s.Throughput, 'f', 0, 64),
		fmtDur(s.Latency.P50), fmtDur(s.Latency.P90), fmtDur(s.Latency.P99), fmtDur(s.Latency.Max),
		strconv.FormatInt(s.Failed(), 10), s.ResponseSummary(), ratio,
	}
}

func failureWarning(s Stats) []string {
	if s.Failed() == 0 {
		return nil
	}
	msg := fmt.Sprintf("WARNING: %s at concurrency %d: %d of %d requests failed (%d transport/HTTP/parse errors, %d Omaha error statuses)",
		s.Server, s.Concurrency, s.Failed(), s.Requests, s.Errors, s.OmahaErrors)
	if s.FirstError != "" {
		msg += "; first error: " + s.FirstError
	}
	return []string{msg}
}

func (rr *RolloutResult) writeText(w io.Writer, md bool) {
	s := rr.Stats
	rows := [][2]string{
		{"rollout", rr.FromVersion + " → " + rr.ToVersion},
		{"machines completed", fmt.Sprintf("%d of %d", rr.Completed, rr.Machines)},
		{"time to complete", fmtDur(rr.Elapsed)},
		{"concurrency", strconv.Itoa(s.Concurrency)},
		{"requests", strconv.FormatInt(s.Requests, 10)},
		{"req/s", strconv.FormatFloat(s.Throughput, 'f', 0, 64)},
		{"latency p50 / p90 / p99 / max", strings.Join([]string{fmtDur(s.Latency.P50), fmtDur(s.Latency.P90), fmtDur(s.Latency.P99), fmtDur(s.Latency.Max)}, " / ")},
		{"failed requests", strconv.FormatInt(s.Failed(), 10)},
		{"checks held (noupdate before grant)", strconv.FormatInt(rr.Holds, 10)},
		{"responses", s.ResponseSummary()},
	}
	if f := rr.Final; f != nil {
		rows = append(rows,
			[2]string{"group " + rr.Group + " instances", strconv.Itoa(f.Total)},
			[2]string{"group " + rr.Group + " by version", summary(f.ByVersion)},
			[2]string{"group " + rr.Group + " by status", summary(f.ByStatus)},
		)
	}
	t := newTextTable(w, md, []string{"metric", "value"})
	for _, r := range rows {
		t.row(r[0], r[1])
	}
	t.flush()
}

// textTable writes aligned columns (kubectl style, upper-case header) or a
// GitHub markdown table.
type textTable struct {
	w  io.Writer
	tw *tabwriter.Writer
	md bool
}

func newTextTable(w io.Writer, md bool, headers []string) *textTable {
	t := &textTable{w: w, md: md}
	if md {
		t.row(headers...)
		seps := make([]string, len(headers))
		for i := range seps {
			seps[i] = "---"
		}
		t.row(seps...)
		return t
	}
	t.tw = tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	up := make([]string, len(headers))
	for i, h := range headers {
		up[i] = strings.ToUpper(h)
	}
	t.row(up...)
	return t
}

func (t *textTable) row(cells ...string) {
	for i, c := range cells {
		if c == "" {
			cells[i] = "-"
		}
	}
	if t.md {
		fmt.Fprintf(t.w, "| %s |\n", strings.Join(cells, " | "))
		return
	}
	fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

func (t *textTable) flush() {
	if t.tw != nil {
		_ = t.tw.Flush()
	}
}

// fmtDur prints a duration with three significant digits: "842µs",
// "1.23ms", "12.3ms", "2.31s".
func fmtDur(d time.Duration) string {
	switch {
	case d <= 0:
		return "0"
	case d < time.Millisecond:
		return strconv.FormatFloat(float64(d)/1e3, 'f', 0, 64) + "µs"
	case d < 10*time.Millisecond:
		return strconv.FormatFloat(float64(d)/1e6, 'f', 2, 64) + "ms"
	case d < 100*time.Millisecond:
		return strconv.FormatFloat(float64(d)/1e6, 'f', 1, 64) + "ms"
	case d < time.Second:
		return strconv.FormatFloat(float64(d)/1e6, 'f', 0, 64) + "ms"
	}
	return strconv.FormatFloat(d.Seconds(), 'f', 2, 64) + "s"
}

// errWriter remembers the first write error so formatting code can ignore
// errors until the end.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}
