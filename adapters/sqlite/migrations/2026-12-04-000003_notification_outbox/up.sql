-- The outbox of notifications, as PostgreSQL's migration 000008 has it (times are
-- written by Kubernaut, on this process's clock: one process uses the file).
CREATE TABLE notification_deliveries (
    id               TEXT    NOT NULL PRIMARY KEY,
    event_id         TEXT    NOT NULL,
    deployment_id    TEXT    NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    event            TEXT    NOT NULL,
    sink             TEXT    NOT NULL,
    payload          TEXT    NOT NULL,
    status           TEXT    NOT NULL DEFAULT 'pending',
    attempts         INTEGER NOT NULL DEFAULT 0,
    created_at       TEXT    NOT NULL,
    next_attempt_at  TEXT    NULL,
    delivered_at     TEXT    NULL,
    claim_owner      TEXT    NULL,
    claim_expires_at TEXT    NULL,
    CONSTRAINT notification_deliveries_status_is_known
        CHECK (status IN ('pending', 'delivered', 'dead')),
    CONSTRAINT notification_deliveries_event_is_known
        CHECK (event IN ('started', 'succeeded', 'failed', 'timed_out', 'cancelled')),
    CONSTRAINT notification_deliveries_payload_is_an_object CHECK (json_type(payload) = 'object'),
    CONSTRAINT notification_deliveries_claim_has_an_expiry
        CHECK ((claim_owner IS NULL) = (claim_expires_at IS NULL)),
    CONSTRAINT notification_deliveries_pending_has_a_due_time
        CHECK ((status = 'pending') = (next_attempt_at IS NOT NULL)),
    CONSTRAINT notification_deliveries_one_per_event_and_sink UNIQUE (event_id, sink)
) STRICT;

CREATE INDEX notification_deliveries_due_idx
    ON notification_deliveries (next_attempt_at)
    WHERE status = 'pending';

CREATE INDEX notification_deliveries_deployment_idx
    ON notification_deliveries (deployment_id, created_at);

CREATE TABLE notification_attempts (
    delivery_id TEXT    NOT NULL REFERENCES notification_deliveries (id) ON DELETE CASCADE,
    number      INTEGER NOT NULL,
    at          TEXT    NOT NULL,
    duration_ms INTEGER NOT NULL,
    status_code INTEGER NULL,
    error       TEXT    NULL,
    replica     TEXT    NOT NULL,
    PRIMARY KEY (delivery_id, number)
) STRICT;
