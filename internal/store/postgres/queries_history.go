package postgres

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/flotilla/flotilla/internal/store"
)

// Status history.

const statusCols = "id, app_id, machine_id, group_name, status, version, error_code, at"

const (
	sqlInsertStatusChange = `INSERT INTO status_history
		(app_id, machine_id, group_name, status, version, error_code, at) VALUES ($1, $2, $3, $4, $5, $6, $7)
		RETURNING id`
	sqlListStatusChanges = "SELECT " + statusCols + ` FROM status_history
		WHERE app_id = $1 AND machine_id = $2 ORDER BY id DESC LIMIT $3`
)

func scanStatusChange(r scanner) (store.StatusChange, error) {
	var c store.StatusChange
	var status string
	err := r.Scan(&c.ID, &c.AppID, &c.MachineID, &c.Group, &status, &c.Version, &c.ErrorCode, &c.At)
	c.Status, c.At = store.Status(status), fromTS(c.At)
	return c, err
}

// AddStatusChange implements store.Queries. c.ID is ignored; the new id is
// returned. ErrInvalid for an unknown status or application.
func (q *queries) AddStatusChange(ctx context.Context, c store.StatusChange) (int64, error) {
	const op = "add status change"
	if !c.Status.Valid() {
		return 0, invalid(op, "status %q", c.Status)
	}
	return q.insert(ctx, op, sqlInsertStatusChange,
		c.AppID, c.MachineID, c.Group, string(c.Status), c.Version, c.ErrorCode, ts(c.At))
}

// ListStatusChanges implements store.Queries: newest first; limit 0 means
// 100, capped at 1000.
func (q *queries) ListStatusChanges(ctx context.Context, appID, machineID string, limit int) ([]store.StatusChange, error) {
	cs, err := list(ctx, q.db, scanStatusChange, sqlListStatusChanges, appID, machineID, pageLimit(limit))
	if err != nil {
		return nil, fail("list status changes", err, nil)
	}
	return cs, nil
}

// Events.

const eventCols = "id, app_id, machine_id, group_name, type, result, error_code, version, previous_version, at"

const (
	sqlInsertEvent = `INSERT INTO events
		(app_id, machine_id, group_name, type, result, error_code, version, previous_version, at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id`
	sqlListEvents = "SELECT " + eventCols + ` FROM events
		WHERE app_id = $1 AND machine_id = $2 ORDER BY id DESC LIMIT $3`
)

func scanEvent(r scanner) (store.Event, error) {
	var e store.Event
	err := r.Scan(&e.ID, &e.AppID, &e.MachineID, &e.Group, &e.Type, &e.Result, &e.ErrorCode, &e.Version,
		&e.PreviousVersion, &e.At)
	e.At = fromTS(e.At)
	return e, err
}

// AddEvent implements store.Queries. e.ID is ignored; the new id is
// returned. ErrInvalid for an unknown application.
func (q *queries) AddEvent(ctx context.Context, e store.Event) (int64, error) {
	return q.insert(ctx, "add event", sqlInsertEvent,
		e.AppID, e.MachineID, e.Group, e.Type, e.Result, e.ErrorCode, e.Version, e.PreviousVersion, ts(e.At))
}

// ListEvents implements store.Queries: newest first; limit 0 means 100,
// capped at 1000.
func (q *queries) ListEvents(ctx context.Context, appID, machineID string, limit int) ([]store.Event, error) {
	es, err := list(ctx, q.db, scanEvent, sqlListEvents, appID, machineID, pageLimit(limit))
	if err != nil {
		return nil, fail("list events", err, nil)
	}
	return es, nil
}

// Activity.

const activityCols = "id, app_id, group_name, channel, kind, severity, version, message, machine_ids, at"

const sqlInsertActivity = `INSERT INTO activity
	(app_id, group_name, channel, kind, severity, version, message, machine_ids, at)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id`

func scanActivity(r scanner) (store.Activity, error) {
	var a store.Activity
	var kind, severity string
	err := r.Scan(&a.ID, &a.AppID, &a.Group, &a.Channel, &kind, &severity, &a.Version, &a.Message,
		&a.MachineIDs, &a.At)
	a.Kind, a.Severity, a.At = store.ActivityKind(kind), store.Severity(severity), fromTS(a.At)
	if len(a.MachineIDs) == 0 {
		a.MachineIDs = nil // as the SQLite backend returns an empty list
	}
	return a, err
}

// AddActivity implements store.Queries. a.ID is ignored; the new id is
// returned. The application is not checked: the log is an audit trail and
// may mention applications that are gone.
func (q *queries) AddActivity(ctx context.Context, a store.Activity) (int64, error) {
	ids := a.MachineIDs
	if ids == nil {
		ids = []string{} // pgx sends a nil slice as NULL
	}
	return q.insert(ctx, "add activity", sqlInsertActivity,
		a.AppID, a.Group, a.Channel, string(a.Kind), string(a.Severity), a.Version, a.Message, ids, ts(a.At))
}

