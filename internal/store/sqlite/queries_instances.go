package sqlite

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"time"

	"github.com/flotilla/flotilla/internal/store"
)

const instCols = "app_id, machine_id, alias, ip, oem, oem_version, aleph_version, board, group_name, version, " +
	"status, granted_version, granted_at, last_error_code, blocked_version, last_check, status_changed, created_at"

var (
	sqlGetInstance = static("SELECT " + instCols + " FROM instances WHERE app_id = ? AND machine_id = ?")
	sqlPutInstance = static("INSERT INTO instances (" + instCols + `)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (app_id, machine_id) DO UPDATE SET
			alias = excluded.alias, ip = excluded.ip, oem = excluded.oem, oem_version = excluded.oem_version,
			aleph_version = excluded.aleph_version, board = excluded.board, group_name = excluded.group_name,
			version = excluded.version, status = excluded.status, granted_version = excluded.granted_version,
			granted_at = excluded.granted_at, last_error_code = excluded.last_error_code,
			blocked_version = excluded.blocked_version, last_check = excluded.last_check,
			status_changed = excluded.status_changed, created_at = excluded.created_at`)
	sqlDeleteInstance = static("DELETE FROM instances WHERE app_id = ? AND machine_id = ?")
	sqlTouchInstance  = static("UPDATE instances SET last_check = MAX(last_check, ?) WHERE app_id = ? AND machine_id = ?")

	// The in-progress statuses are bound as arguments (inProgressStatuses)
	// so the SQL text stays constant and can be prepared once.
	sqlGroupCounts = static(`SELECT
		(SELECT COUNT(*) FROM status_history WHERE app_id = ? AND group_name = ? AND status = ? AND at >= ?),
		(SELECT COUNT(*) FROM instances WHERE app_id = ? AND group_name = ? AND status IN (` +
		inProgressPlaceholders + `) AND granted_at > ?)`)
	sqlExpiredGrants = static("SELECT " + instCols + ` FROM instances
		WHERE app_id = ? AND group_name = ? AND status IN (` + inProgressPlaceholders + `)
		AND granted_at < ? ORDER BY granted_at, machine_id`)
	sqlRolloutStatus = static(`SELECT version, status, COUNT(*) FROM instances
		WHERE app_id = ? AND group_name = ? GROUP BY version, status`)
	sqlCountNotOnVersion = static(`SELECT COUNT(*) FROM instances
		WHERE app_id = ? AND group_name = ? AND version <> ?`)
)

func scanInstance(r scanner) (store.Instance, error) {
	var in store.Instance
	var granted, lastCheck, changed, created int64
	err := r.Scan(&in.AppID, &in.MachineID, &in.Alias, &in.IP, &in.OEM, &in.OEMVersion, &in.AlephVersion,
		&in.Board, &in.Group, &in.Version, &in.Status, &in.GrantedVersion, &granted, &in.LastErrorCode,
		&in.BlockedVersion, &lastCheck, &changed, &created)
	in.GrantedAt, in.LastCheck, in.StatusChanged, in.CreatedAt = fromTS(granted), fromTS(lastCheck), fromTS(changed), fromTS(created)
	return in, err
}

// GetInstance implements store.Queries.
func (q *queries) GetInstance(ctx context.Context, appID, machineID string) (store.Instance, error) {
	in, err := scanInstance(q.db.QueryRowContext(ctx, sqlGetInstance, appID, machineID))
	if err != nil {
		return store.Instance{}, q.fail("get instance", err, nil)
	}
	return in, nil
}

// PutInstance implements store.Queries. It is an upsert rather than
// INSERT OR REPLACE: REPLACE deletes and reinserts, which would touch every
// index and fire the cascades. ErrInvalid for an unknown status or
// application.
func (q *queries) PutInstance(ctx context.Context, in store.Instance) error {
	const op = "put instance"
	if in.MachineID == "" {
		return invalid(op, "empty machine id")
	}
	if !in.Status.Valid() {
		return invalid(op, "status %q", in.Status)
	}
	_, err := q.db.ExecContext(ctx, sqlPutInstance,
		in.AppID, in.MachineID, in.Alias, in.IP, in.OEM, in.OEMVersion, in.AlephVersion, in.Board, in.Group,
		in.Version, string(in.Status), in.GrantedVersion, ts(in.GrantedAt), in.LastErrorCode, in.BlockedVersion,
		ts(in.LastCheck), ts(in.StatusChanged), ts(in.CreatedAt))
	if err != nil {
		return q.fail(op, err, store.ErrInvalid)
	}
	return nil
}

