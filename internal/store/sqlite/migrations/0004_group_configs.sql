-- Versioned machine configuration documents per group, and each machine's
-- latest report of the version it applied and its drift. Both go with
-- their group: deleting the group deletes its configs and reports.
CREATE TABLE group_configs (
    app_id     TEXT    NOT NULL,
    group_name TEXT    NOT NULL,
    version    INTEGER NOT NULL CHECK (version > 0),
    document   TEXT    NOT NULL CHECK (document <> ''),
    format     TEXT    NOT NULL,
    sha256     TEXT    NOT NULL,
    author     TEXT    NOT NULL,
    comment    TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (app_id, group_name, version),
    FOREIGN KEY (app_id, group_name) REFERENCES app_groups (app_id, name) ON DELETE CASCADE
) STRICT;

CREATE TABLE config_reports (
    app_id      TEXT    NOT NULL,
    machine_id  TEXT    NOT NULL CHECK (machine_id <> ''),
    group_name  TEXT    NOT NULL,
    version     INTEGER NOT NULL CHECK (version >= 0),
    applied_at  INTEGER NOT NULL,
    drift       TEXT    NOT NULL, -- JSON array of strings
    error       TEXT    NOT NULL,
    reported_at INTEGER NOT NULL,
    PRIMARY KEY (app_id, machine_id),
    FOREIGN KEY (app_id, group_name) REFERENCES app_groups (app_id, name) ON DELETE CASCADE
) STRICT;

CREATE INDEX config_reports_group ON config_reports (app_id, group_name, machine_id);
