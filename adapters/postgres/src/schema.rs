//! The tables as diesel sees them; kept in step with `migrations/` by hand (and by the
//! repository tests, which run every query against the migrated schema).

diesel::table! {
    releases (id) {
        id -> Uuid,
        service -> Text,
        version -> Text,
        image -> Text,
        template -> Text,
        required_variables -> Array<Text>,
        attributes -> Jsonb,
        comment -> Nullable<Text>,
        created_at -> Timestamptz,
        created_by -> Text,
        deleted_at -> Nullable<Timestamptz>,
        deleted_by -> Nullable<Text>,
        image_digest -> Nullable<Text>,
    }
}

diesel::table! {
    deployments (id) {
        id -> Uuid,
        release_id -> Uuid,
        service -> Text,
        version -> Text,
        cluster -> Text,
        namespace -> Text,
        requested_by -> Text,
        attributes -> Jsonb,
        timeout_seconds -> BigInt,
        prune -> Bool,
        rollback_on_failure -> Bool,
        manifest -> Text,
        objects -> Jsonb,
        status -> Text,
        created_at -> Timestamptz,
        started_at -> Nullable<Timestamptz>,
        finished_at -> Nullable<Timestamptz>,
        diagnostics -> Nullable<Jsonb>,
        rollback_of -> Nullable<Uuid>,
        lease_owner -> Nullable<Text>,
        lease_expires_at -> Nullable<Timestamptz>,
        lease_fence -> BigInt,
    }
}

diesel::table! {
    deployment_timeline (deployment_id, seq) {
        deployment_id -> Uuid,
        seq -> BigInt,
        at -> Timestamptz,
        phase -> Text,
        message -> Text,
        resource -> Nullable<Text>,
    }
}

diesel::joinable!(deployments -> releases (release_id));
diesel::joinable!(deployment_timeline -> deployments (deployment_id));
diesel::allow_tables_to_appear_in_same_query!(releases, deployments, deployment_timeline);

diesel::table! {
    accounts (name) {
        name -> Text,
        kind -> Text,
        created_at -> Timestamptz,
        created_by -> Text,
    }
}

diesel::table! {
    account_grants (account, role, scope) {
        account -> Text,
        role -> Text,
        scope -> Text,
    }
}

diesel::table! {
    api_tokens (id) {
        id -> Uuid,
        account -> Text,
        name -> Text,
        hint -> Text,
        token_hash -> Bytea,
        created_at -> Timestamptz,
        created_by -> Text,
        expires_at -> Timestamptz,
        last_used_at -> Nullable<Timestamptz>,
        revoked_at -> Nullable<Timestamptz>,
        revoked_by -> Nullable<Text>,
    }
}

diesel::table! {
    audit_log (id) {
        id -> Uuid,
        at -> Timestamptz,
        actor -> Text,
        action -> Text,
        target -> Text,
        request_id -> Nullable<Text>,
        source -> Nullable<Text>,
        details -> Jsonb,
    }
}

diesel::joinable!(account_grants -> accounts (account));
diesel::joinable!(api_tokens -> accounts (account));
diesel::allow_tables_to_appear_in_same_query!(accounts, account_grants, api_tokens);
