//! [`AccessRepository`] on SQLite: accounts in `accounts`, their grants in
//! `account_grants`, API tokens (their hashes, never their secrets) in `api_tokens`.
//! Every change stores its audit record in its own transaction, and only when
//! something changed.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::result::Error as DieselError;
use diesel::sql_types::{BigInt, Binary, Nullable, Text};
use diesel::sqlite::SqliteConnection;
use kubernaut_domain::access::{Account, AccountKind, AccountName, Grant, Role, Scope};
use kubernaut_domain::actor::Actor;
use kubernaut_domain::audit::AuditEntry;
use kubernaut_domain::ports::{
    AccessRepository, GrantChange, InsertAccountError, InsertTokenError, RepositoryError,
    RevokeTokenOutcome,
};
use kubernaut_domain::token::{ApiToken, TokenHash, TokenId};

use crate::audit_repository::record_audit;
use crate::blocking::{query_failed, with_connection};
use crate::database::SqliteDatabase;
use crate::sql::{
    Bind, json_list, optional_time_text, parse_optional_time, parse_time, parse_uuid, statement,
    time_text, uuid_text,
};

#[derive(Debug, QueryableByName)]
struct AccountRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Text)]
    created_at: String,
    #[diesel(sql_type = Text)]
    created_by: String,
}

#[derive(Debug, QueryableByName)]
struct GrantRow {
    #[diesel(sql_type = Text)]
    account: String,
    #[diesel(sql_type = Text)]
    role: String,
    #[diesel(sql_type = Text)]
    scope: String,
}

const TOKEN_COLUMNS: &str = "id, account, name, hint, token_hash, created_at, created_by, \
     expires_at, last_used_at, revoked_at, revoked_by";

#[derive(Debug, QueryableByName)]
pub(crate) struct TokenRow {
    #[diesel(sql_type = Text)]
    pub(crate) id: String,
    #[diesel(sql_type = Text)]
    pub(crate) account: String,
    #[diesel(sql_type = Text)]
    pub(crate) name: String,
    #[diesel(sql_type = Text)]
    pub(crate) hint: String,
    #[diesel(sql_type = Binary)]
    pub(crate) token_hash: Vec<u8>,
    #[diesel(sql_type = Text)]
    pub(crate) created_at: String,
    #[diesel(sql_type = Text)]
    pub(crate) created_by: String,
    #[diesel(sql_type = Text)]
    pub(crate) expires_at: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub(crate) last_used_at: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub(crate) revoked_at: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub(crate) revoked_by: Option<String>,
}

#[derive(Debug, QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    count: i64,
}

/// A stored value that breaks a domain rule: the tables were changed behind
/// Kubernaut's back.
fn corrupt(what: impl std::fmt::Display) -> RepositoryError {
    RepositoryError::new(format!("a stored value is invalid: {what}"))
}

fn grant_binds(account: &AccountName, grant: &Grant) -> Vec<Bind> {
    vec![
        account.as_str().into(),
        grant.role.as_str().into(),
        grant.scope.to_string().into(),
    ]
}

impl GrantRow {
    fn into_grant(self) -> Result<Grant, RepositoryError> {
        let role = Role::parse(&self.role).map_err(corrupt)?;
        let scope = Scope::parse(&self.scope).map_err(corrupt)?;
        Grant::new(role, scope).map_err(|error| {
            corrupt(format_args!(
                "the grant of {} to {}: {}",
                self.role, self.account, error.reason
            ))
        })
    }
}

impl AccountRow {
    /// The account with `grants`, sorted (role, then scope) so that reads are stable.
    fn into_account(self, grants: Vec<GrantRow>) -> Result<Account, RepositoryError> {
        let mut grants = grants
            .into_iter()
            .map(GrantRow::into_grant)
            .collect::<Result<Vec<_>, _>>()?;
        grants.sort();
        Ok(Account {
            name: AccountName::parse(&self.name).map_err(corrupt)?,
            kind: AccountKind::parse(&self.kind).map_err(corrupt)?,
            grants,
            created_at: parse_time(&self.created_at)?,
            created_by: Actor::named(&self.created_by),
        })
    }
}

