-- Kubernaut's schema on SQLite, mirroring PostgreSQL's (the repository's `migrations/`)
-- at the same point: the same tables, columns, constraints and indexes.
--
-- Representations: uuids are lowercase hyphenated text (their text order is their byte
-- order, as PostgreSQL orders uuids); timestamps are UTC text of one fixed shape,
-- `YYYY-MM-DDTHH:MM:SS.ffffffZ` (microseconds, as timestamptz keeps), so comparing and
-- sorting the text compares and sorts the times; JSON is text; token hashes are blobs.
-- STRICT tables refuse a value of the wrong type, as PostgreSQL does.

CREATE TABLE releases (
    id                 TEXT NOT NULL PRIMARY KEY,
    service            TEXT NOT NULL,
    version            TEXT NOT NULL,
    image              TEXT NOT NULL,
    template           TEXT NOT NULL,
    -- A JSON array of names (text[] on PostgreSQL).
    required_variables TEXT NOT NULL DEFAULT '[]',
    attributes         TEXT NOT NULL DEFAULT '{}',
    comment            TEXT NULL,
    created_at         TEXT NOT NULL,
    created_by         TEXT NOT NULL,
    deleted_at         TEXT NULL,
    deleted_by         TEXT NULL,
    image_digest       TEXT NULL,
    CONSTRAINT releases_attributes_is_an_object CHECK (json_type(attributes) = 'object'),
    CONSTRAINT releases_required_variables_is_an_array CHECK (json_type(required_variables) = 'array'),
    CONSTRAINT releases_deleted_at_and_by_together
        CHECK ((deleted_at IS NULL) = (deleted_by IS NULL))
) STRICT;

-- One active release per service and version; deleted ones free the pair again.
CREATE UNIQUE INDEX releases_active_service_version_key
    ON releases (service, version)
    WHERE deleted_at IS NULL;

CREATE INDEX releases_active_newest_first_idx
    ON releases (created_at DESC, id DESC)
    WHERE deleted_at IS NULL;

CREATE INDEX releases_active_service_newest_first_idx
    ON releases (service, created_at DESC, id DESC)
    WHERE deleted_at IS NULL;

CREATE TABLE deployments (
    id                  TEXT    NOT NULL PRIMARY KEY,
    release_id          TEXT    NOT NULL REFERENCES releases (id),
    service             TEXT    NOT NULL,
    version             TEXT    NOT NULL,
    cluster             TEXT    NOT NULL,
    namespace           TEXT    NOT NULL,
    requested_by        TEXT    NOT NULL,
    attributes          TEXT    NOT NULL DEFAULT '{}',
    timeout_seconds     INTEGER NOT NULL,
    prune               INTEGER NOT NULL,
    rollback_on_failure INTEGER NOT NULL,
    manifest            TEXT    NOT NULL,
    objects             TEXT    NOT NULL,
    status              TEXT    NOT NULL,
    created_at          TEXT    NOT NULL,
    started_at          TEXT    NULL,
    finished_at         TEXT    NULL,
    diagnostics         TEXT    NULL,
    rollback_of         TEXT    NULL REFERENCES deployments (id),
    lease_owner         TEXT    NULL,
    lease_expires_at    TEXT    NULL,
    lease_fence         INTEGER NOT NULL DEFAULT 0,
    CONSTRAINT deployments_status_is_known CHECK (status IN
        ('queued', 'applying', 'rolling_out', 'succeeded', 'failed', 'timed_out', 'cancelled')),
    CONSTRAINT deployments_timeout_is_positive CHECK (timeout_seconds > 0),
    CONSTRAINT deployments_booleans CHECK (prune IN (0, 1) AND rollback_on_failure IN (0, 1)),
    CONSTRAINT deployments_finished_only_with_a_verdict CHECK
        ((finished_at IS NULL) = (status IN ('queued', 'applying', 'rolling_out'))),
    CONSTRAINT deployments_lease_has_an_expiry
        CHECK ((lease_owner IS NULL) = (lease_expires_at IS NULL))
) STRICT;

-- One active deployment per service, cluster and namespace, enforced here.
CREATE UNIQUE INDEX deployments_one_active_per_target_key
    ON deployments (cluster, namespace, service)
    WHERE status IN ('queued', 'applying', 'rolling_out');

CREATE INDEX deployments_newest_first_idx ON deployments (created_at DESC, id DESC);
CREATE INDEX deployments_service_newest_first_idx
    ON deployments (service, created_at DESC, id DESC);
CREATE INDEX deployments_on_target_newest_first_idx
    ON deployments (service, cluster, namespace, created_at DESC, id DESC);
CREATE INDEX deployments_release_newest_first_idx
    ON deployments (release_id, created_at DESC, id DESC);
CREATE INDEX deployments_active_oldest_first_idx
    ON deployments (created_at, id)
    WHERE status IN ('queued', 'applying', 'rolling_out');
-- Rollbacks refer to the deployment they undo (a foreign key's child column).
CREATE INDEX deployments_rollback_of_idx ON deployments (rollback_of)
    WHERE rollback_of IS NOT NULL;

-- The timeline of each deployment, in the order entries were written (seq).
CREATE TABLE deployment_timeline (
    seq           INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    deployment_id TEXT    NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    at            TEXT    NOT NULL,
    phase         TEXT    NOT NULL,
    message       TEXT    NOT NULL,
    resource      TEXT    NULL
) STRICT;

CREATE INDEX deployment_timeline_deployment_idx ON deployment_timeline (deployment_id, seq);

CREATE TABLE accounts (
    name       TEXT NOT NULL PRIMARY KEY,
    kind       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    CONSTRAINT accounts_kind_is_known CHECK (kind IN ('person', 'robot'))
) STRICT;

CREATE TABLE account_grants (
    account TEXT NOT NULL REFERENCES accounts (name) ON DELETE CASCADE,
    role    TEXT NOT NULL,
    scope   TEXT NOT NULL,
    PRIMARY KEY (account, role, scope),
    CONSTRAINT account_grants_role_is_known CHECK (role IN ('viewer', 'releaser', 'deployer', 'admin'))
) STRICT;

CREATE TABLE api_tokens (
    id           TEXT NOT NULL PRIMARY KEY,
    account      TEXT NOT NULL REFERENCES accounts (name),
    name         TEXT NOT NULL,
    hint         TEXT NOT NULL,
    token_hash   BLOB NOT NULL UNIQUE,
    created_at   TEXT NOT NULL,
    created_by   TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    last_used_at TEXT NULL,
    revoked_at   TEXT NULL,
    revoked_by   TEXT NULL,
    CONSTRAINT api_tokens_hash_is_sha256 CHECK (length(token_hash) = 32),
    CONSTRAINT api_tokens_revoked_at_and_by_together
        CHECK ((revoked_at IS NULL) = (revoked_by IS NULL))
) STRICT;

CREATE INDEX api_tokens_account_idx ON api_tokens (account);

-- The audit trail. SQLite compares text bytewise (BINARY), as COLLATE "C" does.
CREATE TABLE audit_log (
    id         TEXT NOT NULL PRIMARY KEY,
    at         TEXT NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    target     TEXT NOT NULL,
    request_id TEXT NULL,
    source     TEXT NULL,
    details    TEXT NOT NULL
) STRICT;

CREATE INDEX audit_log_newest_first_idx ON audit_log (at DESC, id DESC);
CREATE INDEX audit_log_actor_newest_first_idx ON audit_log (actor, at DESC, id DESC);
CREATE INDEX audit_log_action_newest_first_idx ON audit_log (action, at DESC, id DESC);
CREATE INDEX audit_log_target_newest_first_idx ON audit_log (target, at DESC, id DESC);
