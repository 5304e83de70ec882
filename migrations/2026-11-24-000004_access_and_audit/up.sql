-- Accounts: people and robots that authenticate with API tokens.
CREATE TABLE accounts (
    name       text        PRIMARY KEY,
    kind       text        NOT NULL,
    created_at timestamptz NOT NULL,
    created_by text        NOT NULL,
    CONSTRAINT accounts_kind_is_known CHECK (kind IN ('person', 'robot'))
);

-- What each account has been granted: a role for a scope (`*/*` when global).
CREATE TABLE account_grants (
    account text NOT NULL REFERENCES accounts (name) ON DELETE CASCADE,
    role    text NOT NULL,
    scope   text NOT NULL,
    PRIMARY KEY (account, role, scope),
    CONSTRAINT account_grants_role_is_known CHECK (role IN ('viewer', 'releaser', 'deployer', 'admin'))
);

-- API tokens: only the SHA-256 of the secret is kept, and looked up by it.
CREATE TABLE api_tokens (
    id           uuid        PRIMARY KEY,
    account      text        NOT NULL REFERENCES accounts (name),
    name         text        NOT NULL,
    hint         text        NOT NULL,
    token_hash   bytea       NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL,
    created_by   text        NOT NULL,
    expires_at   timestamptz NOT NULL,
    last_used_at timestamptz NULL,
    revoked_at   timestamptz NULL,
    revoked_by   text        NULL,
    CONSTRAINT api_tokens_hash_is_sha256 CHECK (octet_length(token_hash) = 32),
    CONSTRAINT api_tokens_revoked_at_and_by_together
        CHECK ((revoked_at IS NULL) = (revoked_by IS NULL))
);

CREATE INDEX api_tokens_account_idx ON api_tokens (account);

-- The audit trail: one record per change, written in the change's transaction. The
-- target is compared bytewise (COLLATE "C") so that a prefix filter, target LIKE
-- 'deployment/%', can seek its index.
CREATE TABLE audit_log (
    id         uuid        PRIMARY KEY,
    at         timestamptz NOT NULL,
    actor      text        NOT NULL,
    action     text        NOT NULL,
    target     text        COLLATE "C" NOT NULL,
    request_id text        NULL,
    source     text        NULL,
    details    jsonb       NOT NULL
);

-- Newest-first listings with keyset pagination, (at, id) < (..), overall and by each
-- filter.
CREATE INDEX audit_log_newest_first_idx ON audit_log (at DESC, id DESC);
CREATE INDEX audit_log_actor_newest_first_idx ON audit_log (actor, at DESC, id DESC);
CREATE INDEX audit_log_action_newest_first_idx ON audit_log (action, at DESC, id DESC);
CREATE INDEX audit_log_target_newest_first_idx ON audit_log (target, at DESC, id DESC);
