-- Versioned machine configuration documents per group (store.GroupConfig)
-- and each machine's latest report of the version it applied and its drift
-- (store.ConfigReport). Both go with their group.
CREATE TABLE group_configs (
    app_id     text COLLATE "C" NOT NULL,
    group_name text COLLATE "C" NOT NULL,
    version    integer          NOT NULL CHECK (version > 0),
    document   text COLLATE "C" NOT NULL CHECK (document <> ''),
    format     text COLLATE "C" NOT NULL,
    sha256     text COLLATE "C" NOT NULL,
    author     text COLLATE "C" NOT NULL,
    comment    text COLLATE "C" NOT NULL,
    created_at timestamptz      NOT NULL,
    PRIMARY KEY (app_id, group_name, version),
    FOREIGN KEY (app_id, group_name) REFERENCES app_groups (app_id, name) ON DELETE CASCADE
);

CREATE TABLE config_reports (
    app_id      text COLLATE "C" NOT NULL,
    machine_id  text COLLATE "C" NOT NULL CHECK (machine_id <> ''),
    group_name  text COLLATE "C" NOT NULL,
    version     integer          NOT NULL CHECK (version >= 0),
    applied_at  timestamptz      NOT NULL,
    drift       jsonb            NOT NULL, -- array of strings
    error       text COLLATE "C" NOT NULL,
    reported_at timestamptz      NOT NULL,
    PRIMARY KEY (app_id, machine_id),
    FOREIGN KEY (app_id, group_name) REFERENCES app_groups (app_id, name) ON DELETE CASCADE
);

CREATE INDEX config_reports_group ON config_reports (app_id, group_name, machine_id);
