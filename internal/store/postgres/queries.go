package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/flotilla/flotilla/internal/store"
)

// dbtx is what queries need from a connection: satisfied by *pgxpool.Pool
// and pgx.Tx, so every statement is written once and runs either directly
// or inside a transaction. pgx prepares and caches each statement per
// connection on first use (QueryExecModeCacheStatement), so constant SQL
// text is parsed and planned once per connection.
type dbtx interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// queries implements store.TxQueries over a dbtx.
type queries struct {
	db   dbtx
	pool *pgxpool.Pool // for read snapshots outside transactions
	// tx is db as a transaction, nil when db is the pool (each statement
	// then commits on its own).
	tx pgx.Tx
	// rw marks a read-write transaction, in which reads that callers
	// rewrite take row locks (FOR UPDATE is an error in a read-only one).
	rw bool
	// guard makes catalog writes run under a savepoint (inside
	// Store.Update; see the package documentation).
	guard bool
}

var _ store.TxQueries = (*queries)(nil)

// forUpdate is appended to reads whose rows the caller will rewrite.
func (q *queries) forUpdate() string {
	if q.rw {
		return " FOR UPDATE"
	}
	return ""
}

// snapshot runs fn so that its statements see one consistent state: inside
// a transaction as is, on the pool in a read-only REPEATABLE READ
// transaction (one snapshot for all statements).
func (q *queries) snapshot(ctx context.Context, fn func(q *queries) error) error {
	if q.tx != nil {
		return fn(q)
	}
	tx, err := q.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return mapErr(err, nil)
	}
	// A read transaction has nothing to commit; rolling back just ends it.
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck
	return fn(&queries{db: tx, tx: tx, pool: q.pool})
}

// atomic runs fn, a write of several statements, so that it takes effect
// entirely or not at all, and so that a failure inside Store.Update leaves
// the caller's transaction usable (a savepoint), as it would in SQLite.
// Outside a transaction it starts one.
func (q *queries) atomic(ctx context.Context, fn func(q *queries) error) error {
	switch {
	case q.tx == nil:
		return pgx.BeginTxFunc(ctx, q.pool, pgx.TxOptions{IsoLevel: pgx.ReadCommitted, AccessMode: pgx.ReadWrite},
			func(tx pgx.Tx) error { return fn(&queries{db: tx, tx: tx, rw: true, pool: q.pool}) })
	case !q.guard:
		return fn(q)
	}
	sp, err := q.tx.Begin(ctx) // SAVEPOINT
	if err != nil {
		return mapErr(err, nil)
	}
	if err := fn(&queries{db: sp, tx: sp, rw: true, pool: q.pool}); err != nil {
		// ROLLBACK TO SAVEPOINT; if it fails too the transaction stays
		// aborted and the caller's next statement reports it.
		_ = sp.Rollback(context.WithoutCancel(ctx))
		return err
	}
	if err := sp.Commit(ctx); err != nil { // RELEASE SAVEPOINT
		return mapErr(err, nil)
	}
	return nil
}

// fail wraps err for operation op, mapping driver errors to the store
// sentinels (see mapErr).
func fail(op string, err error, fk error) error {
	return fmt.Errorf("%s: %w", op, mapErr(err, fk))
}

// affected turns "no row changed" into ErrNotFound.
func affected(op string, tag pgconn.CommandTag, err error, fk error) error {
	if err != nil {
		return fail(op, err, fk)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%s: %w", op, store.ErrNotFound)
	}
	return nil
}

// exists reports whether query returns a row.
func (q *queries) exists(ctx context.Context, query string, args ...any) (bool, error) {
	var one int
	err := q.db.QueryRow(ctx, query, args...).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// appExists backs the ErrNotFound of per-application lists, so the API can
// tell "no such application" from "no channels yet".
func (q *queries) appExists(ctx context.Context, op, appID string) error {
	ok, err := q.exists(ctx, sqlAppExists, appID)
	if err != nil {
		return fail(op, err, nil)
	}
	if !ok {
		return fmt.Errorf("%s: application %q: %w", op, appID, store.ErrNotFound)
	}
	return nil
}

// invalid reports a validation failure of op.
func invalid(op, format string, args ...any) error {
	return fmt.Errorf("%s: %s: %w", op, fmt.Sprintf(format, args...), store.ErrInvalid)
}

// ts prepares t for a timestamptz column: PostgreSQL rounds to the nearest
// microsecond, the SQLite backend truncates; truncating here makes both
// store the same instant. The zero time is within timestamptz's range and
// round-trips.
func ts(t time.Time) time.Time { return t.Truncate(time.Microsecond) }

// fromTS returns a scanned time in UTC (pgx returns local time), and
// exactly time.Time{} for the zero time.
func fromTS(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC()
}

// toJSON encodes v for a jsonb array column. Nil slices encode as "[]" so
// the column reads the same whichever way the caller spelled "empty".
func toJSON[T any](v []T) ([]byte, error) {
	if v == nil {
		return []byte("[]"), nil
	}
	return json.Marshal(v)
}

// fromJSON decodes a jsonb array column; empty arrays decode as nil.
func fromJSON[T any](b []byte) ([]T, error) {
	var v []T
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, err
	}
	if len(v) == 0 {
		return nil, nil
	}
	return v, nil
}

// inProgressStatuses are the statuses store.Status.InProgress accepts, as
// a text[] argument, derived from the store package so the two never
// drift.
var inProgressStatuses = func() []string {
	var a []string
	for _, s := range store.AllStatuses {
		if s.InProgress() {
			a = append(a, string(s))
		}
	}
	return a
}()

// failedStatuses count as failures for CountFailures and FailedMachines.
var failedStatuses = []string{string(store.StatusError), string(store.StatusRolledBack)}

// pageLimit applies the documented default (100) and cap (1000) of list
// limits.
func pageLimit(n int) int {
	switch {
	case n <= 0:
		return 100
	case n > 1000:
		return 1000
	}
	return n
}

// scanner is pgx.Row or pgx.Rows.
type scanner interface{ Scan(dest ...any) error }

// list runs query and scans every row with scan.
func list[T any](ctx context.Context, db dbtx, scan func(scanner) (T, error), query string, args ...any) ([]T, error) {
	rows, err := db.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}