fn token_binds(token: &ApiToken) -> Vec<Bind> {
    vec![
        uuid_text(token.id.as_uuid()).into(),
        token.account.as_str().into(),
        token.name.clone().into(),
        token.hint.clone().into(),
        token.hash.as_bytes().to_vec().into(),
        time_text(token.created_at).into(),
        token.created_by.as_str().into(),
        time_text(token.expires_at).into(),
        optional_time_text(token.last_used_at).into(),
        optional_time_text(token.revoked_at).into(),
        token
            .revoked_by
            .as_ref()
            .map(|by| by.as_str().to_owned())
            .into(),
    ]
}

impl TokenRow {
    fn into_token(self) -> Result<ApiToken, RepositoryError> {
        let hash: [u8; 32] = self.token_hash.try_into().map_err(|_| {
            corrupt(format_args!(
                "the hash of token {} is not 32 bytes",
                self.id
            ))
        })?;
        Ok(ApiToken {
            id: TokenId::from_uuid(parse_uuid(&self.id)?),
            account: AccountName::parse(&self.account).map_err(corrupt)?,
            name: self.name,
            hint: self.hint,
            hash: TokenHash(hash),
            created_at: parse_time(&self.created_at)?,
            created_by: Actor::named(&self.created_by),
            expires_at: parse_time(&self.expires_at)?,
            last_used_at: parse_optional_time(self.last_used_at.as_deref())?,
            revoked_at: parse_optional_time(self.revoked_at.as_deref())?,
            revoked_by: self.revoked_by.as_deref().map(Actor::named),
        })
    }
}

/// Whether the account exists. (Inside a `BEGIN IMMEDIATE` transaction nobody else
/// writes until it ends, so it cannot vanish meanwhile.)
fn account_exists(connection: &mut SqliteConnection, name: &str) -> QueryResult<bool> {
    Ok(statement(
        "SELECT count(*) AS count FROM accounts WHERE name = ?",
        vec![name.into()],
    )
    .get_result::<Count>(connection)?
    .count
        > 0)
}

/// The accounts of `rows` with their grants, in the order of `rows`.
fn with_grants(
    connection: &mut SqliteConnection,
    rows: Vec<AccountRow>,
) -> Result<Vec<Account>, RepositoryError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let names = json_list(rows.iter().map(|row| row.name.as_str()));
    let grant_rows = statement(
        "SELECT account, role, scope FROM account_grants \
         WHERE account IN (SELECT value FROM json_each(?))",
        vec![names.into()],
    )
    .load::<GrantRow>(connection)
    .map_err(query_failed("reading grants"))?;
    let mut grants: HashMap<String, Vec<GrantRow>> = HashMap::new();
    for grant in grant_rows {
        grants.entry(grant.account.clone()).or_default().push(grant);
    }
    rows.into_iter()
        .map(|row| {
            let own = grants.remove(&row.name).unwrap_or_default();
            row.into_account(own)
        })
        .collect()
}

/// Accounts, grants and API tokens in SQLite.
#[derive(Debug, Clone)]
pub struct SqliteAccessRepository {
    database: SqliteDatabase,
}

impl SqliteAccessRepository {
    pub(crate) fn new(database: SqliteDatabase) -> Self {
        Self { database }
    }

    /// Adds (`add`) or removes a grant, auditing only a change.
    async fn change_grant(
        &self,
        account: &AccountName,
        grant: &Grant,
        audit: &AuditEntry,
        add: bool,
    ) -> Result<GrantChange, RepositoryError> {
        let binds = grant_binds(account, grant);
        let name = account.as_str().to_owned();
        let audit = audit.clone();
        with_connection(&self.database, move |connection| {
            connection
                .immediate_transaction(|connection| {
                    if !account_exists(connection, &name)? {
                        return Ok(GrantChange::AccountNotFound);
                    }
                    let sql = if add {
                        "INSERT INTO account_grants (account, role, scope) VALUES (?, ?, ?) \
                         ON CONFLICT DO NOTHING"
                    } else {
                        "DELETE FROM account_grants WHERE account = ? AND role = ? AND scope = ?"
                    };
                    if statement(sql, binds).execute(connection)? == 0 {
                        return Ok(GrantChange::Unchanged);
                    }
                    record_audit(connection, &audit)?;
                    Ok(GrantChange::Changed)
                })
                .map_err(query_failed(if add {
                    "granting a role"
                } else {
                    "revoking a role"
                }))
        })
        .await
    }
}

