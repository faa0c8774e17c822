package updatesvc

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/flotilla/flotilla/internal/rollout"
	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/omaha"
)

// Omaha app statuses flotilla sends for real misconfigurations. Policy
// refusals never use these: they are "noupdate" (omaha.md §8).
const (
	statusOK               = "ok"
	statusInvalidAppID     = "error-invalidAppId"
	statusUnknownApp       = "error-unknownApplication"
	statusUnknownGroup     = "error-unknownGroup"
	statusMissingMachineID = "error-missingMachineId"
	statusInternal         = "error-internal"
)

// Handle answers one Omaha request. It never fails: problems with one app
// become that app's error status, store failures become "error-internal"
// (logged), as update_engine expects an XML answer with HTTP 200.
func (s *Service) Handle(ctx context.Context, req *omaha.Request, clientIP string) *omaha.Response {
	start := time.Now()
	defer func() { s.m.duration.Observe(time.Since(start).Seconds()) }()
	resp := &omaha.Response{Protocol: "3.0", Server: s.cfg.ServerName}
	now := s.now().UTC()
	for i := range req.Apps {
		resp.Apps = append(resp.Apps, s.handleApp(ctx, req, &req.Apps[i], clientIP, now))
	}
	return resp
}

// appRequest is one <app> resolved against the configuration.
type appRequest struct {
	req      *omaha.Request
	a        *omaha.App
	ip       string
	now      time.Time
	snap     *snapshot
	app      store.Application
	group    store.Group
	machine  string
	onDemand bool
}

func (s *Service) handleApp(ctx context.Context, req *omaha.Request, a *omaha.App, ip string, now time.Time) omaha.ResponseApp {
	out := omaha.ResponseApp{AppID: a.AppID, Status: statusOK}
	fail := func(status string) omaha.ResponseApp {
		s.m.appStatus.WithLabelValues(status).Inc()
		out.Status = status
		out.Ping, out.Events = nil, nil
		if a.UpdateCheck != nil {
			out.UpdateCheck = &omaha.UpdateCheckResponse{Status: statusInternal}
		}
		return out
	}
	switch {
	case a.UpdateCheck != nil:
		s.m.requests.WithLabelValues("check").Inc()
	case len(a.Events) > 0:
		s.m.requests.WithLabelValues("event").Inc()
	default:
		s.m.requests.WithLabelValues("ping").Inc()
	}

	appID, err := omaha.NormalizeAppID(a.AppID)
	if err != nil {
		return fail(statusInvalidAppID)
	}
	snap, err := s.cache.get(ctx)
	if err != nil {
		s.m.errors.Inc()
		s.log.Error("omaha: load config", "err", err)
		return fail(statusInternal)
	}
	app, ok := snap.apps[appID]
	if !ok {
		return fail(statusUnknownApp)
	}
	track := a.Track
	if name, ok := omaha.LegacyTrack(track); ok {
		track = name
	}
	group, ok := snap.groups[[2]string{appID, track}]
	if !ok {
		return fail(statusUnknownGroup)
	}
	// ParseRequest already fell back to the Google-spec userid.
	machine := strings.ToLower(strings.Trim(strings.TrimSpace(a.MachineID), "{}"))
	if machine == "" {
		return fail(statusMissingMachineID)
	}
	r := &appRequest{
		req: req, a: a, ip: ip, now: now, snap: snap, app: app, group: group, machine: machine,
		onDemand: req.InstallSource == omaha.InstallSourceOnDemand,
	}
	if a.Ping != nil {
		out.Ping = &omaha.PingResponse{Status: statusOK}
	}
	for range a.Events {
		out.Events = append(out.Events, omaha.EventResponse{Status: statusOK})
	}
	uc, err := s.process(ctx, r)
	if err != nil {
		s.m.errors.Inc()
		s.log.Error("omaha: process request", "app", appID, "machine", machine, "err", err)
		return fail(statusInternal)
	}
	out.UpdateCheck = uc
	return out
}

