package postgres

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/flotilla/flotilla/internal/store"
)

// Group configs and machine config reports.

const groupConfigCols = "app_id, group_name, version, format, sha256, octet_length(document), author, comment, created_at"

const (
	sqlGroupExists = "SELECT 1 FROM app_groups WHERE app_id = $1 AND name = $2"
	// Locking the group row serializes writers of the group's next
	// version across processes (READ COMMITTED alone would let two compute
	// the same number, and one fail on the primary key).
	sqlLockGroupRow      = sqlGroupExists + " FOR UPDATE"
	sqlLatestGroupConfig = `SELECT version, sha256 FROM group_configs
		WHERE app_id = $1 AND group_name = $2 ORDER BY version DESC LIMIT 1`
	sqlInsertGroupConfig = `INSERT INTO group_configs
		(app_id, group_name, version, document, format, sha256, author, comment, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`
	// Version 0 asks for the latest.
	sqlGetGroupConfig = "SELECT " + groupConfigCols + `, document FROM group_configs
		WHERE app_id = $1 AND group_name = $2 AND ($3 = 0 OR version = $3) ORDER BY version DESC LIMIT 1`
	sqlListGroupConfigs = "SELECT " + groupConfigCols + ` FROM group_configs
		WHERE app_id = $1 AND group_name = $2 ORDER BY version DESC`
	sqlPutConfigReport = `INSERT INTO config_reports
		(app_id, machine_id, group_name, version, applied_at, drift, error, reported_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
		ON CONFLICT (app_id, machine_id) DO UPDATE SET group_name = excluded.group_name,
			version = excluded.version, applied_at = excluded.applied_at, drift = excluded.drift,
			error = excluded.error, reported_at = excluded.reported_at`
	sqlListConfigReports = `SELECT app_id, machine_id, group_name, version, applied_at, drift, error, reported_at
		FROM config_reports WHERE app_id = $1 AND group_name = $2 ORDER BY machine_id`
)

// docSHA256 is the digest stored with each version; agents and the API use
// it as the document's ETag.
func docSHA256(doc string) string {
	sum := sha256.Sum256([]byte(doc))
	return hex.EncodeToString(sum[:])
}

func scanGroupConfig(r scanner, withDoc bool) (store.GroupConfig, error) {
	var c store.GroupConfig
	var version, size int32
	dest := []any{&c.AppID, &c.Group, &version, &c.Format, &c.SHA256, &size, &c.Author, &c.Comment, &c.CreatedAt}
	if withDoc {
		dest = append(dest, &c.Document)
	}
	err := r.Scan(dest...)
	c.Version, c.Size, c.CreatedAt = int(version), int(size), fromTS(c.CreatedAt)
	return c, err
}

// putGroupConfig implements store.Store.PutGroupConfig inside a write
// transaction.
func (q *queries) putGroupConfig(ctx context.Context, c store.GroupConfig) (int, error) {
	const op = "put group config"
	if c.Document == "" {
		return 0, invalid(op, "empty document")
	}
	ok, err := q.exists(ctx, sqlLockGroupRow, c.AppID, c.Group)
	if err != nil {
		return 0, fail(op, err, nil)
	}
	if !ok {
		return 0, fmt.Errorf("%s: group %q: %w", op, c.Group, store.ErrNotFound)
	}
	sum := docSHA256(c.Document)
	var latest int32
	var latestSum string
	err = q.db.QueryRow(ctx, sqlLatestGroupConfig, c.AppID, c.Group).Scan(&latest, &latestSum)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return 0, fail(op, err, nil)
	}
	// Re-submitting the current document must not bump the version:
	// agents would re-apply (and report) for nothing.
	if latest > 0 && latestSum == sum {
		return int(latest), nil
	}
	if c.CreatedAt.IsZero() {
		c.CreatedAt = time.Now()
	}
	next := int(latest) + 1
	_, err = q.db.Exec(ctx, sqlInsertGroupConfig, c.AppID, c.Group, next, c.Document,
		c.Format, sum, c.Author, c.Comment, ts(c.CreatedAt))
	if err != nil {
		return 0, fail(op, err, store.ErrNotFound)
	}
	return next, nil
}

