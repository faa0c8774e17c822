package storetest

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/flotilla/flotilla/internal/store"
)

func testInstances(t *testing.T, s store.Store) {
	ctx := t.Context()
	mkApp(t, s, appA)
	mkApp(t, s, appB)

	in := mkInstance(appA, "4d5b4e3f2a1c4b8e9f0a1b2c3d4e5f60", "prod")
	in.LastCheck = in.LastCheck.In(elsewhere)
	allSet(t, in)
	must(t, s.PutInstance(ctx, in))
	got, err := s.GetInstance(ctx, appA, in.MachineID)
	must(t, err)
	diff(t, "GetInstance", got, in)
	wantUTC(t, "GetInstance", got)

	// Replace changes every field but the key.
	upd := store.Instance{
		AppID: appA, MachineID: in.MachineID, Alias: "web-1", IP: "2001:db8::1", OEM: "azure", OEMVersion: "2",
		AlephVersion: "3602.2.0", Board: "arm64-usr", Group: "canary", Version: "2.0.0", Status: store.StatusComplete,
		GrantedVersion: "2.1.0", GrantedAt: at(time.Minute), LastErrorCode: -1, BlockedVersion: "",
		LastCheck: at(time.Hour), StatusChanged: at(30 * time.Minute), CreatedAt: at(-96 * time.Hour),
	}
	must(t, s.PutInstance(ctx, upd))
	got, err = s.GetInstance(ctx, appA, in.MachineID)
	must(t, err)
	diff(t, "GetInstance after replace", got, upd)

	// Zero times round-trip as zero.
	fresh := store.Instance{AppID: appA, MachineID: "fresh", Status: store.StatusIdle, LastCheck: t0, CreatedAt: t0}
	must(t, s.PutInstance(ctx, fresh))
	got, err = s.GetInstance(ctx, appA, "fresh")
	must(t, err)
	diff(t, "GetInstance with zero times", got, fresh)
	if !got.GrantedAt.IsZero() || !got.StatusChanged.IsZero() {
		t.Errorf("zero times read back as %v, %v", got.GrantedAt, got.StatusChanged)
	}

	// The same machine in another application is another instance.
	other := mkInstance(appB, in.MachineID, "prod")
	must(t, s.PutInstance(ctx, other))
	got, err = s.GetInstance(ctx, appA, in.MachineID)
	must(t, err)
	diff(t, "GetInstance unaffected by other app", got, upd)

	for _, st := range []store.Status{"", "bogus"} {
		bad := mkInstance(appA, "bad", "prod")
		bad.Status = st
		wantErr(t, fmt.Sprintf("PutInstance status %q", st), s.PutInstance(ctx, bad), store.ErrInvalid)
	}
	wantErr(t, "PutInstance unknown app", s.PutInstance(ctx, mkInstance(appC, "m", "prod")), store.ErrInvalid)

	_, err = s.GetInstance(ctx, appA, "nope")
	wantErr(t, "GetInstance unknown", err, store.ErrNotFound)
	_, err = s.GetInstance(ctx, appC, in.MachineID)
	wantErr(t, "GetInstance unknown app", err, store.ErrNotFound)
	// TouchInstance raises LastCheck only, never lowers it, and leaves every
	// other field alone.
	before, err := s.GetInstance(ctx, appA, in.MachineID)
	must(t, err)
	later := before.LastCheck.Add(time.Hour)
	must(t, s.TouchInstance(ctx, appA, in.MachineID, later))
	touched, err := s.GetInstance(ctx, appA, in.MachineID)
	must(t, err)
	want := before
	want.LastCheck = later
	diff(t, "TouchInstance later", touched, want)
	must(t, s.TouchInstance(ctx, appA, in.MachineID, before.LastCheck))
	touched, err = s.GetInstance(ctx, appA, in.MachineID)
	must(t, err)
	diff(t, "TouchInstance earlier does not lower", touched, want)
	wantErr(t, "TouchInstance unknown", s.TouchInstance(ctx, appA, "nope", later), store.ErrNotFound)

	wantErr(t, "DeleteInstance unknown", s.DeleteInstance(ctx, appA, "nope"), store.ErrNotFound)
	must(t, s.DeleteInstance(ctx, appA, in.MachineID))
	_, err = s.GetInstance(ctx, appA, in.MachineID)
	wantErr(t, "GetInstance deleted", err, store.ErrNotFound)
	wantErr(t, "DeleteInstance twice", s.DeleteInstance(ctx, appA, in.MachineID), store.ErrNotFound)
	_, err = s.GetInstance(ctx, appB, in.MachineID)
	must(t, err)
}

