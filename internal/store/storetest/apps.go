package storetest

import (
	"testing"
	"time"

	"github.com/flotilla/flotilla/internal/store"
)

func testApps(t *testing.T, s store.Store) {
	ctx := t.Context()
	a := store.Application{ID: appA, Name: "Flatcar", Description: "Container Linux", CreatedAt: t0.In(elsewhere)}
	allSet(t, a)
	must(t, s.CreateApp(ctx, a))
	got, err := s.GetApp(ctx, appA)
	must(t, err)
	diff(t, "GetApp", got, a)
	wantUTC(t, "GetApp", got)

	wantErr(t, "CreateApp duplicate", s.CreateApp(ctx, store.Application{ID: appA, Name: "again", CreatedAt: t0}), store.ErrConflict)

	b := store.Application{ID: appB, Name: "Another", CreatedAt: at(time.Hour)}
	must(t, s.CreateApp(ctx, b))
	list, err := s.ListApps(ctx)
	must(t, err)
	diff(t, "ListApps (by name)", list, []store.Application{b, a})

	a.Name, a.Description, a.CreatedAt = "Flatcar Container Linux", "", at(-time.Hour)
	must(t, s.UpdateApp(ctx, a))
	got, err = s.GetApp(ctx, appA)
	must(t, err)
	diff(t, "GetApp after UpdateApp", got, a)

	wantErr(t, "UpdateApp unknown", s.UpdateApp(ctx, store.Application{ID: appC, Name: "x"}), store.ErrNotFound)
	_, err = s.GetApp(ctx, appC)
	wantErr(t, "GetApp unknown", err, store.ErrNotFound)
	wantErr(t, "DeleteApp unknown", s.DeleteApp(ctx, appC), store.ErrNotFound)

	must(t, s.DeleteApp(ctx, appB))
	_, err = s.GetApp(ctx, appB)
	wantErr(t, "GetApp deleted", err, store.ErrNotFound)
	list, err = s.ListApps(ctx)
	must(t, err)
	diff(t, "ListApps after delete", list, []store.Application{a})
}

// testDeleteAppReferenced: an application cannot be deleted while it has
// packages, channels or groups; a channel not while a group follows it.
func testDeleteAppReferenced(t *testing.T, s store.Store) {
	ctx := t.Context()
	mkApp(t, s, appA)
	must(t, s.CreatePackage(ctx, mkPackage(appA, "1.0.0", "amd64", t0)))
	wantErr(t, "DeleteApp with package", s.DeleteApp(ctx, appA), store.ErrConflict)
	must(t, s.DeletePackage(ctx, appA, "1.0.0", "amd64"))
	must(t, s.DeleteApp(ctx, appA))

	mkApp(t, s, appB)
	must(t, s.CreateChannel(ctx, mkChannel(appB, "stable", "")))
	wantErr(t, "DeleteApp with channel", s.DeleteApp(ctx, appB), store.ErrConflict)
	must(t, s.CreateGroup(ctx, mkGroup(appB, "prod", "stable", "stable")))
	wantErr(t, "DeleteChannel followed by a group", s.DeleteChannel(ctx, appB, "stable"), store.ErrConflict)
	wantErr(t, "DeleteApp with group", s.DeleteApp(ctx, appB), store.ErrConflict)
	must(t, s.DeleteGroup(ctx, appB, "prod"))
	wantErr(t, "DeleteApp with channel", s.DeleteApp(ctx, appB), store.ErrConflict)
	must(t, s.DeleteChannel(ctx, appB, "stable"))
	must(t, s.DeleteApp(ctx, appB))
	_, err := s.GetApp(ctx, appB)
	wantErr(t, "GetApp deleted", err, store.ErrNotFound)
}

