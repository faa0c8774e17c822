package devcluster

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/flotilla/flotilla/internal/rebootlock"
	"github.com/flotilla/flotilla/internal/restapi"
	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/internal/updatesvc"
	"github.com/flotilla/flotilla/omaha"
)

// Outcome is how a rollout ended.
type Outcome string

// Outcomes.
const (
	OutcomeRunning  Outcome = ""
	OutcomeComplete Outcome = "complete" // every machine runs the new version
	OutcomePaused   Outcome = "paused"   // the group paused itself after a failure, and everything settled
	OutcomeTimeout  Outcome = "timeout"
	OutcomeStopped  Outcome = "stopped" // interrupted before the outcome was known
)

// Report is the cluster's state as the server sees it.
type Report struct {
	Machines     int
	Registered   int // machines the server knows
	ByVersion    map[string]int
	ByStatus     map[store.Status]int
	Paused       bool
	PausedReason string
	Rebooting    int // reboot-lock holders now
	// MaxRebooting is the most slots ever held at once, read from the
	// server's history: each grant records, in the same etcd transaction
	// that checked the limit, how many slots were held with it.
	MaxRebooting int
	// GrantsAfterPause counts updates granted after the group paused.
	GrantsAfterPause int
	// Failed are machines whose update failed or rolled back.
	Failed []string
}

// InProgress is the number of machines between a grant and the end of
// their update.
func (r Report) InProgress() int {
	n := 0
	for st, c := range r.ByStatus {
		if st.InProgress() {
			n += c
		}
	}
	return n
}

// judge decides the outcome from the server's view. It is pure, so every
// case is a table test.
//   - complete: every machine runs target, reports complete, and no one
//     holds a reboot slot;
//   - paused: the group paused itself, at least one machine failed, no
//     update is in flight any more and no slot is held — what is left is
//     the operator's call.
func judge(r Report, target string) Outcome {
	settled := r.InProgress() == 0 && r.Rebooting == 0 && r.Registered == r.Machines
	switch {
	case settled && r.ByVersion[target] == r.Machines && r.ByStatus[store.StatusComplete] == r.Machines:
		return OutcomeComplete
	case settled && r.Paused && len(r.Failed) > 0:
		return OutcomePaused
	}
	return OutcomeRunning
}

var grantRE = regexp.MustCompile(`\(token \d+, (\d+) of max (\d+) held\)`)

// maxHeld reads the largest "N of max M held" among lock-granted entries.
func maxHeld(acts []store.Activity) int {
	most := 0
	for _, a := range acts {
		if a.Kind != store.ActivityKind(rebootlock.EventGranted) {
			continue
		}
		if m := grantRE.FindStringSubmatch(a.Message); m != nil {
			n, _ := strconv.Atoi(m[1])
			most = max(most, n)
		}
	}
	return most
}

// report reads the cluster's state from the server.
func (c *cluster) report(ctx context.Context) (Report, error) {
	st := c.srv.Store()
	r := Report{Machines: c.opts.Machines}
	rs, err := st.RolloutStatus(ctx, omaha.FlatcarAppID, demoGroup)
	if err != nil {
		return r, err
	}
	r.Registered, r.ByVersion, r.ByStatus = rs.Total, rs.ByVersion, rs.ByStatus
	g, err := st.GetGroup(ctx, omaha.FlatcarAppID, demoGroup)
	if err != nil {
		return r, err
	}
	r.Paused, r.PausedReason = g.Policy.Paused, g.PausedReason
	ls, err := c.srv.Locks().Status(ctx, demoLockGroup)
	if err != nil {
		return r, err
	}
	r.Rebooting = len(ls.Holders)
	for _, s := range []store.Status{store.StatusError, store.StatusRolledBack} {
		pg, err := st.ListInstances(ctx, store.InstanceFilter{AppID: omaha.FlatcarAppID, Group: demoGroup, Status: s, Limit: 1000})
		if err != nil {
			return r, err
		}
		for _, in := range pg.Instances {
			r.Failed = append(r.Failed, c.alias(in.MachineID))
		}
	}
	slices.Sort(r.Failed)
	return r, nil
}

