package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
)

// The driver compiles SQL on every call unless a statement is prepared, and
// compiling costs more than running the hot-path statements themselves
// (about half of a GetInstance, and time spent holding the write lock in
// every Update). So every constant statement is registered with static and
// prepared once per pool at Open; a side effect is that a broken statement
// fails Open, and thus every test, instead of its first use.

// statics are the registered statements, in registration order.
var statics []string

// static registers query for preparation at Open and returns it unchanged,
// so call sites keep passing plain strings.
func static(query string) string {
	statics = append(statics, query)
	return query
}

// prepareAll prepares every registered statement on db. database/sql
// re-prepares a statement on each further connection of the pool the first
// time it runs there.
func prepareAll(ctx context.Context, db *sql.DB) (map[string]*sql.Stmt, error) {
	m := make(map[string]*sql.Stmt, len(statics))
	for _, q := range statics {
		st, err := db.PrepareContext(ctx, q)
		if err != nil {
			closeAll(m)
			return nil, fmt.Errorf("prepare %q: %w", q, err)
		}
		m[q] = st
	}
	return m, nil
}

func closeAll(m map[string]*sql.Stmt) error {
	var errs []error
	for _, st := range m {
		errs = append(errs, st.Close())
	}
	return errors.Join(errs...)
}

// cached is the dbtx queries run on: it runs registered statements through
// their prepared form and anything else (dynamic SQL such as ListInstances)
// directly on the pool or transaction.
type cached struct {
	db    dbtx                 // *sql.DB or *sql.Tx
	tx    *sql.Tx              // db as a transaction, or nil
	stmts map[string]*sql.Stmt // prepared on the pool db or tx belongs to; read-only

	mu      sync.Mutex
	txStmts map[*sql.Stmt]*sql.Stmt // pool statement → its transaction form
}

var _ dbtx = (*cached)(nil)

// stmt returns the prepared form of query for this pool or transaction, or
// nil if query is not registered.
func (c *cached) stmt(ctx context.Context, query string) *sql.Stmt {
	st := c.stmts[query]
	if st == nil || c.tx == nil {
		return st
	}
	// Tx.StmtContext reuses the statement already prepared on the
	// transaction's connection; caching its result keeps a transaction that
	// runs the same statement many times (bulk writes) from piling up
	// wrappers until commit.
	c.mu.Lock()
	defer c.mu.Unlock()
	if ts := c.txStmts[st]; ts != nil {
		return ts
	}
	if c.txStmts == nil {
		c.txStmts = map[*sql.Stmt]*sql.Stmt{}
	}
	ts := c.tx.StmtContext(ctx, st)
	c.txStmts[st] = ts
	return ts
}

// ExecContext implements dbtx.
func (c *cached) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if st := c.stmt(ctx, query); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return c.db.ExecContext(ctx, query, args...)
}

// QueryContext implements dbtx.
func (c *cached) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if st := c.stmt(ctx, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return c.db.QueryContext(ctx, query, args...)
}

// QueryRowContext implements dbtx.
func (c *cached) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if st := c.stmt(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return c.db.QueryRowContext(ctx, query, args...)
}
