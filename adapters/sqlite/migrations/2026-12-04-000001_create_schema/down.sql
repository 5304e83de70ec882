DROP TABLE audit_log;
DROP TABLE api_tokens;
DROP TABLE account_grants;
DROP TABLE accounts;
DROP TABLE deployment_timeline;
DROP TABLE deployments;
DROP TABLE releases;