// process records the request's events and ping and answers its update
// check (nil when the request has none).
func (s *Service) process(ctx context.Context, r *appRequest) (*omaha.UpdateCheckResponse, error) {
	// The instance is read outside the write transaction (reads do not
	// wait for writers); commit re-checks it and a concurrent change to the
	// same instance makes the whole request start over.
	for attempt := 0; ; attempt++ {
		uc, err := s.processOnce(ctx, r)
		if !errors.Is(err, errStale) || attempt == 4 {
			return uc, err
		}
		s.m.retries.Inc()
	}
}

// errStale means the instance changed between read and commit.
var errStale = errors.New("instance changed concurrently")

func (s *Service) processOnce(ctx context.Context, r *appRequest) (*omaha.UpdateCheckResponse, error) {
	cur, err := s.st.GetInstance(ctx, r.app.ID, r.machine)
	isNew := errors.Is(err, store.ErrNotFound)
	if err != nil && !isNew {
		return nil, fmt.Errorf("get instance: %w", err)
	}
	if isNew {
		cur = store.Instance{AppID: r.app.ID, MachineID: r.machine, Status: store.StatusIdle, CreatedAt: r.now, StatusChanged: r.now}
	}
	next := cur
	r.applyIdentity(&next)

	p := &plan{r: r, before: cur, next: next, isNew: isNew}
	s.expireLocally(p)
	for _, e := range r.a.Events {
		s.applyEvent(p, e)
	}
	var uc *omaha.UpdateCheckResponse
	if r.a.UpdateCheck != nil {
		uc = s.decideQuick(p)
	}
	if p.needsGrantTx {
		return s.grantTx(ctx, p)
	}
	if !p.dirty() {
		if r.now.Sub(cur.LastCheck) < s.cfg.LastSeenResolution {
			return uc, nil
		}
		// Only the last-seen time changed: group-commit it with others.
		if err := s.touch.touch(ctx, r.app.ID, r.machine, r.now); err != nil {
			return nil, err
		}
		return uc, nil
	}
	if err := s.commit(ctx, p, nil); err != nil {
		return nil, err
	}
	return uc, nil
}

func (r *appRequest) applyIdentity(in *store.Instance) {
	a := r.a
	in.Alias = a.MachineAlias
	in.IP = r.ip
	in.OEM = a.OEM
	in.OEMVersion = a.OEMVersion
	in.AlephVersion = a.AlephVersion
	in.Board = a.Board
	in.Group = r.group.Name
	if a.Version != "" {
		in.Version = a.Version
	}
	in.LastCheck = r.now
}

// plan collects what one request changes; commit writes it in one
// transaction.
type plan struct {
	r       *appRequest
	before  store.Instance
	next    store.Instance
	isNew   bool
	events  []store.Event
	changes []store.StatusChange
	// failedVersion is set when the request reported a failure of an update
	// to that version (auto-pause looks at it).
	failedVersions []string
	completed      bool
	needsGrantTx   bool
	target         store.Package
	timedOut       bool
}

func (p *plan) dirty() bool {
	b, n := p.before, p.next
	return p.isNew || len(p.events) > 0 || len(p.changes) > 0 ||
		b.Alias != n.Alias || b.IP != n.IP || b.OEM != n.OEM || b.OEMVersion != n.OEMVersion ||
		b.AlephVersion != n.AlephVersion || b.Board != n.Board || b.Group != n.Group || b.Version != n.Version ||
		b.Status != n.Status || b.GrantedVersion != n.GrantedVersion || b.BlockedVersion != n.BlockedVersion ||
		b.LastErrorCode != n.LastErrorCode
}

// setStatus moves the planned instance to st and records the history row.
func (p *plan) setStatus(st store.Status, version string, code int64) {
	p.next.Status = st
	p.next.StatusChanged = p.r.now
	p.changes = append(p.changes, store.StatusChange{
		AppID: p.r.app.ID, MachineID: p.r.machine, Group: p.r.group.Name,
		Status: st, Version: version, ErrorCode: code, At: p.r.now,
	})
}