// ListActivity implements store.Queries: newest (highest id) first. Since
// is inclusive.
func (q *queries) ListActivity(ctx context.Context, f store.ActivityFilter) ([]store.Activity, error) {
	var a args
	var conds []string
	if f.AppID != "" {
		conds = append(conds, "app_id = "+a.add(f.AppID))
	}
	if f.Group != "" {
		conds = append(conds, "group_name = "+a.add(f.Group))
	}
	if !f.Since.IsZero() {
		conds = append(conds, "at >= "+a.add(ts(f.Since)))
	}
	if f.BeforeID > 0 {
		conds = append(conds, "id < "+a.add(f.BeforeID))
	}
	where := ""
	if len(conds) > 0 {
		where = " WHERE " + strings.Join(conds, " AND ")
	}
	query := "SELECT " + activityCols + " FROM activity" + where + " ORDER BY id DESC LIMIT " + a.add(pageLimit(f.Limit))
	as, err := list(ctx, q.db, scanActivity, query, a...)
	if err != nil {
		return nil, fail("list activity", err, nil)
	}
	return as, nil
}

// insert runs an INSERT … RETURNING id and returns the id.
func (q *queries) insert(ctx context.Context, op, query string, args ...any) (int64, error) {
	var id int64
	if err := q.db.QueryRow(ctx, query, args...).Scan(&id); err != nil {
		return 0, fail(op, err, store.ErrInvalid)
	}
	return id, nil
}

// pruneKeys names the key columns of the history tables, by table; it
// doubles as the list of tables pruneBatch accepts.
var pruneKeys = map[string]string{
	"status_history":  "id",
	"events":          "id",
	"activity":        "id",
	"version_samples": "app_id, group_name, at, version",
}

// pruneBatch deletes up to n rows of table older than before and reports
// how many it deleted. PostgreSQL has no DELETE … LIMIT; the subquery
// walks the table's (at) index.
func (q *queries) pruneBatch(ctx context.Context, table string, before time.Time, n int) (int64, error) {
	op := "prune " + table
	key, ok := pruneKeys[table]
	if !ok {
		return 0, fmt.Errorf("%s: unknown table", op)
	}
	tag, err := q.db.Exec(ctx, fmt.Sprintf(
		"DELETE FROM %[1]s WHERE (%[2]s) IN (SELECT %[2]s FROM %[1]s WHERE at < $1 ORDER BY at LIMIT $2)", table, key),
		ts(before), n)
	if err != nil {
		return 0, fail(op, err, nil)
	}
	return tag.RowsAffected(), nil
}

// Version samples.

const (
	// A repeated sample replaces the earlier one as a whole, so a version
	// nobody runs any more does not linger at that moment.
	sqlDeleteVersionSample = "DELETE FROM version_samples WHERE at = $1"
	// Groups without instances get no rows: an empty group has nothing to
	// chart. ON CONFLICT covers two replicas sampling the same moment at
	// once: the second waits for the first's rows and overwrites them.
	sqlSampleVersions = `INSERT INTO version_samples (app_id, group_name, version, count, at)
		SELECT i.app_id, i.group_name, i.version, COUNT(*), $1
		FROM instances i JOIN app_groups g ON g.app_id = i.app_id AND g.name = i.group_name
		GROUP BY i.app_id, i.group_name, i.version
		ON CONFLICT (app_id, group_name, at, version) DO UPDATE SET count = excluded.count`
	sqlListVersionSamples = `SELECT app_id, group_name, version, count, at FROM version_samples
		WHERE app_id = $1 AND group_name = $2 AND at >= $3 ORDER BY at, version`
)

// sampleVersions implements store.Store.SampleVersions inside a write
// transaction.
func (q *queries) sampleVersions(ctx context.Context, at time.Time) (int, error) {
	const op = "sample versions"
	if _, err := q.db.Exec(ctx, sqlDeleteVersionSample, ts(at)); err != nil {
		return 0, fail(op, err, nil)
	}
	tag, err := q.db.Exec(ctx, sqlSampleVersions, ts(at))
	if err != nil {
		return 0, fail(op, err, nil)
	}
	return int(tag.RowsAffected()), nil
}

func scanVersionSample(r scanner) (store.VersionSample, error) {
	var v store.VersionSample
	err := r.Scan(&v.AppID, &v.Group, &v.Version, &v.Count, &v.At)
	v.At = fromTS(v.At)
	return v, err
}

// listVersionSamples implements store.Store.ListVersionSamples.
func (q *queries) listVersionSamples(ctx context.Context, appID, group string, since time.Time) ([]store.VersionSample, error) {
	vs, err := list(ctx, q.db, scanVersionSample, sqlListVersionSamples, appID, group, ts(since))
	if err != nil {
		return nil, fail("list version samples", err, nil)
	}
	return vs, nil
}