// DeleteInstance implements store.Queries. The machine's status history
// and events stay until retention removes them: they are counted by rate
// limits and failure thresholds, and a machine that comes back keeps its
// trail.
func (q *queries) DeleteInstance(ctx context.Context, appID, machineID string) error {
	res, err := q.db.ExecContext(ctx, sqlDeleteInstance, appID, machineID)
	return q.affected("delete instance", res, err, nil)
}

// TouchInstance implements store.Queries.
func (q *queries) TouchInstance(ctx context.Context, appID, machineID string, at time.Time) error {
	res, err := q.db.ExecContext(ctx, sqlTouchInstance, ts(at), appID, machineID)
	return q.affected("touch instance", res, err, nil)
}

// instanceCursor is the keyset position after the last instance of a page.
// Pages continue strictly after it, so a page costs the same wherever it
// is and rows inserted meanwhile neither repeat nor shift later pages.
type instanceCursor struct {
	ByLastCheck bool   `json:"l,omitempty"`
	LastCheck   int64  `json:"t,omitempty"`
	MachineID   string `json:"m"`
	AppID       string `json:"a,omitempty"`
}

func (c instanceCursor) encode() string {
	b, _ := json.Marshal(c) // cannot fail: plain strings and numbers
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(s string) (instanceCursor, error) {
	var c instanceCursor
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return c, err
	}
	err = json.Unmarshal(b, &c)
	return c, err
}

// prefixEnd returns the smallest string greater than every string that
// starts with p (in SQLite's byte-wise BINARY collation), so that a prefix
// match becomes the index range [p, end). ok is false when no such string
// exists (p is all 0xff bytes) and the range is open-ended.
func prefixEnd(p string) (end string, ok bool) {
	b := []byte(p)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1]), true
		}
	}
	return "", false
}

// instanceWhere builds the WHERE clause shared by a page and its Total.
func instanceWhere(f store.InstanceFilter) (string, []any) {
	var conds []string
	var args []any
	add := func(cond string, a ...any) {
		conds = append(conds, cond)
		args = append(args, a...)
	}
	if f.AppID != "" {
		// With a prefix the app is filtered inside the prefix subquery; a
		// plain app_id term here would make the planner walk the app's
		// whole index instead of the few rows the prefix selects.
		cond := "app_id = ?"
		if f.Prefix != "" {
			cond = "+app_id = ?"
		}
		add(cond, f.AppID)
	}
	// With a prefix, these terms must not drive the plan either: the few
	// rows of the prefix ranges are found first and then filtered (a group
	// term here made the planner read the whole group: 79 ms at 100,000).
	plus := ""
	if f.Prefix != "" {
		plus = "+"
	}
	if f.Group != "" {
		add(plus+"group_name = ?", f.Group)
	}
	if f.Status != "" {
		add(plus+"status = ?", string(f.Status))
	}
	if f.Version != "" {
		add(plus+"version = ?", f.Version)
	}
	if f.Prefix != "" {
		// Range conditions, not LIKE: they use the primary key and the
		// alias index, and ignore LIKE's wildcards and case folding.
		// Written as a union of two index ranges: with a plain OR the
		// planner scanned the whole table (107 ms at 100,000 instances).
		app, appArgs := "", []any{}
		if f.AppID != "" {
			app, appArgs = "app_id = ? AND ", []any{f.AppID}
		}
		idRange, aliasRange := "machine_id >= ?", "alias >= ?"
		rangeArgs := []any{f.Prefix}
		if end, ok := prefixEnd(f.Prefix); ok {
			idRange, aliasRange = "machine_id >= ? AND machine_id < ?", "alias >= ? AND alias < ?"
			rangeArgs = append(rangeArgs, end)
		}
		a := append(append(append([]any{}, appArgs...), rangeArgs...), appArgs...)
		add("rowid IN (SELECT rowid FROM instances WHERE "+app+idRange+
			" UNION ALL SELECT rowid FROM instances WHERE "+app+aliasRange+")", append(a, rangeArgs...)...)
	}
	if !f.SeenBefore.IsZero() {
		add("last_check < ?", ts(f.SeenBefore))
	}
	if !f.SeenAfter.IsZero() {
		add("last_check >= ?", ts(f.SeenAfter))
	}
	if len(conds) == 0 {
		return "", nil
	}
	return " WHERE " + strings.Join(conds, " AND "), args
}

