//! [`AccessRepository`] on PostgreSQL: accounts in `accounts`, their grants in
//! `account_grants`, API tokens (their hashes, never their secrets) in `api_tokens`.
//! Every change stores its audit record in its own transaction, and only when
//! something changed.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use diesel::dsl::exists;
use diesel::pg::Pg;
use diesel::prelude::*;
use kubernaut_domain::access::{Account, AccountKind, AccountName, Grant, Role, Scope};
use kubernaut_domain::actor::Actor;
use kubernaut_domain::audit::AuditEntry;
use kubernaut_domain::ports::{
    AccessRepository, GrantChange, InsertAccountError, InsertTokenError, RepositoryError,
    RevokeTokenOutcome,
};
use kubernaut_domain::token::{ApiToken, TokenHash, TokenId};
use uuid::Uuid;

use crate::audit_repository::record_audit;
use crate::blocking::{query_failed, with_connection, with_connection_read};
use crate::database::PgPool;
use crate::schema::{account_grants, accounts, api_tokens};

/// An account as a row of `accounts`; its grants are rows of `account_grants`.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = accounts, check_for_backend(Pg))]
struct AccountRow {
    name: String,
    kind: String,
    created_at: DateTime<Utc>,
    created_by: String,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = account_grants, check_for_backend(Pg))]
struct GrantRow {
    account: String,
    role: String,
    scope: String,
}

/// A token as a row of `api_tokens`.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = api_tokens, check_for_backend(Pg))]
// `None` is written as NULL rather than DEFAULT, so the insert stays prepared.
#[diesel(treat_none_as_default_value = false)]
struct TokenRow {
    id: Uuid,
    account: String,
    name: String,
    hint: String,
    token_hash: Vec<u8>,
    created_at: DateTime<Utc>,
    created_by: String,
    expires_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    revoked_by: Option<String>,
}

/// A stored value that breaks a domain rule: the tables were changed behind
/// Kubernaut's back.
fn corrupt(what: impl std::fmt::Display) -> RepositoryError {
    RepositoryError::new(format!("a stored value is invalid: {what}"))
}

impl GrantRow {
    fn new(account: &AccountName, grant: &Grant) -> Self {
        Self {
            account: account.as_str().to_owned(),
            role: grant.role.as_str().to_owned(),
            scope: grant.scope.to_string(),
        }
    }

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
    fn from_account(account: &Account) -> Self {
        Self {
            name: account.name.as_str().to_owned(),
            kind: account.kind.as_str().to_owned(),
            created_at: account.created_at,
            created_by: account.created_by.as_str().to_owned(),
        }
    }

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
            created_at: self.created_at,
            created_by: Actor::named(&self.created_by),
        })
    }
}

impl TokenRow {
    fn from_token(token: &ApiToken) -> Self {
        Self {
            id: token.id.as_uuid(),
            account: token.account.as_str().to_owned(),
            name: token.name.clone(),
            hint: token.hint.clone(),
            token_hash: token.hash.as_bytes().to_vec(),
            created_at: token.created_at,
            created_by: token.created_by.as_str().to_owned(),
            expires_at: token.expires_at,
            last_used_at: token.last_used_at,
            revoked_at: token.revoked_at,
            revoked_by: token.revoked_by.as_ref().map(|by| by.as_str().to_owned()),
        }
    }

    fn into_token(self) -> Result<ApiToken, RepositoryError> {
        let hash: [u8; 32] = self.token_hash.try_into().map_err(|_| {
            corrupt(format_args!(
                "the hash of token {} is not 32 bytes",
                self.id
            ))
        })?;
        Ok(ApiToken {
            id: TokenId::from_uuid(self.id),
            account: AccountName::parse(&self.account).map_err(corrupt)?,
            name: self.name,
            hint: self.hint,
            hash: TokenHash(hash),
            created_at: self.created_at,
            created_by: Actor::named(&self.created_by),
            expires_at: self.expires_at,
            last_used_at: self.last_used_at,
            revoked_at: self.revoked_at,
            revoked_by: self.revoked_by.as_deref().map(Actor::named),
        })
    }
}

/// Whether the account exists, locking its row against concurrent removal until the
/// transaction ends.
fn lock_account(connection: &mut PgConnection, name: &str) -> QueryResult<bool> {
    accounts::table
        .find(name)
        .select(accounts::name)
        .for_share()
        .first::<String>(connection)
        .optional()
        .map(|found| found.is_some())
}

/// The accounts of `rows` with their grants, in the order of `rows`.
fn with_grants(
    connection: &mut PgConnection,
    rows: Vec<AccountRow>,
) -> Result<Vec<Account>, RepositoryError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let names: Vec<&str> = rows.iter().map(|row| row.name.as_str()).collect();
    let grant_rows: Vec<GrantRow> = account_grants::table
        .filter(account_grants::account.eq_any(&names))
        .select(GrantRow::as_select())
        .load(connection)
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

/// Accounts, grants and API tokens in PostgreSQL. Every query runs on tokio's blocking
/// pool.
#[derive(Debug, Clone)]
pub struct PostgresAccessRepository {
    pool: PgPool,
}

