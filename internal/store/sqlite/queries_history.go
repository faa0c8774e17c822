package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/flotilla/flotilla/internal/store"
)

// Status history.

const statusCols = "id, app_id, machine_id, group_name, status, version, error_code, at"

var (
	sqlInsertStatusChange = static(`INSERT INTO status_history
		(app_id, machine_id, group_name, status, version, error_code, at) VALUES (?, ?, ?, ?, ?, ?, ?)`)
	sqlListStatusChanges = static("SELECT " + statusCols + ` FROM status_history
		WHERE app_id = ? AND machine_id = ? ORDER BY id DESC LIMIT ?`)
)

func scanStatusChange(r scanner) (store.StatusChange, error) {
	var c store.StatusChange
	var at int64
	err := r.Scan(&c.ID, &c.AppID, &c.MachineID, &c.Group, &c.Status, &c.Version, &c.ErrorCode, &at)
	c.At = fromTS(at)
	return c, err
}

// AddStatusChange implements store.Queries. c.ID is ignored; the new id is
// returned. ErrInvalid for an unknown status or application.
func (q *queries) AddStatusChange(ctx context.Context, c store.StatusChange) (int64, error) {
	const op = "add status change"
	if !c.Status.Valid() {
		return 0, invalid(op, "status %q", c.Status)
	}
	res, err := q.db.ExecContext(ctx, sqlInsertStatusChange,
		c.AppID, c.MachineID, c.Group, string(c.Status), c.Version, c.ErrorCode, ts(c.At))
	return q.inserted(op, res, err)
}

// ListStatusChanges implements store.Queries: newest first; limit 0 means
// 100, capped at 1000.
func (q *queries) ListStatusChanges(ctx context.Context, appID, machineID string, limit int) ([]store.StatusChange, error) {
	cs, err := list(ctx, q.db, scanStatusChange, sqlListStatusChanges, appID, machineID, pageLimit(limit))
	if err != nil {
		return nil, q.fail("list status changes", err, nil)
	}
	return cs, nil
}

// Events.

const eventCols = "id, app_id, machine_id, group_name, type, result, error_code, version, previous_version, at"

var (
	sqlInsertEvent = static(`INSERT INTO events
		(app_id, machine_id, group_name, type, result, error_code, version, previous_version, at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`)
	sqlListEvents = static("SELECT " + eventCols + ` FROM events
		WHERE app_id = ? AND machine_id = ? ORDER BY id DESC LIMIT ?`)
)

func scanEvent(r scanner) (store.Event, error) {
	var e store.Event
	var at int64
	err := r.Scan(&e.ID, &e.AppID, &e.MachineID, &e.Group, &e.Type, &e.Result, &e.ErrorCode, &e.Version,
		&e.PreviousVersion, &at)
	e.At = fromTS(at)
	return e, err
}

// AddEvent implements store.Queries. e.ID is ignored; the new id is
// returned. ErrInvalid for an unknown application.
func (q *queries) AddEvent(ctx context.Context, e store.Event) (int64, error) {
	res, err := q.db.ExecContext(ctx, sqlInsertEvent,
		e.AppID, e.MachineID, e.Group, e.Type, e.Result, e.ErrorCode, e.Version, e.PreviousVersion, ts(e.At))
	return q.inserted("add event", res, err)
}

// ListEvents implements store.Queries: newest first; limit 0 means 100,
// capped at 1000.
func (q *queries) ListEvents(ctx context.Context, appID, machineID string, limit int) ([]store.Event, error) {
	es, err := list(ctx, q.db, scanEvent, sqlListEvents, appID, machineID, pageLimit(limit))
	if err != nil {
		return nil, q.fail("list events", err, nil)
	}
	return es, nil
}

// Activity.

const activityCols = "id, app_id, group_name, channel, kind, severity, version, message, machine_ids, at"

var sqlInsertActivity = static(`INSERT INTO activity
	(app_id, group_name, channel, kind, severity, version, message, machine_ids, at)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`)

func scanActivity(r scanner) (store.Activity, error) {
	var a store.Activity
	var ids string
	var at int64
	if err := r.Scan(&a.ID, &a.AppID, &a.Group, &a.Channel, &a.Kind, &a.Severity, &a.Version, &a.Message,
		&ids, &at); err != nil {
		return a, err
	}
	a.At = fromTS(at)
	var err error
	a.MachineIDs, err = fromJSON[string](ids)
	return a, err
}

// AddActivity implements store.Queries. a.ID is ignored; the new id is
// returned. The application is not checked: the log is an audit trail and
// may mention applications that are gone.
func (q *queries) AddActivity(ctx context.Context, a store.Activity) (int64, error) {
	const op = "add activity"
	ids, err := toJSON(a.MachineIDs)
	if err != nil {
		return 0, q.fail(op, err, nil)
	}
	res, err := q.db.ExecContext(ctx, sqlInsertActivity,
		a.AppID, a.Group, a.Channel, string(a.Kind), string(a.Severity), a.Version, a.Message, ids, ts(a.At))
	return q.inserted(op, res, err)
}

