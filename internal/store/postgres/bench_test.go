package postgres

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/flotilla/flotilla/internal/store"
)

const benchApp = "e96281a6-d1af-4bde-9a0a-97b76e56dc57"

var benchGroups = []string{"alpha", "beta", "stable"}

// seed creates the application, a channel, the groups and n instances, and
// returns the machine ids. The instances are copied in with COPY (through
// the store's API a 100,000-instance fleet takes seconds per benchmark),
// then VACUUM ANALYZE leaves table and statistics as autovacuum would.
func seed(b *testing.B, s *Store, n int) []string {
	b.Helper()
	ctx := context.Background()
	must(b, s.CreateApp(ctx, store.Application{ID: benchApp, Name: "Flatcar"}))
	must(b, s.CreateChannel(ctx, store.Channel{AppID: benchApp, Name: "stable"}))
	for _, g := range benchGroups {
		must(b, s.CreateGroup(ctx, store.Group{AppID: benchApp, Name: g, Track: g, Channel: "stable", Policy: store.DefaultPolicy()}))
	}
	ids := make([]string, n)
	now := time.Now().UTC()
	cols := strings.Split(strings.ReplaceAll(instCols, " ", ""), ",")
	_, err := s.pool.CopyFrom(ctx, pgx.Identifier{"instances"}, cols, pgx.CopyFromSlice(n, func(i int) ([]any, error) {
		ids[i] = fmt.Sprintf("%032x", uint64(i)*0x9e3779b97f4a7c15)
		in := benchInstance(ids[i], i, now)
		return []any{in.AppID, in.MachineID, in.Alias, in.IP, in.OEM, in.OEMVersion, in.AlephVersion, in.Board,
			in.Group, in.Version, string(in.Status), in.GrantedVersion, in.GrantedAt, in.LastErrorCode,
			in.BlockedVersion, in.LastCheck, in.StatusChanged, in.CreatedAt}, nil
	}))
	must(b, err)
	_, err = s.pool.Exec(ctx, "VACUUM ANALYZE instances")
	must(b, err)
	return ids
}

func benchInstance(id string, i int, now time.Time) store.Instance {
	return store.Instance{
		AppID: benchApp, MachineID: id, Alias: fmt.Sprintf("node-%06d", i), IP: "10.0.0.1", OEM: "qemu",
		AlephVersion: "3510.2.0", Board: "amd64-usr", Group: benchGroups[i%len(benchGroups)],
		Version: "3510.2.0", Status: store.StatusComplete, LastCheck: now.Add(-time.Duration(i) * time.Second),
		StatusChanged: now, CreatedAt: now,
	}
}

// BenchmarkGetInstance100k reads random instances of a 100,000-instance
// fleet: the first database access of every Omaha request.
func BenchmarkGetInstance100k(b *testing.B) {
	s := openTest(b)
	ids := seed(b, s, 100_000)
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := s.GetInstance(ctx, benchApp, ids[(i*7919)%len(ids)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkPutInstance rewrites instances of a 100,000-instance fleet, each
// in its own transaction (a write outside Update).
func BenchmarkPutInstance(b *testing.B) {
	s := openTest(b)
	ids := seed(b, s, 100_000)
	ctx := context.Background()
	now := time.Now().UTC()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		n := (i * 7919) % len(ids)
		if err := s.PutInstance(ctx, benchInstance(ids[n], n, now.Add(time.Duration(i)*time.Millisecond))); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// updateCheck is the store work of an update check that ends in a grant
// (updatesvc's commit with grantTx): lock the group, re-read the instance,
// count, record the grant and rewrite the instance, in one transaction.
func updateCheck(ctx context.Context, s *Store, id string, i int, now time.Time) error {
	in := benchInstance(id, i, now)
	return s.Update(ctx, func(q store.TxQueries) error {
		g, err := q.LockGroup(ctx, benchApp, in.Group)
		if err != nil {
			return err
		}
		if _, err := q.GetInstance(ctx, benchApp, id); err != nil {
			return err
		}
		if _, err := q.GroupCounts(ctx, benchApp, g.Name, now.Add(-time.Hour), now.Add(-24*time.Hour)); err != nil {
			return err
		}
		if _, err := q.AddStatusChange(ctx, store.StatusChange{AppID: benchApp, MachineID: id, Group: g.Name,
			Status: store.StatusGranted, Version: "3602.2.0", At: now}); err != nil {
			return err
		}
		in.Status, in.GrantedVersion, in.GrantedAt, in.StatusChanged = store.StatusGranted, "3602.2.0", now, now
		return q.PutInstance(ctx, in)
	})
}

// BenchmarkUpdateCheck100k runs updateCheck against a 100,000-instance
// fleet, one at a time and from parallel goroutines. In parallel, checks
// of the same group wait for each other at LockGroup, as they do across
// replicas: the three groups bound the parallelism.
func BenchmarkUpdateCheck100k(b *testing.B) {
	s := openTest(b)
	ids := seed(b, s, 100_000)
	ctx := context.Background()
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			n := (i * 7919) % len(ids)
			if err := updateCheck(ctx, s, ids[n], n, time.Now().UTC()); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := int(time.Now().UnixNano() % int64(len(ids)))
			for pb.Next() {
				n := (i * 7919) % len(ids)
				if err := updateCheck(ctx, s, ids[n], n, time.Now().UTC()); err != nil {
					b.Error(err)
					return
				}
				i++
			}
		})
	})
}

// BenchmarkListInstances100k pages through a 100,000-instance fleet the way
// the API and the dashboard do: the first page, a filtered page, a prefix
// search, and a page far down the list (keyset paging should cost the same
// as the first).
func BenchmarkListInstances100k(b *testing.B) {
	s := openTest(b)
	seed(b, s, 100_000)
	ctx := context.Background()
	deep := store.InstanceFilter{AppID: benchApp, Limit: 100}
	for range 500 { // 500 pages in: instance 50,000
		page, err := s.ListInstances(ctx, deep)
		if err != nil {
			b.Fatal(err)
		}
		deep.Cursor = page.NextCursor
	}
	cases := []struct {
		name string
		f    store.InstanceFilter
	}{
		{"first-page", store.InstanceFilter{AppID: benchApp, Limit: 100}},
		{"group-status", store.InstanceFilter{AppID: benchApp, Group: "beta", Status: store.StatusComplete, Limit: 100}},
		{"prefix", store.InstanceFilter{AppID: benchApp, Prefix: "node-0421", Limit: 100}},
		{"by-last-check", store.InstanceFilter{AppID: benchApp, SortByLastCheck: true, Limit: 100}},
		{"page-500", deep},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				page, err := s.ListInstances(ctx, c.f)
				if err != nil {
					b.Fatal(err)
				}
				if len(page.Instances) == 0 {
					b.Fatal("empty page")
				}
			}
		})
	}
}
