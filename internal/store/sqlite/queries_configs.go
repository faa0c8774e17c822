package sqlite

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/flotilla/flotilla/internal/store"
)

// Group configs and machine config reports.

const groupConfigCols = "app_id, group_name, version, format, sha256, length(CAST(document AS BLOB)), author, comment, created_at"

var (
	sqlGroupExists       = static("SELECT 1 FROM app_groups WHERE app_id = ? AND name = ?")
	sqlLatestGroupConfig = static(`SELECT version, sha256 FROM group_configs
		WHERE app_id = ? AND group_name = ? ORDER BY version DESC LIMIT 1`)
	sqlInsertGroupConfig = static(`INSERT INTO group_configs
		(app_id, group_name, version, document, format, sha256, author, comment, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`)
	// Version 0 asks for the latest: the ORDER BY … LIMIT 1 picks it, and
	// for a given version the WHERE leaves at most one row anyway.
	sqlGetGroupConfig = static("SELECT " + groupConfigCols + `, document FROM group_configs
		WHERE app_id = ? AND group_name = ? AND (? = 0 OR version = ?) ORDER BY version DESC LIMIT 1`)
	sqlListGroupConfigs = static("SELECT " + groupConfigCols + ` FROM group_configs
		WHERE app_id = ? AND group_name = ? ORDER BY version DESC`)
	sqlPutConfigReport = static(`INSERT INTO config_reports
		(app_id, machine_id, group_name, version, applied_at, drift, error, reported_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (app_id, machine_id) DO UPDATE SET group_name = excluded.group_name,
			version = excluded.version, applied_at = excluded.applied_at, drift = excluded.drift,
			error = excluded.error, reported_at = excluded.reported_at`)
	sqlListConfigReports = static(`SELECT app_id, machine_id, group_name, version, applied_at, drift, error, reported_at
		FROM config_reports WHERE app_id = ? AND group_name = ? ORDER BY machine_id`)
)

// docSHA256 is the digest stored with each version; agents and the API use
// it as the document's ETag.
func docSHA256(doc string) string {
	sum := sha256.Sum256([]byte(doc))
	return hex.EncodeToString(sum[:])
}

// groupExists backs the ErrNotFound of per-group operations.
func (q *queries) groupExists(ctx context.Context, op, appID, group string) error {
	ok, err := q.exists(ctx, sqlGroupExists, appID, group)
	if err != nil {
		return q.fail(op, err, nil)
	}
	if !ok {
		return fmt.Errorf("%s: group %q: %w", op, group, store.ErrNotFound)
	}
	return nil
}

func scanGroupConfig(r scanner, withDoc bool) (store.GroupConfig, error) {
	var c store.GroupConfig
	var created int64
	dest := []any{&c.AppID, &c.Group, &c.Version, &c.Format, &c.SHA256, &c.Size, &c.Author, &c.Comment, &created}
	if withDoc {
		dest = append(dest, &c.Document)
	}
	err := r.Scan(dest...)
	c.CreatedAt = fromTS(created)
	return c, err
}

// putGroupConfig implements store.Store.PutGroupConfig inside a write
// transaction, which SQLite's single writer serializes, so reading the
// latest version and inserting the next cannot race another writer.
func (q *queries) putGroupConfig(ctx context.Context, c store.GroupConfig) (int, error) {
	const op = "put group config"
	if c.Document == "" {
		return 0, invalid(op, "empty document")
	}
	if err := q.groupExists(ctx, op, c.AppID, c.Group); err != nil {
		return 0, err
	}
	sum := docSHA256(c.Document)
	var latest int
	var latestSum string
	err := q.db.QueryRowContext(ctx, sqlLatestGroupConfig, c.AppID, c.Group).Scan(&latest, &latestSum)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return 0, q.fail(op, err, nil)
	}
	// Re-submitting the current document must not bump the version:
	// agents would re-apply (and report) for nothing.
	if latest > 0 && latestSum == sum {
		return latest, nil
	}
	if c.CreatedAt.IsZero() {
		c.CreatedAt = time.Now()
	}
	_, err = q.db.ExecContext(ctx, sqlInsertGroupConfig, c.AppID, c.Group, latest+1, c.Document,
		c.Format, sum, c.Author, c.Comment, ts(c.CreatedAt))
	if err != nil {
		return 0, q.fail(op, err, store.ErrNotFound)
	}
	return latest + 1, nil
}

// getGroupConfig implements store.Store.GetGroupConfig.
func (q *queries) getGroupConfig(ctx context.Context, appID, group string, version int) (store.GroupConfig, error) {
	c, err := scanGroupConfig(q.db.QueryRowContext(ctx, sqlGetGroupConfig, appID, group, version, version), true)
	if err != nil {
		return store.GroupConfig{}, q.fail(fmt.Sprintf("get config of group %q version %d", group, version), err, nil)
	}
	return c, nil
}

// listGroupConfigs implements store.Store.ListGroupConfigs.
func (q *queries) listGroupConfigs(ctx context.Context, appID, group string) ([]store.GroupConfig, error) {
	const op = "list group configs"
	var out []store.GroupConfig
	err := q.snapshot(ctx, func(q *queries) error {
		if err := q.groupExists(ctx, op, appID, group); err != nil {
			return err
		}
		var err error
		out, err = list(ctx, q.db, func(r scanner) (store.GroupConfig, error) { return scanGroupConfig(r, false) },
			sqlListGroupConfigs, appID, group)
		if err != nil {
			return q.fail(op, err, nil)
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
	_, err = q.db.ExecContext(ctx, sqlPutConfigReport, r.AppID, r.MachineID, r.Group, r.Version,
		ts(r.AppliedAt), drift, r.Error, ts(r.ReportedAt))
	if err != nil {
		return q.fail(op, err, store.ErrNotFound)
	}
	return nil
}

func scanConfigReport(r scanner) (store.ConfigReport, error) {
	var c store.ConfigReport
	var applied, reported int64
	var drift string
	if err := r.Scan(&c.AppID, &c.MachineID, &c.Group, &c.Version, &applied, &drift, &c.Error, &reported); err != nil {
		return c, err
	}
	c.AppliedAt, c.ReportedAt = fromTS(applied), fromTS(reported)
	var err error
	c.Drift, err = fromJSON[string](drift)
	return c, err
}

// listConfigReports implements store.Store.ListConfigReports.
func (q *queries) listConfigReports(ctx context.Context, appID, group string) ([]store.ConfigReport, error) {
	rs, err := list(ctx, q.db, scanConfigReport, sqlListConfigReports, appID, group)
	if err != nil {
		return nil, q.fail("list config reports", err, nil)
	}
	return rs, nil
}

// PutGroupConfig implements store.Store.
func (s *Store) PutGroupConfig(ctx context.Context, c store.GroupConfig) (int, error) {
	var v int
	err := s.write(ctx, func(q *queries) error {
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
	return s.write(ctx, func(q *queries) error { return q.putConfigReport(ctx, r) })
}

// ListConfigReports implements store.Store.
func (s *Store) ListConfigReports(ctx context.Context, appID, group string) ([]store.ConfigReport, error) {
	return s.r.listConfigReports(ctx, appID, group)
}