#[async_trait]
impl AccessRepository for SqliteAccessRepository {
    #[tracing::instrument(skip_all, fields(account = %account.name))]
    async fn insert_account(
        &self,
        account: &Account,
        audit: &AuditEntry,
    ) -> Result<(), InsertAccountError> {
        let row: Vec<Bind> = vec![
            account.name.as_str().into(),
            account.kind.as_str().into(),
            time_text(account.created_at).into(),
            account.created_by.as_str().into(),
        ];
        let grants: Vec<Vec<Bind>> = account
            .grants
            .iter()
            .map(|grant| grant_binds(&account.name, grant))
            .collect();
        let audit = audit.clone();
        with_connection(&self.database, move |connection| {
            let inserted = connection
                .immediate_transaction::<_, DieselError, _>(|connection| {
                    let inserted = statement(
                        "INSERT INTO accounts (name, kind, created_at, created_by) \
                         VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                        row,
                    )
                    .execute(connection)?;
                    if inserted == 0 {
                        return Ok(false);
                    }
                    for grant in grants {
                        statement(
                            "INSERT INTO account_grants (account, role, scope) VALUES (?, ?, ?) \
                             ON CONFLICT DO NOTHING",
                            grant,
                        )
                        .execute(connection)?;
                    }
                    record_audit(connection, &audit)?;
                    Ok(true)
                })
                .map_err(query_failed("inserting an account"))?;
            if inserted {
                Ok(())
            } else {
                Err(InsertAccountError::Duplicate)
            }
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(account = %name))]
    async fn find_account(&self, name: &AccountName) -> Result<Option<Account>, RepositoryError> {
        let name = name.as_str().to_owned();
        with_connection(&self.database, move |connection| {
            let row = statement(
                "SELECT name, kind, created_at, created_by FROM accounts WHERE name = ?",
                vec![name.into()],
            )
            .get_result::<AccountRow>(connection)
            .optional()
            .map_err(query_failed("finding an account"))?;
            Ok(with_grants(connection, row.into_iter().collect())?.pop())
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn list_accounts(&self) -> Result<Vec<Account>, RepositoryError> {
        with_connection(&self.database, move |connection| {
            let rows = statement(
                "SELECT name, kind, created_at, created_by FROM accounts ORDER BY name",
                Vec::new(),
            )
            .load::<AccountRow>(connection)
            .map_err(query_failed("listing accounts"))?;
            with_grants(connection, rows)
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(%account, %grant))]
    async fn add_grant(
        &self,
        account: &AccountName,
        grant: &Grant,
        audit: &AuditEntry,
    ) -> Result<GrantChange, RepositoryError> {
        self.change_grant(account, grant, audit, true).await
    }

    #[tracing::instrument(skip_all, fields(%account, %grant))]
    async fn remove_grant(
        &self,
        account: &AccountName,
        grant: &Grant,
        audit: &AuditEntry,
    ) -> Result<GrantChange, RepositoryError> {
        self.change_grant(account, grant, audit, false).await
    }

    #[tracing::instrument(skip_all, fields(token.id = %token.id, account = %token.account))]
    async fn insert_token(
        &self,
        token: &ApiToken,
        audit: &AuditEntry,
    ) -> Result<(), InsertTokenError> {
        let binds = token_binds(token);
        let account = token.account.as_str().to_owned();
        let audit = audit.clone();
        with_connection(&self.database, move |connection| {
            let inserted = connection
                .immediate_transaction::<_, DieselError, _>(|connection| {
                    if !account_exists(connection, &account)? {
                        return Ok(false);
                    }
                    statement(
                        format!(
                            "INSERT INTO api_tokens ({TOKEN_COLUMNS}) \
                             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                        ),
                        binds,
                    )
                    .execute(connection)?;
                    record_audit(connection, &audit)?;
                    Ok(true)
                })
                .map_err(query_failed("inserting a token"))?;
            if inserted {
                Ok(())
            } else {
                Err(InsertTokenError::AccountNotFound)
            }
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn find_token(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<(ApiToken, Account)>, RepositoryError> {
        let hash = hash.as_bytes().to_vec();
        with_connection(&self.database, move |connection| {
            // One read transaction: the token and its account as of one moment.
            let found = connection
                .transaction::<_, DieselError, _>(|connection| {
                    let Some(token) = statement(
                        format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE token_hash = ?"),
                        vec![hash.into()],
                    )
                    .get_result::<TokenRow>(connection)
                    .optional()?
                    else {
                        return Ok(None);
                    };
                    let account = statement(
                        "SELECT name, kind, created_at, created_by FROM accounts WHERE name = ?",
                        vec![token.account.clone().into()],
                    )
                    .get_result::<AccountRow>(connection)
                    .optional()?;
                    let grants = statement(
                        "SELECT account, role, scope FROM account_grants WHERE account = ?",
                        vec![token.account.clone().into()],
                    )
                    .load::<GrantRow>(connection)?;
                    Ok(account.map(|account| (token, account, grants)))
                })
                .map_err(query_failed("finding a token"))?;
            let Some((token, account, grants)) = found else {
                return Ok(None);
            };
            Ok(Some((token.into_token()?, account.into_account(grants)?)))
        })
        .await
    }

    #[tracing::instrument(skip(self))]
    async fn find_token_by_id(&self, id: TokenId) -> Result<Option<ApiToken>, RepositoryError> {
        with_connection(&self.database, move |connection| {
            statement(
                format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = ?"),
                vec![uuid_text(id.as_uuid()).into()],
            )
            .get_result::<TokenRow>(connection)
            .optional()
            .map_err(query_failed("finding a token by id"))?
            .map(TokenRow::into_token)
            .transpose()
        })
        .await
    }

    #[tracing::instrument(skip(self))]
    async fn list_tokens(
        &self,
        account: Option<AccountName>,
    ) -> Result<Vec<ApiToken>, RepositoryError> {
        let mut sql = format!("SELECT {TOKEN_COLUMNS} FROM api_tokens");
        let mut binds: Vec<Bind> = Vec::new();
        if let Some(account) = &account {
            sql.push_str(" WHERE account = ?");
            binds.push(account.as_str().into());
        }
        sql.push_str(" ORDER BY created_at DESC, id DESC");
        with_connection(&self.database, move |connection| {
            statement(sql, binds)
                .load::<TokenRow>(connection)
                .map_err(query_failed("listing tokens"))?
                .into_iter()
                .map(TokenRow::into_token)
                .collect()
        })
        .await
    }

    #[tracing::instrument(skip(self, by, audit))]
    async fn revoke_token(
        &self,
        id: TokenId,
        by: &Actor,
        at: DateTime<Utc>,
        audit: &AuditEntry,
    ) -> Result<RevokeTokenOutcome, RepositoryError> {
        let by = by.as_str().to_owned();
        let audit = audit.clone();
        let id = uuid_text(id.as_uuid());
        with_connection(&self.database, move |connection| {
            connection
                .immediate_transaction(|connection| {
                    let revoked = statement(
                        "UPDATE api_tokens SET revoked_at = ?, revoked_by = ? \
                         WHERE id = ? AND revoked_at IS NULL",
                        vec![time_text(at).into(), by.into(), id.clone().into()],
                    )
                    .execute(connection)?;
                    if revoked > 0 {
                        record_audit(connection, &audit)?;
                        return Ok(RevokeTokenOutcome::Revoked);
                    }
                    let known = statement(
                        "SELECT count(*) AS count FROM api_tokens WHERE id = ?",
                        vec![id.into()],
                    )
                    .get_result::<Count>(connection)?
                    .count
                        > 0;
                    Ok(if known {
                        RevokeTokenOutcome::AlreadyRevoked
                    } else {
                        RevokeTokenOutcome::NotFound
                    })
                })
                .map_err(query_failed("revoking a token"))
        })
        .await
    }

    #[tracing::instrument(skip(self))]
    async fn touch_token(&self, id: TokenId, at: DateTime<Utc>) -> Result<(), RepositoryError> {
        let binds: Vec<Bind> = vec![
            time_text(at).into(),
            uuid_text(id.as_uuid()).into(),
            time_text(at).into(),
        ];
        with_connection(&self.database, move |connection| {
            // Only ever forwards: requests finishing out of order cannot move it back,
            // and an unchanged value costs no write.
            connection
                .immediate_transaction::<_, DieselError, _>(|connection| {
                    statement(
                        "UPDATE api_tokens SET last_used_at = ? \
                         WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)",
                        binds,
                    )
                    .execute(connection)
                })
                .map(drop)
                .map_err(query_failed("recording a token's use"))
        })
        .await
    }
}
