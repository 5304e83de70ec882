-- The lease of each active deployment: which replica drives it, until when (the
-- database's clock), and the fence of the current acquisition. Every write a driver
-- makes checks the fence, so a replica that lost its lease changes nothing.
ALTER TABLE deployments
    ADD COLUMN lease_owner      text        NULL,
    ADD COLUMN lease_expires_at timestamptz NULL,
    ADD COLUMN lease_fence      bigint      NOT NULL DEFAULT 0,
    ADD CONSTRAINT deployments_lease_has_an_expiry
        CHECK ((lease_owner IS NULL) = (lease_expires_at IS NULL));

-- What the supervisors claim: active deployments, oldest first.
CREATE INDEX deployments_active_oldest_first_idx
    ON deployments (created_at, id)
    WHERE status IN ('queued', 'applying', 'rolling_out');

-- Every replica hears of every change through LISTEN kubernaut:
--   deployment:<id>:<status>  a deployment was stored or changed status
--   deployment:<id>           a line was added to its timeline
--   credentials               a token was revoked, or an account's grants changed
-- NOTIFY is sent when (and only when) the transaction commits.
CREATE FUNCTION kubernaut_notify_deployment_status() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('kubernaut', 'deployment:' || NEW.id::text || ':' || NEW.status);
    RETURN NULL;
END
$$;

CREATE TRIGGER deployments_notify_status
    AFTER INSERT OR UPDATE OF status ON deployments
    FOR EACH ROW EXECUTE FUNCTION kubernaut_notify_deployment_status();

CREATE FUNCTION kubernaut_notify_timeline() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('kubernaut', 'deployment:' || NEW.deployment_id::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER deployment_timeline_notify
    AFTER INSERT ON deployment_timeline
    FOR EACH ROW EXECUTE FUNCTION kubernaut_notify_timeline();

CREATE FUNCTION kubernaut_notify_credentials() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('kubernaut', 'credentials');
    RETURN NULL;
END
$$;

CREATE TRIGGER api_tokens_notify_revocation
    AFTER UPDATE OF revoked_at ON api_tokens
    FOR EACH ROW EXECUTE FUNCTION kubernaut_notify_credentials();

CREATE TRIGGER account_grants_notify
    AFTER INSERT OR DELETE OR UPDATE ON account_grants
    FOR EACH ROW EXECUTE FUNCTION kubernaut_notify_credentials();
