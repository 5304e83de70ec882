-- The outbox of notifications: one delivery per event and sink, written in the
-- transaction of the deployment's move it tells of, delivered at least once.
CREATE TABLE notification_deliveries (
    id               uuid        PRIMARY KEY,
    -- The event's id: the same for every sink of one event (receivers deduplicate on it).
    event_id         uuid        NOT NULL,
    deployment_id    uuid        NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    event            text        NOT NULL,
    sink             text        NOT NULL,
    -- The notification as every sink is told of it (kubernaut_domain::notification).
    payload          jsonb       NOT NULL,
    status           text        NOT NULL DEFAULT 'pending',
    attempts         integer     NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    next_attempt_at  timestamptz NULL DEFAULT now(),
    delivered_at     timestamptz NULL,
    -- Which replica is attempting it, until when (the database's clock).
    claim_owner      text        NULL,
    claim_expires_at timestamptz NULL,
    CONSTRAINT notification_deliveries_status_is_known
        CHECK (status IN ('pending', 'delivered', 'dead')),
    CONSTRAINT notification_deliveries_event_is_known
        CHECK (event IN ('started', 'succeeded', 'failed', 'timed_out', 'cancelled')),
    CONSTRAINT notification_deliveries_claim_has_an_expiry
        CHECK ((claim_owner IS NULL) = (claim_expires_at IS NULL)),
    CONSTRAINT notification_deliveries_pending_has_a_due_time
        CHECK ((status = 'pending') = (next_attempt_at IS NOT NULL)),
    CONSTRAINT notification_deliveries_one_per_event_and_sink UNIQUE (event_id, sink)
);

-- What the dispatchers claim: pending deliveries, the longest due first.
CREATE INDEX notification_deliveries_due_idx
    ON notification_deliveries (next_attempt_at)
    WHERE status = 'pending';

CREATE INDEX notification_deliveries_deployment_idx
    ON notification_deliveries (deployment_id, created_at);

-- Every attempt at a delivery: when, by whom, how long, and what the receiver said.
CREATE TABLE notification_attempts (
    delivery_id uuid        NOT NULL REFERENCES notification_deliveries (id) ON DELETE CASCADE,
    number      integer     NOT NULL,
    at          timestamptz NOT NULL,
    duration_ms bigint      NOT NULL,
    status_code integer     NULL,
    error       text        NULL,
    replica     text        NOT NULL,
    PRIMARY KEY (delivery_id, number)
);
