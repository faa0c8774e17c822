// Package postgres is the PostgreSQL backend of store.Store, built on pgx
// and its connection pool (pgxpool). Several flotilla server processes can
// share one database: this is the backend for running more than one
// replica.
//
// # Transactions and locking
//
// Store.Update runs at READ COMMITTED, not REPEATABLE READ or SERIALIZABLE,
// because of how rate limits work: a callback locks the group row
// (TxQueries.LockGroup, SELECT … FOR UPDATE) and then counts grants. Under
// READ COMMITTED every statement takes a fresh snapshot, so the count that
// follows the lock sees everything the previous holder of the lock
// committed. Under REPEATABLE READ the snapshot would be taken before the
// lock wait and the count would miss the grants made meanwhile.
//
// Two more row locks keep the guarantees the SQLite backend gets from its
// single writer: inside Update, GetInstance and ExpiredGrants read with
// FOR UPDATE, because their callers rewrite what they read and check it
// optimistically (the update service compares the instance with the state
// it planned from). DeletePackage, SetChannelPackage and CreateChannel lock
// the package rows of the version they check, so that a channel can never
// end up pointing at a version whose last package was deleted concurrently.
//
// Update (like the Store's own writes) runs the whole callback again, up
// to maxAttempts times in all, when PostgreSQL aborts the transaction with
// a serialization failure (40001) or a deadlock (40P01). The callback must
// therefore be safe to run again: it must not accumulate state outside the
// transaction across attempts. At READ COMMITTED serialization failures do
// not occur, so in practice only deadlocks between lock orders (e.g. two
// batches touching the same instances in different orders) cause retries.
//
// In PostgreSQL a failed statement aborts the whole transaction, where
// SQLite lets the transaction go on. Callbacks sometimes ignore an expected
// failure (e.g. ErrConflict from CreateApp when seeding); so that this
// behaves the same in both backends, the catalog writes (applications,
// packages, channels, groups, tokens) run under a savepoint inside Update
// and a failure leaves the transaction usable. Instance, history and
// sample writes do not: a savepoint starts a subtransaction, and bulk
// transactions with more than 64 of them slow down every snapshot in the
// database. Those writes fail only on invalid input or a deleted
// application, after which callers give up anyway.
//
// # Schema
//
// The schema lives in migrations/NNNN_name.sql, embedded into the binary;
// the numbers match the SQLite backend's, so a version means the same
// logical schema in both. Open applies pending migrations, each in its own
// transaction under a transaction-level advisory lock, so replicas starting
// at the same time apply each migration exactly once. Tables live in the
// first schema of the connection's search_path (set it in the DSN, e.g.
// ?search_path=flotilla, to share a database with other software).
//
// Times are timestamptz, truncated to whole microseconds before writing as
// the SQLite backend truncates; policies and package extra files are jsonb,
// activity machine ids text[].
package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flotilla/flotilla/internal/store"
)

const (
	// maxAttempts bounds how often Update runs a callback whose transaction
	// PostgreSQL aborted with a deadlock or serialization failure.
	maxAttempts = 5
	// pruneBatch bounds the rows one retention transaction deletes, so a
	// large prune neither holds row locks for long nor builds one huge
	// transaction.
	pruneBatch = 5000
	// rollbackTimeout bounds a rollback after the caller's context ended;
	// if it fails, pgx closes the connection, which rolls back too.
	rollbackTimeout = 5 * time.Second
)

// Store is a store.Store backed by a PostgreSQL database. It is safe for
// concurrent use, and several Stores (in one or many processes) may share a
// database.
type Store struct {
	pool *pgxpool.Pool
	r    *queries // over the pool, outside any transaction
	log  *slog.Logger
	m    *metrics

	closeOnce sync.Once
}

var _ store.Store = (*Store)(nil)

