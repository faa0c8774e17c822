package storetest

import (
	"crypto/sha256"
	"encoding/hex"
	"sync"
	"testing"
	"time"

	"github.com/flotilla/flotilla/internal/store"
)

func sha(doc string) string {
	sum := sha256.Sum256([]byte(doc))
	return hex.EncodeToString(sum[:])
}

func testGroupConfigs(t *testing.T, s store.Store) {
	ctx := t.Context()
	g := setupApp(t, s, appA)
	must(t, s.CreateGroup(ctx, mkGroup(appA, "other", "beta", "stable")))

	_, err := s.GetGroupConfig(ctx, appA, g.Name, 0)
	wantErr(t, "GetGroupConfig before any version", err, store.ErrNotFound)
	list, err := s.ListGroupConfigs(ctx, appA, g.Name)
	must(t, err)
	diff(t, "ListGroupConfigs before any version", list, []store.GroupConfig(nil))
	_, err = s.ListGroupConfigs(ctx, appA, "no-such-group")
	wantErr(t, "ListGroupConfigs of an unknown group", err, store.ErrNotFound)
	_, err = s.PutGroupConfig(ctx, store.GroupConfig{AppID: appA, Group: "no-such-group", Document: "x"})
	wantErr(t, "PutGroupConfig of an unknown group", err, store.ErrNotFound)
	_, err = s.PutGroupConfig(ctx, store.GroupConfig{AppID: appA, Group: g.Name})
	wantErr(t, "PutGroupConfig of an empty document", err, store.ErrInvalid)

	doc1 := "#cloud-config\nhostname: a\n"
	doc2 := "#cloud-config\nhostname: b ü\n"
	put := func(doc, comment string, d time.Duration) int {
		t.Helper()
		v, err := s.PutGroupConfig(ctx, store.GroupConfig{AppID: appA, Group: g.Name, Document: doc,
			Format: "cloud-config", Author: "admin", Comment: comment, CreatedAt: at(d).In(elsewhere)})
		must(t, err)
		return v
	}
	if v := put(doc1, "first", 0); v != 1 {
		t.Errorf("first PutGroupConfig = version %d, want 1", v)
	}
	if v := put(doc1, "again", time.Minute); v != 1 {
		t.Errorf("PutGroupConfig of the same document = version %d, want 1 (no new version)", v)
	}
	if v := put(doc2, "second", 2*time.Minute); v != 2 {
		t.Errorf("PutGroupConfig of a changed document = version %d, want 2", v)
	}
	// Going back to an earlier document is a change too.
	if v := put(doc1, "revert", 3*time.Minute); v != 3 {
		t.Errorf("PutGroupConfig reverting to version 1's document = version %d, want 3", v)
	}
	// Versions count per group.
	v, err := s.PutGroupConfig(ctx, store.GroupConfig{AppID: appA, Group: "other", Document: doc2})
	must(t, err)
	if v != 1 {
		t.Errorf("first version of another group = %d, want 1", v)
	}

	want2 := store.GroupConfig{AppID: appA, Group: g.Name, Version: 2, Document: doc2, Format: "cloud-config",
		SHA256: sha(doc2), Size: len(doc2), Author: "admin", Comment: "second", CreatedAt: at(2 * time.Minute)}
	got, err := s.GetGroupConfig(ctx, appA, g.Name, 2)
	must(t, err)
	diff(t, "GetGroupConfig version 2", got, want2)
	wantUTC(t, "GetGroupConfig", got)
	latest, err := s.GetGroupConfig(ctx, appA, g.Name, 0)
	must(t, err)
	if latest.Version != 3 || latest.Document != doc1 || latest.Comment != "revert" {
		t.Errorf("GetGroupConfig latest = version %d %q (%q), want version 3 with version 1's document", latest.Version, latest.Document, latest.Comment)
	}
	_, err = s.GetGroupConfig(ctx, appA, g.Name, 4)
	wantErr(t, "GetGroupConfig of a version not yet stored", err, store.ErrNotFound)

	list, err = s.ListGroupConfigs(ctx, appA, g.Name)
	must(t, err)
	var versions []int
	for _, c := range list {
		versions = append(versions, c.Version)
		if c.Document != "" {
			t.Errorf("ListGroupConfigs version %d carries its document", c.Version)
		}
	}
	diff(t, "ListGroupConfigs versions (newest first)", versions, []int{3, 2, 1})
	want2.Document = ""
	diff(t, "ListGroupConfigs version 2", list[1], want2)

	// Deleting the group deletes its history.
	must(t, s.DeleteGroup(ctx, appA, "other"))
	_, err = s.GetGroupConfig(ctx, appA, "other", 0)
	wantErr(t, "GetGroupConfig of a deleted group", err, store.ErrNotFound)
}