// expireLocally applies the group's update timeout to this instance right
// away, so its status is correct even between two sweeps.
func (s *Service) expireLocally(p *plan) {
	to := p.r.group.Policy.UpdateTimeout
	if to <= 0 || !p.next.Status.InProgress() || p.next.GrantedAt.IsZero() {
		return
	}
	if p.r.now.Sub(p.next.GrantedAt) >= to {
		p.setStatus(store.StatusTimedOut, p.next.GrantedVersion, 0)
		p.timedOut = true
	}
}

// applyEvent records one Omaha event and moves the instance's status.
func (s *Service) applyEvent(p *plan, e omaha.Event) {
	n := &p.next
	changes := len(p.changes)
	defer func() {
		// update_engine attaches 3/2 to every update check. Stored each
		// time it would be one row per machine per 45 minutes and a write
		// on every check; it carries news only when it reports a finished
		// update (a real previousversion) or moves the status.
		routine := e.Type == omaha.EventTypeUpdateComplete && e.Result == omaha.EventResultSuccessReboot &&
			(e.PreviousVersion == "" || e.PreviousVersion == "0.0.0.0")
		if routine && len(p.changes) == changes {
			return
		}
		p.events = append(p.events, store.Event{
			AppID: p.r.app.ID, MachineID: p.r.machine, Group: p.r.group.Name,
			Type: e.Type, Result: e.Result, ErrorCode: e.ErrorCode,
			Version: p.r.a.Version, PreviousVersion: e.PreviousVersion, At: p.r.now,
		})
	}()
	granted := n.GrantedVersion != "" && (n.Status.InProgress() || n.Status == store.StatusTimedOut)
	switch {
	case e.Type == omaha.EventTypeUpdateDownloadStarted && e.Result == omaha.EventResultSuccess:
		if granted && n.Status != store.StatusDownloading {
			p.setStatus(store.StatusDownloading, n.GrantedVersion, 0)
		}
	case e.Type == omaha.EventTypeUpdateDownloadFinished && e.Result == omaha.EventResultSuccess:
		if granted && n.Status != store.StatusDownloaded {
			p.setStatus(store.StatusDownloaded, n.GrantedVersion, 0)
		}
	case e.Type == omaha.EventTypeUpdateComplete && e.Result == omaha.EventResultSuccess:
		if granted && n.Status != store.StatusInstalled {
			p.setStatus(store.StatusInstalled, n.GrantedVersion, 0)
		}
	case e.Type == omaha.EventTypeUpdateComplete && e.Result == omaha.EventResultSuccessReboot:
		// Rides on every update check: it means "booted the new version"
		// only when this server granted that version (omaha.md §3).
		if granted && CompareVersions(p.r.a.Version, n.GrantedVersion) >= 0 {
			p.setStatus(store.StatusComplete, p.r.a.Version, 0)
			p.completed = true
		}
	case e.Type == omaha.EventTypeUpdateComplete && e.Result == omaha.EventResultError:
		n.LastErrorCode = e.ErrorCode
		version := p.r.a.Version
		if granted {
			version = n.GrantedVersion
		}
		if omaha.IsRollback(e.ErrorCode) {
			// The machine booted back into its previous version. Never
			// offer that release again automatically (update loops,
			// flatcar/Flatcar#130). Deleting the instance clears the block: the
			// machine registers again at its next check.
			// The grant may already be marked error or timed-out (the
			// install failed on boot), so look at the version, not the
			// status.
			if n.GrantedVersion != "" && CompareVersions(n.GrantedVersion, p.r.a.Version) > 0 {
				n.BlockedVersion = n.GrantedVersion
				version = n.GrantedVersion
			}
			p.setStatus(store.StatusRolledBack, version, e.ErrorCode)
		} else {
			p.setStatus(store.StatusError, version, e.ErrorCode)
		}
		if granted {
			p.failedVersions = append(p.failedVersions, version)
		}
	}
}

