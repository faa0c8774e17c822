package sqlite

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/flotilla/flotilla/internal/store"
)

// Applications.

const appCols = "id, name, description, created_at"

var (
	sqlInsertApp = static("INSERT INTO apps (" + appCols + ") VALUES (?, ?, ?, ?)")
	sqlGetApp    = static("SELECT " + appCols + " FROM apps WHERE id = ?")
	sqlListApps  = static("SELECT " + appCols + " FROM apps ORDER BY name, id")
	sqlUpdateApp = static("UPDATE apps SET name = ?, description = ?, created_at = ? WHERE id = ?")
	sqlDeleteApp = static("DELETE FROM apps WHERE id = ?")
	sqlAppExists = static("SELECT 1 FROM apps WHERE id = ?")
)

func scanApp(r scanner) (store.Application, error) {
	var a store.Application
	var created int64
	err := r.Scan(&a.ID, &a.Name, &a.Description, &created)
	a.CreatedAt = fromTS(created)
	return a, err
}

// CreateApp implements store.Queries.
func (q *queries) CreateApp(ctx context.Context, a store.Application) error {
	const op = "create app"
	if a.ID == "" {
		return invalid(op, "empty id")
	}
	_, err := q.db.ExecContext(ctx, sqlInsertApp,
		a.ID, a.Name, a.Description, ts(a.CreatedAt))
	if err != nil {
		return q.fail(op, err, nil)
	}
	return nil
}

// GetApp implements store.Queries.
func (q *queries) GetApp(ctx context.Context, id string) (store.Application, error) {
	a, err := scanApp(q.db.QueryRowContext(ctx, sqlGetApp, id))
	if err != nil {
		return store.Application{}, q.fail("get app", err, nil)
	}
	return a, nil
}

// ListApps implements store.Queries; applications are ordered by name.
func (q *queries) ListApps(ctx context.Context) ([]store.Application, error) {
	as, err := list(ctx, q.db, scanApp, sqlListApps)
	if err != nil {
		return nil, q.fail("list apps", err, nil)
	}
	return as, nil
}

// UpdateApp implements store.Queries.
func (q *queries) UpdateApp(ctx context.Context, a store.Application) error {
	res, err := q.db.ExecContext(ctx, sqlUpdateApp,
		a.Name, a.Description, ts(a.CreatedAt), a.ID)
	return q.affected("update app", res, err, nil)
}

// DeleteApp implements store.Queries. Instances, their status history and
// events are deleted with the application (ON DELETE CASCADE); packages,
// channels and groups hold plain foreign keys, so the delete fails with
// ErrConflict while any exist.
func (q *queries) DeleteApp(ctx context.Context, id string) error {
	res, err := q.db.ExecContext(ctx, sqlDeleteApp, id)
	return q.affected("delete app", res, err, store.ErrConflict)
}

// Release packages.

const pkgCols = "app_id, version, arch, base_url, file_name, size, sha1, sha256, extra_files, release_notes, created_at"

