-- 0001: initial schema, the PostgreSQL form of the SQLite backend's 0001.
--
-- Times are timestamptz (microsecond precision, like the SQLite backend's
-- INTEGER microseconds); the Go zero time is stored as 0001-01-01 UTC rather
-- than NULL so that every time column is NOT NULL and keyset pagination
-- needs no NULL cases.
--
-- Every text column uses COLLATE "C": byte-wise order, as in SQLite's BINARY
-- collation. With the database's linguistic default the prefix ranges of
-- ListInstances would match case-insensitively, and list orders would differ
-- between the backends and between databases created with other locales.
--
-- Instances, their status history and events belong to an application and
-- go away with it (ON DELETE CASCADE); packages, channels and groups must be
-- deleted first (the plain foreign keys make DeleteApp fail with a conflict).
-- Instances name their group but do not reference it: deleting a group
-- leaves its machines in place until they next check in.

CREATE TABLE apps (
    id          text COLLATE "C" NOT NULL PRIMARY KEY,
    name        text COLLATE "C" NOT NULL,
    description text COLLATE "C" NOT NULL,
    created_at  timestamptz      NOT NULL
);

CREATE TABLE packages (
    app_id        text COLLATE "C" NOT NULL REFERENCES apps (id),
    version       text COLLATE "C" NOT NULL,
    arch          text COLLATE "C" NOT NULL,
    base_url      text COLLATE "C" NOT NULL,
    file_name     text COLLATE "C" NOT NULL,
    size          bigint           NOT NULL,
    sha1          text COLLATE "C" NOT NULL,
    sha256        text COLLATE "C" NOT NULL,
    extra_files   jsonb            NOT NULL, -- array of store.PackageFile
    release_notes text COLLATE "C" NOT NULL,
    created_at    timestamptz      NOT NULL,
    PRIMARY KEY (app_id, version, arch)
);

CREATE TABLE channels (
    app_id          text COLLATE "C" NOT NULL REFERENCES apps (id),
    name            text COLLATE "C" NOT NULL,
    package_version text COLLATE "C" NOT NULL, -- '' = no package yet
    updated_at      timestamptz      NOT NULL,
    created_at      timestamptz      NOT NULL,
    PRIMARY KEY (app_id, name)
);

-- "groups" is a keyword in window syntax, hence the prefix (and the same
-- table names in both backends).
CREATE TABLE app_groups (
    app_id             text COLLATE "C" NOT NULL REFERENCES apps (id),
    name               text COLLATE "C" NOT NULL,
    description        text COLLATE "C" NOT NULL,
    track              text COLLATE "C" NOT NULL,
    channel            text COLLATE "C" NOT NULL,
    policy             jsonb            NOT NULL, -- store.Policy, durations in nanoseconds
    rollout_version    text COLLATE "C" NOT NULL,
    rollout_started_at timestamptz      NOT NULL,
    paused_reason      text COLLATE "C" NOT NULL,
    created_at         timestamptz      NOT NULL,
    updated_at         timestamptz      NOT NULL,
    PRIMARY KEY (app_id, name),
    UNIQUE (app_id, track),
    FOREIGN KEY (app_id, channel) REFERENCES channels (app_id, name)
);

-- Lets DeleteChannel's foreign key check find following groups without a
-- scan.
CREATE INDEX app_groups_channel ON app_groups (app_id, channel);

-- The hot table: one row per machine and application, read and rewritten on
-- every update check.
CREATE TABLE instances (
    app_id          text COLLATE "C" NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    machine_id      text COLLATE "C" NOT NULL,
    alias           text COLLATE "C" NOT NULL,
    ip              text COLLATE "C" NOT NULL, -- not inet: '' means unknown
    oem             text COLLATE "C" NOT NULL,
    oem_version     text COLLATE "C" NOT NULL,
    aleph_version   text COLLATE "C" NOT NULL,
    board           text COLLATE "C" NOT NULL,
    group_name      text COLLATE "C" NOT NULL,
    version         text COLLATE "C" NOT NULL,
    status          text COLLATE "C" NOT NULL,
    granted_version text COLLATE "C" NOT NULL,
    granted_at      timestamptz      NOT NULL,
    last_error_code bigint           NOT NULL,
    blocked_version text COLLATE "C" NOT NULL,
    last_check      timestamptz      NOT NULL,
    status_changed  timestamptz      NOT NULL,
    created_at      timestamptz      NOT NULL,
    PRIMARY KEY (app_id, machine_id)
);

-- GroupCounts (in progress), ExpiredGrants and status filters; granted_at
-- last so that the in-progress count can be answered from the index.
CREATE INDEX instances_group_status ON instances (app_id, group_name, status, granted_at);
-- RolloutStatus and CountNotOnVersion.
CREATE INDEX instances_group_version ON instances (app_id, group_name, version, status);
-- Alias lookups and alias prefix search.
CREATE INDEX instances_alias ON instances (app_id, alias);
-- ListInstances sorted by last check (keyset on (last_check, machine_id))
-- and the SeenBefore/SeenAfter filters.
CREATE INDEX instances_last_check ON instances (app_id, last_check, machine_id);

-- Identity columns come from sequences, which never hand out an id twice,
-- so clients that page by id never see an id reused after a prune.
CREATE TABLE status_history (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    app_id     text COLLATE "C" NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    machine_id text COLLATE "C" NOT NULL,
    group_name text COLLATE "C" NOT NULL,
    status     text COLLATE "C" NOT NULL,
    version    text COLLATE "C" NOT NULL,
    error_code bigint           NOT NULL,
    at         timestamptz      NOT NULL
);

-- GroupCounts (grants in period) and CountFailures.
CREATE INDEX status_history_group ON status_history (app_id, group_name, status, at);
-- An instance's history, newest first.
CREATE INDEX status_history_machine ON status_history (app_id, machine_id, id);
-- Retention.
CREATE INDEX status_history_at ON status_history (at);

CREATE TABLE events (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    app_id           text COLLATE "C" NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    machine_id       text COLLATE "C" NOT NULL,
    group_name       text COLLATE "C" NOT NULL,
    type             bigint           NOT NULL,
    result           bigint           NOT NULL,
    error_code       bigint           NOT NULL,
    version          text COLLATE "C" NOT NULL,
    previous_version text COLLATE "C" NOT NULL,
    at               timestamptz      NOT NULL
);

CREATE INDEX events_machine ON events (app_id, machine_id, id);
CREATE INDEX events_at ON events (at);

-- The activity log outlives the application it talks about (it is an audit
-- trail), so it has no foreign key; retention removes it.
CREATE TABLE activity (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    app_id      text COLLATE "C" NOT NULL,
    group_name  text COLLATE "C" NOT NULL,
    channel     text COLLATE "C" NOT NULL,
    kind        text COLLATE "C" NOT NULL,
    severity    text COLLATE "C" NOT NULL,
    version     text COLLATE "C" NOT NULL,
    message     text COLLATE "C" NOT NULL,
    machine_ids text[] COLLATE "C" NOT NULL,
    at          timestamptz      NOT NULL
);

CREATE INDEX activity_app ON activity (app_id, id);
CREATE INDEX activity_at ON activity (at);

CREATE TABLE tokens (
    id         text COLLATE "C" NOT NULL PRIMARY KEY,
    name       text COLLATE "C" NOT NULL,
    role       text COLLATE "C" NOT NULL,
    hash       text COLLATE "C" NOT NULL UNIQUE,
    created_at timestamptz      NOT NULL
);