// decideQuick answers an update check from the cached configuration and the
// instance as read. Grants need exact counts and are finished in grantTx.
func (s *Service) decideQuick(p *plan) *omaha.UpdateCheckResponse {
	r, n := p.r, &p.next
	noupdate := &omaha.UpdateCheckResponse{Status: "noupdate"}
	ch, ok := r.snap.channels[[2]string{r.app.ID, r.group.Channel}]
	if !ok || ch.PackageVersion == "" {
		s.m.decisions.WithLabelValues("noupdate").Inc()
		return noupdate
	}
	target := ch.PackageVersion
	arch := archFromBoard(r.a.Board, osSP(r.req))
	pkg, ok := r.snap.packages[[3]string{r.app.ID, target, arch}]
	if !ok {
		s.m.decisions.WithLabelValues("no-package").Inc()
		s.reportMissingPackage(p.r, target, arch)
		return noupdate
	}
	if CompareVersions(n.Version, target) >= 0 {
		// Up to date (or newer: never downgrade). A machine that was held
		// back or timed out but reached the target anyway is simply idle.
		if n.Status == store.StatusOnHold {
			p.setStatus(store.StatusIdle, n.Version, 0)
		}
		s.m.decisions.WithLabelValues("noupdate").Inc()
		return noupdate
	}
	if n.BlockedVersion == target {
		s.m.decisions.WithLabelValues("blocked").Inc()
		return noupdate
	}
	if n.Status.InProgress() && n.GrantedVersion == target {
		// The machine asks again for an update it was already granted (a
		// retry after a failed download, a restart): serve it again
		// without counting it against the limits a second time.
		s.m.decisions.WithLabelValues("update").Inc()
		return updateResponse(pkg)
	}
	in := rollout.Input{
		Now: r.now, Policy: r.group.Policy, RolloutStartedAt: r.group.RolloutStartedAt,
		MachineID: r.machine, TargetVersion: target, OnDemand: r.onDemand,
	}
	if r.group.RolloutVersion != target {
		in.RolloutStartedAt = time.Time{}
	}
	// Counts only ever turn a grant into a hold (rollout.Decide's
	// documented monotonicity), so a hold with zero counts is final and
	// needs no transaction.
	if d := rollout.Decide(in); !d.Grant {
		s.hold(p, d)
		return noupdate
	}
	p.needsGrantTx = true
	p.target = pkg
	return nil
}

// reportMissingPackage logs, once per process and (group, version, arch),
// that machines ask for a release that has no package for their
// architecture: a misconfiguration the operator should see, but not once
// per check.
func (s *Service) reportMissingPackage(r *appRequest, version, arch string) {
	key := r.app.ID + "\x00" + r.group.Name + "\x00" + version + "\x00" + arch
	if _, seen := s.missingPkgs.LoadOrStore(key, true); seen {
		return
	}
	a := store.Activity{
		AppID: r.app.ID, Group: r.group.Name, Channel: r.group.Channel, Kind: store.ActivityPackageNotFound,
		Severity: store.SeverityWarning, Version: version, At: r.now,
		Message: fmt.Sprintf("channel %s offers %s but no package exists for arch %s; machines of group %s with that arch get no update", r.group.Channel, version, arch, r.group.Name),
	}
	id, err := s.st.AddActivity(context.WithoutCancel(context.Background()), a)
	if err != nil {
		s.missingPkgs.Delete(key)
		s.log.Warn("record missing package", "err", err)
		return
	}
	a.ID = id
	s.publish([]store.Activity{a})
}

func (s *Service) hold(p *plan, d rollout.Decision) {
	s.m.decisions.WithLabelValues("hold-" + string(d.Reason)).Inc()
	// A failed machine keeps showing its failure while it is held: on-hold
	// would hide it from an operator looking for errors.
	switch p.next.Status {
	case store.StatusOnHold, store.StatusError, store.StatusRolledBack:
		return
	}
	p.setStatus(store.StatusOnHold, p.next.Version, 0)
}

