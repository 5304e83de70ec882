-- The `metrics` role: a Prometheus scraper's token, which reads /metrics and nothing else.
-- SQLite cannot change a CHECK constraint in place: the table is rebuilt (no other
-- table refers to it) and its rows copied.
CREATE TABLE account_grants_new (
    account TEXT NOT NULL REFERENCES accounts (name) ON DELETE CASCADE,
    role    TEXT NOT NULL,
    scope   TEXT NOT NULL,
    PRIMARY KEY (account, role, scope),
    CONSTRAINT account_grants_role_is_known
        CHECK (role IN ('metrics', 'viewer', 'releaser', 'deployer', 'admin'))
) STRICT;

INSERT INTO account_grants_new (account, role, scope)
    SELECT account, role, scope FROM account_grants;
DROP TABLE account_grants;
ALTER TABLE account_grants_new RENAME TO account_grants;
