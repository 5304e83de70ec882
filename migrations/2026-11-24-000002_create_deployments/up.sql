-- Deployments: a release rendered for a cluster and namespace, applied and watched to
-- a verdict. The status is a state machine persisted at every step.
CREATE TABLE deployments (
    id                  uuid        PRIMARY KEY,
    release_id          uuid        NOT NULL REFERENCES releases (id),
    service             text        NOT NULL,
    version             text        NOT NULL,
    cluster             text        NOT NULL,
    namespace           text        NOT NULL,
    requested_by        text        NOT NULL,
    attributes          jsonb       NOT NULL DEFAULT '{}',
    timeout_seconds     bigint      NOT NULL,
    prune               boolean     NOT NULL,
    rollback_on_failure boolean     NOT NULL,
    manifest            text        NOT NULL,
    objects             jsonb       NOT NULL,
    status              text        NOT NULL,
    created_at          timestamptz NOT NULL,
    started_at          timestamptz NULL,
    finished_at         timestamptz NULL,
    diagnostics         jsonb       NULL,
    rollback_of         uuid        NULL REFERENCES deployments (id),
    CONSTRAINT deployments_status_is_known CHECK (status IN
        ('queued', 'applying', 'rolling_out', 'succeeded', 'failed', 'timed_out', 'cancelled')),
    CONSTRAINT deployments_timeout_is_positive CHECK (timeout_seconds > 0),
    CONSTRAINT deployments_finished_only_with_a_verdict CHECK
        ((finished_at IS NULL) = (status IN ('queued', 'applying', 'rolling_out')))
);

-- One active deployment per service, cluster and namespace, enforced here so that two
-- concurrent requests cannot both pass.
CREATE UNIQUE INDEX deployments_one_active_per_target_key
    ON deployments (cluster, namespace, service)
    WHERE status IN ('queued', 'applying', 'rolling_out');

-- Newest-first listings with keyset pagination, overall and per service.
CREATE INDEX deployments_newest_first_idx ON deployments (created_at DESC, id DESC);
CREATE INDEX deployments_service_newest_first_idx
    ON deployments (service, created_at DESC, id DESC);

-- What to roll back to: the newest success of a service on a target.
CREATE INDEX deployments_succeeded_on_target_idx
    ON deployments (service, cluster, namespace, created_at DESC)
    WHERE status = 'succeeded';

-- What a restarted Kubernaut resumes.
CREATE INDEX deployments_active_idx
    ON deployments (created_at)
    WHERE status IN ('queued', 'applying', 'rolling_out');

-- The timeline of each deployment, in the order entries were written.
CREATE TABLE deployment_timeline (
    deployment_id uuid        NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    seq           bigserial   NOT NULL,
    at            timestamptz NOT NULL,
    phase         text        NOT NULL,
    message       text        NOT NULL,
    resource      text        NULL,
    PRIMARY KEY (deployment_id, seq)
);
