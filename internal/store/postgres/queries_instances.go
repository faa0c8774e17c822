package postgres

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/flotilla/flotilla/internal/store"
)

const instCols = "app_id, machine_id, alias, ip, oem, oem_version, aleph_version, board, group_name, version, " +
	"status, granted_version, granted_at, last_error_code, blocked_version, last_check, status_changed, created_at"

const (
	sqlGetInstance = "SELECT " + instCols + " FROM instances WHERE app_id = $1 AND machine_id = $2"
	sqlPutInstance = "INSERT INTO instances (" + instCols + `)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
		ON CONFLICT (app_id, machine_id) DO UPDATE SET
			alias = excluded.alias, ip = excluded.ip, oem = excluded.oem, oem_version = excluded.oem_version,
			aleph_version = excluded.aleph_version, board = excluded.board, group_name = excluded.group_name,
			version = excluded.version, status = excluded.status, granted_version = excluded.granted_version,
			granted_at = excluded.granted_at, last_error_code = excluded.last_error_code,
			blocked_version = excluded.blocked_version, last_check = excluded.last_check,
			status_changed = excluded.status_changed, created_at = excluded.created_at`
	sqlDeleteInstance = "DELETE FROM instances WHERE app_id = $1 AND machine_id = $2"
	// GREATEST in the UPDATE itself, not read-then-write: a concurrent
	// writer's row lock makes this wait and then re-evaluate on the newest
	// row, so a touch can never lower LastCheck or undo a status change.
	sqlTouchInstance = "UPDATE instances SET last_check = GREATEST(last_check, $1) WHERE app_id = $2 AND machine_id = $3"

	// The status sets are bound as text[] arguments so the SQL text stays
	// constant and pgx can keep it prepared.
	sqlGroupCounts = `SELECT
		(SELECT COUNT(*) FROM status_history WHERE app_id = $1 AND group_name = $2 AND status = $3 AND at >= $4),
		(SELECT COUNT(*) FROM instances WHERE app_id = $1 AND group_name = $2 AND status = ANY($5) AND granted_at > $6)`
	sqlExpiredGrants = "SELECT " + instCols + ` FROM instances
		WHERE app_id = $1 AND group_name = $2 AND status = ANY($3) AND granted_at < $4
		ORDER BY granted_at, machine_id`
	sqlRolloutStatus = `SELECT version, status, COUNT(*) FROM instances
		WHERE app_id = $1 AND group_name = $2 GROUP BY version, status`
	sqlCountNotOnVersion = `SELECT COUNT(*) FROM instances
		WHERE app_id = $1 AND group_name = $2 AND version <> $3`
)

func scanInstance(r scanner) (store.Instance, error) {
	var in store.Instance
	var status string
	err := r.Scan(&in.AppID, &in.MachineID, &in.Alias, &in.IP, &in.OEM, &in.OEMVersion, &in.AlephVersion,
		&in.Board, &in.Group, &in.Version, &status, &in.GrantedVersion, &in.GrantedAt, &in.LastErrorCode,
		&in.BlockedVersion, &in.LastCheck, &in.StatusChanged, &in.CreatedAt)
	in.Status = store.Status(status)
	in.GrantedAt, in.LastCheck = fromTS(in.GrantedAt), fromTS(in.LastCheck)
	in.StatusChanged, in.CreatedAt = fromTS(in.StatusChanged), fromTS(in.CreatedAt)
	return in, err
}

// GetInstance implements store.Queries. Inside Store.Update it locks the
// row until the transaction ends: callers read an instance to decide how
// to rewrite it, and the decision must not be based on a state another
// replica is replacing at the same moment.
func (q *queries) GetInstance(ctx context.Context, appID, machineID string) (store.Instance, error) {
	in, err := scanInstance(q.db.QueryRow(ctx, sqlGetInstance+q.forUpdate(), appID, machineID))
	if err != nil {
		return store.Instance{}, fail("get instance", err, nil)
	}
	return in, nil
}

// PutInstance implements store.Queries as an upsert. ErrInvalid for an
// unknown status or application.
func (q *queries) PutInstance(ctx context.Context, in store.Instance) error {
	const op = "put instance"
	if in.MachineID == "" {
		return invalid(op, "empty machine id")
	}
	if !in.Status.Valid() {
		return invalid(op, "status %q", in.Status)
	}
	_, err := q.db.Exec(ctx, sqlPutInstance,
		in.AppID, in.MachineID, in.Alias, in.IP, in.OEM, in.OEMVersion, in.AlephVersion, in.Board, in.Group,
		in.Version, string(in.Status), in.GrantedVersion, ts(in.GrantedAt), in.LastErrorCode, in.BlockedVersion,
		ts(in.LastCheck), ts(in.StatusChanged), ts(in.CreatedAt))
	if err != nil {
		return fail(op, err, store.ErrInvalid)
	}
	return nil
}