func testGroupConfigsConcurrent(t *testing.T, s store.Store) {
	ctx := t.Context()
	g := setupApp(t, s, appA)
	// Writers of different documents must each get their own version:
	// none may fail on the version key or share a number.
	const n = 8
	var wg sync.WaitGroup
	got := make([]int, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			got[i], errs[i] = s.PutGroupConfig(ctx, store.GroupConfig{AppID: appA, Group: g.Name,
				Document: "#cloud-config\nhostname: h" + string(rune('a'+i)) + "\n", CreatedAt: t0})
		})
	}
	wg.Wait()
	seen := map[int]bool{}
	for i := range n {
		must(t, errs[i])
		if seen[got[i]] {
			t.Errorf("version %d handed out twice", got[i])
		}
		seen[got[i]] = true
	}
	for v := 1; v <= n; v++ {
		if !seen[v] {
			t.Errorf("version %d missing; got %v", v, got)
		}
	}
}

func testConfigReports(t *testing.T, s store.Store) {
	ctx := t.Context()
	g := setupApp(t, s, appA)
	must(t, s.CreateGroup(ctx, mkGroup(appA, "other", "beta", "stable")))

	err := s.PutConfigReport(ctx, store.ConfigReport{AppID: appA, Group: g.Name, Version: 1})
	wantErr(t, "PutConfigReport without machine id", err, store.ErrInvalid)
	err = s.PutConfigReport(ctx, store.ConfigReport{AppID: appA, MachineID: "m", Group: g.Name, Version: -1})
	wantErr(t, "PutConfigReport with a negative version", err, store.ErrInvalid)
	err = s.PutConfigReport(ctx, store.ConfigReport{AppID: appA, MachineID: "m", Group: "no-such-group"})
	wantErr(t, "PutConfigReport for an unknown group", err, store.ErrNotFound)

	b := store.ConfigReport{AppID: appA, MachineID: "b", Group: g.Name, Version: 2, AppliedAt: at(time.Minute).In(elsewhere),
		Drift: []string{"file /etc/motd: content", "unit a.service: enable"}, Error: "", ReportedAt: at(2 * time.Minute)}
	a := store.ConfigReport{AppID: appA, MachineID: "a", Group: g.Name, Version: 1, AppliedAt: at(0),
		Error: "apply: boom", ReportedAt: at(time.Minute)}
	c := store.ConfigReport{AppID: appA, MachineID: "c", Group: "other", ReportedAt: at(0)}
	for _, r := range []store.ConfigReport{b, a, c} {
		must(t, s.PutConfigReport(ctx, r))
	}
	got, err := s.ListConfigReports(ctx, appA, g.Name)
	must(t, err)
	b.AppliedAt = b.AppliedAt.UTC()
	diff(t, "ListConfigReports", got, []store.ConfigReport{a, b})
	for _, r := range got {
		wantUTC(t, "ListConfigReports", r)
	}

	// A newer report replaces the machine's last one, also when the
	// machine moved to another group.
	a2 := store.ConfigReport{AppID: appA, MachineID: "a", Group: "other", Version: 3, AppliedAt: at(time.Hour), ReportedAt: at(time.Hour)}
	must(t, s.PutConfigReport(ctx, a2))
	got, err = s.ListConfigReports(ctx, appA, g.Name)
	must(t, err)
	diff(t, "ListConfigReports after a moved", got, []store.ConfigReport{b})
	got, err = s.ListConfigReports(ctx, appA, "other")
	must(t, err)
	diff(t, "ListConfigReports of the other group", got, []store.ConfigReport{a2, c})

	must(t, s.DeleteGroup(ctx, appA, "other"))
	got, err = s.ListConfigReports(ctx, appA, "other")
	must(t, err)
	diff(t, "ListConfigReports of a deleted group", got, []store.ConfigReport(nil))
}
