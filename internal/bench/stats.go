package bench

import (
	"encoding/json"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Latency summarises the latencies of one measurement.
type Latency struct {
	P50, P90, P99, Max time.Duration
}

// MarshalJSON writes the percentiles in milliseconds, the unit people read
// them in.
func (l Latency) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		P50 float64 `json:"p50_ms"`
		P90 float64 `json:"p90_ms"`
		P99 float64 `json:"p99_ms"`
		Max float64 `json:"max_ms"`
	}{ms(l.P50), ms(l.P90), ms(l.P99), ms(l.Max)})
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }

// percentile returns the p-th percentile (0 < p ≤ 100) of sorted by the
// nearest-rank method: the smallest value such that at least p percent of
// the values are less than or equal to it. It returns 0 for no values.
func percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(n)))
	rank = min(max(rank, 1), n)
	return sorted[rank-1]
}

// summarize sorts lat in place and returns its percentiles.
func summarize(lat []time.Duration) Latency {
	slices.Sort(lat)
	l := Latency{P50: percentile(lat, 50), P90: percentile(lat, 90), P99: percentile(lat, 99)}
	if len(lat) > 0 {
		l.Max = lat[len(lat)-1]
	}
	return l
}

// Stats is the outcome of one measurement against one server.
type Stats struct {
	// Server is "flotilla" (or the --server URL) or "reference".
	Server string `json:"server"`
	// Concurrency is the number of workers (simultaneous requests).
	Concurrency int `json:"concurrency"`
	// Requests counts every request sent, failed or not.
	Requests int64 `json:"requests"`
	// Elapsed is the wall time from the first request to the last answer.
	Elapsed time.Duration `json:"-"`
	// Throughput is Requests per second of Elapsed.
	Throughput float64 `json:"requests_per_second"`
	// Latency summarises successful and failed requests alike.
	Latency Latency `json:"latency"`
	// Errors counts requests without a parsed Omaha answer: transport
	// failures, HTTP statuses other than 200, unparseable bodies.
	Errors int64 `json:"errors"`
	// OmahaErrors counts answers whose app or updatecheck status is an
	// error-* value (an unknown group, an internal error, …).
	OmahaErrors int64 `json:"omaha_errors"`
	// Responses counts parsed answers by updatecheck status ("noupdate",
	// "ok", "error-internal", …); answers to event reports count under
	// "event", app errors without an updatecheck under "app:<status>".
	Responses map[string]int64 `json:"responses"`
	// FirstError is the first transport or parse error, for the report.
	FirstError string `json:"first_error,omitempty"`
}

// MarshalJSON adds elapsed_seconds to the tagged fields.
func (s Stats) MarshalJSON() ([]byte, error) {
	type plain Stats
	return marshalWithSeconds(plain(s), "elapsed_seconds", s.Elapsed)
}

// marshalWithSeconds encodes v (a struct without a MarshalJSON method) with
// an extra field key holding d in seconds (millisecond precision).
func marshalWithSeconds(v any, key string, d time.Duration) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil || len(b) < 2 || b[len(b)-1] != '}' {
		return b, err
	}
	extra, err := json.Marshal(map[string]float64{key: math.Round(d.Seconds()*1000) / 1000})
	if err != nil {
		return nil, err
	}
	if len(b) == 2 { // "{}"
		return extra, nil
	}
	out := append(b[:len(b)-1:len(b)-1], ',')
	return append(out, extra[1:]...), nil
}

// Failed is Errors + OmahaErrors: requests that did not get a normal answer.
func (s Stats) Failed() int64 { return s.Errors + s.OmahaErrors }

// ResponseSummary formats Responses as "noupdate=1200 ok=3", sorted by key.
func (s Stats) ResponseSummary() string {
	keys := slices.Sorted(maps.Keys(s.Responses))
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(strconv.FormatInt(s.Responses[k], 10))
	}
	return b.String()
}

// recorder collects one worker's measurements without sharing memory with
// other workers; merge combines them at the end.
type recorder struct {
	lat       []time.Duration
	errors    int64
	omahaErrs int64
	responses map[string]int64
	firstErr  error
}

func newRecorder(capHint int) *recorder {
	return &recorder{lat: make([]time.Duration, 0, capHint), responses: map[string]int64{}}
}

// record adds one request's outcome.
func (r *recorder) record(d time.Duration, o outcome, err error) {
	r.lat = append(r.lat, d)
	if err != nil {
		r.errors++
		if r.firstErr == nil {
			r.firstErr = err
		}
		return
	}
	r.responses[o.key]++
	if o.omahaError {
		r.omahaErrs++
	}
}

// merge combines recorders into Stats. It sorts the latencies it is given.
func merge(server string, concurrency int, elapsed time.Duration, recs []*recorder) Stats {
	s := Stats{Server: server, Concurrency: concurrency, Elapsed: elapsed, Responses: map[string]int64{}}
	total := 0
	for _, r := range recs {
		total += len(r.lat)
	}
	all := make([]time.Duration, 0, total)
	for _, r := range recs {
		all = append(all, r.lat...)
		s.Errors += r.errors
		s.OmahaErrors += r.omahaErrs
		for k, v := range r.responses {
			s.Responses[k] += v
		}
		if s.FirstError == "" && r.firstErr != nil {
			s.FirstError = r.firstErr.Error()
		}
	}
	s.Requests = int64(len(all))
	if elapsed > 0 {
		s.Throughput = float64(s.Requests) / elapsed.Seconds()
	}
	s.Latency = summarize(all)
	return s
}
