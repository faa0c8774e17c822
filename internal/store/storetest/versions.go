package storetest

import (
	"testing"
	"time"

	"github.com/flotilla/flotilla/internal/store"
)

func testVersionSamples(t *testing.T, s store.Store) {
	ctx := t.Context()
	g := setupApp(t, s, appA)
	mkApp(t, s, appB)
	must(t, s.CreateGroup(ctx, mkGroup(appA, "empty", "beta", "stable")))

	var ins []store.Instance
	for i, v := range []string{"1.0.0", "1.0.0", "2.0.0"} {
		in := mkInstance(appA, string(rune('a'+i)), g.Name)
		in.Version = v
		ins = append(ins, in)
	}
	// An instance whose group does not exist is not sampled.
	ins = append(ins, mkInstance(appA, "x", "no-such-group"))
	putInstances(t, s, ins...)

	n, err := s.SampleVersions(ctx, t0.In(elsewhere))
	must(t, err)
	if n != 2 {
		t.Errorf("SampleVersions wrote %d rows, want 2 (one per version of the group; none for empty or unknown groups)", n)
	}

	// The machine on 2.0.0's neighbours update; a later sample sees it.
	ins[0].Version = "2.0.0"
	putInstances(t, s, ins[0])
	_, err = s.SampleVersions(ctx, at(time.Minute))
	must(t, err)
	// Sampling again at the same moment replaces, not duplicates.
	ins[1].Version = "2.0.0"
	putInstances(t, s, ins[1])
	_, err = s.SampleVersions(ctx, at(time.Minute))
	must(t, err)

	got, err := s.ListVersionSamples(ctx, appA, g.Name, time.Time{})
	must(t, err)
	want := []store.VersionSample{
		{AppID: appA, Group: g.Name, Version: "1.0.0", Count: 2, At: t0},
		{AppID: appA, Group: g.Name, Version: "2.0.0", Count: 1, At: t0},
		// The repeated sample replaced the whole first one at this moment,
		// including the version that no machine runs any more.
		{AppID: appA, Group: g.Name, Version: "2.0.0", Count: 3, At: at(time.Minute)},
	}
	diff(t, "ListVersionSamples", got, want)
	for _, v := range got {
		wantUTC(t, "ListVersionSamples", v)
	}

	got, err = s.ListVersionSamples(ctx, appA, g.Name, at(time.Minute))
	must(t, err)
	diff(t, "ListVersionSamples since (inclusive)", got, want[2:])
	got, err = s.ListVersionSamples(ctx, appA, "empty", time.Time{})
	must(t, err)
	diff(t, "ListVersionSamples empty group", got, []store.VersionSample{})
	got, err = s.ListVersionSamples(ctx, appB, g.Name, time.Time{})
	must(t, err)
	diff(t, "ListVersionSamples other app", got, []store.VersionSample{})

	res, err := s.Prune(ctx, at(time.Second))
	must(t, err)
	if res.VersionSamples != 2 {
		t.Errorf("Prune removed %d version samples, want 2", res.VersionSamples)
	}
	got, err = s.ListVersionSamples(ctx, appA, g.Name, time.Time{})
	must(t, err)
	diff(t, "ListVersionSamples after prune", got, want[2:])

}