func osSP(req *omaha.Request) string {
	if req.OS == nil {
		return ""
	}
	return req.OS.ServicePack
}

// updateResponse builds the "ok" update check for pkg in the shape
// update_engine parses (omaha.md §5.1): one codebase, the payload as the
// first package, extra files after it, and the postinstall action with the
// payload's SHA-256.
func updateResponse(pkg store.Package) *omaha.UpdateCheckResponse {
	pkgs := []omaha.Package{{
		Name: pkg.FileName, Size: pkg.Size, Hash: pkg.SHA1, HashSHA256: pkg.SHA256, Required: true,
	}}
	for _, f := range pkg.ExtraFiles {
		pkgs = append(pkgs, omaha.Package{Name: f.Name, Size: f.Size, Hash: f.SHA1, HashSHA256: f.SHA256, Required: false})
	}
	return &omaha.UpdateCheckResponse{
		Status: "ok",
		URLs:   []omaha.URL{{Codebase: pkg.BaseURL}},
		Manifest: &omaha.Manifest{
			Version:  pkg.Version,
			Packages: pkgs,
			Actions: []omaha.Action{{
				Event: "postinstall", SHA256: pkg.SHA256, DisablePayloadBackoff: true,
			}},
		},
	}
}

// grantTx re-decides with exact counts while holding the group, and grants
// or holds.
func (s *Service) grantTx(ctx context.Context, p *plan) (*omaha.UpdateCheckResponse, error) {
	var resp *omaha.UpdateCheckResponse
	err := s.commit(ctx, p, func(ctx context.Context, q store.TxQueries, g *store.Group, acts *[]store.Activity) error {
		r := p.r
		target := p.target.Version
		if g.Channel != r.group.Channel || g.Policy.Paused {
			// Changed since the snapshot was taken: answer conservatively.
			s.hold(p, rollout.Decision{Reason: rollout.ReasonPaused})
			resp = &omaha.UpdateCheckResponse{Status: "noupdate"}
			return nil
		}
		if g.RolloutVersion != target {
			a, err := s.startRollout(ctx, q, g, target, r.now)
			if err != nil {
				return err
			}
			*acts = append(*acts, a)
		}
		pol := g.Policy
		var periodStart time.Time
		if pol.Period > 0 {
			periodStart = r.now.Add(-pol.Period)
		}
		var inProgressSince time.Time
		if pol.UpdateTimeout > 0 {
			inProgressSince = r.now.Add(-pol.UpdateTimeout)
		}
		counts, err := q.GroupCounts(ctx, r.app.ID, g.Name, periodStart, inProgressSince)
		if err != nil {
			return fmt.Errorf("group counts: %w", err)
		}
		d := rollout.Decide(rollout.Input{
			Now: r.now, Policy: pol, RolloutStartedAt: g.RolloutStartedAt,
			MachineID: r.machine, TargetVersion: target, OnDemand: r.onDemand, Counts: counts,
		})
		if !d.Grant {
			s.hold(p, d)
			resp = &omaha.UpdateCheckResponse{Status: "noupdate"}
			return nil
		}
		p.next.GrantedVersion = target
		p.next.GrantedAt = r.now
		p.setStatus(store.StatusGranted, target, 0)
		s.m.decisions.WithLabelValues("update").Inc()
		resp = updateResponse(p.target)
		return nil
	})
	return resp, err
}

// txFunc runs inside commit's transaction with the locked group.
type txFunc func(ctx context.Context, q store.TxQueries, g *store.Group, acts *[]store.Activity) error

