CREATE TABLE account_grants_old (
    account TEXT NOT NULL REFERENCES accounts (name) ON DELETE CASCADE,
    role    TEXT NOT NULL,
    scope   TEXT NOT NULL,
    PRIMARY KEY (account, role, scope),
    CONSTRAINT account_grants_role_is_known CHECK (role IN ('viewer', 'releaser', 'deployer', 'admin'))
) STRICT;

-- Grants of the metrics role go with it: the older constraint would refuse them.
INSERT INTO account_grants_old (account, role, scope)
    SELECT account, role, scope FROM account_grants WHERE role <> 'metrics';
DROP TABLE account_grants;
ALTER TABLE account_grants_old RENAME TO account_grants;