// Open connects to the database at dsn, applies pending migrations and
// returns the Store. dsn is a libpq-style URL or keyword/value string;
// pool settings go into it as pgxpool reads them (pool_max_conns,
// pool_min_conns, pool_max_conn_lifetime, …), and server settings as extra
// parameters (search_path, statement_timeout, …). Metrics are registered on
// reg unless it is nil.
func Open(ctx context.Context, dsn string, logger *slog.Logger, reg prometheus.Registerer) (*Store, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgconn's parse errors can quote the DSN; do not wrap them with
		// it again. The password is redacted by pgconn.
		return nil, fmt.Errorf("open postgres: %w: %w", store.ErrInvalid, err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	m, err := newMetrics(reg, pool)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	s := &Store{pool: pool, log: logger, m: m}
	s.r = &queries{db: pool, pool: pool}
	if err := s.migrate(ctx); err != nil {
		s.closePool()
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	return s, nil
}

// Close closes the pool, waiting for connections in use to be returned.
// Later calls do nothing.
func (s *Store) Close() error {
	s.closeOnce.Do(s.closePool)
	return nil
}

func (s *Store) closePool() {
	s.pool.Close()
	s.m.unregister()
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	return nil
}

// Update runs fn in one READ COMMITTED transaction, retrying it after a
// deadlock or serialization failure. See store.Store and the package
// documentation.
func (s *Store) Update(ctx context.Context, fn func(q store.TxQueries) error) error {
	return s.write(ctx, true, func(q *queries) error { return fn(q) })
}

// write runs fn in a read-write transaction and commits when fn returns
// nil, retrying as Update does. guard makes catalog writes use savepoints
// (see the package documentation); the Store's own single-method writes do
// not need them, since they end the transaction on any error. A panic in
// fn rolls back and is re-raised.
func (s *Store) write(ctx context.Context, guard bool, fn func(q *queries) error) error {
	for attempt := 1; ; attempt++ {
		err := s.writeOnce(ctx, guard, fn)
		code, retry := retryable(err)
		if !retry || attempt == maxAttempts || ctx.Err() != nil {
			return err
		}
		s.m.retries.WithLabelValues(code).Inc()
		s.log.LogAttrs(ctx, slog.LevelWarn, "postgres transaction aborted, retrying",
			slog.String("sqlstate", code), slog.Int("attempt", attempt), slog.Any("error", err))
		// Jitter keeps the transactions that deadlocked from colliding again
		// in lockstep.
		d := time.Duration(attempt) * (5*time.Millisecond + rand.N(10*time.Millisecond))
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
}

func (s *Store) writeOnce(ctx context.Context, guard bool, fn func(q *queries) error) error {
	start := time.Now()
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted, AccessMode: pgx.ReadWrite})
	s.m.beginWait.Observe(time.Since(start).Seconds())
	if err != nil {
		return fmt.Errorf("begin: %w", mapErr(err, nil))
	}
	began := time.Now()
	committed := false
	defer func() {
		if committed {
			s.m.txDuration.WithLabelValues("commit").Observe(time.Since(began).Seconds())
			return
		}
		// The caller's context may be what ended the transaction; roll
		// back regardless so the connection goes back to the pool clean.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
		defer cancel()
		_ = tx.Rollback(rctx)
		s.m.txDuration.WithLabelValues("rollback").Observe(time.Since(began).Seconds())
	}()

	if err := fn(&queries{db: tx, tx: tx, rw: true, guard: guard, pool: s.pool}); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", mapErr(err, nil))
	}
	committed = true
	return nil
}

// retryable reports whether err aborted a transaction that may succeed if
// run again, and its SQLSTATE.
func retryable(err error) (string, bool) {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return "", false
	}
	switch pe.Code {
	case "40001", "40P01": // serialization_failure, deadlock_detected
		return pe.Code, true
	}
	return pe.Code, false
}

// Prune deletes history rows and version samples older than before, in
// batches of pruneBatch rows per transaction.
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
			err := s.write(ctx, false, func(q *queries) error {
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

// SampleVersions implements store.Store.
func (s *Store) SampleVersions(ctx context.Context, at time.Time) (int, error) {
	var n int
	err := s.write(ctx, false, func(q *queries) error {
		var err error
		n, err = q.sampleVersions(ctx, at)
		return err
	})
	return n, err
}

// ListVersionSamples implements store.Store.
func (s *Store) ListVersionSamples(ctx context.Context, appID, group string, since time.Time) ([]store.VersionSample, error) {
	return s.r.listVersionSamples(ctx, appID, group, since)
}

// mapErr translates driver errors into the store sentinels, joined with the
// original error so PostgreSQL's message stays visible. fk is the sentinel
// a foreign-key violation means for the calling operation (ErrInvalid when
// writing a reference to something missing, ErrConflict when deleting
// something still referenced); nil leaves such errors unmapped.
func mapErr(err error, fk error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return store.ErrNotFound
	}
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return err
	}
	switch {
	case pe.Code == "23505": // unique_violation
		return fmt.Errorf("%w: %w", store.ErrConflict, err)
	case pe.Code == "23503": // foreign_key_violation
		if fk != nil {
			return fmt.Errorf("%w: %w", fk, err)
		}
	case pe.Code == "23502", pe.Code == "23514": // not_null_violation, check_violation
		return fmt.Errorf("%w: %w", store.ErrInvalid, err)
	case len(pe.Code) == 5 && pe.Code[:2] == "22":
		// Data exceptions: text that is not valid UTF-8 or holds NUL
		// bytes (which SQLite would store), numbers or times out of range.
		return fmt.Errorf("%w: %w", store.ErrInvalid, err)
	}
	return err
}