// testDeleteAppCascadesInstances: instances and their history do not block
// deleting an application; they are deleted with it.
func testDeleteAppCascadesInstances(t *testing.T, s store.Store) {
	ctx := t.Context()
	mkApp(t, s, appA)
	mkApp(t, s, appB)
	putInstances(t, s, mkInstance(appA, "m1", "prod"), mkInstance(appB, "m1", "prod"))
	for _, app := range []string{appA, appB} {
		addChange(t, s, app, "m1", "prod", store.StatusComplete, "1.0.0", t0)
		_, err := s.AddEvent(ctx, store.Event{AppID: app, MachineID: "m1", Group: "prod", Type: 3, Result: 1, At: t0})
		must(t, err)
	}
	must(t, s.DeleteApp(ctx, appA))

	_, err := s.GetInstance(ctx, appA, "m1")
	wantErr(t, "GetInstance of deleted app", err, store.ErrNotFound)
	changes, err := s.ListStatusChanges(ctx, appA, "m1", 0)
	must(t, err)
	diff(t, "ListStatusChanges of deleted app", len(changes), 0)
	events, err := s.ListEvents(ctx, appA, "m1", 0)
	must(t, err)
	diff(t, "ListEvents of deleted app", len(events), 0)

	// The other application's machine with the same id is untouched.
	_, err = s.GetInstance(ctx, appB, "m1")
	must(t, err)
	changes, err = s.ListStatusChanges(ctx, appB, "m1", 0)
	must(t, err)
	diff(t, "ListStatusChanges of other app", len(changes), 1)
}

func testPackages(t *testing.T, s store.Store) {
	ctx := t.Context()
	mkApp(t, s, appA)
	mkApp(t, s, appB)

	p1 := mkPackage(appA, "1.0.0", "amd64", at(-2*time.Hour).In(elsewhere))
	allSet(t, p1)
	allSet(t, p1.ExtraFiles[0])
	must(t, s.CreatePackage(ctx, p1))
	got, err := s.GetPackage(ctx, appA, "1.0.0", "amd64")
	must(t, err)
	diff(t, "GetPackage", got, p1)
	wantUTC(t, "GetPackage", got)

	// (app, version, arch) is the key: the same version for another arch
	// or in another application is a different package.
	wantErr(t, "CreatePackage duplicate", s.CreatePackage(ctx, mkPackage(appA, "1.0.0", "amd64", t0)), store.ErrConflict)
	p1arm := mkPackage(appA, "1.0.0", "arm64", at(-90*time.Minute))
	p1arm.ExtraFiles = nil
	must(t, s.CreatePackage(ctx, p1arm))
	must(t, s.CreatePackage(ctx, mkPackage(appB, "1.0.0", "amd64", t0)))
	p2 := mkPackage(appA, "2.0.0", "amd64", at(-time.Hour))
	p2.SHA1, p2.ExtraFiles = "", []store.PackageFile{}
	must(t, s.CreatePackage(ctx, p2))

	got, err = s.GetPackage(ctx, appA, "1.0.0", "arm64")
	must(t, err)
	diff(t, "GetPackage without extra files", got, p1arm)

	list, err := s.ListPackages(ctx, appA)
	must(t, err)
	diff(t, "ListPackages (newest first)", list, []store.Package{p2, p1arm, p1})

	wantErr(t, "CreatePackage unknown app", s.CreatePackage(ctx, mkPackage(appC, "1.0.0", "amd64", t0)), store.ErrInvalid)
	_, err = s.ListPackages(ctx, appC)
	wantErr(t, "ListPackages unknown app", err, store.ErrNotFound)
	for _, k := range [][3]string{{appA, "3.0.0", "amd64"}, {appA, "1.0.0", "x86"}, {appC, "1.0.0", "amd64"}} {
		_, err = s.GetPackage(ctx, k[0], k[1], k[2])
		wantErr(t, "GetPackage unknown", err, store.ErrNotFound)
		wantErr(t, "DeletePackage unknown", s.DeletePackage(ctx, k[0], k[1], k[2]), store.ErrNotFound)
	}

	must(t, s.DeletePackage(ctx, appA, "1.0.0", "amd64"))
	_, err = s.GetPackage(ctx, appA, "1.0.0", "amd64")
	wantErr(t, "GetPackage deleted", err, store.ErrNotFound)
	list, err = s.ListPackages(ctx, appA)
	must(t, err)
	diff(t, "ListPackages after delete", list, []store.Package{p2, p1arm})
}

