// Package sqlite is the SQLite backend of store.Store, built on the pure-Go
// driver modernc.org/sqlite so that flotilla stays a single static binary.
//
// # Connections
//
// SQLite allows one writer at a time, so the Store keeps two pools on the
// same database file:
//
//   - a write pool of exactly one connection whose transactions start with
//     BEGIN IMMEDIATE, so a transaction takes the write lock before its first
//     read and the counts it reads cannot be invalidated by another writer
//     (in this process or another) before it commits;
//   - a read pool of several query-only connections. In WAL mode readers
//     never wait for the writer, so dashboards and Omaha reads keep flowing
//     while an update transaction runs.
//
// Direct Queries calls that write run in their own write transaction; reads
// go to the read pool; inside Store.Update everything uses the transaction.
// Do not call the Store's write methods from inside an Update callback: the
// single write connection is held by the callback's transaction, so such a
// call waits forever (until its context ends). Use the TxQueries instead.
//
// # Schema
//
// The schema lives in migrations/NNNN_name.sql, embedded into the binary and
// applied in order by Open inside one write transaction; applied versions are
// recorded in schema_migrations. Times are stored as INTEGER microseconds
// since the Unix epoch (UTC); policies, package extra files and activity
// machine ids as JSON text.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	sqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/flotilla/flotilla/internal/store"
)

// Options tune the SQLite backend. The zero value is valid.
type Options struct {
	// Synchronous is the PRAGMA synchronous level: "FULL" (default) makes
	// every commit durable across power loss; "NORMAL" is durable across
	// process crashes but may lose the last commits on power loss, and
	// commits two to three times faster because WAL commits skip the fsync.
	Synchronous string
	// ReadConns is the size of the read pool (default 4).
	ReadConns int
}

const (
	// busyTimeout is how long a connection waits for a lock held by another
	// connection (another process, or the WAL checkpointer) before SQLite
	// returns SQLITE_BUSY.
	busyTimeout = 5 * time.Second
	// beginRetries is how often Update retries BEGIN IMMEDIATE after
	// SQLITE_BUSY. Retrying BEGIN is always safe: nothing has run yet.
	beginRetries = 2
	// pruneBatch bounds the rows one retention transaction deletes so that
	// the write lock is released regularly during a large prune.
	pruneBatch = 5000
)

// Store is a store.Store backed by one SQLite database file. It is safe for
// concurrent use.
type Store struct {
	wdb    *sql.DB // one connection, BEGIN IMMEDIATE
	rdb    *sql.DB // query-only connections
	wstmts map[string]*sql.Stmt
	rstmts map[string]*sql.Stmt
	r      *queries // over the read pool
	log    *slog.Logger
	m      *metrics

	closeOnce sync.Once
	closeErr  error
}

var _ store.Store = (*Store)(nil)