// ListInstances implements store.Queries with keyset pagination. Ordered by
// machine id (then application) ascending, or by last check (then machine
// id, then application) descending. When AppID is set the application is
// constant and drops out of the key, which lets the (app_id, machine_id)
// and (app_id, last_check, machine_id) indexes deliver rows in order.
// SeenAfter is inclusive and SeenBefore exclusive. An unknown application
// yields an empty page; a malformed cursor ErrInvalid.
func (q *queries) ListInstances(ctx context.Context, f store.InstanceFilter) (store.InstancePage, error) {
	const op = "list instances"
	if f.Status != "" && !f.Status.Valid() {
		return store.InstancePage{}, invalid(op, "status %q", f.Status)
	}
	limit := pageLimit(f.Limit)
	where, args := instanceWhere(f)

	var key []string // sort key columns, most significant first
	if f.SortByLastCheck {
		key = append(key, "last_check")
	}
	key = append(key, "machine_id")
	if f.AppID == "" {
		key = append(key, "app_id")
	}
	dir, cmp := "ASC", ">"
	if f.SortByLastCheck {
		dir, cmp = "DESC", "<"
	}

	pageWhere, pageArgs := where, append([]any(nil), args...)
	if f.Cursor != "" {
		c, err := decodeCursor(f.Cursor)
		if err != nil || c.ByLastCheck != f.SortByLastCheck {
			return store.InstancePage{}, invalid(op, "malformed cursor")
		}
		var vals []any
		if f.SortByLastCheck {
			vals = append(vals, c.LastCheck)
		}
		vals = append(vals, c.MachineID)
		if f.AppID == "" {
			vals = append(vals, c.AppID)
		}
		// A row value comparison is one range condition on the index.
		cond := "(" + strings.Join(key, ", ") + ") " + cmp + " (" + placeholders(len(vals)) + ")"
		if pageWhere == "" {
			pageWhere = " WHERE " + cond
		} else {
			pageWhere += " AND " + cond
		}
		pageArgs = append(pageArgs, vals...)
	}
	order := make([]string, len(key))
	for i, k := range key {
		order[i] = k + " " + dir
		if f.Prefix != "" {
			// A prefix search matches few rows: fetch them through the
			// prefix's index ranges and sort, rather than let the planner
			// walk the whole table in key order to skip the sort.
			order[i] = "+" + order[i]
		}
	}
	pageArgs = append(pageArgs, limit+1)

	var page store.InstancePage
	err := q.snapshot(ctx, func(q *queries) error {
		var err error
		page.Instances, err = list(ctx, q.db, scanInstance, "SELECT "+instCols+" FROM instances"+pageWhere+
			" ORDER BY "+strings.Join(order, ", ")+" LIMIT ?", pageArgs...)
		if err != nil {
			return q.fail(op, err, nil)
		}
		if err := q.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM instances"+where, args...).Scan(&page.Total); err != nil {
			return q.fail(op, err, nil)
		}
		return nil
	})
	if err != nil {
		return store.InstancePage{}, err
	}
	if len(page.Instances) > limit {
		page.Instances = page.Instances[:limit]
		last := page.Instances[limit-1]
		c := instanceCursor{ByLastCheck: f.SortByLastCheck, MachineID: last.MachineID}
		if f.SortByLastCheck {
			c.LastCheck = ts(last.LastCheck)
		}
		if f.AppID == "" {
			c.AppID = last.AppID
		}
		page.NextCursor = c.encode()
	}
	return page, nil
}

