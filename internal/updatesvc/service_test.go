package updatesvc_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/internal/store/sqlite"
	"github.com/flotilla/flotilla/internal/updatesvc"
	"github.com/flotilla/flotilla/omaha"
)

const appID = "e96281a6-d1af-4bde-9a0a-97b76e56dc57"

// clock is a settable time source shared by the service under test.
type clock struct{ ns atomic.Int64 }

func (c *clock) now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) set(t time.Time)         { c.ns.Store(t.UnixNano()) }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }

type env struct {
	t   testing.TB
	svc *updatesvc.Service
	st  store.Store
	clk *clock
	ctx context.Context
}

func newEnv(t testing.TB) *env {
	t.Helper()
	ctx := context.Background()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "flotilla.db"), sqlite.Options{Synchronous: "NORMAL"}, logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clk := &clock{}
	clk.set(time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC)) // a Monday
	svc, err := updatesvc.New(st, updatesvc.Config{}, logger, nil, updatesvc.WithClock(clk.now))
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, svc: svc, st: st, clk: clk, ctx: ctx}
	e.must(svc.CreateApp(ctx, store.Application{ID: appID, Name: "Flatcar"}))
	for _, v := range []string{"3975.2.1", "4081.2.0"} {
		e.must(svc.CreatePackage(ctx, store.Package{
			AppID: appID, Version: v, Arch: "amd64", BaseURL: "https://updates.example.net/" + v + "/",
			FileName: "flatcar_production_update.gz", Size: 1000, SHA1: "bh+HmSJWrofZCGq9+Zwr00Id9cE=",
			SHA256:     "3twpmKMOhUE4jamEnUBDF37BM70/RU3ZA6de281oiNs=",
			ExtraFiles: []store.PackageFile{{Name: "oem-qemu.gz", Size: 10, SHA256: "kQrkxOUNvxVzjR00zQ4DlCa2BzG3W6pDTiaTQNwk7JM="}},
		}))
	}
	e.must(svc.CreateChannel(ctx, store.Channel{AppID: appID, Name: "stable", PackageVersion: "3975.2.1"}))
	return e
}

func (e *env) must(err error) {
	e.t.Helper()
	if err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) group(name string, mod func(*store.Policy)) {
	e.t.Helper()
	p := store.DefaultPolicy()
	if mod != nil {
		mod(&p)
	}
	e.must(e.svc.CreateGroup(e.ctx, store.Group{AppID: appID, Name: name, Channel: "stable", Policy: p}))
}

func (e *env) promote(version string) {
	e.t.Helper()
	e.must(e.svc.SetChannelPackage(e.ctx, appID, "stable", version))
}

// machine builds update_engine-shaped requests for one simulated machine.
type machine struct {
	id, version, track string
	prev               string
}

func (m *machine) app() omaha.App {
	return omaha.App{
		AppID: "{" + appID + "}", Version: m.version, Track: m.track, MachineID: m.id,
		BootID: "{5d0c1a9e-3f7b-4e2a-9c61-0b8f2a4d7e13}", OEM: "qemu", Board: "amd64-usr", MachineAlias: "alias-" + m.id,
	}
}

func request(installSource string, a omaha.App) *omaha.Request {
	return &omaha.Request{Protocol: "3.0", Version: "update_engine-0.4.10", InstallSource: installSource, IsMachine: 1,
		OS: &omaha.OS{Version: "Chateau", Platform: "CoreOS", ServicePack: "3975.2.1_x86_64"}, Apps: []omaha.App{a}}
}

func (e *env) check(m *machine) omaha.ResponseApp {
	return e.checkFrom(m, omaha.InstallSourceScheduler)
}

func (e *env) checkFrom(m *machine, source string) omaha.ResponseApp {
	e.t.Helper()
	a := m.app()
	a.Ping = &omaha.Ping{Active: 1}
	a.UpdateCheck = &omaha.UpdateCheck{}
	prev := m.prev
	if prev == "" {
		prev = "0.0.0.0"
	}
	a.Events = []omaha.Event{{Type: 3, Result: 2, PreviousVersion: prev}}
	m.prev = ""
	resp := e.svc.Handle(e.ctx, request(source, a), "192.0.2.10")
	if len(resp.Apps) != 1 {
		e.t.Fatalf("got %d apps in response", len(resp.Apps))
	}
	return resp.Apps[0]
}

