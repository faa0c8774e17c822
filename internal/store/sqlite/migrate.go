package sqlite

import (
	"context"
	"embed"
	"fmt"
	"log/slog"
	"time"

	"github.com/flotilla/flotilla/internal/store"
)

// migrationFS holds the schema migrations. File names are NNNN_name.sql;
// the number is the schema version and is shared with the PostgreSQL
// backend, so a version means the same logical schema in both.
//
//go:embed migrations/*.sql
var migrationFS embed.FS

// loadMigrations returns the embedded migrations sorted by version.
func loadMigrations() ([]store.Migration, error) {
	return store.LoadMigrations(migrationFS, "migrations")
}

// migrate applies pending migrations in one write transaction. BEGIN
// IMMEDIATE makes a second process opening the same file wait, then see the
// versions the first one recorded, so migrations run exactly once.
func (s *Store) migrate(ctx context.Context) error {
	ms, err := loadMigrations()
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	err = s.write(ctx, func(q *queries) error {
		if _, err := q.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    INTEGER NOT NULL PRIMARY KEY,
			name       TEXT    NOT NULL,
			applied_at INTEGER NOT NULL
		) STRICT`); err != nil {
			return err
		}
		applied := map[int]bool{}
		rows, err := q.db.QueryContext(ctx, "SELECT version FROM schema_migrations")
		if err != nil {
			return err
		}
		defer rows.Close()
		maxKnown := ms[len(ms)-1].Version
		for rows.Next() {
			var v int
			if err := rows.Scan(&v); err != nil {
				return err
			}
			if v > maxKnown {
				// Running an older binary against a newer schema would
				// silently misread data.
				return fmt.Errorf("database schema version %d is newer than this binary (%d)", v, maxKnown)
			}
			applied[v] = true
		}
		if err := rows.Err(); err != nil {
			return err
		}
		for _, m := range ms {
			if applied[m.Version] {
				continue
			}
			if _, err := q.db.ExecContext(ctx, m.SQL); err != nil {
				return fmt.Errorf("%s: %w", m.Name, err)
			}
			if _, err := q.db.ExecContext(ctx,
				"INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
				m.Version, m.Name, time.Now().UnixMicro()); err != nil {
				return fmt.Errorf("%s: %w", m.Name, err)
			}
			s.log.LogAttrs(ctx, slog.LevelInfo, "applied schema migration",
				slog.Int("version", m.Version), slog.String("name", m.Name))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	return nil
}
