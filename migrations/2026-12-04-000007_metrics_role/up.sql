-- The `metrics` role: a Prometheus scraper's token, which reads /metrics and nothing else.
ALTER TABLE account_grants DROP CONSTRAINT account_grants_role_is_known;
ALTER TABLE account_grants ADD CONSTRAINT account_grants_role_is_known
    CHECK (role IN ('metrics', 'viewer', 'releaser', 'deployer', 'admin'));
