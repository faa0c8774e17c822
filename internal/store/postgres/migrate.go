package postgres

import (
	"context"
	"embed"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/flotilla/flotilla/internal/store"
)

// migrationFS holds the schema migrations. File names are NNNN_name.sql;
// the number is the schema version and is shared with the SQLite backend,
// so a version means the same logical schema in both.
//
//go:embed migrations/*.sql
var migrationFS embed.FS

// loadMigrations returns the embedded migrations sorted by version.
func loadMigrations() ([]store.Migration, error) {
	return store.LoadMigrations(migrationFS, "migrations")
}

// migrationLockClass is the first key of the advisory lock that serializes
// migrations ("flot"); the second is a hash of the schema, so that stores
// in different schemas of one database (parallel tests) do not wait for
// each other.
const migrationLockClass = 0x666c6f74

// migrate applies pending migrations, each in its own transaction.
//
// Every transaction first takes a transaction-level advisory lock, then
// reads schema_migrations. A replica that starts while another migrates
// waits at the lock and, because READ COMMITTED gives every statement a
// fresh snapshot, then sees the version the other one recorded and skips
// it. The lock also covers creating schema_migrations itself: two
// concurrent CREATE TABLE IF NOT EXISTS can both miss the table and one
// fails on the catalog's unique index.
func (s *Store) migrate(ctx context.Context) error {
	ms, err := loadMigrations()
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	for {
		applied, err := s.migrateOne(ctx, ms)
		if err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		if applied == nil {
			return nil
		}
		s.log.LogAttrs(ctx, slog.LevelInfo, "applied schema migration",
			slog.Int("version", applied.Version), slog.String("name", applied.Name))
	}
}

// migrateOne applies the oldest pending migration and returns it, or nil
// when the schema is up to date.
func (s *Store) migrateOne(ctx context.Context, ms []store.Migration) (*store.Migration, error) {
	var applied *store.Migration
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.ReadCommitted}, func(tx pgx.Tx) error {
		// current_schema() is NULL when no schema of the search_path
		// exists; CREATE TABLE below then reports that properly.
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1, hashtext(coalesce(current_schema(), '')))",
			int32(migrationLockClass)); err != nil {
			return fmt.Errorf("lock: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    integer     NOT NULL PRIMARY KEY,
			name       text        NOT NULL,
			applied_at timestamptz NOT NULL
		)`); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, "SELECT version FROM schema_migrations")
		if err != nil {
			return err
		}
		versions, err := pgx.CollectRows(rows, pgx.RowTo[int32])
		if err != nil {
			return err
		}
		done := map[int]bool{}
		maxKnown := ms[len(ms)-1].Version
		for _, v := range versions {
			if int(v) > maxKnown {
				// Running an older binary against a newer schema would
				// silently misread data.
				return fmt.Errorf("database schema version %d is newer than this binary (%d)", v, maxKnown)
			}
			done[int(v)] = true
		}
		for i := range ms {
			m := &ms[i]
			if done[m.Version] {
				continue
			}
			// No arguments: pgx sends the file with the simple protocol,
			// which accepts several statements.
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return fmt.Errorf("%s: %w", m.Name, err)
			}
			if _, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
				m.Version, m.Name, ts(time.Now())); err != nil {
				return fmt.Errorf("%s: %w", m.Name, err)
			}
			applied = m
			return nil
		}
		return nil
	})
	return applied, err
}