// fleet is the instance set of the ListInstances tests: 30 machines of app
// A, in groups a/b, idle/complete, on 1.0.0/2.0.0, half with aliases,
// checking in five at a time (so last checks tie across page boundaries),
// plus two machines of app B, one sharing a machine id with app A.
func fleet() []store.Instance {
	var ins []store.Instance
	for i := range 30 {
		in := mkInstance(appA, fmt.Sprintf("m%03d", i), "b")
		if i%3 == 0 {
			in.Group = "a"
		}
		in.Alias = ""
		if i%2 == 0 {
			in.Alias = fmt.Sprintf("host-%03d", 29-i)
		}
		in.Status = store.StatusIdle
		if i%2 == 1 {
			in.Status = store.StatusComplete
		}
		if i >= 10 {
			in.Version = "2.0.0"
		}
		in.LastCheck = at(time.Duration(i/5) * time.Minute)
		ins = append(ins, in)
	}
	// Machine "x" has an alias that is another machine's id prefix.
	x := mkInstance(appA, "x", "a")
	x.Alias, x.LastCheck = "m02-alias", at(3*time.Minute)
	ins = append(ins, x)
	b1 := mkInstance(appB, "m005", "a")
	b2 := mkInstance(appB, "zzz", "a")
	b2.LastCheck = at(10 * time.Minute)
	return append(ins, b1, b2)
}

// matches is the reference semantics of an InstanceFilter.
func matches(in store.Instance, f store.InstanceFilter) bool {
	switch {
	case f.AppID != "" && in.AppID != f.AppID,
		f.Group != "" && in.Group != f.Group,
		f.Status != "" && in.Status != f.Status,
		f.Version != "" && in.Version != f.Version,
		f.Prefix != "" && !strings.HasPrefix(in.MachineID, f.Prefix) && !strings.HasPrefix(in.Alias, f.Prefix),
		!f.SeenBefore.IsZero() && !in.LastCheck.Before(f.SeenBefore), // exclusive
		!f.SeenAfter.IsZero() && in.LastCheck.Before(f.SeenAfter):    // inclusive
		return false
	}
	return true
}

// listAll pages through ListInstances and checks the paging contract: every
// page is within the limit, reports the same Total, only the last page has
// no cursor, and no page after the first is empty.
func listAll(t *testing.T, s store.Store, f store.InstanceFilter) []store.Instance {
	t.Helper()
	var all []store.Instance
	total := -1
	for page := 0; ; page++ {
		if page > 1000 {
			t.Fatalf("%+v: paging does not end", f)
		}
		p, err := s.ListInstances(t.Context(), f)
		if err != nil {
			t.Fatalf("ListInstances(%+v): %v", f, err)
		}
		if total >= 0 && p.Total != total {
			t.Errorf("%+v: page %d Total = %d, first page said %d", f, page, p.Total, total)
		}
		total = p.Total
		if f.Limit > 0 && len(p.Instances) > f.Limit {
			t.Errorf("%+v: page %d has %d instances, limit %d", f, page, len(p.Instances), f.Limit)
		}
		if page > 0 && len(p.Instances) == 0 {
			t.Errorf("%+v: page %d is empty but the previous page had a cursor", f, page)
		}
		all = append(all, p.Instances...)
		if p.NextCursor == "" {
			break
		}
		f.Cursor = p.NextCursor
	}
	if total != len(all) {
		t.Errorf("%+v: Total = %d, paging returned %d", f, total, len(all))
	}
	return all
}

