package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/flotilla/flotilla/internal/store"
)

// Catalog writes run through q.atomic, which gives them a savepoint inside
// Store.Update: callers may ignore their failures and go on.

// Applications.

const appCols = "id, name, description, created_at"

const (
	sqlInsertApp = "INSERT INTO apps (" + appCols + ") VALUES ($1, $2, $3, $4)"
	sqlGetApp    = "SELECT " + appCols + " FROM apps WHERE id = $1"
	sqlListApps  = "SELECT " + appCols + " FROM apps ORDER BY name, id"
	sqlUpdateApp = "UPDATE apps SET name = $1, description = $2, created_at = $3 WHERE id = $4"
	sqlDeleteApp = "DELETE FROM apps WHERE id = $1"
	sqlAppExists = "SELECT 1 FROM apps WHERE id = $1"
)

func scanApp(r scanner) (store.Application, error) {
	var a store.Application
	err := r.Scan(&a.ID, &a.Name, &a.Description, &a.CreatedAt)
	a.CreatedAt = fromTS(a.CreatedAt)
	return a, err
}

// CreateApp implements store.Queries.
func (q *queries) CreateApp(ctx context.Context, a store.Application) error {
	const op = "create app"
	if a.ID == "" {
		return invalid(op, "empty id")
	}
	return q.atomic(ctx, func(q *queries) error {
		_, err := q.db.Exec(ctx, sqlInsertApp, a.ID, a.Name, a.Description, ts(a.CreatedAt))
		if err != nil {
			return fail(op, err, nil)
		}
		return nil
	})
}

// GetApp implements store.Queries.
func (q *queries) GetApp(ctx context.Context, id string) (store.Application, error) {
	a, err := scanApp(q.db.QueryRow(ctx, sqlGetApp, id))
	if err != nil {
		return store.Application{}, fail("get app", err, nil)
	}
	return a, nil
}

// ListApps implements store.Queries; applications are ordered by name.
func (q *queries) ListApps(ctx context.Context) ([]store.Application, error) {
	as, err := list(ctx, q.db, scanApp, sqlListApps)
	if err != nil {
		return nil, fail("list apps", err, nil)
	}
	return as, nil
}

// UpdateApp implements store.Queries.
func (q *queries) UpdateApp(ctx context.Context, a store.Application) error {
	return q.atomic(ctx, func(q *queries) error {
		tag, err := q.db.Exec(ctx, sqlUpdateApp, a.Name, a.Description, ts(a.CreatedAt), a.ID)
		return affected("update app", tag, err, nil)
	})
}

// DeleteApp implements store.Queries. Instances, their status history,
// events and version samples are deleted with the application (ON DELETE
// CASCADE); packages, channels and groups hold plain foreign keys, so the
// delete fails with ErrConflict while any exist.
func (q *queries) DeleteApp(ctx context.Context, id string) error {
	return q.atomic(ctx, func(q *queries) error {
		tag, err := q.db.Exec(ctx, sqlDeleteApp, id)
		return affected("delete app", tag, err, store.ErrConflict)
	})
}

// Release packages.

const pkgCols = "app_id, version, arch, base_url, file_name, size, sha1, sha256, extra_files, release_notes, created_at"

const (
	sqlInsertPackage = "INSERT INTO packages (" + pkgCols + ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
	sqlGetPackage    = "SELECT " + pkgCols + " FROM packages WHERE app_id = $1 AND version = $2 AND arch = $3"
	sqlListPackages  = "SELECT " + pkgCols + " FROM packages WHERE app_id = $1 " +
		"ORDER BY created_at DESC, version DESC, arch"
	// The packages of one version, locked: DeletePackage holds them while
	// it checks whether a channel still needs the version, and the version
	// check of a channel write waits for that (FOR KEY SHARE conflicts with
	// FOR UPDATE), so the two cannot interleave.
	sqlLockVersion   = "SELECT arch FROM packages WHERE app_id = $1 AND version = $2 ORDER BY arch FOR UPDATE"
	sqlVersionExists = "SELECT 1 FROM packages WHERE app_id = $1 AND version = $2 LIMIT 1"
	sqlVersionShare  = sqlVersionExists + " FOR KEY SHARE"
	sqlVersionInUse  = "SELECT 1 FROM channels WHERE app_id = $1 AND package_version = $2 LIMIT 1"
	sqlDeletePackage = "DELETE FROM packages WHERE app_id = $1 AND version = $2 AND arch = $3"
)

