-- Periodic per-group version counts for the dashboard's rollout charts
-- (store.VersionSample). The key puts at before version so that one group's
-- samples since a time are one index range, already in the listed order.
CREATE TABLE version_samples (
    app_id     text COLLATE "C" NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    group_name text COLLATE "C" NOT NULL,
    version    text COLLATE "C" NOT NULL,
    count      bigint           NOT NULL,
    at         timestamptz      NOT NULL,
    PRIMARY KEY (app_id, group_name, at, version)
);

-- Retention.
CREATE INDEX version_samples_at ON version_samples (at);