// checkListing compares a full listing with the reference: same set, each
// instance once, in the filter's order (machine id ascending; or last check
// descending, ties in any order).
func checkListing(t *testing.T, f store.InstanceFilter, got, fleet []store.Instance) {
	t.Helper()
	type key struct{ app, machine string }
	var want []store.Instance
	for _, in := range fleet {
		if matches(in, f) {
			want = append(want, in)
		}
	}
	seen := map[key]bool{}
	for i, in := range got {
		k := key{in.AppID, in.MachineID}
		if seen[k] {
			t.Errorf("%+v: %v listed twice", f, k)
		}
		seen[k] = true
		if i == 0 {
			continue
		}
		prev := got[i-1]
		if f.SortByLastCheck {
			if prev.LastCheck.Before(in.LastCheck) {
				t.Errorf("%+v: %s (last check %v) listed before %s (%v)", f, prev.MachineID, prev.LastCheck, in.MachineID, in.LastCheck)
			}
		} else if prev.MachineID > in.MachineID || (f.AppID != "" && prev.MachineID == in.MachineID) {
			t.Errorf("%+v: %s listed before %s", f, prev.MachineID, in.MachineID)
		}
	}
	sortKeys := func(ins []store.Instance) []string {
		var ks []string
		for _, in := range ins {
			ks = append(ks, in.AppID+"/"+in.MachineID)
		}
		sort.Strings(ks)
		return ks
	}
	diff(t, fmt.Sprintf("listed instances for %+v", f), sortKeys(got), sortKeys(want))
}

func testListInstancesFilters(t *testing.T, s store.Store) {
	mkApp(t, s, appA)
	mkApp(t, s, appB)
	ins := fleet()
	putInstances(t, s, ins...)

	// Full records come back.
	p, err := s.ListInstances(t.Context(), store.InstanceFilter{AppID: appA, Prefix: "m000"})
	must(t, err)
	diff(t, "ListInstances record", p.Instances, []store.Instance{ins[0]})

	filters := []store.InstanceFilter{
		{AppID: appA},
		{}, // all applications
		{AppID: appA, Group: "a"},
		{AppID: appA, Status: store.StatusComplete},
		{AppID: appA, Version: "1.0.0"},
		{AppID: appA, Group: "b", Status: store.StatusIdle, Version: "2.0.0"},
		{AppID: appA, Prefix: "m01"},     // machine ids m010…m019
		{AppID: appA, Prefix: "host-01"}, // aliases host-010…host-019
		{AppID: appA, Prefix: "m02"},     // m020…m029 and x by alias
		{AppID: appA, Prefix: "M0"},      // case-sensitive: none
		{AppID: appA, Prefix: "m0299"},   // none
		{AppID: appA, SeenAfter: at(2 * time.Minute)},
		{AppID: appA, SeenBefore: at(4 * time.Minute)},
		{AppID: appA, SeenAfter: at(time.Minute), SeenBefore: at(3 * time.Minute)},
		{AppID: appA, SeenAfter: at(time.Hour)}, // none
		{AppID: appB},
		{AppID: appC}, // unknown application: empty
		{Group: "a", Prefix: "m00"},
	}
	for _, f := range filters {
		for _, byLastCheck := range []bool{false, true} {
			for _, limit := range []int{0, 1, 4, 7} {
				f := f
				f.SortByLastCheck, f.Limit = byLastCheck, limit
				checkListing(t, f, listAll(t, s, f), ins)
			}
		}
	}

	_, err = s.ListInstances(t.Context(), store.InstanceFilter{AppID: appA, Cursor: "!!not a cursor!!"})
	wantErr(t, "ListInstances bad cursor", err, store.ErrInvalid)
}