var (
	sqlInsertPackage = static("INSERT INTO packages (" + pkgCols + ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
	sqlGetPackage    = static("SELECT " + pkgCols + " FROM packages WHERE app_id = ? AND version = ? AND arch = ?")
	sqlListPackages  = static("SELECT " + pkgCols + " FROM packages WHERE app_id = ? " +
		"ORDER BY created_at DESC, version DESC, arch")
	sqlPackageExists = static("SELECT 1 FROM packages WHERE app_id = ? AND version = ? AND arch = ?")
	sqlVersionExists = static("SELECT 1 FROM packages WHERE app_id = ? AND version = ? LIMIT 1")
	// A channel uses (app, version, arch) if it points at the version and
	// no package of another arch has that version.
	sqlPackageInUse = static(`SELECT 1 FROM channels c
		WHERE c.app_id = ? AND c.package_version = ? AND NOT EXISTS (
			SELECT 1 FROM packages p WHERE p.app_id = c.app_id AND p.version = c.package_version AND p.arch <> ?)`)
	sqlDeletePackage = static("DELETE FROM packages WHERE app_id = ? AND version = ? AND arch = ?")
)

func scanPackage(r scanner) (store.Package, error) {
	var p store.Package
	var extra string
	var created int64
	if err := r.Scan(&p.AppID, &p.Version, &p.Arch, &p.BaseURL, &p.FileName, &p.Size, &p.SHA1, &p.SHA256,
		&extra, &p.ReleaseNotes, &created); err != nil {
		return p, err
	}
	p.CreatedAt = fromTS(created)
	var err error
	p.ExtraFiles, err = fromJSON[store.PackageFile](extra)
	return p, err
}

// CreatePackage implements store.Queries.
func (q *queries) CreatePackage(ctx context.Context, p store.Package) error {
	const op = "create package"
	if p.Version == "" || p.Arch == "" {
		return invalid(op, "empty version or arch")
	}
	extra, err := toJSON(p.ExtraFiles)
	if err != nil {
		return q.fail(op, err, nil)
	}
	_, err = q.db.ExecContext(ctx, sqlInsertPackage,
		p.AppID, p.Version, p.Arch, p.BaseURL, p.FileName, p.Size, p.SHA1, p.SHA256, extra, p.ReleaseNotes, ts(p.CreatedAt))
	if err != nil {
		return q.fail(op, err, store.ErrInvalid)
	}
	return nil
}

// GetPackage implements store.Queries.
func (q *queries) GetPackage(ctx context.Context, appID, version, arch string) (store.Package, error) {
	p, err := scanPackage(q.db.QueryRowContext(ctx, sqlGetPackage, appID, version, arch))
	if err != nil {
		return store.Package{}, q.fail("get package", err, nil)
	}
	return p, nil
}

// ListPackages implements store.Queries: newest (by CreatedAt) first;
// ErrNotFound if the application does not exist.
func (q *queries) ListPackages(ctx context.Context, appID string) ([]store.Package, error) {
	const op = "list packages"
	var ps []store.Package
	err := q.snapshot(ctx, func(q *queries) error {
		if err := q.appExists(ctx, op, appID); err != nil {
			return err
		}
		var err error
		ps, err = list(ctx, q.db, scanPackage, sqlListPackages, appID)
		if err != nil {
			return q.fail(op, err, nil)
		}
		return nil
	})
	return ps, err
}

// DeletePackage implements store.Queries.
func (q *queries) DeletePackage(ctx context.Context, appID, version, arch string) error {
	const op = "delete package"
	found, err := q.exists(ctx, sqlPackageExists, appID, version, arch)
	if err != nil {
		return q.fail(op, err, nil)
	}
	if !found {
		return fmt.Errorf("%s: %w", op, store.ErrNotFound)
	}
	// A channel pointing at the version keeps the last package of that
	// version alive: removing it would leave the channel offering nothing.
	used, err := q.exists(ctx, sqlPackageInUse, appID, version, arch)
	if err != nil {
		return q.fail(op, err, nil)
	}
	if used {
		return fmt.Errorf("%s: a channel points at version %q and no other architecture has it: %w",
			op, version, store.ErrConflict)
	}
	_, err = q.db.ExecContext(ctx, sqlDeletePackage, appID, version, arch)
	if err != nil {
		return q.fail(op, err, store.ErrConflict)
	}
	return nil
}

// Channels.

const chanCols = "app_id, name, package_version, updated_at, created_at"

var (
	sqlInsertChannel     = static("INSERT INTO channels (" + chanCols + ") VALUES (?, ?, ?, ?, ?)")
	sqlGetChannel        = static("SELECT " + chanCols + " FROM channels WHERE app_id = ? AND name = ?")
	sqlListChannels      = static("SELECT " + chanCols + " FROM channels WHERE app_id = ? ORDER BY name")
	sqlSetChannelPackage = static("UPDATE channels SET package_version = ?, updated_at = ? WHERE app_id = ? AND name = ?")
	sqlDeleteChannel     = static("DELETE FROM channels WHERE app_id = ? AND name = ?")
)

func scanChannel(r scanner) (store.Channel, error) {
	var c store.Channel
	var updated, created int64
	err := r.Scan(&c.AppID, &c.Name, &c.PackageVersion, &updated, &created)
	c.UpdatedAt, c.CreatedAt = fromTS(updated), fromTS(created)
	return c, err
}

// packageVersionExists backs the ErrInvalid of channels pointing at a
// version without packages.
func (q *queries) packageVersionExists(ctx context.Context, op, appID, version string) error {
	if version == "" {
		return nil
	}
	ok, err := q.exists(ctx, sqlVersionExists, appID, version)
	if err != nil {
		return q.fail(op, err, nil)
	}
	if !ok {
		return invalid(op, "no package of version %q", version)
	}
	return nil
}

// CreateChannel implements store.Queries. ErrConflict if the name is taken;
// ErrInvalid if the application or a non-empty PackageVersion does not exist.
func (q *queries) CreateChannel(ctx context.Context, c store.Channel) error {
	const op = "create channel"
	if c.Name == "" {
		return invalid(op, "empty name")
	}
	if err := q.packageVersionExists(ctx, op, c.AppID, c.PackageVersion); err != nil {
		return err
	}
	_, err := q.db.ExecContext(ctx, sqlInsertChannel,
		c.AppID, c.Name, c.PackageVersion, ts(c.UpdatedAt), ts(c.CreatedAt))
	if err != nil {
		return q.fail(op, err, store.ErrInvalid)
	}
	return nil
}

// GetChannel implements store.Queries.
func (q *queries) GetChannel(ctx context.Context, appID, name string) (store.Channel, error) {
	c, err := scanChannel(q.db.QueryRowContext(ctx, sqlGetChannel, appID, name))
	if err != nil {
		return store.Channel{}, q.fail("get channel", err, nil)
	}
	return c, nil
}

// ListChannels implements store.Queries: ordered by name; ErrNotFound if
// the application does not exist.
func (q *queries) ListChannels(ctx context.Context, appID string) ([]store.Channel, error) {
	const op = "list channels"
	var cs []store.Channel
	err := q.snapshot(ctx, func(q *queries) error {
		if err := q.appExists(ctx, op, appID); err != nil {
			return err
		}
		var err error
		cs, err = list(ctx, q.db, scanChannel, sqlListChannels, appID)
		if err != nil {
			return q.fail(op, err, nil)
		}
		return nil
	})
	return cs, err
}

// SetChannelPackage implements store.Queries. version "" clears the
// channel.
func (q *queries) SetChannelPackage(ctx context.Context, appID, name, version string, at time.Time) error {
	const op = "set channel package"
	if err := q.packageVersionExists(ctx, op, appID, version); err != nil {
		return err
	}
	res, err := q.db.ExecContext(ctx, sqlSetChannelPackage, version, ts(at), appID, name)
	return q.affected(op, res, err, nil)
}

// DeleteChannel implements store.Queries.
func (q *queries) DeleteChannel(ctx context.Context, appID, name string) error {
	res, err := q.db.ExecContext(ctx, sqlDeleteChannel, appID, name)
	return q.affected("delete channel", res, err, store.ErrConflict)
}

// Groups.

const groupCols = "app_id, name, description, track, channel, policy, rollout_version, rollout_started_at, " +
	"paused_reason, created_at, updated_at"

var (
	// Insert and update share groupArgs' argument order.
	sqlInsertGroup = static(`INSERT INTO app_groups (description, track, channel, policy, rollout_version,
		rollout_started_at, paused_reason, created_at, updated_at, app_id, name)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
	sqlUpdateGroup = static(`UPDATE app_groups SET description = ?, track = ?, channel = ?, policy = ?,
		rollout_version = ?, rollout_started_at = ?, paused_reason = ?, created_at = ?, updated_at = ?
		WHERE app_id = ? AND name = ?`)
	sqlGetGroup        = static("SELECT " + groupCols + " FROM app_groups WHERE app_id = ? AND name = ?")
	sqlGetGroupByTrack = static("SELECT " + groupCols + " FROM app_groups WHERE app_id = ? AND track = ?")
	sqlListGroups      = static("SELECT " + groupCols + " FROM app_groups WHERE app_id = ? ORDER BY name")
	sqlDeleteGroup     = static("DELETE FROM app_groups WHERE app_id = ? AND name = ?")
)

func scanGroup(r scanner) (store.Group, error) {
	var g store.Group
	var policy string
	var started, created, updated int64
	if err := r.Scan(&g.AppID, &g.Name, &g.Description, &g.Track, &g.Channel, &policy, &g.RolloutVersion,
		&started, &g.PausedReason, &created, &updated); err != nil {
		return g, err
	}
	g.RolloutStartedAt, g.CreatedAt, g.UpdatedAt = fromTS(started), fromTS(created), fromTS(updated)
	// The policy column is store.Policy's own JSON form (its struct tags
	// are the storage format; durations are integer nanoseconds).
	err := json.Unmarshal([]byte(policy), &g.Policy)
	return g, err
}

func groupArgs(g store.Group) ([]any, error) {
	policy, err := json.Marshal(g.Policy)
	if err != nil {
		return nil, err
	}
	return []any{g.Description, g.Track, g.Channel, string(policy), g.RolloutVersion, ts(g.RolloutStartedAt),
		g.PausedReason, ts(g.CreatedAt), ts(g.UpdatedAt), g.AppID, g.Name}, nil
}

// CreateGroup implements store.Queries.
func (q *queries) CreateGroup(ctx context.Context, g store.Group) error {
	const op = "create group"
	if g.Name == "" {
		return invalid(op, "empty name")
	}
	args, err := groupArgs(g)
	if err != nil {
		return q.fail(op, err, nil)
	}
	_, err = q.db.ExecContext(ctx, sqlInsertGroup, args...)
	if err != nil {
		// The composite foreign key (app_id, channel) covers both a missing
		// application and a missing channel.
		return q.fail(op, err, store.ErrInvalid)
	}
	return nil
}

// GetGroup implements store.Queries.
func (q *queries) GetGroup(ctx context.Context, appID, name string) (store.Group, error) {
	g, err := scanGroup(q.db.QueryRowContext(ctx, sqlGetGroup, appID, name))
	if err != nil {
		return store.Group{}, q.fail("get group", err, nil)
	}
	return g, nil
}

// LockGroup implements store.TxQueries. In SQLite it is GetGroup: every
// write transaction starts with BEGIN IMMEDIATE and so holds the database's
// single write lock from its first statement to its end, across processes.
// No other transaction can change the group, or anything a rollout decision
// counts, until this one finishes — a stronger guarantee than PostgreSQL's
// row lock, at the price of serializing all writers.
func (q *queries) LockGroup(ctx context.Context, appID, name string) (store.Group, error) {
	g, err := q.GetGroup(ctx, appID, name)
	if err != nil {
		return store.Group{}, err
	}
	return g, nil
}

// GetGroupByTrack implements store.Queries.
func (q *queries) GetGroupByTrack(ctx context.Context, appID, track string) (store.Group, error) {
	g, err := scanGroup(q.db.QueryRowContext(ctx, sqlGetGroupByTrack, appID, track))
	if err != nil {
		return store.Group{}, q.fail("get group by track", err, nil)
	}
	return g, nil
}

// ListGroups implements store.Queries: ordered by name; ErrNotFound if the
// application does not exist.
func (q *queries) ListGroups(ctx context.Context, appID string) ([]store.Group, error) {
	const op = "list groups"
	var gs []store.Group
	err := q.snapshot(ctx, func(q *queries) error {
		if err := q.appExists(ctx, op, appID); err != nil {
			return err
		}
		var err error
		gs, err = list(ctx, q.db, scanGroup, sqlListGroups, appID)
		if err != nil {
			return q.fail(op, err, nil)
		}
		return nil
	})
	return gs, err
}

// UpdateGroup implements store.Queries.
func (q *queries) UpdateGroup(ctx context.Context, g store.Group) error {
	const op = "update group"
	args, err := groupArgs(g)
	if err != nil {
		return q.fail(op, err, nil)
	}
	res, err := q.db.ExecContext(ctx, sqlUpdateGroup, args...)
	return q.affected(op, res, err, store.ErrInvalid)
}

// DeleteGroup implements store.Queries. The group's instances keep their
// group name until they next check in.
func (q *queries) DeleteGroup(ctx context.Context, appID, name string) error {
	res, err := q.db.ExecContext(ctx, sqlDeleteGroup, appID, name)
	return q.affected("delete group", res, err, nil)
}

// Tokens.

const tokenCols = "id, name, role, hash, created_at"

var (
	sqlInsertToken = static("INSERT INTO tokens (" + tokenCols + ") VALUES (?, ?, ?, ?, ?)")
	sqlGetToken    = static("SELECT " + tokenCols + " FROM tokens WHERE hash = ?")
	sqlListTokens  = static("SELECT " + tokenCols + " FROM tokens ORDER BY created_at, id")
	sqlDeleteToken = static("DELETE FROM tokens WHERE id = ?")
)

func scanToken(r scanner) (store.Token, error) {
	var t store.Token
	var created int64
	err := r.Scan(&t.ID, &t.Name, &t.Role, &t.Hash, &created)
	t.CreatedAt = fromTS(created)
	return t, err
}

// CreateToken implements store.Queries; ErrConflict if the id or the hash
// exists.
func (q *queries) CreateToken(ctx context.Context, t store.Token) error {
	const op = "create token"
	if t.ID == "" || t.Hash == "" {
		return invalid(op, "empty id or hash")
	}
	_, err := q.db.ExecContext(ctx, sqlInsertToken,
		t.ID, t.Name, t.Role, t.Hash, ts(t.CreatedAt))
	if err != nil {
		return q.fail(op, err, nil)
	}
	return nil
}

// GetTokenByHash implements store.Queries.
func (q *queries) GetTokenByHash(ctx context.Context, hash string) (store.Token, error) {
	t, err := scanToken(q.db.QueryRowContext(ctx, sqlGetToken, hash))
	if err != nil {
		return store.Token{}, q.fail("get token", err, nil)
	}
	return t, nil
}

// ListTokens implements store.Queries: oldest first.
func (q *queries) ListTokens(ctx context.Context) ([]store.Token, error) {
	toks, err := list(ctx, q.db, scanToken, sqlListTokens)
	if err != nil {
		return nil, q.fail("list tokens", err, nil)
	}
	return toks, nil
}

// DeleteToken implements store.Queries.
func (q *queries) DeleteToken(ctx context.Context, id string) error {
	res, err := q.db.ExecContext(ctx, sqlDeleteToken, id)
	return q.affected("delete token", res, err, nil)
}