// testDeletePackageInUse: the last package of the version a channel points
// at cannot be deleted; other architectures of it can.
func testDeletePackageInUse(t *testing.T, s store.Store) {
	ctx := t.Context()
	mkApp(t, s, appA)
	must(t, s.CreatePackage(ctx, mkPackage(appA, "2.0.0", "amd64", t0)))
	must(t, s.CreatePackage(ctx, mkPackage(appA, "2.0.0", "arm64", t0)))
	must(t, s.CreatePackage(ctx, mkPackage(appA, "1.0.0", "amd64", t0)))
	must(t, s.CreateChannel(ctx, mkChannel(appA, "stable", "2.0.0")))

	must(t, s.DeletePackage(ctx, appA, "2.0.0", "arm64"))
	wantErr(t, "DeletePackage last of channel version", s.DeletePackage(ctx, appA, "2.0.0", "amd64"), store.ErrConflict)
	_, err := s.GetPackage(ctx, appA, "2.0.0", "amd64")
	must(t, err) // still there
	must(t, s.DeletePackage(ctx, appA, "1.0.0", "amd64"))

	must(t, s.SetChannelPackage(ctx, appA, "stable", "", at(time.Minute)))
	must(t, s.DeletePackage(ctx, appA, "2.0.0", "amd64"))
}

func testChannels(t *testing.T, s store.Store) {
	ctx := t.Context()
	mkApp(t, s, appA)
	mkApp(t, s, appB)
	must(t, s.CreatePackage(ctx, mkPackage(appA, "1.0.0", "amd64", t0)))
	must(t, s.CreatePackage(ctx, mkPackage(appA, "2.0.0", "arm64", t0)))

	stable := mkChannel(appA, "stable", "1.0.0")
	stable.CreatedAt = stable.CreatedAt.In(elsewhere)
	allSet(t, stable)
	must(t, s.CreateChannel(ctx, stable))
	got, err := s.GetChannel(ctx, appA, "stable")
	must(t, err)
	diff(t, "GetChannel", got, stable)
	wantUTC(t, "GetChannel", got)

	alpha := mkChannel(appA, "alpha", "")
	must(t, s.CreateChannel(ctx, alpha))
	must(t, s.CreateChannel(ctx, mkChannel(appB, "stable", ""))) // names are per application
	wantErr(t, "CreateChannel duplicate", s.CreateChannel(ctx, mkChannel(appA, "stable", "")), store.ErrConflict)
	wantErr(t, "CreateChannel unknown app", s.CreateChannel(ctx, mkChannel(appC, "stable", "")), store.ErrInvalid)
	wantErr(t, "CreateChannel unknown version", s.CreateChannel(ctx, mkChannel(appA, "beta", "9.9.9")), store.ErrInvalid)
	wantErr(t, "CreateChannel version of other app", s.CreateChannel(ctx, mkChannel(appB, "beta", "1.0.0")), store.ErrInvalid)

	list, err := s.ListChannels(ctx, appA)
	must(t, err)
	diff(t, "ListChannels (by name)", list, []store.Channel{alpha, stable})
	_, err = s.ListChannels(ctx, appC)
	wantErr(t, "ListChannels unknown app", err, store.ErrNotFound)

	// Any architecture of a version makes it a valid target.
	must(t, s.SetChannelPackage(ctx, appA, "alpha", "2.0.0", at(time.Hour)))
	got, err = s.GetChannel(ctx, appA, "alpha")
	must(t, err)
	alpha.PackageVersion, alpha.UpdatedAt = "2.0.0", at(time.Hour)
	diff(t, "GetChannel after SetChannelPackage", got, alpha)

	wantErr(t, "SetChannelPackage unknown version", s.SetChannelPackage(ctx, appA, "alpha", "3.0.0", t0), store.ErrInvalid)
	wantErr(t, "SetChannelPackage unknown channel", s.SetChannelPackage(ctx, appA, "beta", "1.0.0", t0), store.ErrNotFound)
	got, err = s.GetChannel(ctx, appA, "alpha")
	must(t, err)
	diff(t, "GetChannel after failed SetChannelPackage", got, alpha)

	_, err = s.GetChannel(ctx, appA, "beta")
	wantErr(t, "GetChannel unknown", err, store.ErrNotFound)
	wantErr(t, "DeleteChannel unknown", s.DeleteChannel(ctx, appA, "beta"), store.ErrNotFound)
	must(t, s.DeleteChannel(ctx, appA, "alpha"))
	_, err = s.GetChannel(ctx, appA, "alpha")
	wantErr(t, "GetChannel deleted", err, store.ErrNotFound)
}