// Open opens (creating if needed) the database at path, applies pending
// migrations and returns the Store. path must be a file name: an in-memory
// database cannot be shared by the separate read and write pools. Metrics
// are registered on reg unless it is nil.
func Open(ctx context.Context, path string, opts Options, logger *slog.Logger, reg prometheus.Registerer) (*Store, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	syncMode, err := synchronousMode(opts.Synchronous)
	if err != nil {
		return nil, fmt.Errorf("open sqlite: %w", err)
	}
	readConns := opts.ReadConns
	if readConns <= 0 {
		readConns = 4
	}
	if path == "" || strings.HasPrefix(path, ":memory:") || strings.HasPrefix(path, "file:") || strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("open sqlite: path %q must be a plain file name", path)
	}

	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("open sqlite: %w", err)
	}

	common := url.Values{}
	common.Set("_busy_timeout", strconv.FormatInt(busyTimeout.Milliseconds(), 10))
	common.Set("_foreign_keys", "1")
	// A larger page cache than SQLite's 2 MiB default keeps the instance
	// indexes of a large fleet in memory; temp_store keeps sorts off disk.
	common.Add("_pragma", "cache_size(-32000)")
	common.Add("_pragma", "temp_store(memory)")

	wq := cloneValues(common)
	wq.Set("_journal_mode", "WAL")
	wq.Set("_synchronous", syncMode)
	wq.Set("_txlock", "immediate")
	wdb, err := sql.Open("sqlite", path+"?"+wq.Encode())
	if err != nil {
		return nil, fmt.Errorf("open sqlite: %w", err)
	}
	wdb.SetMaxOpenConns(1)
	wdb.SetMaxIdleConns(1)
	wdb.SetConnMaxLifetime(0)
	wdb.SetConnMaxIdleTime(0)

	s := &Store{wdb: wdb, log: logger, m: m}
	// The first write connection switches the file to WAL; it must exist
	// before the read pool connects, or readers would see rollback-journal
	// mode.
	if err := wdb.PingContext(ctx); err != nil {
		wdb.Close()
		return nil, fmt.Errorf("open sqlite: %w", err)
	}
	if err := s.migrate(ctx); err != nil {
		wdb.Close()
		return nil, fmt.Errorf("open sqlite: %w", err)
	}
	if s.wstmts, err = prepareAll(ctx, wdb); err != nil {
		wdb.Close()
		return nil, fmt.Errorf("open sqlite: %w", err)
	}

	rq := cloneValues(common)
	rq.Set("_query_only", "1")
	rdb, err := sql.Open("sqlite", path+"?"+rq.Encode())
	if err != nil {
		wdb.Close()
		return nil, fmt.Errorf("open sqlite: %w", err)
	}
	rdb.SetMaxOpenConns(readConns)
	rdb.SetMaxIdleConns(readConns)
	rdb.SetConnMaxLifetime(0)
	rdb.SetConnMaxIdleTime(0)
	s.rdb = rdb
	if s.rstmts, err = prepareAll(ctx, rdb); err != nil {
		s.closeAll()
		return nil, fmt.Errorf("open sqlite: %w", err)
	}
	s.r = &queries{db: &cached{db: rdb, stmts: s.rstmts}, m: m}

	// Refresh planner statistics where SQLite thinks they are stale; cheap
	// when nothing changed (https://sqlite.org/lang_analyze.html#pragopt).
	if _, err := wdb.ExecContext(ctx, "PRAGMA optimize=0x10002"); err != nil {
		logger.LogAttrs(ctx, slog.LevelWarn, "sqlite optimize failed", slog.Any("error", err))
	}
	return s, nil
}

func synchronousMode(v string) (string, error) {
	switch strings.ToUpper(v) {
	case "", "FULL":
		return "FULL", nil
	case "NORMAL":
		return "NORMAL", nil
	}
	return "", fmt.Errorf("synchronous %q: want NORMAL or FULL: %w", v, store.ErrInvalid)
}

func cloneValues(v url.Values) url.Values {
	c := make(url.Values, len(v))
	for k, vs := range v {
		c[k] = append([]string(nil), vs...)
	}
	return c
}

// Close closes both pools; later calls return the first call's result.
// Callers stop using the Store first: Close waits for the write connection,
// so it returns after a running Update ends.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		// Long-running processes should run optimize before closing
		// (https://sqlite.org/lang_analyze.html#req); failure only costs
		// query plans.
		if _, err := s.wdb.Exec("PRAGMA optimize"); err != nil {
			s.log.LogAttrs(context.Background(), slog.LevelWarn, "sqlite optimize failed", slog.Any("error", err))
		}
		s.closeErr = s.closeAll()
	})
	return s.closeErr
}

func (s *Store) closeAll() error {
	return errors.Join(closeAll(s.rstmts), closeAll(s.wstmts), s.rdb.Close(), s.wdb.Close())
}

// Ping checks that both pools can reach the database.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.rdb.PingContext(ctx); err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	if err := s.wdb.PingContext(ctx); err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	return nil
}

// Update runs fn in one write transaction. See store.Store.
func (s *Store) Update(ctx context.Context, fn func(q store.TxQueries) error) error {
	return s.write(ctx, func(q *queries) error { return fn(q) })
}

// write runs fn in a write transaction on the single write connection and
// commits when fn returns nil. A panic in fn rolls back and is re-raised.
func (s *Store) write(ctx context.Context, fn func(q *queries) error) (err error) {
	start := time.Now()
	tx, err := s.begin(ctx)
	s.m.writeWait.Observe(time.Since(start).Seconds())
	if err != nil {
		return err
	}
	began := time.Now()
	committed := false
	defer func() {
		if committed {
			s.m.txDuration.WithLabelValues("commit").Observe(time.Since(began).Seconds())
			return
		}
		// Rollback fails only if the connection is gone, in which case
		// SQLite has rolled back already.
		_ = tx.Rollback()
		s.m.txDuration.WithLabelValues("rollback").Observe(time.Since(began).Seconds())
	}()

	if err := fn(&queries{db: &cached{db: tx, tx: tx, stmts: s.wstmts}, m: s.m}); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", s.m.mapErr(err, nil))
	}
	committed = true
	return nil
}

