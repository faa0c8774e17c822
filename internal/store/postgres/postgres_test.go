package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/internal/store/storetest"
)

// dsnEnv names the environment variable that points the tests at a
// PostgreSQL server. The role needs CREATE on the database: every test
// works in a schema of its own, created and dropped by the test.
const dsnEnv = "FLOTILLA_TEST_POSTGRES"

// testDSN returns a DSN for a fresh, empty schema, dropped when the test
// ends, or skips the test when no server is configured.
func testDSN(tb testing.TB) string {
	tb.Helper()
	dsn := serverDSN(tb)
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	schema := "flotilla_test_" + hex.EncodeToString(b)
	admin(tb, dsn, "CREATE SCHEMA "+schema)
	tb.Cleanup(func() { admin(tb, dsn, "DROP SCHEMA "+schema+" CASCADE") })
	return withParam(tb, dsn, "search_path", schema)
}

// serverDSN returns the configured server's DSN or skips the test.
func serverDSN(tb testing.TB) string {
	tb.Helper()
	dsn := os.Getenv(dsnEnv)
	if dsn == "" {
		tb.Skipf("%s is not set; set it to a PostgreSQL DSN such as "+
			"postgres://flotilla:flotilla@127.0.0.1:5432/flotilla_test?sslmode=disable to run the PostgreSQL backend tests",
			dsnEnv)
	}
	return dsn
}

// admin runs one statement on its own connection.
func admin(tb testing.TB, dsn, sql string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		tb.Fatalf("connect to %s: %v", dsnEnv, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		tb.Fatalf("%s: %v", sql, err)
	}
}

// withParam adds a connection parameter to a URL or keyword/value DSN.
func withParam(tb testing.TB, dsn, key, value string) string {
	tb.Helper()
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			tb.Fatalf("%s: %v", dsnEnv, err)
		}
		q := u.Query()
		q.Set(key, value)
		u.RawQuery = q.Encode()
		return u.String()
	}
	return dsn + " " + key + "=" + value
}