// testListInstancesSameLastCheck: keyset paging by last check must not skip
// or repeat machines that share a last check.
func testListInstancesSameLastCheck(t *testing.T, s store.Store) {
	mkApp(t, s, appA)
	var ins []store.Instance
	for i := range 23 {
		in := mkInstance(appA, fmt.Sprintf("%08x", i*2654435761%(1<<32)), "prod")
		if i == 0 {
			in.LastCheck = at(time.Minute) // one newer machine first
		}
		ins = append(ins, in)
	}
	putInstances(t, s, ins...)
	for _, limit := range []int{1, 2, 5, 22, 23, 24} {
		f := store.InstanceFilter{AppID: appA, SortByLastCheck: true, Limit: limit}
		got := listAll(t, s, f)
		checkListing(t, f, got, ins)
		if len(got) > 0 && got[0].MachineID != ins[0].MachineID {
			t.Errorf("limit %d: first = %s, want the newest %s", limit, got[0].MachineID, ins[0].MachineID)
		}
	}
}

// testListInstancesLimits: Limit 0 means 100; larger limits are capped at
// 1000.
func testListInstancesLimits(t *testing.T, s store.Store) {
	ctx := t.Context()
	mkApp(t, s, appA)
	var ins []store.Instance
	for i := range 1003 {
		in := mkInstance(appA, fmt.Sprintf("m%05d", i), "prod")
		in.LastCheck = at(time.Duration(i) * time.Second)
		ins = append(ins, in)
	}
	putInstances(t, s, ins...)

	p, err := s.ListInstances(ctx, store.InstanceFilter{AppID: appA})
	must(t, err)
	if len(p.Instances) != 100 || p.NextCursor == "" || p.Total != 1003 {
		t.Errorf("Limit 0: %d instances, cursor %q, total %d; want 100, a cursor, 1003", len(p.Instances), p.NextCursor, p.Total)
	}
	p, err = s.ListInstances(ctx, store.InstanceFilter{AppID: appA, Limit: 5000, SortByLastCheck: true})
	must(t, err)
	if len(p.Instances) != 1000 || p.NextCursor == "" {
		t.Fatalf("Limit 5000: %d instances, cursor %q; want 1000 and a cursor", len(p.Instances), p.NextCursor)
	}
	if p.Instances[0].MachineID != "m01002" {
		t.Errorf("newest first: got %s, want m01002", p.Instances[0].MachineID)
	}
	p, err = s.ListInstances(ctx, store.InstanceFilter{AppID: appA, Limit: 5000, SortByLastCheck: true, Cursor: p.NextCursor})
	must(t, err)
	var ids []string
	for _, in := range p.Instances {
		ids = append(ids, in.MachineID)
	}
	diff(t, "last page", ids, []string{"m00002", "m00001", "m00000"})
	if p.NextCursor != "" {
		t.Errorf("last page has cursor %q", p.NextCursor)
	}
}