func scanPackage(r scanner) (store.Package, error) {
	var p store.Package
	var extra []byte
	if err := r.Scan(&p.AppID, &p.Version, &p.Arch, &p.BaseURL, &p.FileName, &p.Size, &p.SHA1, &p.SHA256,
		&extra, &p.ReleaseNotes, &p.CreatedAt); err != nil {
		return p, err
	}
	p.CreatedAt = fromTS(p.CreatedAt)
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
		return fail(op, err, nil)
	}
	return q.atomic(ctx, func(q *queries) error {
		_, err := q.db.Exec(ctx, sqlInsertPackage, p.AppID, p.Version, p.Arch, p.BaseURL, p.FileName, p.Size,
			p.SHA1, p.SHA256, extra, p.ReleaseNotes, ts(p.CreatedAt))
		if err != nil {
			return fail(op, err, store.ErrInvalid)
		}
		return nil
	})
}

// GetPackage implements store.Queries.
func (q *queries) GetPackage(ctx context.Context, appID, version, arch string) (store.Package, error) {
	p, err := scanPackage(q.db.QueryRow(ctx, sqlGetPackage, appID, version, arch))
	if err != nil {
		return store.Package{}, fail("get package", err, nil)
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
			return fail(op, err, nil)
		}
		return nil
	})
	return ps, err
}

// DeletePackage implements store.Queries. A channel pointing at the version
// keeps the last package of that version alive: removing it would leave
// the channel offering nothing.
func (q *queries) DeletePackage(ctx context.Context, appID, version, arch string) error {
	const op = "delete package"
	return q.atomic(ctx, func(q *queries) error {
		rows, err := q.db.Query(ctx, sqlLockVersion, appID, version)
		if err != nil {
			return fail(op, err, nil)
		}
		archs, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return fail(op, err, nil)
		}
		if !slices.Contains(archs, arch) {
			return fmt.Errorf("%s: %w", op, store.ErrNotFound)
		}
		if len(archs) == 1 {
			used, err := q.exists(ctx, sqlVersionInUse, appID, version)
			if err != nil {
				return fail(op, err, nil)
			}
			if used {
				return fmt.Errorf("%s: a channel points at version %q and no other architecture has it: %w",
					op, version, store.ErrConflict)
			}
		}
		if _, err := q.db.Exec(ctx, sqlDeletePackage, appID, version, arch); err != nil {
			return fail(op, err, store.ErrConflict)
		}
		return nil
	})
}

// Channels.

const chanCols = "app_id, name, package_version, updated_at, created_at"

const (
	sqlInsertChannel     = "INSERT INTO channels (" + chanCols + ") VALUES ($1, $2, $3, $4, $5)"
	sqlGetChannel        = "SELECT " + chanCols + " FROM channels WHERE app_id = $1 AND name = $2"
	sqlListChannels      = "SELECT " + chanCols + " FROM channels WHERE app_id = $1 ORDER BY name"
	sqlSetChannelPackage = "UPDATE channels SET package_version = $1, updated_at = $2 WHERE app_id = $3 AND name = $4"
	sqlDeleteChannel     = "DELETE FROM channels WHERE app_id = $1 AND name = $2"
)

func scanChannel(r scanner) (store.Channel, error) {
	var c store.Channel
	err := r.Scan(&c.AppID, &c.Name, &c.PackageVersion, &c.UpdatedAt, &c.CreatedAt)
	c.UpdatedAt, c.CreatedAt = fromTS(c.UpdatedAt), fromTS(c.CreatedAt)
	return c, err
}

