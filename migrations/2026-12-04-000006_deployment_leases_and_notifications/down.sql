DROP TRIGGER account_grants_notify ON account_grants;
DROP TRIGGER api_tokens_notify_revocation ON api_tokens;
DROP FUNCTION kubernaut_notify_credentials();
DROP TRIGGER deployment_timeline_notify ON deployment_timeline;
DROP FUNCTION kubernaut_notify_timeline();
DROP TRIGGER deployments_notify_status ON deployments;
DROP FUNCTION kubernaut_notify_deployment_status();
DROP INDEX deployments_active_oldest_first_idx;
ALTER TABLE deployments
    DROP CONSTRAINT deployments_lease_has_an_expiry,
    DROP COLUMN lease_fence,
    DROP COLUMN lease_expires_at,
    DROP COLUMN lease_owner;