impl PostgresAccessRepository {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl AccessRepository for PostgresAccessRepository {
    #[tracing::instrument(skip_all, fields(account = %account.name))]
    async fn insert_account(
        &self,
        account: &Account,
        audit: &AuditEntry,
    ) -> Result<(), InsertAccountError> {
        let row = AccountRow::from_account(account);
        let grants: Vec<GrantRow> = account
            .grants
            .iter()
            .map(|grant| GrantRow::new(&account.name, grant))
            .collect();
        let audit = audit.clone();
        with_connection(&self.pool, move |connection| {
            let inserted = connection
                .transaction(|connection| {
                    // A taken name is skipped rather than raised, so the server's log
                    // holds no unique-violation error for it.
                    let inserted = diesel::insert_into(accounts::table)
                        .values(&row)
                        .on_conflict_do_nothing()
                        .execute(connection)?;
                    if inserted == 0 {
                        return Ok(false);
                    }
                    for grant in &grants {
                        diesel::insert_into(account_grants::table)
                            .values(grant)
                            .on_conflict_do_nothing()
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
        with_connection_read(&self.pool, move |connection| {
            let row = accounts::table
                .find(&name)
                .select(AccountRow::as_select())
                .first(connection)
                .optional()
                .map_err(query_failed("finding an account"))?;
            Ok(with_grants(connection, row.into_iter().collect())?.pop())
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn list_accounts(&self) -> Result<Vec<Account>, RepositoryError> {
        with_connection_read(&self.pool, move |connection| {
            let rows = accounts::table
                .order(accounts::name.asc())
                .select(AccountRow::as_select())
                .load(connection)
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
        let row = GrantRow::new(account, grant);
        let audit = audit.clone();
        with_connection(&self.pool, move |connection| {
            connection
                .transaction(|connection| {
                    if !lock_account(connection, &row.account)? {
                        return Ok(GrantChange::AccountNotFound);
                    }
                    let added = diesel::insert_into(account_grants::table)
                        .values(&row)
                        .on_conflict_do_nothing()
                        .execute(connection)?;
                    if added == 0 {
                        return Ok(GrantChange::Unchanged);
                    }
                    record_audit(connection, &audit)?;
                    Ok(GrantChange::Changed)
                })
                .map_err(query_failed("granting a role"))
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(%account, %grant))]
    async fn remove_grant(
        &self,
        account: &AccountName,
        grant: &Grant,
        audit: &AuditEntry,
    ) -> Result<GrantChange, RepositoryError> {
        let row = GrantRow::new(account, grant);
        let audit = audit.clone();
        with_connection(&self.pool, move |connection| {
            connection
                .transaction(|connection| {
                    if !lock_account(connection, &row.account)? {
                        return Ok(GrantChange::AccountNotFound);
                    }
                    let removed = diesel::delete(
                        account_grants::table
                            .filter(account_grants::account.eq(&row.account))
                            .filter(account_grants::role.eq(&row.role))
                            .filter(account_grants::scope.eq(&row.scope)),
                    )
                    .execute(connection)?;
                    if removed == 0 {
                        return Ok(GrantChange::Unchanged);
                    }
                    record_audit(connection, &audit)?;
                    Ok(GrantChange::Changed)
                })
                .map_err(query_failed("revoking a role"))
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(token.id = %token.id, account = %token.account))]
    async fn insert_token(
        &self,
        token: &ApiToken,
        audit: &AuditEntry,
    ) -> Result<(), InsertTokenError> {
        let row = TokenRow::from_token(token);
        let audit = audit.clone();
        with_connection(&self.pool, move |connection| {
            let inserted = connection
                .transaction(|connection| {
                    if !lock_account(connection, &row.account)? {
                        return Ok(false);
                    }
                    diesel::insert_into(api_tokens::table)
                        .values(&row)
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
        with_connection_read(&self.pool, move |connection| {
            let found = api_tokens::table
                .inner_join(accounts::table)
                .filter(api_tokens::token_hash.eq(&hash))
                .select((TokenRow::as_select(), AccountRow::as_select()))
                .first::<(TokenRow, AccountRow)>(connection)
                .optional()
                .map_err(query_failed("finding a token"))?;
            let Some((token, account)) = found else {
                return Ok(None);
            };
            let token = token.into_token()?;
            let account = with_grants(connection, vec![account])?
                .pop()
                .ok_or_else(|| RepositoryError::new("the token's account vanished"))?;
            Ok(Some((token, account)))
        })
        .await
    }

    #[tracing::instrument(skip(self))]
    async fn find_token_by_id(&self, id: TokenId) -> Result<Option<ApiToken>, RepositoryError> {
        with_connection_read(&self.pool, move |connection| {
            api_tokens::table
                .find(id.as_uuid())
                .select(TokenRow::as_select())
                .first(connection)
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
        with_connection_read(&self.pool, move |connection| {
            let mut select = api_tokens::table.select(TokenRow::as_select()).into_boxed();
            if let Some(account) = &account {
                select = select.filter(api_tokens::account.eq(account.as_str().to_owned()));
            }
            select
                .order((api_tokens::created_at.desc(), api_tokens::id.desc()))
                .load(connection)
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
        with_connection(&self.pool, move |connection| {
            connection
                .transaction(|connection| {
                    let usable = api_tokens::table
                        .find(id.as_uuid())
                        .filter(api_tokens::revoked_at.is_null());
                    let revoked = diesel::update(usable)
                        .set((api_tokens::revoked_at.eq(at), api_tokens::revoked_by.eq(by)))
                        .execute(connection)?;
                    if revoked > 0 {
                        record_audit(connection, &audit)?;
                        return Ok(RevokeTokenOutcome::Revoked);
                    }
                    let known = diesel::select(exists(api_tokens::table.find(id.as_uuid())))
                        .get_result::<bool>(connection)?;
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
        with_connection(&self.pool, move |connection| {
            // Only ever forwards: requests finishing out of order cannot move it back,
            // and an unchanged value costs no write.
            let older = api_tokens::table.find(id.as_uuid()).filter(
                api_tokens::last_used_at
                    .is_null()
                    .or(api_tokens::last_used_at.lt(at)),
            );
            diesel::update(older)
                .set(api_tokens::last_used_at.eq(at))
                .execute(connection)
                .map(drop)
                .map_err(query_failed("recording a token's use"))
        })
        .await
    }
}