// ListActivity implements store.Queries: newest (highest id) first. Since
// is inclusive.
func (q *queries) ListActivity(ctx context.Context, f store.ActivityFilter) ([]store.Activity, error) {
	var conds []string
	var args []any
	if f.AppID != "" {
		conds, args = append(conds, "app_id = ?"), append(args, f.AppID)
	}
	if f.Group != "" {
		conds, args = append(conds, "group_name = ?"), append(args, f.Group)
	}
	if !f.Since.IsZero() {
		conds, args = append(conds, "at >= ?"), append(args, ts(f.Since))
	}
	if f.BeforeID > 0 {
		conds, args = append(conds, "id < ?"), append(args, f.BeforeID)
	}
	where := ""
	if len(conds) > 0 {
		where = " WHERE " + strings.Join(conds, " AND ")
	}
	args = append(args, pageLimit(f.Limit))
	as, err := list(ctx, q.db, scanActivity, "SELECT "+activityCols+" FROM activity"+where+" ORDER BY id DESC LIMIT ?",
		args...)
	if err != nil {
		return nil, q.fail("list activity", err, nil)
	}
	return as, nil
}

// inserted returns the id of the row an INSERT created.
func (q *queries) inserted(op string, res sql.Result, err error) (int64, error) {
	if err != nil {
		return 0, q.fail(op, err, store.ErrInvalid)
	}
	id, err := res.LastInsertId()
	if err != nil {
		return 0, q.fail(op, err, nil)
	}
	return id, nil
}

// pruneBatch deletes up to n rows of table older than before and reports
// how many it deleted. table is one of the fixed history table names.
func (q *queries) pruneBatch(ctx context.Context, table string, before time.Time, n int) (int64, error) {
	op := "prune " + table
	// The subquery walks the (at) index; SQLite's DELETE … LIMIT needs a
	// compile option the driver does not set, and PostgreSQL lacks it.
	res, err := q.db.ExecContext(ctx, fmt.Sprintf(
		"DELETE FROM %[1]s WHERE id IN (SELECT id FROM %[1]s WHERE at < ? ORDER BY at LIMIT ?)", table),
		ts(before), n)
	if err != nil {
		return 0, q.fail(op, err, nil)
	}
	d, err := res.RowsAffected()
	if err != nil {
		return 0, q.fail(op, err, nil)
	}
	return d, nil
}

// Version samples.

var (
	// Groups without instances get no rows: an empty group has nothing to
	// chart, and a row per group per sample would grow with idle groups.
	sqlSampleVersions = static(`INSERT INTO version_samples (app_id, group_name, version, count, at)
		SELECT i.app_id, i.group_name, i.version, COUNT(*), ?
		FROM instances i JOIN app_groups g ON g.app_id = i.app_id AND g.name = i.group_name
		GROUP BY i.app_id, i.group_name, i.version`)
	sqlDeleteVersionSample = static(`DELETE FROM version_samples WHERE at = ?`)
	sqlListVersionSamples  = static(`SELECT app_id, group_name, version, count, at FROM version_samples
		WHERE app_id = ? AND group_name = ? AND at >= ? ORDER BY at, version`)
)

func scanVersionSample(r scanner) (store.VersionSample, error) {
	var v store.VersionSample
	var at int64
	err := r.Scan(&v.AppID, &v.Group, &v.Version, &v.Count, &at)
	v.At = fromTS(at)
	return v, err
}

// sampleVersions implements store.Store.SampleVersions inside a write.
func (q *queries) sampleVersions(ctx context.Context, at time.Time) (int, error) {
	const op = "sample versions"
	// A repeated sample replaces the earlier one as a whole, so a version
	// nobody runs any more does not linger at this moment.
	if _, err := q.db.ExecContext(ctx, sqlDeleteVersionSample, ts(at)); err != nil {
		return 0, q.fail(op, err, nil)
	}
	res, err := q.db.ExecContext(ctx, sqlSampleVersions, ts(at))
	if err != nil {
		return 0, q.fail(op, err, nil)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, q.fail(op, err, nil)
	}
	return int(n), nil
}

// listVersionSamples implements store.Store.ListVersionSamples.
func (q *queries) listVersionSamples(ctx context.Context, appID, group string, since time.Time) ([]store.VersionSample, error) {
	vs, err := list(ctx, q.db, scanVersionSample, sqlListVersionSamples, appID, group, ts(since))
	if err != nil {
		return nil, q.fail("list version samples", err, nil)
	}
	return vs, nil
}