// history adds what the server's logs say: the most slots held at once,
// and grants after the pause (from each machine's status history).
func (c *cluster) history(ctx context.Context, r *Report, pausedAt time.Time) error {
	st := c.srv.Store()
	var acts []store.Activity
	before := int64(0)
	for {
		page, err := st.ListActivity(ctx, store.ActivityFilter{AppID: restapi.LockActivityScope, Group: demoLockGroup, BeforeID: before, Limit: 1000})
		if err != nil {
			return err
		}
		acts = append(acts, page...)
		if len(page) < 1000 {
			break
		}
		before = page[len(page)-1].ID
	}
	r.MaxRebooting = maxHeld(acts)
	if pausedAt.IsZero() {
		return nil
	}
	r.GrantsAfterPause = 0
	for _, m := range c.machines {
		cs, err := st.ListStatusChanges(ctx, omaha.FlatcarAppID, m.id, 1000)
		if err != nil {
			return err
		}
		for _, sc := range cs {
			if sc.Status == store.StatusGranted && sc.At.After(pausedAt) {
				r.GrantsAfterPause++
			}
		}
	}
	return nil
}

func (c *cluster) alias(machineID string) string {
	for _, m := range c.machines {
		if m.id == machineID {
			return m.alias
		}
	}
	return machineID
}

// aliases replaces the machine ids in a message by the machines' names.
func (c *cluster) aliases(msg string) string {
	for _, m := range c.machines {
		msg = strings.ReplaceAll(msg, m.id, m.alias)
	}
	return msg
}

// progressLine summarizes a report in one line.
func progressLine(r Report, target string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s on %d/%d", target, r.ByVersion[target], r.Machines)
	part := func(label string, n int) {
		if n > 0 {
			fmt.Fprintf(&b, " · %s %d", label, n)
		}
	}
	s := r.ByStatus
	part("complete", s[store.StatusComplete])
	part("downloading", s[store.StatusGranted]+s[store.StatusDownloading]+s[store.StatusDownloaded])
	part("waiting for reboot", s[store.StatusInstalled]-min(r.Rebooting, s[store.StatusInstalled]))
	part("rebooting", r.Rebooting)
	part("on hold", s[store.StatusOnHold])
	part("idle", s[store.StatusIdle])
	part("error", s[store.StatusError])
	part("rolled back", s[store.StatusRolledBack])
	part("timed out", s[store.StatusTimedOut])
	if r.Paused {
		b.WriteString(" · PAUSED")
	}
	return b.String()
}

// rollOut waits for the machines to register, promotes the new version and
// follows the rollout until its outcome (or, without ExitWhenDone, until
// ctx ends).
func (c *cluster) rollOut(ctx context.Context, pkg store.Package) (Result, error) {
	o := c.opts
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(o.Timeout)

	c.printf("waiting for %d machines to check in at %s…\n", o.Machines, o.FromVersion)
	for {
		r, err := c.report(ctx)
		if err != nil && ctx.Err() == nil {
			return Result{}, fmt.Errorf("dev: %w", err)
		}
		if r.Registered >= o.Machines {
			break
		}
		select {
		case <-ctx.Done():
			return Result{Outcome: OutcomeStopped}, nil
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			return Result{Outcome: OutcomeTimeout}, fmt.Errorf("dev: only %d of %d machines checked in within %s", r.Registered, o.Machines, o.Timeout)
		}
	}
	if err := c.srv.Service().SetChannelPackage(ctx, omaha.FlatcarAppID, demoGroup, pkg.Version); err != nil {
		return Result{}, fmt.Errorf("dev: promote %s: %w", pkg.Version, err)
	}
	c.start = time.Now()
	c.printf("%s  all %d machines run %s; channel %q now offers %s\n", c.clock(), o.Machines, o.FromVersion, demoGroup, pkg.Version)

	var lastLine string
	var lastAct int64
	var pausedAt time.Time
	outcome := OutcomeRunning
	var r Report
	for outcome == OutcomeRunning {
		select {
		case <-ctx.Done():
			outcome = OutcomeStopped
			continue
		case <-tick.C:
		}
		var err error
		// Activity first: what happened, then where it left the fleet.
		lastAct, err = c.printActivity(ctx, lastAct)
		if err == nil {
			r, err = c.report(ctx)
		}
		if err != nil {
			if ctx.Err() != nil {
				outcome = OutcomeStopped
				continue
			}
			return Result{}, fmt.Errorf("dev: %w", err)
		}
		if r.Paused && pausedAt.IsZero() {
			if g, err := c.srv.Store().GetGroup(ctx, omaha.FlatcarAppID, demoGroup); err == nil {
				pausedAt = g.UpdatedAt
			}
		}
		if line := progressLine(r, o.ToVersion); line != lastLine {
			c.printf("%s  progress %s\n", c.clock(), line)
			lastLine = line
		}
		outcome = judge(r, o.ToVersion)
		if outcome == OutcomeRunning && time.Now().After(deadline) {
			outcome = OutcomeTimeout
		}
	}
	res := Result{Outcome: outcome, Elapsed: time.Since(c.start)}
	hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if g, err := c.srv.Store().GetGroup(hctx, omaha.FlatcarAppID, demoGroup); err == nil && g.Policy.Paused && pausedAt.IsZero() {
		pausedAt = g.UpdatedAt
	}
	if err := c.history(hctx, &r, pausedAt); err != nil {
		return res, fmt.Errorf("dev: read history: %w", err)
	}
	res.Report = r
	c.summary(res)
	return res, nil
}