func testGroups(t *testing.T, s store.Store) {
	ctx := t.Context()
	mkApp(t, s, appA)
	mkApp(t, s, appB)
	for _, app := range []string{appA, appB} {
		must(t, s.CreateChannel(ctx, mkChannel(app, "stable", "")))
		must(t, s.CreateChannel(ctx, mkChannel(app, "beta", "")))
	}

	prod := mkGroup(appA, "prod", "stable", "stable")
	prod.CreatedAt = prod.CreatedAt.In(elsewhere)
	allSet(t, prod)
	must(t, s.CreateGroup(ctx, prod))
	got, err := s.GetGroup(ctx, appA, "prod")
	must(t, err)
	diff(t, "GetGroup", got, prod)
	wantUTC(t, "GetGroup", got)
	got, err = s.GetGroupByTrack(ctx, appA, "stable")
	must(t, err)
	diff(t, "GetGroupByTrack", got, prod)

	canary := mkGroup(appA, "canary", "beta", "beta")
	canary.Policy = store.DefaultPolicy()
	canary.RolloutStartedAt, canary.RolloutVersion, canary.PausedReason = time.Time{}, "", ""
	must(t, s.CreateGroup(ctx, canary))
	// Names and tracks are unique per application only.
	must(t, s.CreateGroup(ctx, mkGroup(appB, "prod", "stable", "stable")))

	wantErr(t, "CreateGroup duplicate name", s.CreateGroup(ctx, mkGroup(appA, "prod", "other", "stable")), store.ErrConflict)
	wantErr(t, "CreateGroup duplicate track", s.CreateGroup(ctx, mkGroup(appA, "prod2", "stable", "stable")), store.ErrConflict)
	wantErr(t, "CreateGroup unknown channel", s.CreateGroup(ctx, mkGroup(appA, "edge", "edge", "edge")), store.ErrInvalid)
	wantErr(t, "CreateGroup unknown app", s.CreateGroup(ctx, mkGroup(appC, "prod", "stable", "stable")), store.ErrInvalid)

	list, err := s.ListGroups(ctx, appA)
	must(t, err)
	diff(t, "ListGroups (by name)", list, []store.Group{canary, prod})
	_, err = s.ListGroups(ctx, appC)
	wantErr(t, "ListGroups unknown app", err, store.ErrNotFound)

	// UpdateGroup replaces every field but the key.
	upd := prod
	upd.Description, upd.Track, upd.Channel = "production", "lts", "beta"
	upd.Policy = store.Policy{RolloutPercent: 100}
	upd.RolloutVersion, upd.RolloutStartedAt, upd.PausedReason = "3.0.0", at(time.Hour), ""
	upd.CreatedAt, upd.UpdatedAt = at(-24*time.Hour), at(2*time.Hour)
	must(t, s.UpdateGroup(ctx, upd))
	got, err = s.GetGroup(ctx, appA, "prod")
	must(t, err)
	diff(t, "GetGroup after UpdateGroup", got, upd)
	got, err = s.GetGroupByTrack(ctx, appA, "lts")
	must(t, err)
	diff(t, "GetGroupByTrack after UpdateGroup", got, upd)
	_, err = s.GetGroupByTrack(ctx, appA, "stable")
	wantErr(t, "GetGroupByTrack old track", err, store.ErrNotFound)

	bad := upd
	bad.Track = "beta" // canary's
	wantErr(t, "UpdateGroup taken track", s.UpdateGroup(ctx, bad), store.ErrConflict)
	bad = upd
	bad.Channel = "edge"
	wantErr(t, "UpdateGroup unknown channel", s.UpdateGroup(ctx, bad), store.ErrInvalid)
	bad = upd
	bad.Name = "nope"
	wantErr(t, "UpdateGroup unknown", s.UpdateGroup(ctx, bad), store.ErrNotFound)
	got, err = s.GetGroup(ctx, appA, "prod")
	must(t, err)
	diff(t, "GetGroup after failed updates", got, upd)

	_, err = s.GetGroup(ctx, appA, "nope")
	wantErr(t, "GetGroup unknown", err, store.ErrNotFound)
	_, err = s.GetGroupByTrack(ctx, appC, "stable")
	wantErr(t, "GetGroupByTrack unknown app", err, store.ErrNotFound)
	wantErr(t, "DeleteGroup unknown", s.DeleteGroup(ctx, appA, "nope"), store.ErrNotFound)
	must(t, s.DeleteGroup(ctx, appA, "canary"))
	_, err = s.GetGroup(ctx, appA, "canary")
	wantErr(t, "GetGroup deleted", err, store.ErrNotFound)
	// The track is free again.
	must(t, s.CreateGroup(ctx, mkGroup(appA, "canary2", "beta", "beta")))
}