// commit writes a plan in one transaction: events, status history, the
// instance row, and the group-level consequences (auto-pause, rollout
// finished). extra, if set, runs first with the group locked.
func (s *Service) commit(ctx context.Context, p *plan, extra txFunc) error {
	var acts []store.Activity
	groupChanged := false
	// A backend may run the function again (PostgreSQL retries deadlocks
	// and serialization failures); extra changes the plan, so every
	// attempt starts from the plan as it was.
	next, nChanges := p.next, len(p.changes)
	err := s.st.Update(ctx, func(q store.TxQueries) error {
		acts, groupChanged = acts[:0], false
		p.next, p.changes = next, p.changes[:nChanges]
		needGroup := extra != nil || len(p.failedVersions) > 0 || p.completed || p.timedOut
		var g store.Group
		if needGroup {
			var err error
			g, err = q.LockGroup(ctx, p.r.app.ID, p.r.group.Name)
			if err != nil {
				return fmt.Errorf("lock group: %w", err)
			}
		}
		// Optimistic check: the plan was made from a read outside this
		// transaction; if the instance moved on meanwhile, start over
		// rather than overwrite the newer state.
		cur, err := q.GetInstance(ctx, p.r.app.ID, p.r.machine)
		switch {
		case p.isNew && err == nil:
			return errStale
		case p.isNew && errors.Is(err, store.ErrNotFound):
		case err != nil:
			return fmt.Errorf("get instance: %w", err)
		case !sameState(cur, p.before):
			return errStale
		}
		before := g
		if extra != nil {
			if err := extra(ctx, q, &g, &acts); err != nil {
				return err
			}
		}
		for _, e := range p.events {
			if _, err := q.AddEvent(ctx, e); err != nil {
				return fmt.Errorf("add event: %w", err)
			}
		}
		for _, c := range p.changes {
			if _, err := q.AddStatusChange(ctx, c); err != nil {
				return fmt.Errorf("add status change: %w", err)
			}
		}
		if err := q.PutInstance(ctx, p.next); err != nil {
			return fmt.Errorf("put instance: %w", err)
		}
		if p.timedOut {
			a, err := addActivity(ctx, q, store.Activity{
				AppID: p.r.app.ID, Group: g.Name, Kind: store.ActivityInstanceTimedOut, Severity: store.SeverityWarning,
				Version: p.before.GrantedVersion, MachineIDs: []string{p.r.machine}, At: p.r.now,
				Message: fmt.Sprintf("machine %s did not finish its update to %s within %s", p.r.machine, p.before.GrantedVersion, g.Policy.UpdateTimeout),
			})
			if err != nil {
				return err
			}
			acts = append(acts, a)
		}
		for _, v := range p.failedVersions {
			more, err := s.onFailure(ctx, q, &g, p, v)
			if err != nil {
				return err
			}
			acts = append(acts, more...)
		}
		if p.completed {
			a, ok, err := s.checkFinished(ctx, q, &g, p.r.now)
			if err != nil {
				return err
			}
			if ok {
				acts = append(acts, a)
			}
		}
		if needGroup && !groupEqual(before, g) {
			g.UpdatedAt = p.r.now
			if err := q.UpdateGroup(ctx, g); err != nil {
				return fmt.Errorf("update group: %w", err)
			}
			groupChanged = true
		}
		return nil
	})
	if err != nil {
		return err
	}
	if groupChanged {
		s.cache.invalidate()
	}
	for _, c := range p.changes {
		s.m.events.WithLabelValues(string(c.Status)).Inc()
	}
	s.publishStatus(p.changes)
	s.publish(acts)
	return nil
}

// sameState reports whether an instance's update state is unchanged
// (LastCheck moves with every touch and is not state).
func sameState(a, b store.Instance) bool {
	return a.Status == b.Status && a.StatusChanged.Equal(b.StatusChanged) && a.GrantedVersion == b.GrantedVersion &&
		a.GrantedAt.Equal(b.GrantedAt) && a.Version == b.Version && a.Group == b.Group &&
		a.BlockedVersion == b.BlockedVersion && a.LastErrorCode == b.LastErrorCode
}