func (e *env) event(m *machine, ev omaha.Event) omaha.ResponseApp {
	e.t.Helper()
	a := m.app()
	a.Events = []omaha.Event{ev}
	return e.svc.Handle(e.ctx, request(omaha.InstallSourceScheduler, a), "192.0.2.10").Apps[0]
}

func (e *env) instance(id string) store.Instance {
	e.t.Helper()
	in, err := e.st.GetInstance(e.ctx, appID, id)
	if err != nil {
		e.t.Fatalf("get instance %s: %v", id, err)
	}
	return in
}

func (e *env) wantStatus(id string, want store.Status) {
	e.t.Helper()
	if got := e.instance(id).Status; got != want {
		e.t.Fatalf("instance %s status = %s, want %s", id, got, want)
	}
}

func ucStatus(a omaha.ResponseApp) string {
	if a.UpdateCheck == nil {
		return "<none>"
	}
	return a.UpdateCheck.Status
}

func TestFullUpdateFlow(t *testing.T) {
	e := newEnv(t)
	e.group("stable", nil)
	m := &machine{id: "8f14e45fceea167a5a36dedd4bea2543", version: "3975.2.1", track: "stable"}

	if got := ucStatus(e.check(m)); got != "noupdate" {
		t.Fatalf("check on current version: %s, want noupdate", got)
	}
	e.wantStatus(m.id, store.StatusIdle)

	e.promote("4081.2.0")
	r := e.check(m)
	if r.Status != "ok" || ucStatus(r) != "ok" {
		t.Fatalf("check after promotion: app %s updatecheck %s, want ok/ok", r.Status, ucStatus(r))
	}
	uc := r.UpdateCheck
	if uc.Manifest == nil || uc.Manifest.Version != "4081.2.0" || len(uc.URLs) != 1 || uc.URLs[0].Codebase != "https://updates.example.net/4081.2.0/" {
		t.Fatalf("bad update response: %+v", uc)
	}
	if len(uc.Manifest.Packages) != 2 || uc.Manifest.Packages[0].Name != "flatcar_production_update.gz" || !uc.Manifest.Packages[0].Required || uc.Manifest.Packages[1].Required {
		t.Fatalf("bad packages: %+v", uc.Manifest.Packages)
	}
	if pi := uc.Manifest.Postinstall(); pi == nil || pi.SHA256 != "3twpmKMOhUE4jamEnUBDF37BM70/RU3ZA6de281oiNs=" || !pi.DisablePayloadBackoff {
		t.Fatalf("bad postinstall action: %+v", pi)
	}
	if err := uc.Validate(); err != nil {
		t.Fatalf("response fails update_engine's checks: %v", err)
	}
	e.wantStatus(m.id, store.StatusGranted)

	// A retry of the check re-serves the same grant.
	if got := ucStatus(e.check(m)); got != "ok" {
		t.Fatalf("re-check while granted: %s, want ok", got)
	}

	steps := []struct {
		ev   omaha.Event
		want store.Status
	}{
		{omaha.Event{Type: 13, Result: 1}, store.StatusDownloading},
		{omaha.Event{Type: 14, Result: 1}, store.StatusDownloaded},
		{omaha.Event{Type: 3, Result: 1}, store.StatusInstalled},
	}
	for _, s := range steps {
		if r := e.event(m, s.ev); r.Status != "ok" || len(r.Events) != 1 {
			t.Fatalf("event %v: %+v", s.ev, r)
		}
		e.wantStatus(m.id, s.want)
	}

	// Waiting for reboot: ping only, status stays, last check moves.
	e.clk.advance(10 * time.Minute)
	a := m.app()
	a.Ping = &omaha.Ping{Active: 1}
	if r := e.svc.Handle(e.ctx, request("scheduler", a), "192.0.2.10").Apps[0]; r.Ping == nil || r.UpdateCheck != nil {
		t.Fatalf("ping-only answer: %+v", r)
	}
	in := e.instance(m.id)
	if in.Status != store.StatusInstalled || !in.LastCheck.Equal(e.clk.now()) {
		t.Fatalf("after ping: status %s last check %v, want installed at %v", in.Status, in.LastCheck, e.clk.now())
	}

	// Reboot into the new version.
	m.version, m.prev = "4081.2.0", "3975.2.1"
	if got := ucStatus(e.check(m)); got != "noupdate" {
		t.Fatalf("check after reboot: %s, want noupdate", got)
	}
	in = e.instance(m.id)
	if in.Status != store.StatusComplete || in.Version != "4081.2.0" {
		t.Fatalf("after reboot: %s on %s, want complete on 4081.2.0", in.Status, in.Version)
	}
	hist, err := e.st.ListStatusChanges(e.ctx, appID, m.id, 100)
	e.must(err)
	var got []store.Status
	for i := len(hist) - 1; i >= 0; i-- {
		got = append(got, hist[i].Status)
	}
	want := []store.Status{store.StatusGranted, store.StatusDownloading, store.StatusDownloaded, store.StatusInstalled, store.StatusComplete}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("history %v, want %v", got, want)
	}
	if !hasActivity(t, e, store.ActivityRolloutFinished) {
		t.Fatal("no rollout-finished activity after the only machine completed")
	}
	if in.IP != "192.0.2.10" || in.OEM != "qemu" || in.Alias != "alias-"+m.id || in.Board != "amd64-usr" {
		t.Fatalf("identity not recorded: %+v", in)
	}
}

