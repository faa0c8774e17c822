-- How many of a group's instances ran each version, sampled periodically,
-- so the dashboard charts a rollout over time with one range read instead
-- of replaying every machine's status history.
CREATE TABLE version_samples (
    id         INTEGER PRIMARY KEY,
    app_id     TEXT    NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    group_name TEXT    NOT NULL,
    version    TEXT    NOT NULL,
    count      INTEGER NOT NULL,
    at         INTEGER NOT NULL
) STRICT;

CREATE UNIQUE INDEX version_samples_group ON version_samples (app_id, group_name, at, version);
-- Retention.
CREATE INDEX version_samples_at ON version_samples (at);