// begin starts a write transaction, retrying BEGIN IMMEDIATE a few times if
// another process holds the write lock for longer than the busy timeout.
func (s *Store) begin(ctx context.Context) (*sql.Tx, error) {
	for attempt := 0; ; attempt++ {
		tx, err := s.wdb.BeginTx(ctx, nil)
		if err == nil {
			return tx, nil
		}
		if !isBusy(err) || attempt == beginRetries {
			return nil, fmt.Errorf("begin: %w", s.m.mapErr(err, nil))
		}
		s.m.busy.Inc()
		s.m.retries.Inc()
		s.log.LogAttrs(ctx, slog.LevelWarn, "sqlite write lock busy, retrying", slog.Int("attempt", attempt+1))
		t := time.NewTimer(time.Duration(attempt+1) * 50 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("begin: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// Prune deletes history rows older than before, in batches of pruneBatch
// rows per transaction so that update checks are not blocked for the whole
// pass.
func (s *Store) Prune(ctx context.Context, before time.Time) (store.PruneResult, error) {
	var res store.PruneResult
	for _, t := range []struct {
		table string
		n     *int64
	}{
		{"status_history", &res.StatusHistory},
		{"events", &res.Events},
		{"activity", &res.Activity},
		{"version_samples", &res.VersionSamples},
	} {
		for {
			var n int64
			err := s.write(ctx, func(q *queries) error {
				var err error
				n, err = q.pruneBatch(ctx, t.table, before, pruneBatch)
				return err
			})
			if err != nil {
				return res, err
			}
			*t.n += n
			if n < pruneBatch {
				break
			}
		}
	}
	return res, nil
}

// metrics are the backend's Prometheus collectors. They always exist so the
// code needs no nil checks; they are registered only when a registerer is
// given.
type metrics struct {
	txDuration *prometheus.HistogramVec
	writeWait  prometheus.Histogram
	busy       prometheus.Counter
	retries    prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		txDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "flotilla_sqlite_write_tx_duration_seconds",
			Help:    "Time write transactions held the SQLite write lock, by outcome.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"result"}),
		writeWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "flotilla_sqlite_write_wait_seconds",
			Help:    "Time spent waiting for the SQLite write connection and lock.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}),
		busy: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flotilla_sqlite_busy_total",
			Help: "SQLITE_BUSY errors (database locked beyond the busy timeout).",
		}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flotilla_sqlite_begin_retries_total",
			Help: "Write transactions whose BEGIN was retried after SQLITE_BUSY.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	// Reuse collectors already registered by an earlier Store on the same
	// registry (tests, or a reopen) instead of failing.
	var err error
	if m.txDuration, err = register(reg, m.txDuration); err != nil {
		return nil, err
	}
	if m.writeWait, err = register(reg, m.writeWait); err != nil {
		return nil, err
	}
	if m.busy, err = register(reg, m.busy); err != nil {
		return nil, err
	}
	if m.retries, err = register(reg, m.retries); err != nil {
		return nil, err
	}
	return m, nil
}

func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, fmt.Errorf("register metrics: %w", err)
	}
	return c, nil
}

// mapErr translates driver errors into the store sentinels, joined with the
// original error so the SQLite message stays visible. fk is the sentinel a
// foreign-key violation means for the calling operation (ErrInvalid when
// writing a reference to something missing, ErrConflict when deleting
// something still referenced); nil leaves such errors unmapped.
func (m *metrics) mapErr(err error, fk error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, sql.ErrNoRows) {
		return store.ErrNotFound
	}
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return err
	}
	switch se.Code() {
	case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
		return fmt.Errorf("%w: %w", store.ErrConflict, err)
	case sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
		if fk != nil {
			return fmt.Errorf("%w: %w", fk, err)
		}
	case sqlite3.SQLITE_CONSTRAINT_NOTNULL, sqlite3.SQLITE_CONSTRAINT_CHECK, sqlite3.SQLITE_CONSTRAINT_DATATYPE:
		return fmt.Errorf("%w: %w", store.ErrInvalid, err)
	}
	if se.Code()&0xff == sqlite3.SQLITE_BUSY {
		m.busy.Inc()
	}
	return err
}

func isBusy(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_BUSY
}
