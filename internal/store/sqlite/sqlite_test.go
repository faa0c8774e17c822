package sqlite

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/internal/store/storetest"
)

// openAt opens a Store on path, closed when the test ends.
func openAt(tb testing.TB, path string, opts Options, reg prometheus.Registerer) *Store {
	tb.Helper()
	s, err := Open(context.Background(), path, opts, slog.New(slog.DiscardHandler), reg)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return s
}

func openTemp(tb testing.TB) *Store {
	tb.Helper()
	return openAt(tb, filepath.Join(tb.TempDir(), "flotilla.db"), Options{}, prometheus.NewRegistry())
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return openTemp(t) })
}

// TestReopen checks that data survives Close and that opening an
// up-to-date database applies no migration again.
func TestReopen(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "flotilla.db")
	reg := prometheus.NewRegistry()

	s, err := Open(ctx, path, Options{Synchronous: "normal", ReadConns: 2}, slog.New(slog.DiscardHandler), reg)
	if err != nil {
		t.Fatal(err)
	}
	app := store.Application{ID: "e96281a6-d1af-4bde-9a0a-97b76e56dc57", Name: "Flatcar", CreatedAt: time.Now().UTC().Truncate(time.Microsecond)}
	if err := s.CreateApp(ctx, app); err != nil {
		t.Fatal(err)
	}
	before := migrationRows(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	// Same registry: the second Store reuses the registered collectors.
	s = openAt(t, path, Options{}, reg)
	got, err := s.GetApp(ctx, app.ID)
	if err != nil {
		t.Fatalf("GetApp after reopen: %v", err)
	}
	if !got.CreatedAt.Equal(app.CreatedAt) || got.Name != app.Name {
		t.Errorf("GetApp after reopen = %+v, want %+v", got, app)
	}
	after := migrationRows(t, s)
	if len(before) == 0 || fmt.Sprint(before) != fmt.Sprint(after) {
		t.Errorf("schema_migrations changed on reopen:\nbefore %v\nafter  %v", before, after)
	}
	ms, err := loadMigrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(ms) {
		t.Errorf("%d migrations recorded, %d embedded", len(after), len(ms))
	}
	// Running the migrations again on the open store is a no-op too.
	if err := s.migrate(ctx); err != nil {
		t.Fatalf("migrate again: %v", err)
	}
	if again := migrationRows(t, s); fmt.Sprint(again) != fmt.Sprint(after) {
		t.Errorf("schema_migrations changed by a second migrate: %v", again)
	}
}

// migrationRows returns schema_migrations as "version name applied_at".
func migrationRows(t *testing.T, s *Store) []string {
	t.Helper()
	rows, err := s.rdb.QueryContext(t.Context(), "SELECT version, name, applied_at FROM schema_migrations ORDER BY version")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v, at int64
		var name string
		if err := rows.Scan(&v, &name, &at); err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprint(v, " ", name, " ", at))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestNewerSchemaRejected(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flotilla.db")
	s := openAt(t, path, Options{}, nil)
	if _, err := s.wdb.ExecContext(t.Context(), "INSERT INTO schema_migrations VALUES (9999, '9999_future', 0)"); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(t.Context(), path, Options{}, nil, nil); err == nil {
		t.Fatal("Open of a database with a newer schema succeeded")
	}
}

func TestOpenOptions(t *testing.T) {
	dir := t.TempDir()
	for _, path := range []string{"", ":memory:", "file:x.db", filepath.Join(dir, "a?b.db")} {
		if _, err := Open(t.Context(), path, Options{}, nil, nil); err == nil {
			t.Errorf("Open(%q) succeeded", path)
		}
	}
	if _, err := Open(t.Context(), filepath.Join(dir, "x.db"), Options{Synchronous: "OFF"}, nil, nil); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("Synchronous OFF: err = %v, want ErrInvalid", err)
	}
	s := openAt(t, filepath.Join(dir, "ok.db"), Options{Synchronous: "NORMAL"}, nil)
	var mode string
	if err := s.rdb.QueryRowContext(t.Context(), "PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("journal_mode = %q, %v; want wal", mode, err)
	}
	var fk int
	if err := s.wdb.QueryRowContext(t.Context(), "PRAGMA foreign_keys").Scan(&fk); err != nil || fk != 1 {
		t.Errorf("foreign_keys = %d, %v; want 1", fk, err)
	}
	// The read pool refuses writes.
	if _, err := s.rdb.ExecContext(t.Context(), "DELETE FROM apps"); err == nil {
		t.Error("read pool accepted a write")
	}
}

