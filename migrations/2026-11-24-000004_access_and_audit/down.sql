DROP TABLE audit_log;
DROP TABLE api_tokens;
DROP TABLE account_grants;
DROP TABLE accounts;