// packageVersionExists backs the ErrInvalid of channels pointing at a
// version without packages. In a read-write transaction it keeps one
// package of the version from being deleted until the transaction ends.
func (q *queries) packageVersionExists(ctx context.Context, op, appID, version string) error {
	if version == "" {
		return nil
	}
	query := sqlVersionExists
	if q.rw {
		query = sqlVersionShare
	}
	ok, err := q.exists(ctx, query, appID, version)
	if err != nil {
		return fail(op, err, nil)
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
	return q.atomic(ctx, func(q *queries) error {
		if err := q.packageVersionExists(ctx, op, c.AppID, c.PackageVersion); err != nil {
			return err
		}
		_, err := q.db.Exec(ctx, sqlInsertChannel, c.AppID, c.Name, c.PackageVersion, ts(c.UpdatedAt), ts(c.CreatedAt))
		if err != nil {
			return fail(op, err, store.ErrInvalid)
		}
		return nil
	})
}

// GetChannel implements store.Queries.
func (q *queries) GetChannel(ctx context.Context, appID, name string) (store.Channel, error) {
	c, err := scanChannel(q.db.QueryRow(ctx, sqlGetChannel, appID, name))
	if err != nil {
		return store.Channel{}, fail("get channel", err, nil)
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
			return fail(op, err, nil)
		}
		return nil
	})
	return cs, err
}

// SetChannelPackage implements store.Queries. version "" clears the
// channel.
func (q *queries) SetChannelPackage(ctx context.Context, appID, name, version string, at time.Time) error {
	const op = "set channel package"
	return q.atomic(ctx, func(q *queries) error {
		if err := q.packageVersionExists(ctx, op, appID, version); err != nil {
			return err
		}
		tag, err := q.db.Exec(ctx, sqlSetChannelPackage, version, ts(at), appID, name)
		return affected(op, tag, err, nil)
	})
}

// DeleteChannel implements store.Queries.
func (q *queries) DeleteChannel(ctx context.Context, appID, name string) error {
	return q.atomic(ctx, func(q *queries) error {
		tag, err := q.db.Exec(ctx, sqlDeleteChannel, appID, name)
		return affected("delete channel", tag, err, store.ErrConflict)
	})
}

// Groups.

const groupCols = "app_id, name, description, track, channel, policy, rollout_version, rollout_started_at, " +
	"paused_reason, created_at, updated_at"

const (
	// Insert and update share groupArgs' argument order.
	sqlInsertGroup = `INSERT INTO app_groups (description, track, channel, policy, rollout_version,
		rollout_started_at, paused_reason, created_at, updated_at, app_id, name)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`
	sqlUpdateGroup = `UPDATE app_groups SET description = $1, track = $2, channel = $3, policy = $4,
		rollout_version = $5, rollout_started_at = $6, paused_reason = $7, created_at = $8, updated_at = $9
		WHERE app_id = $10 AND name = $11`
	sqlGetGroup        = "SELECT " + groupCols + " FROM app_groups WHERE app_id = $1 AND name = $2"
	sqlLockGroup       = sqlGetGroup + " FOR UPDATE"
	sqlGetGroupByTrack = "SELECT " + groupCols + " FROM app_groups WHERE app_id = $1 AND track = $2"
	sqlListGroups      = "SELECT " + groupCols + " FROM app_groups WHERE app_id = $1 ORDER BY name"
	sqlDeleteGroup     = "DELETE FROM app_groups WHERE app_id = $1 AND name = $2"
)

func scanGroup(r scanner) (store.Group, error) {
	var g store.Group
	var policy []byte
	if err := r.Scan(&g.AppID, &g.Name, &g.Description, &g.Track, &g.Channel, &policy, &g.RolloutVersion,
		&g.RolloutStartedAt, &g.PausedReason, &g.CreatedAt, &g.UpdatedAt); err != nil {
		return g, err
	}
	g.RolloutStartedAt, g.CreatedAt, g.UpdatedAt = fromTS(g.RolloutStartedAt), fromTS(g.CreatedAt), fromTS(g.UpdatedAt)
	// The policy column is store.Policy's own JSON form (its struct tags
	// are the storage format; durations are integer nanoseconds, which
	// jsonb keeps exactly as numerics).
	err := json.Unmarshal(policy, &g.Policy)
	return g, err
}

func groupArgs(g store.Group) ([]any, error) {
	policy, err := json.Marshal(g.Policy)
	if err != nil {
		return nil, err
	}
	return []any{g.Description, g.Track, g.Channel, policy, g.RolloutVersion, ts(g.RolloutStartedAt),
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
		return fail(op, err, nil)
	}
	return q.atomic(ctx, func(q *queries) error {
		if _, err := q.db.Exec(ctx, sqlInsertGroup, args...); err != nil {
			// The composite foreign key (app_id, channel) covers both a
			// missing application and a missing channel.
			return fail(op, err, store.ErrInvalid)
		}
		return nil
	})
}