// DeleteInstance implements store.Queries. The machine's status history
// and events stay until retention removes them: they are counted by rate
// limits and failure thresholds, and a machine that comes back keeps its
// trail.
func (q *queries) DeleteInstance(ctx context.Context, appID, machineID string) error {
	tag, err := q.db.Exec(ctx, sqlDeleteInstance, appID, machineID)
	return affected("delete instance", tag, err, nil)
}

// TouchInstance implements store.Queries.
func (q *queries) TouchInstance(ctx context.Context, appID, machineID string, at time.Time) error {
	tag, err := q.db.Exec(ctx, sqlTouchInstance, ts(at), appID, machineID)
	return affected("touch instance", tag, err, nil)
}

// instanceCursor is the keyset position after the last instance of a page.
// Pages continue strictly after it, so a page costs the same wherever it
// is and rows inserted meanwhile neither repeat nor shift later pages.
type instanceCursor struct {
	ByLastCheck bool   `json:"l,omitempty"`
	LastCheck   int64  `json:"t,omitempty"` // microseconds since the Unix epoch
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
// starts with p in byte order (COLLATE "C"), so that a prefix match
// becomes the index range [p, end). It increments the last code point
// rather than the last byte because PostgreSQL rejects text that is not
// valid UTF-8; for valid UTF-8, code point order is byte order. ok is
// false when no such string exists and the range is open-ended.
func prefixEnd(p string) (end string, ok bool) {
	rs := []rune(p)
	for i := len(rs) - 1; i >= 0; i-- {
		r := rs[i] + 1
		if r >= 0xd800 && r <= 0xdfff { // surrogates are not valid in UTF-8
			r = 0xe000
		}
		if r <= unicode.MaxRune {
			rs[i] = r
			return string(rs[:i+1]), true
		}
	}
	return "", false
}

// args numbers query arguments as they are added.
type args []any

// add appends v and returns its placeholder.
func (a *args) add(v any) string {
	*a = append(*a, v)
	return "$" + strconv.Itoa(len(*a))
}

// instanceWhere builds the WHERE clause shared by a page and its Total,
// appending its arguments to a.
func instanceWhere(f store.InstanceFilter, a *args) string {
	var conds []string
	if f.AppID != "" {
		conds = append(conds, "app_id = "+a.add(f.AppID))
	}
	if f.Group != "" {
		conds = append(conds, "group_name = "+a.add(f.Group))
	}
	if f.Status != "" {
		conds = append(conds, "status = "+a.add(string(f.Status)))
	}
	if f.Version != "" {
		conds = append(conds, "version = "+a.add(f.Version))
	}
	if f.Prefix != "" {
		// Range conditions, not LIKE: they use the primary key and the
		// alias index even in a generic plan of the prepared statement,
		// and ignore LIKE's wildcards. PostgreSQL combines the two ranges
		// with a BitmapOr, so no UNION is needed as in SQLite.
		lo := a.add(f.Prefix)
		if end, ok := prefixEnd(f.Prefix); ok {
			hi := a.add(end)
			conds = append(conds, "(machine_id >= "+lo+" AND machine_id < "+hi+
				" OR alias >= "+lo+" AND alias < "+hi+")")
		} else {
			conds = append(conds, "(machine_id >= "+lo+" OR alias >= "+lo+")")
		}
	}
	if !f.SeenBefore.IsZero() {
		conds = append(conds, "last_check < "+a.add(ts(f.SeenBefore)))
	}
	if !f.SeenAfter.IsZero() {
		conds = append(conds, "last_check >= "+a.add(ts(f.SeenAfter)))
	}
	if len(conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(conds, " AND ")
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
	var c instanceCursor
	if f.Cursor != "" {
		var err error
		c, err = decodeCursor(f.Cursor)
		if err != nil || c.ByLastCheck != f.SortByLastCheck {
			return store.InstancePage{}, invalid(op, "malformed cursor")
		}
	}
	if strings.ContainsRune(f.Prefix, 0) || !utf8.ValidString(f.Prefix) {
		// PostgreSQL text cannot hold such a string, so no stored id or
		// alias starts with it; sending it would fail the query.
		return store.InstancePage{}, nil
	}
	limit := pageLimit(f.Limit)
	var a args
	where := instanceWhere(f, &a)
	nWhere := len(a)

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

	pageWhere := where
	if f.Cursor != "" {
		var vals []string
		if f.SortByLastCheck {
			vals = append(vals, a.add(time.UnixMicro(c.LastCheck)))
		}
		vals = append(vals, a.add(c.MachineID))
		if f.AppID == "" {
			vals = append(vals, a.add(c.AppID))
		}
		// A row comparison is one range condition on the index.
		cond := "(" + strings.Join(key, ", ") + ") " + cmp + " (" + strings.Join(vals, ", ") + ")"
		if pageWhere == "" {
			pageWhere = " WHERE " + cond
		} else {
			pageWhere += " AND " + cond
		}
	}
	order := make([]string, len(key))
	for i, k := range key {
		order[i] = k + " " + dir
	}
	pageSQL := "SELECT " + instCols + " FROM instances" + pageWhere +
		" ORDER BY " + strings.Join(order, ", ") + " LIMIT " + a.add(limit+1)

	var page store.InstancePage
	err := q.snapshot(ctx, func(q *queries) error {
		var err error
		page.Instances, err = list(ctx, q.db, scanInstance, pageSQL, a...)
		if err != nil {
			return fail(op, err, nil)
		}
		if err := q.db.QueryRow(ctx, "SELECT COUNT(*) FROM instances"+where, a[:nWhere]...).Scan(&page.Total); err != nil {
			return fail(op, err, nil)
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
			c.LastCheck = last.LastCheck.UnixMicro()
		}
		if f.AppID == "" {
			c.AppID = last.AppID
		}
		page.NextCursor = c.encode()
	}
	return page, nil
}

// GroupCounts implements store.Queries. Both counts are range scans of the
// indexes status_history (app_id, group_name, status, at) and instances
// (app_id, group_name, status, granted_at).
func (q *queries) GroupCounts(ctx context.Context, appID, group string, grantedSince, inProgressSince time.Time) (store.GroupCounts, error) {
	var c store.GroupCounts
	err := q.db.QueryRow(ctx, sqlGroupCounts, appID, group, string(store.StatusGranted), ts(grantedSince),
		inProgressStatuses, ts(inProgressSince)).Scan(&c.GrantedInPeriod, &c.InProgress)
	if err != nil {
		return store.GroupCounts{}, fail("group counts", err, nil)
	}
	return c, nil
}

// failureWhere selects failure rows of one version since a time; failures
// are rare, so the (app_id, group_name, status, at) range is short.
const failureWhere = ` FROM status_history WHERE app_id = $1 AND group_name = $2 AND status = ANY($3)
	AND version = $4 AND at >= $5`

const (
	sqlCountFailures  = "SELECT COUNT(DISTINCT machine_id)" + failureWhere
	sqlFailedMachines = "SELECT DISTINCT machine_id" + failureWhere + " ORDER BY machine_id LIMIT $6"
)

// CountFailures implements store.Queries.
func (q *queries) CountFailures(ctx context.Context, appID, group, version string, since time.Time) (int, error) {
	var n int
	err := q.db.QueryRow(ctx, sqlCountFailures, appID, group, failedStatuses, version, ts(since)).Scan(&n)
	if err != nil {
		return 0, fail("count failures", err, nil)
	}
	return n, nil
}

// FailedMachines implements store.Queries: machine ids in ascending order;
// limit 0 means 100, capped at 1000.
func (q *queries) FailedMachines(ctx context.Context, appID, group, version string, since time.Time, limit int) ([]string, error) {
	ids, err := list(ctx, q.db, func(r scanner) (string, error) {
		var id string
		err := r.Scan(&id)
		return id, err
	}, sqlFailedMachines, appID, group, failedStatuses, version, ts(since), pageLimit(limit))
	if err != nil {
		return nil, fail("failed machines", err, nil)
	}
	return ids, nil
}

// ExpiredGrants implements store.Queries: oldest grant first. Inside
// Store.Update the rows are locked, as GetInstance's are, because the
// caller rewrites them; a row another transaction changed meanwhile is
// re-checked against the condition after the lock wait.
func (q *queries) ExpiredGrants(ctx context.Context, appID, group string, grantedBefore time.Time) ([]store.Instance, error) {
	ins, err := list(ctx, q.db, scanInstance, sqlExpiredGrants+q.forUpdate(),
		appID, group, inProgressStatuses, ts(grantedBefore))
	if err != nil {
		return nil, fail("expired grants", err, nil)
	}
	return ins, nil
}

// RolloutStatus implements store.Queries with one pass over the index
// (app_id, group_name, version, status). An unknown group has no
// instances: Total 0 and empty (non-nil) maps.
func (q *queries) RolloutStatus(ctx context.Context, appID, group string) (store.RolloutStatus, error) {
	const op = "rollout status"
	rs := store.RolloutStatus{ByVersion: map[string]int{}, ByStatus: map[store.Status]int{}}
	rows, err := q.db.Query(ctx, sqlRolloutStatus, appID, group)
	if err != nil {
		return store.RolloutStatus{}, fail(op, err, nil)
	}
	defer rows.Close()
	for rows.Next() {
		var version, status string
		var n int
		if err := rows.Scan(&version, &status, &n); err != nil {
			return store.RolloutStatus{}, fail(op, err, nil)
		}
		rs.Total += n
		rs.ByVersion[version] += n
		rs.ByStatus[store.Status(status)] += n
	}
	if err := rows.Err(); err != nil {
		return store.RolloutStatus{}, fail(op, err, nil)
	}
	return rs, nil
}

// CountNotOnVersion implements store.Queries.
func (q *queries) CountNotOnVersion(ctx context.Context, appID, group, version string) (int, error) {
	var n int
	if err := q.db.QueryRow(ctx, sqlCountNotOnVersion, appID, group, version).Scan(&n); err != nil {
		return 0, fail("count not on version", err, nil)
	}
	return n, nil
}