func hasActivity(t *testing.T, e *env, kind store.ActivityKind) bool {
	t.Helper()
	acts, err := e.st.ListActivity(e.ctx, store.ActivityFilter{AppID: appID})
	e.must(err)
	for _, a := range acts {
		if a.Kind == kind {
			return true
		}
	}
	return false
}

func TestPausedGroupAnswersNoUpdate(t *testing.T) {
	e := newEnv(t)
	e.group("stable", func(p *store.Policy) { p.Paused = true })
	e.promote("4081.2.0")
	for i := range 20 {
		m := &machine{id: fmt.Sprintf("%032x", i+1), version: "3975.2.1", track: "stable"}
		r := e.check(m)
		if r.Status != "ok" || ucStatus(r) != "noupdate" {
			t.Fatalf("paused group answered app %s / %s, want ok / noupdate", r.Status, ucStatus(r))
		}
		e.wantStatus(m.id, store.StatusOnHold)
	}
	// Resume: the same machines get the update.
	f := false
	if _, err := e.svc.UpdateGroup(e.ctx, appID, "stable", updatesvc.GroupChange{Pause: &f}); err != nil {
		t.Fatal(err)
	}
	if got := ucStatus(e.check(&machine{id: fmt.Sprintf("%032x", 1), version: "3975.2.1", track: "stable"})); got != "ok" {
		t.Fatalf("after resume: %s, want ok", got)
	}
}