// openDSN opens a Store on dsn, closed when the test ends.
func openDSN(tb testing.TB, dsn string, reg prometheus.Registerer) *Store {
	tb.Helper()
	s, err := Open(context.Background(), dsn, slog.New(slog.DiscardHandler), reg)
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

func openTest(tb testing.TB) *Store {
	tb.Helper()
	return openDSN(tb, testDSN(tb), prometheus.NewRegistry())
}

func TestConformance(t *testing.T) {
	serverDSN(t) // skip once, not in every subtest
	storetest.Run(t, func(t *testing.T) store.Store { return openTest(t) })
}

// migrationRows returns schema_migrations as "version name applied_at".
func migrationRows(t *testing.T, s *Store) []string {
	t.Helper()
	rows, err := s.pool.Query(t.Context(), "SELECT version, name, applied_at FROM schema_migrations ORDER BY version")
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
		var v int32
		var name string
		var at time.Time
		err := r.Scan(&v, &name, &at)
		return fmt.Sprint(v, " ", name, " ", at.UnixMicro()), err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestMigrateConcurrently opens several Stores on one empty schema at the
// same moment, as replicas starting together would: each migration must be
// applied exactly once, and none of the Opens may fail.
func TestMigrateConcurrently(t *testing.T) {
	dsn := testDSN(t)
	const replicas = 6
	stores := make([]*Store, replicas)
	errs := make([]error, replicas)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range replicas {
		wg.Go(func() {
			<-start
			stores[i], errs[i] = Open(t.Context(), dsn, nil, nil)
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Open %d: %v", i, err)
		}
		t.Cleanup(func() { stores[i].Close() })
	}
	ms, err := loadMigrations()
	if err != nil {
		t.Fatal(err)
	}
	rows := migrationRows(t, stores[0])
	if len(rows) != len(ms) {
		t.Fatalf("schema_migrations = %q, want %d migrations", rows, len(ms))
	}

	// Reopening an up-to-date schema applies nothing, and the schema works.
	s := openDSN(t, dsn, nil)
	if again := migrationRows(t, s); fmt.Sprint(again) != fmt.Sprint(rows) {
		t.Errorf("schema_migrations changed on reopen:\nbefore %v\nafter  %v", rows, again)
	}
	app := store.Application{ID: "a1", Name: "a", CreatedAt: time.Now().UTC().Truncate(time.Microsecond)}
	if err := stores[replicas-1].CreateApp(t.Context(), app); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetApp(t.Context(), "a1")
	if err != nil || !got.CreatedAt.Equal(app.CreatedAt) {
		t.Errorf("GetApp through another Store = %+v, %v; want %+v", got, err, app)
	}
}

func TestNewerSchemaRejected(t *testing.T) {
	dsn := testDSN(t)
	s := openDSN(t, dsn, nil)
	if _, err := s.pool.Exec(t.Context(), "INSERT INTO schema_migrations VALUES (9999, '9999_future', now())"); err != nil {
		t.Fatal(err)
	}
	if s2, err := Open(t.Context(), dsn, nil, nil); err == nil {
		s2.Close()
		t.Fatal("Open of a database with a newer schema succeeded")
	}
}

func TestOpenBadDSN(t *testing.T) {
	if _, err := Open(t.Context(), "postgres://x:y@127.0.0.1:5432/db?sslmode=bogus", nil, nil); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("Open with a malformed DSN: err = %v, want ErrInvalid", err)
	}
}

// TestTwoStoresSerialize runs the rate-limit property across two Stores
// (two pools) on one database, as two server replicas would: transactions
// that lock the group, count the grants and grant below the limit must
// grant exactly the limit, however they interleave.
func TestTwoStoresSerialize(t *testing.T) {
	dsn := testDSN(t)
	s1 := openDSN(t, dsn, nil)
	s2 := openDSN(t, dsn, nil)
	ctx := t.Context()
	now := time.Now().UTC()
	must(t, s1.CreateApp(ctx, store.Application{ID: "a1", Name: "a"}))
	must(t, s1.CreateChannel(ctx, store.Channel{AppID: "a1", Name: "stable"}))
	must(t, s2.CreateGroup(ctx, store.Group{AppID: "a1", Name: "g", Track: "stable", Channel: "stable", Policy: store.DefaultPolicy()}))

	const perStore, limit = 50, 10
	var wg sync.WaitGroup
	errs := make(chan error, 2*perStore)
	start := make(chan struct{})
	for i := range 2 * perStore {
		s := []*Store{s1, s2}[i%2]
		wg.Go(func() {
			<-start
			errs <- s.Update(ctx, func(q store.TxQueries) error {
				if _, err := q.LockGroup(ctx, "a1", "g"); err != nil {
					return err
				}
				c, err := q.GroupCounts(ctx, "a1", "g", now.Add(-time.Hour), time.Time{})
				if err != nil || c.GrantedInPeriod >= limit {
					return err
				}
				id := fmt.Sprintf("m%03d", i)
				if err := q.PutInstance(ctx, store.Instance{AppID: "a1", MachineID: id, Group: "g",
					Status: store.StatusGranted, GrantedVersion: "2.0.0", GrantedAt: now, LastCheck: now}); err != nil {
					return err
				}
				_, err = q.AddStatusChange(ctx, store.StatusChange{AppID: "a1", MachineID: id, Group: "g",
					Status: store.StatusGranted, Version: "2.0.0", At: now})
				return err
			})
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	for _, s := range []*Store{s1, s2} {
		c, err := s.GroupCounts(ctx, "a1", "g", now.Add(-time.Hour), time.Time{})
		if err != nil || c != (store.GroupCounts{GrantedInPeriod: limit, InProgress: limit}) {
			t.Errorf("GroupCounts = %+v, %v; want %d grants and %d in progress", c, err, limit, limit)
		}
	}
}

// TestDeadlockRetried makes two Updates lock two groups in opposite
// orders. PostgreSQL aborts one of them with a deadlock; Update must run
// that callback again, so both succeed.
func TestDeadlockRetried(t *testing.T) {
	dsn := testDSN(t)
	reg := prometheus.NewRegistry()
	s := openDSN(t, dsn, reg)
	ctx := t.Context()
	must(t, s.CreateApp(ctx, store.Application{ID: "a1", Name: "a"}))
	must(t, s.CreateChannel(ctx, store.Channel{AppID: "a1", Name: "stable"}))
	for _, g := range []string{"g1", "g2"} {
		must(t, s.CreateGroup(ctx, store.Group{AppID: "a1", Name: g, Track: g, Channel: "stable"}))
	}
	var runs atomic.Int32
	var both sync.WaitGroup
	both.Add(2)
	lockBoth := func(first, second string) error {
		firstRun := true
		return s.Update(ctx, func(q store.TxQueries) error {
			runs.Add(1)
			if _, err := q.LockGroup(ctx, "a1", first); err != nil {
				return err
			}
			if firstRun {
				// Both transactions hold their first lock before either
				// asks for its second: a certain deadlock.
				firstRun = false
				both.Done()
				both.Wait()
			}
			g, err := q.LockGroup(ctx, "a1", second)
			if err != nil {
				return err
			}
			g.Description += first
			return q.UpdateGroup(ctx, g)
		})
	}
	errs := make(chan error, 2)
	go func() { errs <- lockBoth("g1", "g2") }()
	go func() { errs <- lockBoth("g2", "g1") }()
	for range 2 {
		if err := <-errs; err != nil {
			t.Errorf("Update: %v", err)
		}
	}
	if n := runs.Load(); n != 3 {
		t.Errorf("callbacks ran %d times, want 3 (one retry)", n)
	}
	g1, err := s.GetGroup(ctx, "a1", "g1")
	must(t, err)
	g2, err := s.GetGroup(ctx, "a1", "g2")
	must(t, err)
	if g1.Description != "g2" || g2.Description != "g1" {
		t.Errorf("descriptions %q, %q; want each group updated once", g1.Description, g2.Description)
	}
	if got := counterValue(t, reg, "flotilla_postgres_tx_retries_total"); got != 1 {
		t.Errorf("retries metric = %v, want 1", got)
	}
}

// TestFailedWriteKeepsUpdateUsable: inside Update a catalog write that
// fails (here with ErrConflict) must not abort the transaction, as it does
// not in SQLite; the server's seeding relies on that.
func TestFailedWriteKeepsUpdateUsable(t *testing.T) {
	s := openTest(t)
	ctx := t.Context()
	must(t, s.CreateApp(ctx, store.Application{ID: "a1", Name: "a"}))
	must(t, s.CreateToken(ctx, store.Token{ID: "t1", Hash: "h1"}))
	err := s.Update(ctx, func(q store.TxQueries) error {
		must(t, q.CreateToken(ctx, store.Token{ID: "t2", Hash: "h2"}))
		if err := q.CreateApp(ctx, store.Application{ID: "a1", Name: "again"}); !errors.Is(err, store.ErrConflict) {
			t.Errorf("CreateApp duplicate: %v, want ErrConflict", err)
		}
		if err := q.CreateGroup(ctx, store.Group{AppID: "a1", Name: "g", Track: "g", Channel: "nope"}); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("CreateGroup unknown channel: %v, want ErrInvalid", err)
		}
		if err := q.DeletePackage(ctx, "a1", "1.0.0", "amd64"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("DeletePackage unknown: %v, want ErrNotFound", err)
		}
		if err := q.CreateChannel(ctx, store.Channel{AppID: "a1", Name: "stable"}); err != nil {
			return err
		}
		return q.CreateGroup(ctx, store.Group{AppID: "a1", Name: "g", Track: "g", Channel: "stable"})
	})
	if err != nil {
		t.Fatalf("Update after failed writes: %v", err)
	}
	for _, check := range []func() error{
		func() error { _, err := s.GetTokenByHash(ctx, "h2"); return err },
		func() error { _, err := s.GetGroup(ctx, "a1", "g"); return err },
	} {
		if err := check(); err != nil {
			t.Errorf("write of the Update missing: %v", err)
		}
	}
	if a, err := s.GetApp(ctx, "a1"); err != nil || a.Name != "a" {
		t.Errorf("GetApp = %+v, %v; want the original", a, err)
	}
}

// TestGetInstanceLocksInUpdate: an instance read inside Update stays as
// read until the transaction ends, so a second Update reading it waits
// and then sees the first one's write (the update service's optimistic
// check relies on this).
func TestGetInstanceLocksInUpdate(t *testing.T) {
	dsn := withParam(t, testDSN(t), "application_name", "flotilla-lock-test")
	s := openDSN(t, dsn, nil)
	ctx := t.Context()
	must(t, s.CreateApp(ctx, store.Application{ID: "a1", Name: "a"}))
	must(t, s.PutInstance(ctx, store.Instance{AppID: "a1", MachineID: "m1", Status: store.StatusIdle}))

	holding, releaseCh := make(chan struct{}), make(chan struct{})
	// Registered after the Store's Close, so it runs first: a failing test
	// must not leave the transaction (and Close) waiting.
	release := sync.OnceFunc(func() { close(releaseCh) })
	t.Cleanup(release)
	first := make(chan error, 1)
	go func() {
		first <- s.Update(ctx, func(q store.TxQueries) error {
			in, err := q.GetInstance(ctx, "a1", "m1")
			if err != nil {
				return err
			}
			close(holding)
			<-releaseCh
			in.Status = store.StatusGranted
			return q.PutInstance(ctx, in)
		})
	}()
	<-holding
	second := make(chan store.Instance, 1)
	go func() {
		var in store.Instance
		err := s.Update(ctx, func(q store.TxQueries) error {
			var err error
			in, err = q.GetInstance(ctx, "a1", "m1")
			return err
		})
		if err != nil {
			in.Status = store.Status(err.Error())
		}
		second <- in
	}()
	waitForLockWait(t, s, "flotilla-lock-test")
	release()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if in := <-second; in.Status != store.StatusGranted {
		t.Errorf("second Update read status %q, want the first's %q", in.Status, store.StatusGranted)
	}
}

// waitForLockWait polls until a backend of the application waits for a
// lock.
func waitForLockWait(t *testing.T, s *Store, app string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var n int
		err := s.pool.QueryRow(t.Context(), `SELECT COUNT(*) FROM pg_stat_activity
			WHERE application_name = $1 AND wait_event_type = 'Lock'`, app).Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("no transaction started waiting for the instance lock")
}

// TestPruneBatches prunes more rows than one batch holds.
func TestPruneBatches(t *testing.T) {
	s := openTest(t)
	ctx := t.Context()
	must(t, s.CreateApp(ctx, store.Application{ID: "a1", Name: "a"}))
	old := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	n := 2*pruneBatch + 7
	// Bulk insert in SQL: one AddEvent per row would make the test slow.
	_, err := s.pool.Exec(ctx, `INSERT INTO events (app_id, machine_id, group_name, type, result, error_code,
			version, previous_version, at)
		SELECT 'a1', 'm', '', 3, 1, 0, '', '', $1::timestamptz + i * interval '1 second'
		FROM generate_series(0, $2 - 1) AS i`, old, n)
	must(t, err)
	for range 3 {
		_, err := s.AddEvent(ctx, store.Event{AppID: "a1", MachineID: "m", At: old.AddDate(1, 0, 0)})
		must(t, err)
	}
	res, err := s.Prune(ctx, old.AddDate(0, 6, 0))
	must(t, err)
	if res.Events != int64(n) {
		t.Errorf("pruned %d events, want %d", res.Events, n)
	}
	left, err := s.ListEvents(ctx, "a1", "m", 0)
	if err != nil || len(left) != 3 {
		t.Errorf("left %d events, %v; want 3", len(left), err)
	}
}

// TestQueryPlans guards the hot-path queries against full scans. The
// tables are empty, so sequential scans are disabled to make the planner
// prefer any usable index; it still scans sequentially, or walks a whole
// index with a filter, when no index matches the condition. Either fails.
func TestQueryPlans(t *testing.T) {
	s := openTest(t)
	ctx := t.Context()
	now := time.Now()
	tx, err := s.pool.Begin(ctx)
	must(t, err)
	defer tx.Rollback(ctx)
	_, err = tx.Exec(ctx, "SET LOCAL enable_seqscan = off")
	must(t, err)
	for _, c := range []struct {
		name  string
		query string
		args  []any
	}{
		{"GetInstance", sqlGetInstance, []any{"a", "m"}},
		{"LockGroup", sqlLockGroup, []any{"a", "g"}},
		{"GroupCounts", sqlGroupCounts, []any{"a", "g", "granted", now, inProgressStatuses, now}},
		{"CountFailures", sqlCountFailures, []any{"a", "g", failedStatuses, "1.0.0", now}},
		{"ExpiredGrants", sqlExpiredGrants, []any{"a", "g", inProgressStatuses, now}},
		{"RolloutStatus", sqlRolloutStatus, []any{"a", "g"}},
		{"ListInstances by last check", "SELECT " + instCols + " FROM instances WHERE app_id = $1 AND (last_check, machine_id) < ($2, $3) ORDER BY last_check DESC, machine_id DESC LIMIT 101", []any{"a", now, "m"}},
		{"ListInstances prefix", "SELECT " + instCols + " FROM instances WHERE app_id = $1 AND (machine_id >= $2 AND machine_id < $3 OR alias >= $2 AND alias < $3) ORDER BY machine_id LIMIT 101", []any{"a", "ab", "ac"}},
		{"ListInstances group", "SELECT " + instCols + " FROM instances WHERE app_id = $1 AND group_name = $2 AND machine_id > $3 ORDER BY machine_id LIMIT 101", []any{"a", "g", "m"}},
		{"ListStatusChanges", sqlListStatusChanges, []any{"a", "m", 100}},
		{"ListEvents", sqlListEvents, []any{"a", "m", 100}},
		{"ListVersionSamples", sqlListVersionSamples, []any{"a", "g", now}},
		{"Prune", "SELECT id FROM events WHERE at < $1 ORDER BY at LIMIT 5000", []any{now}},
	} {
		var plan []struct{ Plan planNode }
		if err := tx.QueryRow(ctx, "EXPLAIN (FORMAT JSON) "+c.query, c.args...).Scan(&plan); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if bad := fullScans(plan[0].Plan); len(bad) > 0 {
			t.Errorf("%s: full scans %v in plan %+v", c.name, bad, plan[0].Plan)
		}
	}
}

// planNode is a node of EXPLAIN (FORMAT JSON).
type planNode struct {
	NodeType  string     `json:"Node Type"`
	Relation  string     `json:"Relation Name"`
	Index     string     `json:"Index Name"`
	IndexCond string     `json:"Index Cond"`
	Plans     []planNode `json:"Plans"`
}

// fullScans lists the scans of n's tree that read a whole table or index.
func fullScans(n planNode) []string {
	var bad []string
	switch n.NodeType {
	case "Seq Scan":
		bad = append(bad, n.NodeType+" on "+n.Relation)
	case "Index Scan", "Index Only Scan", "Bitmap Index Scan":
		if n.IndexCond == "" {
			bad = append(bad, n.NodeType+" without condition on "+n.Index)
		}
	}
	for _, c := range n.Plans {
		bad = append(bad, fullScans(c)...)
	}
	return bad
}

// TestTextCollation: every text column must compare byte-wise (COLLATE
// "C"), whatever the database's default collation, or prefix search and
// list orders differ from SQLite's (see migrations/0001_initial.sql). The
// test database may well default to a byte-wise collation already, so
// the conformance suite alone would not notice a missing COLLATE.
func TestTextCollation(t *testing.T) {
	s := openTest(t)
	rows, err := s.pool.Query(t.Context(), `SELECT c.relname || '.' || a.attname
		FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
		WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r'
			AND c.relname <> 'schema_migrations' AND a.attnum > 0 AND NOT a.attisdropped
			AND a.atttypid IN ('text'::regtype, 'text[]'::regtype)
			AND a.attcollation <> (SELECT oid FROM pg_collation
				WHERE collname = 'C' AND collnamespace = 'pg_catalog'::regnamespace)
		ORDER BY 1`)
	must(t, err)
	cols, err := pgx.CollectRows(rows, pgx.RowTo[string])
	must(t, err)
	if len(cols) > 0 {
		t.Errorf("text columns without COLLATE \"C\": %v", cols)
	}
}

// TestMetrics checks that a Store reports on its registry, and that a
// Store opened on the same registry after Close reports again.
func TestMetrics(t *testing.T) {
	dsn := testDSN(t)
	reg := prometheus.NewRegistry()
	s, err := Open(t.Context(), dsn, nil, reg)
	must(t, err)
	must(t, s.CreateApp(t.Context(), store.Application{ID: "a1", Name: "a"}))
	if got := histogramCount(t, reg, "flotilla_postgres_write_tx_duration_seconds"); got == 0 {
		t.Error("no write transaction recorded")
	}
	if !hasMetric(t, reg, "flotilla_postgres_pool_max_connections") {
		t.Error("no pool statistics")
	}
	must(t, s.Close())
	if hasMetric(t, reg, "flotilla_postgres_pool_max_connections") {
		t.Error("pool statistics of a closed Store")
	}
	s = openDSN(t, dsn, reg)
	must(t, s.Ping(t.Context()))
	if !hasMetric(t, reg, "flotilla_postgres_pool_max_connections") {
		t.Error("no pool statistics after reopen")
	}
}

func gather(t *testing.T, reg *prometheus.Registry, name string) []float64 {
	t.Helper()
	mfs, err := reg.Gather()
	must(t, err)
	var out []float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			switch {
			case m.Counter != nil:
				out = append(out, m.Counter.GetValue())
			case m.Histogram != nil:
				out = append(out, float64(m.Histogram.GetSampleCount()))
			case m.Gauge != nil:
				out = append(out, m.Gauge.GetValue())
			}
		}
	}
	return out
}

func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	var sum float64
	for _, v := range gather(t, reg, name) {
		sum += v
	}
	return sum
}

func histogramCount(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	return counterValue(t, reg, name)
}

func hasMetric(t *testing.T, reg *prometheus.Registry, name string) bool {
	t.Helper()
	return len(gather(t, reg, name)) > 0
}

func TestPrefixEnd(t *testing.T) {
	for _, c := range []struct {
		in, want string
		ok       bool
	}{
		{"m01", "m02", true},
		{"a\u00ff", "a\u0100", true}, // across a UTF-8 length boundary
		{"x\ud7ff", "x\ue000", true}, // skips the surrogates
		{"a\U0010ffff", "b", true},
		{"\U0010ffff", "", false},
	} {
		got, ok := prefixEnd(c.in)
		if got != c.want || ok != c.ok {
			t.Errorf("prefixEnd(%q) = %q, %v; want %q, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
