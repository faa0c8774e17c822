package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/flotilla/flotilla/internal/store"
)

func testStatusChanges(t *testing.T, s store.Store) {
	ctx := t.Context()
	mkApp(t, s, appA)
	mkApp(t, s, appB)

	var want []store.StatusChange // for (appA, m1), oldest first
	var last int64
	for i, st := range []store.Status{store.StatusGranted, store.StatusDownloading, store.StatusError, store.StatusIdle} {
		c := store.StatusChange{
			AppID: appA, MachineID: "m1", Group: "prod", Status: st, Version: "2.0.0",
			ErrorCode: int64(i * 1000), At: at(time.Duration(i) * time.Minute).In(elsewhere),
		}
		if i == 2 {
			c.ErrorCode = 268435490
		}
		id, err := s.AddStatusChange(ctx, c)
		must(t, err)
		if id <= last {
			t.Errorf("AddStatusChange id %d after %d, want increasing", id, last)
		}
		last = id
		c.ID = id
		allSet(t, c, "ErrorCode")
		want = append(want, c)
		// Noise: other machine, other application.
		_, err = s.AddStatusChange(ctx, store.StatusChange{AppID: appA, MachineID: "m2", Group: "prod", Status: st, At: t0})
		must(t, err)
		_, err = s.AddStatusChange(ctx, store.StatusChange{AppID: appB, MachineID: "m1", Group: "prod", Status: st, At: t0})
		must(t, err)
	}
	got, err := s.ListStatusChanges(ctx, appA, "m1", 0)
	must(t, err)
	diff(t, "ListStatusChanges (newest first)", got, reversed(want))
	for _, c := range got {
		wantUTC(t, "ListStatusChanges", c)
	}
	got, err = s.ListStatusChanges(ctx, appA, "m1", 2)
	must(t, err)
	diff(t, "ListStatusChanges limit 2", got, reversed(want)[:2])
	got, err = s.ListStatusChanges(ctx, appA, "nope", 0)
	must(t, err)
	diff(t, "ListStatusChanges unknown machine", got, []store.StatusChange{})

	_, err = s.AddStatusChange(ctx, store.StatusChange{AppID: appA, MachineID: "m1", Status: "bogus", At: t0})
	wantErr(t, "AddStatusChange bad status", err, store.ErrInvalid)
	_, err = s.AddStatusChange(ctx, store.StatusChange{AppID: appC, MachineID: "m1", Status: store.StatusIdle, At: t0})
	wantErr(t, "AddStatusChange unknown app", err, store.ErrInvalid)
}

func testEvents(t *testing.T, s store.Store) {
	ctx := t.Context()
	mkApp(t, s, appA)
	mkApp(t, s, appB)

	var want []store.Event
	var last int64
	for i, tr := range [][2]int{{13, 1}, {14, 1}, {3, 0}, {999, 7}} { // unknown pairs are stored too
		e := store.Event{
			AppID: appA, MachineID: "m1", Group: "prod", Type: tr[0], Result: tr[1], ErrorCode: int64(i + 1),
			Version: "1.0.0", PreviousVersion: "0.9.0", At: at(time.Duration(i) * time.Minute).In(elsewhere),
		}
		id, err := s.AddEvent(ctx, e)
		must(t, err)
		if id <= last {
			t.Errorf("AddEvent id %d after %d, want increasing", id, last)
		}
		last = id
		e.ID = id
		if i == 0 {
			allSet(t, e)
		}
		want = append(want, e)
		_, err = s.AddEvent(ctx, store.Event{AppID: appA, MachineID: "m2", Type: 3, Result: 1, At: t0})
		must(t, err)
		_, err = s.AddEvent(ctx, store.Event{AppID: appB, MachineID: "m1", Type: 3, Result: 1, At: t0})
		must(t, err)
	}
	got, err := s.ListEvents(ctx, appA, "m1", 0)
	must(t, err)
	diff(t, "ListEvents (newest first)", got, reversed(want))
	for _, e := range got {
		wantUTC(t, "ListEvents", e)
	}
	got, err = s.ListEvents(ctx, appA, "m1", 3)
	must(t, err)
	diff(t, "ListEvents limit 3", got, reversed(want)[:3])
	got, err = s.ListEvents(ctx, appA, "nope", 0)
	must(t, err)
	diff(t, "ListEvents unknown machine", got, []store.Event{})

	_, err = s.AddEvent(ctx, store.Event{AppID: appC, MachineID: "m1", Type: 3, Result: 1, At: t0})
	wantErr(t, "AddEvent unknown app", err, store.ErrInvalid)
}

