package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/flotilla/flotilla/internal/store"
)

// dbtx is what queries need from a connection: satisfied by *sql.DB (a
// pool) and *sql.Tx, so every statement is written once and runs either
// directly or inside Store.Update. The Store hands queries a *cached, which
// wraps either and adds prepared statements.
type dbtx interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// queries implements store.TxQueries over a dbtx. Store uses one over the
// read pool for reads and builds one per write transaction.
type queries struct {
	db dbtx
	m  *metrics
}

var _ store.TxQueries = (*queries)(nil)

// snapshot runs fn so that its statements see one consistent state: inside
// a transaction as is, on a pool in a read transaction. (Write methods
// always run in a transaction, so only multi-statement reads need this.)
func (q *queries) snapshot(ctx context.Context, fn func(q *queries) error) error {
	c, ok := q.db.(*cached)
	if !ok || c.tx != nil {
		return fn(q)
	}
	db, ok := c.db.(*sql.DB)
	if !ok {
		return fn(q)
	}
	tx, err := db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return err
	}
	// A read transaction has nothing to commit; rolling back just ends it.
	defer tx.Rollback()
	return fn(&queries{db: &cached{db: tx, tx: tx, stmts: c.stmts}, m: q.m})
}

// fail wraps err for operation op, mapping driver errors to the store
// sentinels (see metrics.mapErr).
func (q *queries) fail(op string, err error, fk error) error {
	return fmt.Errorf("%s: %w", op, q.m.mapErr(err, fk))
}

// affected turns "no row changed" into ErrNotFound.
func (q *queries) affected(op string, res sql.Result, err error, fk error) error {
	if err != nil {
		return q.fail(op, err, fk)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return q.fail(op, err, nil)
	}
	if n == 0 {
		return fmt.Errorf("%s: %w", op, store.ErrNotFound)
	}
	return nil
}

// exists reports whether query returns a row.
func (q *queries) exists(ctx context.Context, query string, args ...any) (bool, error) {
	var one int
	err := q.db.QueryRowContext(ctx, query, args...).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// appExists backs the ErrNotFound of per-application lists, so the API can
// tell "no such application" from "no channels yet".
func (q *queries) appExists(ctx context.Context, op, appID string) error {
	ok, err := q.exists(ctx, sqlAppExists, appID)
	if err != nil {
		return q.fail(op, err, nil)
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

// ts encodes t as microseconds since the Unix epoch. The zero time encodes
// to its own (negative) value, so it round-trips and sorts first.
func ts(t time.Time) int64 { return t.UnixMicro() }

// fromTS decodes ts, returning UTC times and exactly time.Time{} for zero.
func fromTS(v int64) time.Time {
	t := time.UnixMicro(v).UTC()
	if t.IsZero() {
		return time.Time{}
	}
	return t
}

// toJSON encodes v for a JSON text column. Nil slices encode as "[]" so the
// column reads the same whichever way the caller spelled "empty".
func toJSON[T any](v []T) (string, error) {
	if v == nil {
		return "[]", nil
	}
	b, err := json.Marshal(v)
	return string(b), err
}

// fromJSON decodes a JSON array column; empty arrays decode as nil.
func fromJSON[T any](s string) ([]T, error) {
	var v []T
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		return nil, err
	}
	if len(v) == 0 {
		return nil, nil
	}
	return v, nil
}

// placeholders returns "?, ?, …" for n arguments.
func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

// inProgressStatuses are the statuses store.Status.InProgress accepts, as
// query arguments, derived from the store package so the two never drift.
var inProgressStatuses = func() []any {
	var a []any
	for _, s := range store.AllStatuses {
		if s.InProgress() {
			a = append(a, string(s))
		}
	}
	return a
}()

// inProgressPlaceholders has one "?" per in-progress status.
var inProgressPlaceholders = placeholders(len(inProgressStatuses))

// failedStatuses count as failures for CountFailures and FailedMachines
// (failureWhere has a placeholder for each).
var failedStatuses = []any{string(store.StatusError), string(store.StatusRolledBack)}

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

// scanner is *sql.Row or *sql.Rows.
type scanner interface{ Scan(dest ...any) error }

// list runs query and scans every row with scan.
func list[T any](ctx context.Context, db dbtx, scan func(scanner) (T, error), query string, args ...any) ([]T, error) {
	rows, err := db.QueryContext(ctx, query, args...)
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