func testGroupCounts(t *testing.T, s store.Store) {
	ctx := t.Context()
	mkApp(t, s, appA)
	mkApp(t, s, appB)
	grantedSince := at(-30 * time.Minute)
	must(t, s.Update(ctx, func(q store.TxQueries) error {
		for _, d := range []time.Duration{-2 * time.Hour, -31 * time.Minute, -30 * time.Minute, -10 * time.Minute, 0} {
			addChange(t, q, appA, "m1", "g", store.StatusGranted, "2.0.0", at(d))
		}
		addChange(t, q, appA, "m2", "other", store.StatusGranted, "2.0.0", t0)
		addChange(t, q, appA, "m3", "g", store.StatusComplete, "2.0.0", t0)
		addChange(t, q, appA, "m4", "g", store.StatusDownloading, "2.0.0", t0)
		addChange(t, q, appB, "m1", "g", store.StatusGranted, "2.0.0", t0)
		return nil
	}))

	inProgressSince := at(-30 * time.Minute)
	var ins []store.Instance
	for _, c := range []struct {
		id      string
		group   string
		status  store.Status
		granted time.Duration
	}{
		{"granted-old", "g", store.StatusGranted, -time.Hour}, // granted before the window
		{"granted", "g", store.StatusGranted, -20 * time.Minute},
		{"downloading", "g", store.StatusDownloading, -10 * time.Minute},
		{"downloaded", "g", store.StatusDownloaded, -5 * time.Minute},
		{"installed", "g", store.StatusInstalled, -time.Minute},
		{"installed-edge", "g", store.StatusInstalled, -30 * time.Minute}, // not after: excluded
		{"complete", "g", store.StatusComplete, -time.Minute},
		{"error", "g", store.StatusError, -time.Minute},
		{"rolled-back", "g", store.StatusRolledBack, -time.Minute},
		{"timed-out", "g", store.StatusTimedOut, -time.Minute},
		{"on-hold", "g", store.StatusOnHold, -time.Minute},
		{"other-group", "other", store.StatusGranted, -time.Minute},
	} {
		in := mkInstance(appA, c.id, c.group)
		in.Status, in.GrantedAt = c.status, at(c.granted)
		ins = append(ins, in)
	}
	other := mkInstance(appB, "granted", "g")
	other.Status, other.GrantedAt = store.StatusGranted, t0
	putInstances(t, s, append(ins, other)...)

	check := func(q store.Queries, what string) {
		got, err := q.GroupCounts(ctx, appA, "g", grantedSince, inProgressSince)
		must(t, err)
		diff(t, what, got, store.GroupCounts{GrantedInPeriod: 3, InProgress: 4})
	}
	check(s, "GroupCounts")
	must(t, s.Update(ctx, func(q store.TxQueries) error { check(q, "GroupCounts in Update"); return nil }))

	got, err := s.GroupCounts(ctx, appA, "g", time.Time{}, time.Time{})
	must(t, err)
	diff(t, "GroupCounts since the beginning", got, store.GroupCounts{GrantedInPeriod: 5, InProgress: 6})
	got, err = s.GroupCounts(ctx, appA, "nope", time.Time{}, time.Time{})
	must(t, err)
	diff(t, "GroupCounts unknown group", got, store.GroupCounts{})
}

func testFailures(t *testing.T, s store.Store) {
	ctx := t.Context()
	mkApp(t, s, appA)
	mkApp(t, s, appB)
	since := at(-2 * time.Hour)
	must(t, s.Update(ctx, func(q store.TxQueries) error {
		addChange(t, q, appA, "m1", "g", store.StatusError, "2.0.0", at(-time.Hour))
		addChange(t, q, appA, "m1", "g", store.StatusRolledBack, "2.0.0", at(-50*time.Minute)) // same machine again
		addChange(t, q, appA, "m2", "g", store.StatusRolledBack, "2.0.0", at(-40*time.Minute))
		addChange(t, q, appA, "m7", "g", store.StatusError, "2.0.0", since) // at since: included
		addChange(t, q, appA, "m3", "g", store.StatusError, "2.0.0", at(-3*time.Hour))
		addChange(t, q, appA, "m4", "g", store.StatusError, "1.0.0", t0)
		addChange(t, q, appA, "m5", "other", store.StatusError, "2.0.0", t0)
		addChange(t, q, appA, "m6", "g", store.StatusTimedOut, "2.0.0", t0)
		addChange(t, q, appA, "m8", "g", store.StatusComplete, "2.0.0", t0)
		addChange(t, q, appB, "m9", "g", store.StatusError, "2.0.0", t0)
		return nil
	}))
	n, err := s.CountFailures(ctx, appA, "g", "2.0.0", since)
	must(t, err)
	diff(t, "CountFailures", n, 3)
	ids, err := s.FailedMachines(ctx, appA, "g", "2.0.0", since, 0)
	must(t, err)
	slices.Sort(ids)
	diff(t, "FailedMachines", ids, []string{"m1", "m2", "m7"})
	ids, err = s.FailedMachines(ctx, appA, "g", "2.0.0", since, 2)
	must(t, err)
	if len(ids) != 2 || ids[0] == ids[1] || !slices.Contains([]string{"m1", "m2", "m7"}, ids[0]) || !slices.Contains([]string{"m1", "m2", "m7"}, ids[1]) {
		t.Errorf("FailedMachines limit 2 = %v", ids)
	}
	n, err = s.CountFailures(ctx, appA, "g", "2.0.0", time.Time{})
	must(t, err)
	diff(t, "CountFailures since the beginning", n, 4)
	n, err = s.CountFailures(ctx, appA, "g", "3.0.0", time.Time{})
	must(t, err)
	diff(t, "CountFailures other version", n, 0)
	ids, err = s.FailedMachines(ctx, appA, "g", "3.0.0", time.Time{}, 0)
	must(t, err)
	diff(t, "FailedMachines other version", ids, []string{})
}

