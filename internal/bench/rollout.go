package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/omaha"
)

// RolloutResult is the outcome of a rollout-mode run.
type RolloutResult struct {
	// Group is the in-process server's group the machines are in ("" with
	// an external server).
	Group       string `json:"group,omitempty"`
	FromVersion string `json:"from_version"`
	ToVersion   string `json:"to_version"`
	Machines    int    `json:"machines"`
	// Completed counts machines that reported running ToVersion.
	Completed int `json:"completed"`
	// Elapsed is the time until the last machine completed, or until the
	// run was stopped by its duration or request bound.
	Elapsed time.Duration `json:"-"`
	// Stats covers every request of the rollout (checks and events).
	Stats Stats `json:"stats"`
	// Holds counts update checks answered "noupdate" before the machine was
	// granted the update (policy holds); those machines asked again.
	Holds int64 `json:"holds"`
	// Final is the group's status as the in-process server's store reports
	// it after the run (nil with an external server).
	Final *FinalStatus `json:"final,omitempty"`
}

// MarshalJSON adds elapsed_seconds to the tagged fields.
func (r RolloutResult) MarshalJSON() ([]byte, error) {
	type plain RolloutResult
	return marshalWithSeconds(plain(r), "elapsed_seconds", r.Elapsed)
}

// FinalStatus is a group's instance counts (store.RolloutStatus).
type FinalStatus struct {
	Total     int            `json:"total"`
	ByVersion map[string]int `json:"by_version"`
	ByStatus  map[string]int `json:"by_status"`
}

func finalStatus(rs store.RolloutStatus) *FinalStatus {
	f := &FinalStatus{Total: rs.Total, ByVersion: maps.Clone(rs.ByVersion), ByStatus: map[string]int{}}
	for k, v := range rs.ByStatus {
		f.ByStatus[string(k)] = v
	}
	return f
}

// summary formats counts as "complete=50 idle=2", sorted by key.
func summary(m map[string]int) string {
	var b bytes.Buffer
	for i, k := range slices.Sorted(maps.Keys(m)) {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%d", k, m[k])
	}
	return b.String()
}

// The steps of one simulated machine's update (omaha.md §3, "Normal
// sequence"), each one request.
const (
	stepCheck       = iota // check on the old version → "ok"
	stepDownloading        // event 13.1
	stepDownloaded         // event 14.1
	stepInstalled          // event 3.1; then the machine reboots
	stepRebooted           // check on the new version, 3.2 previousversion=old
	stepDone
)

// runRollout walks every machine through the update with cfg.Concurrency[0]
// workers. Machines wait in a queue; a worker takes one and sends its
// requests in order until it is done, or puts it back at the end of the
// queue when the server holds it (noupdate) or a request fails, as a real
// machine would try again at its next check.
func runRollout(ctx context.Context, cfg OmahaConfig, send *sender, serverName string, progress io.Writer) (RolloutResult, error) {
	old, next := cfg.FromVersion, cfg.ToVersion
	kinds := [stepDone]requestKind{
		stepCheck:       {version: old, aleph: old, check: true, previousVersion: noPreviousVersion},
		stepDownloading: {version: old, aleph: old, eventType: omaha.EventTypeUpdateDownloadStarted, eventResult: omaha.EventResultSuccess},
		stepDownloaded:  {version: old, aleph: old, eventType: omaha.EventTypeUpdateDownloadFinished, eventResult: omaha.EventResultSuccess},
		stepInstalled:   {version: old, aleph: old, eventType: omaha.EventTypeUpdateComplete, eventResult: omaha.EventResultSuccess},
		stepRebooted:    {version: next, aleph: old, check: true, previousVersion: old},
	}
	var tmpls [stepDone]*bodyTemplate
	for i, k := range kinds {
		t, err := newBodyTemplate(cfg.AppID, cfg.Track, k)
		if err != nil {
			return RolloutResult{}, err
		}
		tmpls[i] = t
	}

	conc := cfg.Concurrency[0]
	n := cfg.Machines
	// Every machine is in the queue at most once, so sends never block.
	queue := make(chan int, n)
	for i := range n {
		queue <- i
	}
	// steps[i] is only touched by the worker holding machine i; passing i
	// through the channel orders the accesses.
	steps := make([]uint8, n)

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	if cfg.Duration > 0 {
		t := time.AfterFunc(cfg.Duration, stop)
		defer t.Stop()
	}
	recs := make([]*recorder, conc)
	hint := capHint(cfg.Requests, 0, conc)
	if cfg.Requests == 0 {
		hint = 5*n/conc + 64
	}
	for i := range recs {
		recs[i] = newRecorder(hint)
	}
	var issued, done, failed, completed, holds atomic.Int64
	var finishedAt atomic.Int64 // unix nanos of the last completion
	start := time.Now()
	stopProgress := startProgress(progress, fmt.Sprintf("rollout %s c=%d", serverName, conc), start, &done, &failed)

	var wg sync.WaitGroup
	for w := range conc {
		rec := recs[w]
		wg.Go(func() {
			body := make([]byte, 0, 2048)
			var buf bytes.Buffer
			for {
				var i int
				select {
				case <-runCtx.Done():
					return
				case i = <-queue:
				}
				for steps[i] != stepDone {
					if runCtx.Err() != nil || (cfg.Requests > 0 && issued.Add(1) > int64(cfg.Requests)) {
						stop()
						return
					}
					step := steps[i]
					boot := 0
					if step == stepRebooted {
						boot = 1
					}
					body = tmpls[step].render(body[:0], i, boot)
					t0 := time.Now()
					// In-flight requests are not cancelled by the run's
					// bound, only by ctx, so they finish and are measured.
					o, err := send.post(ctx, body, &buf)
					rec.record(time.Since(t0), o, err)
					done.Add(1)
					if err != nil || o.omahaError {
						failed.Add(1)
						queue <- i
						break
					}
					if step == stepCheck && o.key != omaha.UpdateStatusOK {
						holds.Add(1)
						queue <- i
						break
					}
					steps[i]++
					if steps[i] == stepDone {
						finishedAt.Store(time.Now().UnixNano())
						if completed.Add(1) == int64(n) {
							stop()
						}
					}
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	stopProgress()
	if err := ctx.Err(); err != nil {
		return RolloutResult{}, fmt.Errorf("rollout: %w", err)
	}
	if int(completed.Load()) == n {
		elapsed = time.Unix(0, finishedAt.Load()).Sub(start)
	}
	return RolloutResult{
		FromVersion: old, ToVersion: next, Machines: n, Completed: int(completed.Load()),
		Elapsed: elapsed, Stats: merge(serverName, conc, elapsed, recs), Holds: holds.Load(),
	}, nil
}