// testGroupPolicyRoundTrip stores every policy field, including zero and
// default policies, and reads it back unchanged.
func testGroupPolicyRoundTrip(t *testing.T, s store.Store) {
	ctx := t.Context()
	mkApp(t, s, appA)
	must(t, s.CreateChannel(ctx, mkChannel(appA, "stable", "")))
	full := fullPolicy()
	allSet(t, full)
	for i, p := range []store.Policy{full, store.DefaultPolicy(), {}, {Windows: []string{"Sun 00:00-23:59"}, Period: time.Nanosecond}} {
		g := mkGroup(appA, "g"+string(rune('a'+i)), "t"+string(rune('a'+i)), "stable")
		g.Policy = p
		must(t, s.CreateGroup(ctx, g))
		got, err := s.GetGroup(ctx, appA, g.Name)
		must(t, err)
		diff(t, "policy", got.Policy, p)
	}
}

func testTokens(t *testing.T, s store.Store) {
	ctx := t.Context()
	admin := store.Token{ID: "tok-1", Name: "ci", Role: "admin", Hash: "aa11", CreatedAt: t0.In(elsewhere)}
	allSet(t, admin)
	must(t, s.CreateToken(ctx, admin))
	viewer := store.Token{ID: "tok-2", Name: "dashboard", Role: "viewer", Hash: "bb22", CreatedAt: at(time.Hour)}
	must(t, s.CreateToken(ctx, viewer))

	got, err := s.GetTokenByHash(ctx, "bb22")
	must(t, err)
	diff(t, "GetTokenByHash", got, viewer)
	got, err = s.GetTokenByHash(ctx, "aa11")
	must(t, err)
	diff(t, "GetTokenByHash", got, admin)
	wantUTC(t, "GetTokenByHash", got)
	_, err = s.GetTokenByHash(ctx, "cc33")
	wantErr(t, "GetTokenByHash unknown", err, store.ErrNotFound)

	wantErr(t, "CreateToken duplicate id", s.CreateToken(ctx, store.Token{ID: "tok-1", Name: "x", Role: "admin", Hash: "dd44", CreatedAt: t0}), store.ErrConflict)
	wantErr(t, "CreateToken duplicate hash", s.CreateToken(ctx, store.Token{ID: "tok-3", Name: "x", Role: "admin", Hash: "aa11", CreatedAt: t0}), store.ErrConflict)

	list, err := s.ListTokens(ctx)
	must(t, err)
	diff(t, "ListTokens (oldest first)", list, []store.Token{admin, viewer})

	must(t, s.DeleteToken(ctx, "tok-2"))
	_, err = s.GetTokenByHash(ctx, "bb22")
	wantErr(t, "GetTokenByHash deleted", err, store.ErrNotFound)
	wantErr(t, "DeleteToken twice", s.DeleteToken(ctx, "tok-2"), store.ErrNotFound)
	list, err = s.ListTokens(ctx)
	must(t, err)
	diff(t, "ListTokens after delete", list, []store.Token{admin})
}
