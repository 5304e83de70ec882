-- Grants of the metrics role go with it: the older constraint would refuse them.
DELETE FROM account_grants WHERE role = 'metrics';
ALTER TABLE account_grants DROP CONSTRAINT account_grants_role_is_known;
ALTER TABLE account_grants ADD CONSTRAINT account_grants_role_is_known
    CHECK (role IN ('viewer', 'releaser', 'deployer', 'admin'));
