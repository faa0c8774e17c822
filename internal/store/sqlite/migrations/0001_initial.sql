-- 0001: initial schema.
--
-- Times are INTEGER microseconds since the Unix epoch, UTC. The zero Go time
-- is stored as its own (very negative) microsecond value rather than NULL so
-- that every time column is NOT NULL, orders like Go's time.Before and can
-- be used in keyset pagination without NULL special cases.
--
-- Instances, their status history and events belong to an application and
-- go away with it (ON DELETE CASCADE); packages, channels and groups must be
-- deleted first (the plain foreign keys make DeleteApp fail with a conflict).
-- Instances name their group but do not reference it: deleting a group
-- leaves its machines in place until they next check in.

CREATE TABLE apps (
    id          TEXT    NOT NULL PRIMARY KEY,
    name        TEXT    NOT NULL,
    description TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE packages (
    app_id        TEXT    NOT NULL REFERENCES apps (id),
    version       TEXT    NOT NULL,
    arch          TEXT    NOT NULL,
    base_url      TEXT    NOT NULL,
    file_name     TEXT    NOT NULL,
    size          INTEGER NOT NULL,
    sha1          TEXT    NOT NULL,
    sha256        TEXT    NOT NULL,
    extra_files   TEXT    NOT NULL, -- JSON array of store.PackageFile
    release_notes TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (app_id, version, arch)
) STRICT;

CREATE TABLE channels (
    app_id          TEXT    NOT NULL REFERENCES apps (id),
    name            TEXT    NOT NULL,
    package_version TEXT    NOT NULL, -- '' = no package yet
    updated_at      INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (app_id, name)
) STRICT;

-- "groups" is a keyword in SQLite and PostgreSQL window syntax, hence the
-- prefix.
CREATE TABLE app_groups (
    app_id             TEXT    NOT NULL REFERENCES apps (id),
    name               TEXT    NOT NULL,
    description        TEXT    NOT NULL,
    track              TEXT    NOT NULL,
    channel            TEXT    NOT NULL,
    policy             TEXT    NOT NULL, -- JSON store.Policy, durations in nanoseconds
    rollout_version    TEXT    NOT NULL,
    rollout_started_at INTEGER NOT NULL,
    paused_reason      TEXT    NOT NULL,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    PRIMARY KEY (app_id, name),
    UNIQUE (app_id, track),
    FOREIGN KEY (app_id, channel) REFERENCES channels (app_id, name)
) STRICT;

-- Lets DeleteChannel check for following groups without a scan.
CREATE INDEX app_groups_channel ON app_groups (app_id, channel);

-- The hot table: one row per machine and application, read and rewritten on
-- every update check.
CREATE TABLE instances (
    app_id          TEXT    NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    machine_id      TEXT    NOT NULL,
    alias           TEXT    NOT NULL,
    ip              TEXT    NOT NULL,
    oem             TEXT    NOT NULL,
    oem_version     TEXT    NOT NULL,
    aleph_version   TEXT    NOT NULL,
    board           TEXT    NOT NULL,
    group_name      TEXT    NOT NULL,
    version         TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    granted_version TEXT    NOT NULL,
    granted_at      INTEGER NOT NULL,
    last_error_code INTEGER NOT NULL,
    blocked_version TEXT    NOT NULL,
    last_check      INTEGER NOT NULL,
    status_changed  INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (app_id, machine_id)
) STRICT;

-- GroupCounts (in progress), ExpiredGrants and status filters; granted_at
-- last so that the in-progress count is answered from the index alone.
CREATE INDEX instances_group_status ON instances (app_id, group_name, status, granted_at);
-- RolloutStatus and CountNotOnVersion, index-only.
CREATE INDEX instances_group_version ON instances (app_id, group_name, version, status);
-- Alias lookups and alias prefix search.
CREATE INDEX instances_alias ON instances (app_id, alias);
-- ListInstances sorted by last check (keyset on (last_check, machine_id))
-- and the SeenBefore/SeenAfter filters.
CREATE INDEX instances_last_check ON instances (app_id, last_check, machine_id);

-- AUTOINCREMENT keeps ids from being reused after a prune, so clients that
-- page by id never see an id twice.
CREATE TABLE status_history (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    app_id     TEXT    NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    machine_id TEXT    NOT NULL,
    group_name TEXT    NOT NULL,
    status     TEXT    NOT NULL,
    version    TEXT    NOT NULL,
    error_code INTEGER NOT NULL,
    at         INTEGER NOT NULL
) STRICT;

-- GroupCounts (grants in period) and CountFailures.
CREATE INDEX status_history_group ON status_history (app_id, group_name, status, at);
-- An instance's history, newest first.
CREATE INDEX status_history_machine ON status_history (app_id, machine_id, id);
-- Retention.
CREATE INDEX status_history_at ON status_history (at);

CREATE TABLE events (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    app_id           TEXT    NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    machine_id       TEXT    NOT NULL,
    group_name       TEXT    NOT NULL,
    type             INTEGER NOT NULL,
    result           INTEGER NOT NULL,
    error_code       INTEGER NOT NULL,
    version          TEXT    NOT NULL,
    previous_version TEXT    NOT NULL,
    at               INTEGER NOT NULL
) STRICT;

CREATE INDEX events_machine ON events (app_id, machine_id, id);
CREATE INDEX events_at ON events (at);

-- The activity log outlives the application it talks about (it is an audit
-- trail), so it has no foreign key; retention removes it.
CREATE TABLE activity (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    app_id      TEXT    NOT NULL,
    group_name  TEXT    NOT NULL,
    channel     TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    severity    TEXT    NOT NULL,
    version     TEXT    NOT NULL,
    message     TEXT    NOT NULL,
    machine_ids TEXT    NOT NULL, -- JSON array of machine ids
    at          INTEGER NOT NULL
) STRICT;

CREATE INDEX activity_app ON activity (app_id, id);
CREATE INDEX activity_at ON activity (at);

CREATE TABLE tokens (
    id         TEXT    NOT NULL PRIMARY KEY,
    name       TEXT    NOT NULL,
    role       TEXT    NOT NULL,
    hash       TEXT    NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
) STRICT;