func testExpiredGrants(t *testing.T, s store.Store) {
	ctx := t.Context()
	mkApp(t, s, appA)
	before := at(-10 * time.Minute)
	var ins []store.Instance
	var want []string
	for _, c := range []struct {
		id      string
		group   string
		status  store.Status
		granted time.Duration
		expired bool
	}{
		{"granted", "g", store.StatusGranted, -time.Hour, true},
		{"downloading", "g", store.StatusDownloading, -20 * time.Minute, true},
		{"downloaded", "g", store.StatusDownloaded, -11 * time.Minute, true},
		{"installed", "g", store.StatusInstalled, -10 * time.Minute, false}, // not before
		{"granted-new", "g", store.StatusGranted, -time.Minute, false},
		{"complete", "g", store.StatusComplete, -time.Hour, false},
		{"error", "g", store.StatusError, -time.Hour, false},
		{"timed-out", "g", store.StatusTimedOut, -time.Hour, false},
		{"other", "other", store.StatusGranted, -time.Hour, false},
	} {
		in := mkInstance(appA, c.id, c.group)
		in.Status, in.GrantedAt = c.status, at(c.granted)
		ins = append(ins, in)
		if c.expired {
			want = append(want, c.id)
		}
	}
	putInstances(t, s, ins...)
	got, err := s.ExpiredGrants(ctx, appA, "g", before)
	must(t, err)
	var ids []string
	for _, in := range got {
		ids = append(ids, in.MachineID)
		if in.MachineID == "granted" {
			diff(t, "ExpiredGrants record", in, ins[0])
		}
	}
	slices.Sort(ids)
	slices.Sort(want)
	diff(t, "ExpiredGrants", ids, want)
	got, err = s.ExpiredGrants(ctx, appA, "nope", before)
	must(t, err)
	diff(t, "ExpiredGrants unknown group", got, []store.Instance{})
}

func testRolloutStatus(t *testing.T, s store.Store) {
	ctx := t.Context()
	mkApp(t, s, appA)
	var ins []store.Instance
	add := func(n int, group, version string, status store.Status) {
		for range n {
			in := mkInstance(appA, fmt.Sprintf("m%03d", len(ins)), group)
			in.Version, in.Status = version, status
			ins = append(ins, in)
		}
	}
	add(3, "g", "1.0.0", store.StatusIdle)
	add(2, "g", "1.0.0", store.StatusDownloading)
	add(4, "g", "2.0.0", store.StatusComplete)
	add(1, "g", "2.0.0", store.StatusError)
	add(5, "other", "1.0.0", store.StatusIdle)
	putInstances(t, s, ins...)

	got, err := s.RolloutStatus(ctx, appA, "g")
	must(t, err)
	diff(t, "RolloutStatus", got, store.RolloutStatus{
		Total:     10,
		ByVersion: map[string]int{"1.0.0": 5, "2.0.0": 5},
		ByStatus:  map[store.Status]int{store.StatusIdle: 3, store.StatusDownloading: 2, store.StatusComplete: 4, store.StatusError: 1},
	})
	got, err = s.RolloutStatus(ctx, appA, "nope")
	must(t, err)
	diff(t, "RolloutStatus unknown group", got, store.RolloutStatus{})

	for _, c := range []struct {
		group, version string
		want           int
	}{{"g", "2.0.0", 5}, {"g", "1.0.0", 5}, {"g", "3.0.0", 10}, {"other", "1.0.0", 0}, {"nope", "1.0.0", 0}} {
		n, err := s.CountNotOnVersion(ctx, appA, c.group, c.version)
		must(t, err)
		diff(t, fmt.Sprintf("CountNotOnVersion(%s, %s)", c.group, c.version), n, c.want)
	}
}