// printActivity prints the activity entries after id and returns the
// newest id.
func (c *cluster) printActivity(ctx context.Context, after int64) (int64, error) {
	acts, err := c.srv.Store().ListActivity(ctx, store.ActivityFilter{Limit: 200})
	if err != nil {
		return after, err
	}
	newest := after
	for i := len(acts) - 1; i >= 0; i-- {
		a := acts[i]
		if a.ID <= after {
			continue
		}
		newest = max(newest, a.ID)
		msg := c.aliases(a.Message)
		who := "server"
		if a.AppID == restapi.LockActivityScope && len(a.MachineIDs) == 1 {
			who = c.alias(a.MachineIDs[0])
		}
		c.printf("%s  %-8s %-7s %s: %s\n", c.clock(), who, "event", a.Kind, msg)
	}
	return newest, nil
}

func (c *cluster) summary(res Result) {
	o, r := c.opts, res.Report
	c.printf("\n── summary ──\n")
	switch res.Outcome {
	case OutcomeComplete:
		c.printf("rollout complete: all %d machines run %s, after %s\n", o.Machines, o.ToVersion, res.Elapsed.Round(100*time.Millisecond))
	case OutcomePaused:
		c.printf("the group paused itself after %s: %s\n", res.Elapsed.Round(100*time.Millisecond), c.aliases(r.PausedReason))
		c.printf("failed and rolled back: %s; they will not be offered %s again automatically\n", strings.Join(r.Failed, ", "), o.ToVersion)
		c.printf("no update was granted after the pause (%d grants after it); resume with: flotilla group resume --app %s %s\n",
			r.GrantsAfterPause, omaha.FlatcarAppID, demoGroup)
	case OutcomeTimeout:
		c.printf("no outcome within %s\n", o.Timeout)
	case OutcomeStopped:
		c.printf("stopped after %s\n", res.Elapsed.Round(100*time.Millisecond))
	}
	versions := make([]string, 0, len(r.ByVersion))
	for v := range r.ByVersion {
		versions = append(versions, v)
	}
	slices.SortFunc(versions, updatesvc.CompareVersions)
	for _, v := range versions {
		c.printf("  %-10s %d machine(s)\n", v, r.ByVersion[v])
	}
	c.printf("most machines rebooting at once: %d (limit %d), from the reboot-lock history\n", r.MaxRebooting, o.MaxReboots)
	reboots := 0
	for _, m := range c.machines {
		m.mu.Lock()
		reboots += m.boots
		m.mu.Unlock()
	}
	c.printf("reboots: %d\n", reboots)
}