func groupEqual(a, b store.Group) bool {
	return a.Policy.Paused == b.Policy.Paused && a.PausedReason == b.PausedReason &&
		a.RolloutVersion == b.RolloutVersion && a.RolloutStartedAt.Equal(b.RolloutStartedAt)
}

// onFailure logs a failed update and pauses the group when the failures on
// its current rollout reach the policy's threshold.
func (s *Service) onFailure(ctx context.Context, q store.TxQueries, g *store.Group, p *plan, version string) ([]store.Activity, error) {
	code := omaha.DecodeErrorCode(p.next.LastErrorCode)
	kind := "failed to update"
	if p.next.Status == store.StatusRolledBack {
		kind = "rolled back from"
	}
	acts := []store.Activity{}
	a, err := addActivity(ctx, q, store.Activity{
		AppID: p.r.app.ID, Group: g.Name, Kind: store.ActivityInstanceFailed, Severity: store.SeverityError,
		Version: version, MachineIDs: []string{p.r.machine}, At: p.r.now,
		Message: fmt.Sprintf("machine %s %s %s: %s", p.r.machine, kind, version, code),
	})
	if err != nil {
		return nil, err
	}
	acts = append(acts, a)
	threshold := g.Policy.AutoPauseFailures
	if threshold <= 0 || g.Policy.Paused || version != g.RolloutVersion {
		return acts, nil
	}
	n, err := q.CountFailures(ctx, p.r.app.ID, g.Name, version, g.RolloutStartedAt)
	if err != nil {
		return nil, fmt.Errorf("count failures: %w", err)
	}
	if n < threshold {
		return acts, nil
	}
	ids, err := q.FailedMachines(ctx, p.r.app.ID, g.Name, version, g.RolloutStartedAt, 20)
	if err != nil {
		return nil, fmt.Errorf("failed machines: %w", err)
	}
	g.Policy.Paused = true
	g.PausedReason = fmt.Sprintf("auto-paused: %d machine(s) failed or rolled back on %s (threshold %d): %s",
		n, version, threshold, strings.Join(ids, ", "))
	a, err = addActivity(ctx, q, store.Activity{
		AppID: p.r.app.ID, Group: g.Name, Kind: store.ActivityRolloutFailed, Severity: store.SeverityError,
		Version: version, MachineIDs: ids, At: p.r.now, Message: g.PausedReason,
	})
	if err != nil {
		return nil, err
	}
	return append(acts, a), nil
}

// checkFinished records "rollout finished" when the last machine of the
// group reached the rollout's version.
func (s *Service) checkFinished(ctx context.Context, q store.TxQueries, g *store.Group, now time.Time) (store.Activity, bool, error) {
	if g.RolloutVersion == "" {
		return store.Activity{}, false, nil
	}
	left, err := q.CountNotOnVersion(ctx, g.AppID, g.Name, g.RolloutVersion)
	if err != nil {
		return store.Activity{}, false, fmt.Errorf("count not on version: %w", err)
	}
	if left > 0 {
		return store.Activity{}, false, nil
	}
	a, err := addActivity(ctx, q, store.Activity{
		AppID: g.AppID, Group: g.Name, Kind: store.ActivityRolloutFinished, Severity: store.SeveritySuccess,
		Version: g.RolloutVersion, At: now,
		Message: fmt.Sprintf("every machine of group %s runs %s", g.Name, g.RolloutVersion),
	})
	return a, err == nil, err
}

// startRollout makes version the group's current rollout.
func (s *Service) startRollout(ctx context.Context, q store.Queries, g *store.Group, version string, now time.Time) (store.Activity, error) {
	g.RolloutVersion = version
	g.RolloutStartedAt = now
	return addActivity(ctx, q, store.Activity{
		AppID: g.AppID, Group: g.Name, Channel: g.Channel, Kind: store.ActivityRolloutStarted, Severity: store.SeverityInfo,
		Version: version, At: now,
		Message: fmt.Sprintf("group %s started rolling out %s", g.Name, version),
	})
}