func testActivity(t *testing.T, s store.Store) {
	ctx := t.Context()
	mkApp(t, s, appA)
	mkApp(t, s, appB)

	var all []store.Activity // oldest first
	for i := range 12 {
		a := store.Activity{
			AppID: appA, Group: "prod", Channel: "stable", Kind: store.ActivityInstanceFailed,
			Severity: store.SeverityError, Version: "2.0.0", Message: fmt.Sprintf("event %d", i),
			MachineIDs: []string{"m1", fmt.Sprintf("m%d", i)}, At: at(time.Duration(i) * time.Minute).In(elsewhere),
		}
		switch i % 3 {
		case 1:
			a.Group, a.Kind, a.Severity, a.MachineIDs = "canary", store.ActivityRolloutStarted, store.SeverityInfo, nil
		case 2:
			a.AppID, a.Group, a.Channel = appB, "", ""
		}
		id, err := s.AddActivity(ctx, a)
		must(t, err)
		a.ID = id
		if i == 0 {
			allSet(t, a)
		}
		all = append(all, a)
	}
	// The log may mention applications that no longer exist.
	_, err := s.AddActivity(ctx, store.Activity{AppID: appC, Kind: store.ActivityChannelUpdated, Severity: store.SeverityInfo, At: t0})
	must(t, err)

	pick := func(keep func(store.Activity) bool) []store.Activity {
		var out []store.Activity
		for i := len(all) - 1; i >= 0; i-- {
			if keep(all[i]) {
				out = append(out, all[i])
			}
		}
		return out
	}
	for _, c := range []struct {
		f    store.ActivityFilter
		keep func(store.Activity) bool
	}{
		{store.ActivityFilter{AppID: appA}, func(a store.Activity) bool { return a.AppID == appA }},
		{store.ActivityFilter{AppID: appA, Group: "canary"}, func(a store.Activity) bool { return a.Group == "canary" }},
		{store.ActivityFilter{AppID: appB}, func(a store.Activity) bool { return a.AppID == appB }},
		{store.ActivityFilter{AppID: appA, Since: at(6 * time.Minute)}, func(a store.Activity) bool { // inclusive
			return a.AppID == appA && !a.At.Before(at(6*time.Minute))
		}},
		{store.ActivityFilter{AppID: appA, BeforeID: all[6].ID}, func(a store.Activity) bool { return a.AppID == appA && a.ID < all[6].ID }},
		{store.ActivityFilter{Group: "prod"}, func(a store.Activity) bool { return a.Group == "prod" }},
	} {
		got, err := s.ListActivity(ctx, c.f)
		must(t, err)
		diff(t, fmt.Sprintf("ListActivity(%+v)", c.f), got, pick(c.keep))
		for _, a := range got {
			wantUTC(t, "ListActivity", a)
		}
	}
	got, err := s.ListActivity(ctx, store.ActivityFilter{})
	must(t, err)
	if len(got) != len(all)+1 {
		t.Errorf("ListActivity all: %d entries, want %d", len(got), len(all)+1)
	}

	// Paging with BeforeID, newest first, visits every entry once.
	var paged []store.Activity
	f := store.ActivityFilter{AppID: appA, Limit: 3}
	for range 10 {
		page, err := s.ListActivity(ctx, f)
		must(t, err)
		if len(page) > 3 {
			t.Fatalf("page of %d, limit 3", len(page))
		}
		if len(page) == 0 {
			break
		}
		paged = append(paged, page...)
		f.BeforeID = page[len(page)-1].ID
	}
	diff(t, "ListActivity paged", paged, pick(func(a store.Activity) bool { return a.AppID == appA }))
}

func testPrune(t *testing.T, s store.Store) {
	ctx := t.Context()
	g := setupApp(t, s, appA)
	in := mkInstance(appA, "m1", g.Name)
	in.LastCheck = at(-100 * 24 * time.Hour) // old instances are not pruned
	putInstances(t, s, in)

	cutoff := t0
	times := []time.Time{at(-3 * time.Hour), at(-time.Microsecond), t0, at(time.Hour)} // first two are older
	must(t, s.Update(ctx, func(q store.TxQueries) error {
		for _, when := range times {
			addChange(t, q, appA, "m1", g.Name, store.StatusComplete, "2.0.0", when)
			if _, err := q.AddEvent(ctx, store.Event{AppID: appA, MachineID: "m1", Type: 3, Result: 1, At: when}); err != nil {
				return err
			}
			if _, err := q.AddActivity(ctx, store.Activity{AppID: appA, Kind: store.ActivityRolloutStarted, Severity: store.SeverityInfo, At: when}); err != nil {
				return err
			}
		}
		return nil
	}))

	res, err := s.Prune(ctx, cutoff)
	must(t, err)
	diff(t, "Prune result", res, store.PruneResult{StatusHistory: 2, Events: 2, Activity: 2})

	changes, err := s.ListStatusChanges(ctx, appA, "m1", 0)
	must(t, err)
	events, err := s.ListEvents(ctx, appA, "m1", 0)
	must(t, err)
	acts, err := s.ListActivity(ctx, store.ActivityFilter{AppID: appA})
	must(t, err)
	want := []time.Time{at(time.Hour), t0}
	var gotC, gotE, gotA []time.Time
	for _, c := range changes {
		gotC = append(gotC, c.At)
	}
	for _, e := range events {
		gotE = append(gotE, e.At)
	}
	for _, a := range acts {
		gotA = append(gotA, a.At)
	}
	diff(t, "status history after prune", gotC, want)
	diff(t, "events after prune", gotE, want)
	diff(t, "activity after prune", gotA, want)

	got, err := s.GetInstance(ctx, appA, "m1")
	must(t, err)
	diff(t, "instance after prune", got, in)
	for _, check := range []func() error{
		func() error { _, err := s.GetGroup(ctx, appA, g.Name); return err },
		func() error { _, err := s.GetChannel(ctx, appA, "stable"); return err },
		func() error { _, err := s.GetPackage(ctx, appA, "2.0.0", "amd64"); return err },
	} {
		must(t, check())
	}

	res, err = s.Prune(ctx, cutoff)
	must(t, err)
	diff(t, "second Prune", res, store.PruneResult{})
}

func testPing(t *testing.T, s store.Store) {
	must(t, s.Ping(t.Context()))
}

func reversed[T any](s []T) []T {
	out := make([]T, len(s))
	for i, v := range s {
		out[len(s)-1-i] = v
	}
	return out
}