// getGroupConfig implements store.Store.GetGroupConfig.
func (q *queries) getGroupConfig(ctx context.Context, appID, group string, version int) (store.GroupConfig, error) {
	c, err := scanGroupConfig(q.db.QueryRow(ctx, sqlGetGroupConfig, appID, group, version), true)
	if err != nil {
		return store.GroupConfig{}, fail(fmt.Sprintf("get config of group %q version %d", group, version), err, nil)
	}
	return c, nil
}

// listGroupConfigs implements store.Store.ListGroupConfigs.
func (q *queries) listGroupConfigs(ctx context.Context, appID, group string) ([]store.GroupConfig, error) {
	const op = "list group configs"
	var out []store.GroupConfig
	err := q.snapshot(ctx, func(q *queries) error {
		ok, err := q.exists(ctx, sqlGroupExists, appID, group)
		if err != nil {
			return fail(op, err, nil)
		}
		if !ok {
			return fmt.Errorf("%s: group %q: %w", op, group, store.ErrNotFound)
		}
		out, err = list(ctx, q.db, func(r scanner) (store.GroupConfig, error) { return scanGroupConfig(r, false) },
			sqlListGroupConfigs, appID, group)
		if err != nil {
			return fail(op, err, nil)
		}
		return nil
	})
	return out, err
}

// putConfigReport implements store.Store.PutConfigReport.
func (q *queries) putConfigReport(ctx context.Context, r store.ConfigReport) error {
	const op = "put config report"
	if r.MachineID == "" {
		return invalid(op, "empty machine id")
	}
	if r.Version < 0 {
		return invalid(op, "version %d", r.Version)
	}
	drift, err := toJSON(r.Drift)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	_, err = q.db.Exec(ctx, sqlPutConfigReport, r.AppID, r.MachineID, r.Group, r.Version,
		ts(r.AppliedAt), drift, r.Error, ts(r.ReportedAt))
	if err != nil {
		return fail(op, err, store.ErrNotFound)
	}
	return nil
}

func scanConfigReport(r scanner) (store.ConfigReport, error) {
	var c store.ConfigReport
	var version int32
	var drift []byte
	if err := r.Scan(&c.AppID, &c.MachineID, &c.Group, &version, &c.AppliedAt, &drift, &c.Error, &c.ReportedAt); err != nil {
		return c, err
	}
	c.Version, c.AppliedAt, c.ReportedAt = int(version), fromTS(c.AppliedAt), fromTS(c.ReportedAt)
	var err error
	c.Drift, err = fromJSON[string](drift)
	return c, err
}

// listConfigReports implements store.Store.ListConfigReports.
func (q *queries) listConfigReports(ctx context.Context, appID, group string) ([]store.ConfigReport, error) {
	rs, err := list(ctx, q.db, scanConfigReport, sqlListConfigReports, appID, group)
	if err != nil {
		return nil, fail("list config reports", err, nil)
	}
	return rs, nil
}

// PutGroupConfig implements store.Store.
func (s *Store) PutGroupConfig(ctx context.Context, c store.GroupConfig) (int, error) {
	var v int
	err := s.write(ctx, false, func(q *queries) error {
		var err error
		v, err = q.putGroupConfig(ctx, c)
		return err
	})
	return v, err
}

// GetGroupConfig implements store.Store.
func (s *Store) GetGroupConfig(ctx context.Context, appID, group string, version int) (store.GroupConfig, error) {
	return s.r.getGroupConfig(ctx, appID, group, version)
}

// ListGroupConfigs implements store.Store.
func (s *Store) ListGroupConfigs(ctx context.Context, appID, group string) ([]store.GroupConfig, error) {
	return s.r.listGroupConfigs(ctx, appID, group)
}

// PutConfigReport implements store.Store.
func (s *Store) PutConfigReport(ctx context.Context, r store.ConfigReport) error {
	return s.write(ctx, false, func(q *queries) error { return q.putConfigReport(ctx, r) })
}

// ListConfigReports implements store.Store.
func (s *Store) ListConfigReports(ctx context.Context, appID, group string) ([]store.ConfigReport, error) {
	return s.r.listConfigReports(ctx, appID, group)
}