// GetGroup implements store.Queries.
func (q *queries) GetGroup(ctx context.Context, appID, name string) (store.Group, error) {
	g, err := scanGroup(q.db.QueryRow(ctx, sqlGetGroup, appID, name))
	if err != nil {
		return store.Group{}, fail("get group", err, nil)
	}
	return g, nil
}

// LockGroup implements store.TxQueries with SELECT … FOR UPDATE: a second
// transaction locking the same group, in this process or another, waits
// here until the first commits or rolls back, and then (READ COMMITTED)
// reads the group and everything else as the first left it.
func (q *queries) LockGroup(ctx context.Context, appID, name string) (store.Group, error) {
	g, err := scanGroup(q.db.QueryRow(ctx, sqlLockGroup, appID, name))
	if err != nil {
		return store.Group{}, fail("lock group", err, nil)
	}
	return g, nil
}

// GetGroupByTrack implements store.Queries.
func (q *queries) GetGroupByTrack(ctx context.Context, appID, track string) (store.Group, error) {
	g, err := scanGroup(q.db.QueryRow(ctx, sqlGetGroupByTrack, appID, track))
	if err != nil {
		return store.Group{}, fail("get group by track", err, nil)
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
			return fail(op, err, nil)
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
		return fail(op, err, nil)
	}
	return q.atomic(ctx, func(q *queries) error {
		tag, err := q.db.Exec(ctx, sqlUpdateGroup, args...)
		return affected(op, tag, err, store.ErrInvalid)
	})
}

// DeleteGroup implements store.Queries. The group's instances keep their
// group name until they next check in.
func (q *queries) DeleteGroup(ctx context.Context, appID, name string) error {
	return q.atomic(ctx, func(q *queries) error {
		tag, err := q.db.Exec(ctx, sqlDeleteGroup, appID, name)
		return affected("delete group", tag, err, nil)
	})
}

// Tokens.

const tokenCols = "id, name, role, hash, created_at"

const (
	sqlInsertToken = "INSERT INTO tokens (" + tokenCols + ") VALUES ($1, $2, $3, $4, $5)"
	sqlGetToken    = "SELECT " + tokenCols + " FROM tokens WHERE hash = $1"
	sqlListTokens  = "SELECT " + tokenCols + " FROM tokens ORDER BY created_at, id"
	sqlDeleteToken = "DELETE FROM tokens WHERE id = $1"
)

func scanToken(r scanner) (store.Token, error) {
	var t store.Token
	err := r.Scan(&t.ID, &t.Name, &t.Role, &t.Hash, &t.CreatedAt)
	t.CreatedAt = fromTS(t.CreatedAt)
	return t, err
}

// CreateToken implements store.Queries; ErrConflict if the id or the hash
// exists.
func (q *queries) CreateToken(ctx context.Context, t store.Token) error {
	const op = "create token"
	if t.ID == "" || t.Hash == "" {
		return invalid(op, "empty id or hash")
	}
	return q.atomic(ctx, func(q *queries) error {
		if _, err := q.db.Exec(ctx, sqlInsertToken, t.ID, t.Name, t.Role, t.Hash, ts(t.CreatedAt)); err != nil {
			return fail(op, err, nil)
		}
		return nil
	})
}

// GetTokenByHash implements store.Queries.
func (q *queries) GetTokenByHash(ctx context.Context, hash string) (store.Token, error) {
	t, err := scanToken(q.db.QueryRow(ctx, sqlGetToken, hash))
	if err != nil {
		return store.Token{}, fail("get token", err, nil)
	}
	return t, nil
}

// ListTokens implements store.Queries: oldest first.
func (q *queries) ListTokens(ctx context.Context) ([]store.Token, error) {
	toks, err := list(ctx, q.db, scanToken, sqlListTokens)
	if err != nil {
		return nil, fail("list tokens", err, nil)
	}
	return toks, nil
}

// DeleteToken implements store.Queries.
func (q *queries) DeleteToken(ctx context.Context, id string) error {
	return q.atomic(ctx, func(q *queries) error {
		tag, err := q.db.Exec(ctx, sqlDeleteToken, id)
		return affected("delete token", tag, err, nil)
	})
}