func TestRateLimitGrantsExactly(t *testing.T) {
	e := newEnv(t)
	e.group("stable", func(p *store.Policy) { p.MaxUpdatesPerPeriod, p.Period = 10, time.Hour })
	e.promote("4081.2.0")
	machines := make([]*machine, 40)
	for i := range machines {
		machines[i] = &machine{id: fmt.Sprintf("%032x", i+1), version: "3975.2.1", track: "stable"}
	}
	countGrants := func(ms []*machine) int {
		var mu sync.Mutex
		var wg sync.WaitGroup
		n := 0
		for _, m := range ms {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if ucStatus(e.check(m)) == "ok" {
					mu.Lock()
					n++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		return n
	}
	if n := countGrants(machines[:30]); n != 10 {
		t.Fatalf("granted %d updates in the first hour, want exactly 10", n)
	}
	for _, m := range machines[:30] {
		if st := e.instance(m.id).Status; st != store.StatusGranted && st != store.StatusOnHold {
			t.Fatalf("machine %s is %s, want granted or on-hold", m.id, st)
		}
	}
	e.clk.advance(30 * time.Minute)
	if n := countGrants(machines[30:]); n != 0 {
		t.Fatalf("granted %d more within the same hour, want 0", n)
	}
	e.clk.advance(31 * time.Minute)
	var held []*machine
	for _, m := range machines {
		if e.instance(m.id).Status == store.StatusOnHold {
			held = append(held, m)
		}
	}
	if len(held) != 30 {
		t.Fatalf("%d machines on hold, want 30", len(held))
	}
	if n := countGrants(held); n != 10 {
		t.Fatalf("granted %d in the next hour, want 10", n)
	}
}

func TestRollbackAutoPausesGroup(t *testing.T) {
	e := newEnv(t)
	e.group("stable", nil) // default: auto-pause after 1 failure
	e.promote("4081.2.0")
	m := &machine{id: "aaaa0000000000000000000000000001", version: "3975.2.1", track: "stable"}
	if got := ucStatus(e.check(m)); got != "ok" {
		t.Fatalf("first check: %s", got)
	}
	for _, ev := range []omaha.Event{{Type: 13, Result: 1}, {Type: 14, Result: 1}, {Type: 3, Result: 1}} {
		e.event(m, ev)
	}
	// The machine reboots, the new version fails, the bootloader falls
	// back: update_engine reports 3/0/44 (+ TestOmahaUrl flag) on its next
	// check, still on the old version.
	a := m.app()
	a.Ping = &omaha.Ping{Active: 1}
	a.UpdateCheck = &omaha.UpdateCheck{}
	a.Events = []omaha.Event{{Type: 3, Result: 0, ErrorCode: 44 | 1<<28}}
	r := e.svc.Handle(e.ctx, request("scheduler", a), "192.0.2.10").Apps[0]
	if ucStatus(r) != "noupdate" {
		t.Fatalf("rollback check answered %s, want noupdate", ucStatus(r))
	}
	in := e.instance(m.id)
	if in.Status != store.StatusRolledBack || in.BlockedVersion != "4081.2.0" || in.LastErrorCode != 44|1<<28 {
		t.Fatalf("after rollback: %+v", in)
	}
	g, err := e.st.GetGroup(e.ctx, appID, "stable")
	e.must(err)
	if !g.Policy.Paused || g.PausedReason == "" {
		t.Fatalf("group not auto-paused: paused=%v reason=%q", g.Policy.Paused, g.PausedReason)
	}
	acts, err := e.st.ListActivity(e.ctx, store.ActivityFilter{AppID: appID, Group: "stable"})
	e.must(err)
	found := false
	for _, a := range acts {
		if a.Kind == store.ActivityRolloutFailed && len(a.MachineIDs) == 1 && a.MachineIDs[0] == m.id {
			found = true
		}
	}
	if !found {
		t.Fatalf("no rollout-paused activity naming %s: %+v", m.id, acts)
	}
	// Other machines are held while paused.
	other := &machine{id: "bbbb0000000000000000000000000002", version: "3975.2.1", track: "stable"}
	if got := ucStatus(e.check(other)); got != "noupdate" {
		t.Fatalf("other machine in paused group: %s", got)
	}
	// After resuming, the rolled-back machine is not offered the same
	// version again, the other one is.
	f := false
	_, err = e.svc.UpdateGroup(e.ctx, appID, "stable", updatesvc.GroupChange{Pause: &f})
	e.must(err)
	if got := ucStatus(e.check(m)); got != "noupdate" {
		t.Fatalf("rolled-back machine re-offered the bad version: %s", got)
	}
	if got := ucStatus(e.check(other)); got != "ok" {
		t.Fatalf("other machine after resume: %s, want ok", got)
	}
}

func TestErrorEventKeepsRawCode(t *testing.T) {
	e := newEnv(t)
	e.group("stable", func(p *store.Policy) { p.AutoPauseFailures = 2 })
	e.promote("4081.2.0")
	m := &machine{id: "cccc0000000000000000000000000003", version: "3975.2.1", track: "stable"}
	e.check(m)
	e.event(m, omaha.Event{Type: 13, Result: 1})
	e.event(m, omaha.Event{Type: 3, Result: 0, ErrorCode: 268435466}) // 10 | TestOmahaUrl
	in := e.instance(m.id)
	if in.Status != store.StatusError || in.LastErrorCode != 268435466 {
		t.Fatalf("after error: %s code %d", in.Status, in.LastErrorCode)
	}
	g, _ := e.st.GetGroup(e.ctx, appID, "stable")
	if g.Policy.Paused {
		t.Fatal("paused after 1 failure with threshold 2")
	}
	m2 := &machine{id: "cccc0000000000000000000000000004", version: "3975.2.1", track: "stable"}
	e.check(m2)
	e.event(m2, omaha.Event{Type: 3, Result: 0, ErrorCode: 12})
	g, _ = e.st.GetGroup(e.ctx, appID, "stable")
	if !g.Policy.Paused {
		t.Fatal("not paused after 2 failures with threshold 2")
	}
}

func TestCompletionNeedsGrant(t *testing.T) {
	e := newEnv(t)
	e.group("stable", nil)
	// A machine that arrives already on a newer version with a 3/2 and a
	// previous version was never granted anything here: it is idle, not
	// complete.
	m := &machine{id: "dddd0000000000000000000000000005", version: "4081.2.0", track: "stable", prev: "3975.2.1"}
	e.check(m)
	e.wantStatus(m.id, store.StatusIdle)
}

func TestUnknownTrackStoresNothing(t *testing.T) {
	e := newEnv(t)
	e.group("stable", nil)
	m := &machine{id: "eeee0000000000000000000000000006", version: "3975.2.1", track: "nope"}
	r := e.check(m)
	if r.Status == "ok" || ucStatus(r) == "ok" || ucStatus(r) == "noupdate" {
		t.Fatalf("unknown track answered app %s / %s, want an error status", r.Status, ucStatus(r))
	}
	page, err := e.st.ListInstances(e.ctx, store.InstanceFilter{AppID: appID})
	e.must(err)
	if page.Total != 0 {
		t.Fatalf("unknown track stored %d instances", page.Total)
	}
	// Unknown application.
	a := m.app()
	a.AppID = "{11111111-2222-3333-4444-555555555555}"
	a.UpdateCheck = &omaha.UpdateCheck{}
	if r := e.svc.Handle(e.ctx, request("scheduler", a), "192.0.2.1").Apps[0]; r.Status != "error-unknownApplication" {
		t.Fatalf("unknown app status %q", r.Status)
	}
}

func TestLegacyTrackUUIDMapsToGroup(t *testing.T) {
	e := newEnv(t)
	e.group("stable", nil)
	// The old CoreOS amd64 "stable" group id, as machines configured with
	// GROUP=<uuid> still send it.
	m := &machine{id: "ffff0000000000000000000000000007", version: "3975.2.1", track: "{9A2DEB70-37BE-4026-853F-BFDD6B347BBE}"}
	if r := e.check(m); r.Status != "ok" || ucStatus(r) != "noupdate" {
		t.Fatalf("legacy track: app status %s / %s, want ok / noupdate", r.Status, ucStatus(r))
	}
	if g := e.instance(m.id).Group; g != "stable" {
		t.Fatalf("instance joined group %q, want stable", g)
	}
}

func TestGrantTimesOut(t *testing.T) {
	e := newEnv(t)
	e.group("stable", func(p *store.Policy) { p.MaxInProgress = 1; p.UpdateTimeout = time.Hour })
	e.promote("4081.2.0")
	m1 := &machine{id: "0000000000000000000000000000aa01", version: "3975.2.1", track: "stable"}
	m2 := &machine{id: "0000000000000000000000000000aa02", version: "3975.2.1", track: "stable"}
	if got := ucStatus(e.check(m1)); got != "ok" {
		t.Fatalf("m1: %s", got)
	}
	if got := ucStatus(e.check(m2)); got != "noupdate" {
		t.Fatalf("m2 with 1 in progress: %s, want noupdate", got)
	}
	e.clk.advance(61 * time.Minute)
	n, err := e.svc.ExpireGrants(e.ctx)
	e.must(err)
	if n != 1 {
		t.Fatalf("expired %d grants, want 1", n)
	}
	e.wantStatus(m1.id, store.StatusTimedOut)
	if got := ucStatus(e.check(m2)); got != "ok" {
		t.Fatalf("m2 after m1 timed out: %s, want ok", got)
	}
}

func TestPercentageAndOnDemandBypass(t *testing.T) {
	e := newEnv(t)
	e.group("stable", func(p *store.Policy) { p.RolloutPercent = 0; p.RampDuration = 10 * time.Hour })
	e.group("ondemand", func(p *store.Policy) { p.RolloutPercent = 0; p.OnDemandBypassesLimits = true })
	e.promote("4081.2.0")
	m := &machine{id: "0000000000000000000000000000bb01", version: "3975.2.1", track: "stable"}
	if got := ucStatus(e.check(m)); got != "noupdate" {
		t.Fatalf("0%% rollout: %s", got)
	}
	if got := ucStatus(e.checkFrom(m, omaha.InstallSourceOnDemand)); got != "noupdate" {
		t.Fatalf("on-demand without bypass: %s", got)
	}
	e.clk.advance(10 * time.Hour)
	if got := ucStatus(e.check(m)); got != "ok" {
		t.Fatalf("after the ramp reached 100%%: %s", got)
	}
	od := &machine{id: "0000000000000000000000000000bb02", version: "3975.2.1", track: "ondemand"}
	if got := ucStatus(e.check(od)); got != "noupdate" {
		t.Fatalf("scheduled check at 0%%: %s", got)
	}
	if got := ucStatus(e.checkFrom(od, omaha.InstallSourceOnDemand)); got != "ok" {
		t.Fatalf("on-demand check with bypass: %s", got)
	}
}

func TestPrune(t *testing.T) {
	e := newEnv(t)
	e.group("stable", nil)
	e.promote("4081.2.0")
	m := &machine{id: "0000000000000000000000000000cc01", version: "3975.2.1", track: "stable"}
	e.check(m)
	e.event(m, omaha.Event{Type: 13, Result: 1})
	e.clk.advance(91 * 24 * time.Hour)
	e.event(m, omaha.Event{Type: 14, Result: 1})
	res, err := e.svc.Prune(e.ctx)
	e.must(err)
	// Old: the 13/1 event (the check's routine 3/2 is not stored), the
	// granted and downloading status rows, and the channel-updated and
	// rollout-started activity.
	if res.Events != 1 || res.StatusHistory != 2 || res.Activity != 2 {
		t.Fatalf("pruned %+v, want 1 old event, 2 old status rows, 2 old activity entries", res)
	}
	evs, err := e.st.ListEvents(e.ctx, appID, m.id, 10)
	e.must(err)
	if len(evs) != 1 || evs[0].Type != 14 {
		t.Fatalf("events left: %+v", evs)
	}
	if _, err := e.st.GetInstance(e.ctx, appID, m.id); err != nil {
		t.Fatalf("prune removed the instance: %v", err)
	}
}

func TestMissingPackageReportedOnce(t *testing.T) {
	e := newEnv(t)
	e.group("stable", nil)
	e.promote("4081.2.0") // packages exist for amd64 only
	for i := range 3 {
		m := &machine{id: fmt.Sprintf("%032x", 0xa0+i), version: "3975.2.1", track: "stable"}
		a := m.app()
		a.Board = "arm64-usr"
		a.UpdateCheck = &omaha.UpdateCheck{}
		r := e.svc.Handle(e.ctx, request("scheduler", a), "192.0.2.1").Apps[0]
		if ucStatus(r) != "noupdate" {
			t.Fatalf("arm64 machine without an arm64 package: %s", ucStatus(r))
		}
	}
	acts, err := e.st.ListActivity(e.ctx, store.ActivityFilter{AppID: appID})
	e.must(err)
	n := 0
	for _, a := range acts {
		if a.Kind == store.ActivityPackageNotFound {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d package-not-found entries, want 1", n)
	}
}

// TestConcurrentRequestsForOneMachine sends a machine's requests in
// parallel (a retrying client, a proxy replaying): every request must be
// answered without an error status and the history must stay a valid
// sequence, with no status lost to a stale overwrite.
func TestConcurrentRequestsForOneMachine(t *testing.T) {
	e := newEnv(t)
	e.group("stable", nil)
	e.promote("4081.2.0")
	m := &machine{id: "0000000000000000000000000000dd01", version: "3975.2.1", track: "stable"}
	if got := ucStatus(e.check(m)); got != "ok" {
		t.Fatalf("first check: %s", got)
	}
	var wg sync.WaitGroup
	errs := make(chan string, 64)
	start := make(chan struct{})
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			a := m.app()
			if i%2 == 0 {
				a.Events = []omaha.Event{{Type: 13, Result: 1}}
			} else {
				a.Ping = &omaha.Ping{Active: 1}
				a.UpdateCheck = &omaha.UpdateCheck{}
			}
			r := e.svc.Handle(e.ctx, request("scheduler", a), "192.0.2.10").Apps[0]
			if r.Status != "ok" {
				errs <- r.Status
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for s := range errs {
		t.Errorf("concurrent request answered %s", s)
	}
	e.wantStatus(m.id, store.StatusDownloading)
	hist, err := e.st.ListStatusChanges(e.ctx, appID, m.id, 100)
	e.must(err)
	if len(hist) != 2 || hist[0].Status != store.StatusDownloading || hist[1].Status != store.StatusGranted {
		t.Fatalf("history %+v, want granted then one downloading", hist)
	}
	evs, err := e.st.ListEvents(e.ctx, appID, m.id, 100)
	e.must(err)
	if len(evs) != 16 {
		t.Fatalf("%d events stored, want the 16 download-started events", len(evs))
	}
}
