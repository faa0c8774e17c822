// Package testenv holds what tests in several packages share: a real
// PostgreSQL database of their own, and waiting for a condition with a
// deadline (WaitFor).
//
// The role in FLOTILLA_TEST_POSTGRES (as .ci/run creates it) may not create
// databases, so each test gets a fresh schema in the configured database
// instead, selected through search_path in the DSN it is handed and
// dropped when the test ends. To flotilla, a schema of its own is the same
// as a database of its own: every table, the migration record and every
// query live in it.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// PostgresEnv names the environment variable with the test server's DSN.
const PostgresEnv = "FLOTILLA_TEST_POSTGRES"

// PostgresDSN returns a postgres:// URL for a fresh, empty schema that is
// dropped (with everything in it) when the test ends, or skips the test
// when PostgresEnv is unset.
func PostgresDSN(tb testing.TB) string {
	tb.Helper()
	dsn := os.Getenv(PostgresEnv)
	if dsn == "" {
		tb.Skipf("%s is not set; set it to a PostgreSQL DSN such as "+
			"postgres://flotilla:flotilla@127.0.0.1:5432/flotilla_test?sslmode=disable to run this test", PostgresEnv)
	}
	if !strings.HasPrefix(dsn, "postgres://") && !strings.HasPrefix(dsn, "postgresql://") {
		tb.Fatalf("%s: want a postgres:// URL (the servers under test take it as --database)", PostgresEnv)
	}
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	schema := "flotilla_test_" + hex.EncodeToString(b)
	Exec(tb, dsn, "CREATE SCHEMA "+schema)
	tb.Cleanup(func() { Exec(tb, dsn, "DROP SCHEMA "+schema+" CASCADE") })
	u, err := url.Parse(dsn)
	if err != nil {
		tb.Fatalf("%s: %v", PostgresEnv, err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// Exec runs one statement on a connection of its own.
func Exec(tb testing.TB, dsn, sql string, args ...any) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		tb.Fatalf("connect to the test database: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		tb.Fatalf("%s: %v", sql, err)
	}
}

// QueryInt runs a query returning one integer.
func QueryInt(tb testing.TB, dsn, sql string, args ...any) int {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		tb.Fatalf("connect to the test database: %v", err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
		tb.Fatalf("%s: %v", sql, err)
	}
	return n
}
