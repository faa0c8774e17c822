package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flotilla/flotilla/omaha"
)

// newHTTPClient returns the keep-alive client every worker shares: enough
// idle connections per host that no worker ever dials again after its
// first request, no proxy from the environment (traffic goes only to the
// target), no compression (update_engine does not ask for it).
func newHTTPClient(maxConns int, timeout time.Duration) *http.Client {
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        2 * maxConns,
		MaxIdleConnsPerHost: maxConns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	return &http.Client{Transport: tr, Timeout: timeout}
}

// sender posts pre-rendered Omaha bodies to one endpoint, or round-robin
// to several replicas of one service.
type sender struct {
	hc       *http.Client
	endpoint string
	// others are further replicas' endpoints.
	others []string
	next   atomic.Uint64
}

// target is the endpoint for the next request.
func (s *sender) target() string {
	if len(s.others) == 0 {
		return s.endpoint
	}
	i := s.next.Add(1) % uint64(len(s.others)+1)
	if i == 0 {
		return s.endpoint
	}
	return s.others[i-1]
}

// outcome classifies one parsed answer.
type outcome struct {
	// key is the updatecheck status, "event" for an answer without an
	// updatecheck, or "app:<status>" for an app error without one.
	key string
	// omahaError is set when the app or updatecheck status is error-*.
	omahaError bool
	// manifestVersion is the offered version of an "ok" answer.
	manifestVersion string
}

// post sends body and parses the answer. buf is the worker's reusable
// response buffer.
func (s *sender) post(ctx context.Context, body []byte, buf *bytes.Buffer) (outcome, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.target(), bytes.NewReader(body))
	if err != nil {
		return outcome{}, fmt.Errorf("post: %w", err)
	}
	// update_engine sends exactly this content type.
	req.Header.Set("Content-Type", "text/xml")
	req.Header.Set("User-Agent", updaterVersion)
	resp, err := s.hc.Do(req)
	if err != nil {
		return outcome{}, fmt.Errorf("post: %w", err)
	}
	defer resp.Body.Close()
	buf.Reset()
	if _, err := buf.ReadFrom(io.LimitReader(resp.Body, 1<<20)); err != nil {
		return outcome{}, fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return outcome{}, fmt.Errorf("post: %w", &omaha.HTTPError{StatusCode: resp.StatusCode, Status: resp.Status})
	}
	r, err := omaha.ParseResponse(bytes.NewReader(buf.Bytes()))
	if err != nil {
		return outcome{}, fmt.Errorf("parse answer: %w", err)
	}
	return classify(r), nil
}

// classify reads the first app of an answer, the only one update_engine
// looks at (omaha.md §5.1).
func classify(r *omaha.Response) outcome {
	if len(r.Apps) == 0 {
		return outcome{key: "app:none", omahaError: true}
	}
	a := r.Apps[0]
	appErr := a.Status != "" && a.Status != omaha.AppStatusOK
	if a.UpdateCheck == nil {
		if appErr {
			return outcome{key: "app:" + a.Status, omahaError: true}
		}
		return outcome{key: "event"}
	}
	o := outcome{key: a.UpdateCheck.Status, omahaError: appErr || strings.HasPrefix(a.UpdateCheck.Status, "error-")}
	if appErr {
		o.key = "app:" + a.Status + "/" + a.UpdateCheck.Status
	}
	if a.UpdateCheck.Manifest != nil {
		o.manifestVersion = a.UpdateCheck.Manifest.Version
	}
	return o
}

// phaseSpec describes one measured phase of check mode.
type phaseSpec struct {
	label       string // shown in progress lines, e.g. "flotilla c=16"
	server      string // Stats.Server
	concurrency int
	duration    time.Duration // 0 = unbounded (requests must be set)
	requests    int           // 0 = unbounded (duration must be set)
	machines    int
	tmpl        *bodyTemplate
	send        *sender
}

// capHint guesses how many latencies one worker records, so the slices are
// allocated once up front rather than grown during the measurement.
func capHint(requests int, duration time.Duration, concurrency int) int {
	if requests > 0 {
		return requests/concurrency + 1
	}
	// Generous for loopback on a few cores; append grows past it if needed.
	n := int(duration.Seconds() * 40000 / float64(concurrency))
	return min(max(n, 1024), 1<<22)
}

// runChecks runs one check-mode phase: concurrency workers, each sending
// update checks for machines picked at random, until the duration is over
// or the request budget is spent. Requests in flight at the deadline are
// allowed to finish (they are not cancelled), so they are measured rather
// than counted as errors.
func runChecks(ctx context.Context, p phaseSpec, progress io.Writer) (Stats, error) {
	recs := make([]*recorder, p.concurrency)
	hint := capHint(p.requests, p.duration, p.concurrency)
	for i := range recs {
		recs[i] = newRecorder(hint)
	}
	var issued, done, failed atomic.Int64
	start := time.Now()
	deadline := start.Add(p.duration)
	stopProgress := startProgress(progress, p.label, start, &done, &failed)
	var wg sync.WaitGroup
	for w := range p.concurrency {
		rec := recs[w]
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(machineSeed, uint64(w)))
			body := make([]byte, 0, 2048)
			var buf bytes.Buffer
			for ctx.Err() == nil {
				if p.requests > 0 && issued.Add(1) > int64(p.requests) {
					return
				}
				if p.duration > 0 && !time.Now().Before(deadline) {
					return
				}
				body = p.tmpl.render(body[:0], rng.IntN(p.machines), 0)
				t0 := time.Now()
				o, err := p.send.post(ctx, body, &buf)
				rec.record(time.Since(t0), o, err)
				done.Add(1)
				if err != nil || o.omahaError {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	stopProgress()
	if err := ctx.Err(); err != nil {
		return Stats{}, fmt.Errorf("%s: %w", p.label, err)
	}
	return merge(p.server, p.concurrency, elapsed, recs), nil
}

// startProgress prints a line to w every second until the returned stop
// function is called; a nil w prints nothing. Phases shorter than a second
// print nothing.
func startProgress(w io.Writer, label string, start time.Time, done, failed *atomic.Int64) (stop func()) {
	if w == nil {
		return func() {}
	}
	quit := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		var last int64
		lastAt := start
		for {
			select {
			case <-quit:
				return
			case now := <-t.C:
				n := done.Load()
				rate := float64(n-last) / now.Sub(lastAt).Seconds()
				last, lastAt = n, now
				fmt.Fprintf(w, "bench: %s: %4.0fs  %9d requests  %8.0f req/s  %d failed\n",
					label, now.Sub(start).Seconds(), n, rate, failed.Load())
			}
		}
	}()
	return func() {
		close(quit)
		<-finished
	}
}