// TestReadsDoNotWaitForWrites holds the write lock in an Update and reads
// from the Store meanwhile.
func TestReadsDoNotWaitForWrites(t *testing.T) {
	s := openTemp(t)
	ctx := t.Context()
	app := store.Application{ID: "a1", Name: "a", CreatedAt: time.Unix(0, 0)}
	if err := s.CreateApp(ctx, app); err != nil {
		t.Fatal(err)
	}
	inTx, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- s.Update(ctx, func(q store.TxQueries) error {
			if err := q.UpdateApp(ctx, store.Application{ID: "a1", Name: "uncommitted"}); err != nil {
				return err
			}
			close(inTx)
			<-release
			return nil
		})
	}()
	<-inTx
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	got, err := s.GetApp(rctx, "a1")
	cancel()
	close(release)
	if err != nil {
		t.Fatalf("GetApp during a write transaction: %v", err)
	}
	if got.Name != "a" {
		t.Errorf("read saw uncommitted name %q", got.Name)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestTwoStoresSerialize runs the rate-limit property across two Stores on
// one file, as two server processes would: BEGIN IMMEDIATE and the busy
// timeout must serialize them.
func TestTwoStoresSerialize(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flotilla.db")
	s1 := openAt(t, path, Options{}, nil)
	s2 := openAt(t, path, Options{}, nil)
	ctx := t.Context()
	if err := s1.CreateApp(ctx, store.Application{ID: "a1", Name: "a"}); err != nil {
		t.Fatal(err)
	}
	const workers, limit = 16, 5
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for i := range workers {
		s := s1
		if i%2 == 1 {
			s = s2
		}
		wg.Go(func() {
			errs <- s.Update(ctx, func(q store.TxQueries) error {
				c, err := q.GroupCounts(ctx, "a1", "g", time.Time{}, time.Time{})
				if err != nil || c.GrantedInPeriod >= limit {
					return err
				}
				_, err = q.AddStatusChange(ctx, store.StatusChange{AppID: "a1", MachineID: fmt.Sprint(i), Group: "g", Status: store.StatusGranted, At: time.Now()})
				return err
			})
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	c, err := s2.GroupCounts(ctx, "a1", "g", time.Time{}, time.Time{})
	if err != nil || c.GrantedInPeriod != limit {
		t.Errorf("grants = %d, %v; want %d", c.GrantedInPeriod, err, limit)
	}
}

// TestPruneBatches prunes more rows than one batch holds.
func TestPruneBatches(t *testing.T) {
	s := openTemp(t)
	ctx := t.Context()
	if err := s.CreateApp(ctx, store.Application{ID: "a1", Name: "a"}); err != nil {
		t.Fatal(err)
	}
	old := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	n := 2*pruneBatch + 7
	err := s.Update(ctx, func(q store.TxQueries) error {
		for i := range n + 3 {
			at := old.Add(time.Duration(i) * time.Second)
			if i >= n {
				at = old.AddDate(1, 0, 0)
			}
			if _, err := q.AddEvent(ctx, store.Event{AppID: "a1", MachineID: "m", At: at}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.Prune(ctx, old.AddDate(0, 6, 0))
	if err != nil {
		t.Fatal(err)
	}
	if res.Events != int64(n) {
		t.Errorf("pruned %d events, want %d", res.Events, n)
	}
	left, err := s.ListEvents(ctx, "a1", "m", 0)
	if err != nil || len(left) != 3 {
		t.Errorf("left %d events, %v; want 3", len(left), err)
	}
}

// TestQueryPlans guards the hot-path queries against full scans: each must
// search an index (SQLite's EXPLAIN QUERY PLAN says "SEARCH", not "SCAN").
func TestQueryPlans(t *testing.T) {
	s := openTemp(t)
	ctx := t.Context()
	now := time.Now().UnixMicro()
	for _, c := range []struct {
		name  string
		query string
		args  []any
	}{
		{"GetInstance", sqlGetInstance, []any{"a", "m"}},
		{"GroupCounts", sqlGroupCounts, append(append([]any{"a", "g", "granted", now, "a", "g"}, inProgressStatuses...), now)},
		{"CountFailures", sqlCountFailures, failureArgs("a", "g", "1.0.0", time.Now())},
		{"ExpiredGrants", sqlExpiredGrants, append(append([]any{"a", "g"}, inProgressStatuses...), now)},
		{"RolloutStatus", sqlRolloutStatus, []any{"a", "g"}},
		{"ListInstances by last check", "SELECT " + instCols + " FROM instances WHERE app_id = ? AND (last_check, machine_id) < (?, ?) ORDER BY last_check DESC, machine_id DESC LIMIT 101", []any{"a", now, "m"}},
		{"ListInstances prefix", "SELECT " + instCols + " FROM instances WHERE app_id = ? AND ((machine_id >= ? AND machine_id < ?) OR (alias >= ? AND alias < ?)) ORDER BY machine_id LIMIT 101", []any{"a", "ab", "ac", "ab", "ac"}},
		{"ListStatusChanges", sqlListStatusChanges, []any{"a", "m", 100}},
		{"ListEvents", sqlListEvents, []any{"a", "m", 100}},
		{"ListVersionSamples", sqlListVersionSamples, []any{"a", "g", now}},
		{"Prune", "SELECT id FROM events WHERE at < ? ORDER BY at LIMIT 5000", []any{now}},
	} {
		rows, err := s.rdb.QueryContext(ctx, "EXPLAIN QUERY PLAN "+c.query, c.args...)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, notused int
			var detail string
			if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		for _, step := range plan {
			if strings.HasPrefix(step, "SCAN") && step != "SCAN CONSTANT ROW" {
				t.Errorf("%s: full scan in plan %q", c.name, plan)
			}
		}
	}
}

// seed writes n instances of one application in one transaction.
func seed(b *testing.B, s *Store, n int) []string {
	b.Helper()
	ctx := context.Background()
	app := "e96281a6-d1af-4bde-9a0a-97b76e56dc57"
	if err := s.CreateApp(ctx, store.Application{ID: app, Name: "Flatcar"}); err != nil {
		b.Fatal(err)
	}
	ids := make([]string, n)
	now := time.Now().UTC()
	err := s.Update(ctx, func(q store.TxQueries) error {
		for i := range n {
			ids[i] = fmt.Sprintf("%032x", uint64(i)*0x9e3779b97f4a7c15)
			if err := q.PutInstance(ctx, benchInstance(app, ids[i], i, now)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return ids
}

func benchInstance(app, id string, i int, now time.Time) store.Instance {
	return store.Instance{
		AppID: app, MachineID: id, Alias: fmt.Sprintf("node-%06d", i), IP: "10.0.0.1", OEM: "qemu",
		AlephVersion: "3510.2.0", Board: "amd64-usr", Group: []string{"alpha", "beta", "stable"}[i%3],
		Version: "3510.2.0", Status: store.StatusComplete, LastCheck: now.Add(-time.Duration(i) * time.Second),
		StatusChanged: now, CreatedAt: now,
	}
}

// BenchmarkGetInstance100k reads random instances of a 100,000-instance
// fleet: the first database access of every Omaha request.
func BenchmarkGetInstance100k(b *testing.B) {
	s := openTemp(b)
	ids := seed(b, s, 100_000)
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := s.GetInstance(ctx, "e96281a6-d1af-4bde-9a0a-97b76e56dc57", ids[(i*7919)%len(ids)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkPutInstance rewrites instances of a 100,000-instance fleet, each
// in its own transaction (a check-in outside Update), under both
// synchronous modes: FULL pays an fsync per commit.
func BenchmarkPutInstance(b *testing.B) {
	for _, sync := range []string{"FULL", "NORMAL"} {
		b.Run("sync="+sync, func(b *testing.B) {
			s := openAt(b, filepath.Join(b.TempDir(), "flotilla.db"), Options{Synchronous: sync}, nil)
			ids := seed(b, s, 100_000)
			ctx := context.Background()
			now := time.Now().UTC()
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				n := (i * 7919) % len(ids)
				in := benchInstance("e96281a6-d1af-4bde-9a0a-97b76e56dc57", ids[n], n, now.Add(time.Duration(i)*time.Millisecond))
				if err := s.PutInstance(ctx, in); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// TestCheckpointNotBlocked checks that idle prepared statements on the read
// pool hold no read transaction: otherwise the WAL could never be
// checkpointed and would grow without bound.
func TestCheckpointNotBlocked(t *testing.T) {
	s := openTemp(t)
	ctx := t.Context()
	app := "a1"
	if err := s.CreateApp(ctx, store.Application{ID: app, Name: "a"}); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		in := benchInstance(app, fmt.Sprint(i), i, time.Now())
		if err := s.PutInstance(ctx, in); err != nil {
			t.Fatal(err)
		}
		// Exercise every kind of read: single row, list, snapshot.
		if _, err := s.GetInstance(ctx, app, in.MachineID); err != nil {
			t.Fatal(err)
		}
		if _, err := s.ListInstances(ctx, store.InstanceFilter{AppID: app, Limit: 5}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.RolloutStatus(ctx, app, in.Group); err != nil {
			t.Fatal(err)
		}
		if _, err := s.ListGroups(ctx, app); err != nil {
			t.Fatal(err)
		}
	}
	var busy, logFrames, checkpointed int
	if err := s.wdb.QueryRowContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &logFrames, &checkpointed); err != nil {
		t.Fatal(err)
	}
	if busy != 0 || logFrames != checkpointed {
		t.Errorf("wal_checkpoint: busy %d, %d frames, %d checkpointed; a reader holds a snapshot", busy, logFrames, checkpointed)
	}
}

// BenchmarkListInstances100k pages through a 100,000-instance fleet the way
// the API and the dashboard do: the first page, a filtered page, a prefix
// search, and a page far down the list (keyset paging should cost the same
// as the first).
func BenchmarkListInstances100k(b *testing.B) {
	s := openTemp(b)
	seed(b, s, 100_000)
	ctx := context.Background()
	const app = "e96281a6-d1af-4bde-9a0a-97b76e56dc57"
	deep := store.InstanceFilter{AppID: app, Limit: 100}
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
		{"first-page", store.InstanceFilter{AppID: app, Limit: 100}},
		{"group-status", store.InstanceFilter{AppID: app, Group: "beta", Status: store.StatusComplete, Limit: 100}},
		{"prefix", store.InstanceFilter{AppID: app, Prefix: "node-0421", Limit: 100}},
		{"by-last-check", store.InstanceFilter{AppID: app, SortByLastCheck: true, Limit: 100}},
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