// GroupCounts implements store.Queries. Both counts are range scans of
// covering indexes: status_history (app_id, group_name, status, at) and
// instances (app_id, group_name, status, granted_at).
func (q *queries) GroupCounts(ctx context.Context, appID, group string, grantedSince, inProgressSince time.Time) (store.GroupCounts, error) {
	var c store.GroupCounts
	args := []any{appID, group, string(store.StatusGranted), ts(grantedSince), appID, group}
	args = append(args, inProgressStatuses...)
	args = append(args, ts(inProgressSince))
	err := q.db.QueryRowContext(ctx, sqlGroupCounts, args...).Scan(&c.GrantedInPeriod, &c.InProgress)
	if err != nil {
		return store.GroupCounts{}, q.fail("group counts", err, nil)
	}
	return c, nil
}

// failureWhere selects failure rows of one version since a time; failures
// are rare, so the (app_id, group_name, status, at) range is short.
const failureWhere = ` FROM status_history WHERE app_id = ? AND group_name = ? AND status IN (?, ?)
	AND version = ? AND at >= ?`

var (
	sqlCountFailures  = static("SELECT COUNT(DISTINCT machine_id)" + failureWhere)
	sqlFailedMachines = static("SELECT DISTINCT machine_id" + failureWhere + " ORDER BY machine_id LIMIT ?")
)

func failureArgs(appID, group, version string, since time.Time) []any {
	args := []any{appID, group}
	args = append(args, failedStatuses...)
	return append(args, version, ts(since))
}

// CountFailures implements store.Queries.
func (q *queries) CountFailures(ctx context.Context, appID, group, version string, since time.Time) (int, error) {
	var n int
	if err := q.db.QueryRowContext(ctx, sqlCountFailures, failureArgs(appID, group, version, since)...).Scan(&n); err != nil {
		return 0, q.fail("count failures", err, nil)
	}
	return n, nil
}

// FailedMachines implements store.Queries: machine ids in ascending order;
// limit 0 means 100, capped at 1000.
func (q *queries) FailedMachines(ctx context.Context, appID, group, version string, since time.Time, limit int) ([]string, error) {
	args := append(failureArgs(appID, group, version, since), pageLimit(limit))
	ids, err := list(ctx, q.db, func(r scanner) (string, error) {
		var id string
		err := r.Scan(&id)
		return id, err
	}, sqlFailedMachines, args...)
	if err != nil {
		return nil, q.fail("failed machines", err, nil)
	}
	return ids, nil
}

// ExpiredGrants implements store.Queries: oldest grant first.
func (q *queries) ExpiredGrants(ctx context.Context, appID, group string, grantedBefore time.Time) ([]store.Instance, error) {
	args := []any{appID, group}
	args = append(args, inProgressStatuses...)
	args = append(args, ts(grantedBefore))
	ins, err := list(ctx, q.db, scanInstance, sqlExpiredGrants, args...)
	if err != nil {
		return nil, q.fail("expired grants", err, nil)
	}
	return ins, nil
}

// RolloutStatus implements store.Queries with one index-only pass over
// (app_id, group_name, version, status). An unknown group has no instances:
// Total 0 and empty (non-nil) maps.
func (q *queries) RolloutStatus(ctx context.Context, appID, group string) (store.RolloutStatus, error) {
	rs := store.RolloutStatus{ByVersion: map[string]int{}, ByStatus: map[store.Status]int{}}
	rows, err := q.db.QueryContext(ctx, sqlRolloutStatus, appID, group)
	if err != nil {
		return store.RolloutStatus{}, q.fail("rollout status", err, nil)
	}
	defer rows.Close()
	for rows.Next() {
		var version string
		var status store.Status
		var n int
		if err := rows.Scan(&version, &status, &n); err != nil {
			return store.RolloutStatus{}, q.fail("rollout status", err, nil)
		}
		rs.Total += n
		rs.ByVersion[version] += n
		rs.ByStatus[status] += n
	}
	if err := rows.Err(); err != nil {
		return store.RolloutStatus{}, q.fail("rollout status", err, nil)
	}
	return rs, nil
}

// CountNotOnVersion implements store.Queries.
func (q *queries) CountNotOnVersion(ctx context.Context, appID, group, version string) (int, error) {
	var n int
	err := q.db.QueryRowContext(ctx, sqlCountNotOnVersion, appID, group, version).Scan(&n)
	if err != nil {
		return 0, q.fail("count not on version", err, nil)
	}
	return n, nil
}
