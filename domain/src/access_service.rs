//! The access use cases: authenticate a token, manage accounts, grants and tokens, and
//! read the audit trail.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, SubsecRound as _, Utc};

use crate::access::{
    AccessDenied, Account, AccountKind, AccountName, Caller, Grant, Permission, Principal,
};
use crate::audit::{AuditAction, AuditEntry, AuditQuery};
use crate::changes::{Change, ChangeFeed};
use crate::pagination::Page;
use crate::ports::{
    AccessRepository, AuditRepository, GrantChange, InsertAccountError, InsertTokenError,
    RepositoryError, RevokeTokenOutcome,
};
use crate::token::{ApiToken, MalformedToken, TokenHash, TokenId, TokenSecret};
use crate::validation::FieldError;

/// Why a presented token does not authenticate. Callers answer all of them alike (401),
/// so a client learns nothing about other people's tokens.
#[derive(Debug, thiserror::Error)]
pub enum AuthenticationError {
    #[error("the token is malformed")]
    Malformed(#[from] MalformedToken),
    #[error("the token is unknown")]
    Unknown,
    #[error("the token has expired")]
    Expired,
    #[error("the token has been revoked")]
    Revoked,
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

/// Why an access use case changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error(transparent)]
    Forbidden(#[from] AccessDenied),
    #[error("{}: {}", .0.field, .0.reason)]
    Invalid(FieldError),
    #[error("the account {0} exists already")]
    AccountExists(AccountName),
    #[error("no account is named {0}")]
    AccountNotFound(AccountName),
    #[error("no token has this id")]
    TokenNotFound,
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

/// A new account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAccount {
    pub name: AccountName,
    pub kind: AccountKind,
    pub grants: Vec<Grant>,
}

/// A token to issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    /// Whose token; the caller's own account when `None`.
    pub account: Option<AccountName>,
    pub name: String,
    /// How long it lives; [`AccessService::DEFAULT_TOKEN_LIFETIME`] when `None`.
    pub expires_in: Option<Duration>,
}

/// A token just issued: its record and its secret, shown this once.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: ApiToken,
    pub secret: TokenSecret,
}

/// Who a token authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    pub principal: Principal,
    pub account: AccountName,
    pub token: TokenId,
    /// The token's hash, to check the credential again later ([`AccessService::authenticate_hash`]).
    pub hash: TokenHash,
    pub expires_at: DateTime<Utc>,
}

/// Why a token was refused, for the negative cache.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    Unknown,
    Expired,
    Revoked,
}

impl From<Refusal> for AuthenticationError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Unknown => Self::Unknown,
            Refusal::Expired => Self::Expired,
            Refusal::Revoked => Self::Revoked,
        }
    }
}

#[derive(Debug, Clone)]
struct Cached {
    authenticated: Authenticated,
    fetched: Instant,
    touched: Instant,
}

/// How long an authenticated token is trusted without asking the repository again, and
/// how often its last-used time is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthenticationCache {
    /// A revocation or a change of grants made through another Kubernaut process takes
    /// effect within this time (at once through this one).
    pub ttl: Duration,
    pub touch_every: Duration,
    /// How long a refused token (unknown, expired or revoked) is refused without asking
    /// the repository again: a client retrying a bad token in a loop costs no query.
    /// Refusals are final (a token never comes back), so this only bounds the memory.
    pub refusal_ttl: Duration,
}

impl Default for AuthenticationCache {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(5),
            touch_every: Duration::from_secs(60),
            refusal_ttl: Duration::from_secs(30),
        }
    }
}

const MAX_CACHED: usize = 10_000;

/// Accounts, grants, tokens and the audit trail.
#[derive(Clone)]
pub struct AccessService {
    repository: Arc<dyn AccessRepository>,
    audit: Arc<dyn AuditRepository>,
    cache: Arc<Mutex<HashMap<TokenHash, Cached>>>,
    /// Tokens refused lately, and why: the negative cache.
    refused: Arc<Mutex<HashMap<TokenHash, (Instant, Refusal)>>>,
    cache_settings: AuthenticationCache,
    /// Bumped whenever this process revokes a token or changes grants, so that
    /// long-lived requests (event streams) check their credential again at once.
    credentials_changed: Arc<tokio::sync::watch::Sender<u64>>,
    /// Where this process announces the revocations and grant changes it makes (see
    /// [`Self::with_changes`]).
    changes: Option<Arc<dyn ChangeFeed>>,
}

impl std::fmt::Debug for AccessService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessService")
            .field("cache_settings", &self.cache_settings)
            .finish_non_exhaustive()
    }
}

fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

impl AccessService {
    /// A token lives this long unless asked otherwise.
    pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);
    /// No token lives longer than this: a leaked token must run out.
    pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(366 * 24 * 3600);

    pub fn new(repository: Arc<dyn AccessRepository>, audit: Arc<dyn AuditRepository>) -> Self {
        Self {
            repository,
            audit,
            cache: Arc::new(Mutex::new(HashMap::new())),
            refused: Arc::new(Mutex::new(HashMap::new())),
            cache_settings: AuthenticationCache::default(),
            credentials_changed: Arc::new(tokio::sync::watch::Sender::new(0)),
            changes: None,
        }
    }

    /// Announces every revocation and change of grants this process makes on `changes`
    /// ([`Change::Credentials`]), as PostgreSQL's triggers do for every replica. On a
    /// feed that only carries what is published (a single process on SQLite, with
    /// [`crate::changes::LocalChanges`]) this is how whoever follows the feed (the
    /// authentication caches, [`Self::follow_changes`]) hears of them at once.
    #[must_use]
    pub fn with_changes(mut self, changes: Arc<dyn ChangeFeed>) -> Self {
        self.changes = Some(changes);
        self
    }

    /// Tells the change feed, if any, that credentials changed.
    fn announce_credentials(&self) {
        if let Some(changes) = &self.changes {
            changes.publish(Change::Credentials);
        }
    }

    #[must_use]
    pub fn with_cache(mut self, settings: AuthenticationCache) -> Self {
        self.cache_settings = settings;
        self
    }

    fn forget_cached(&self) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.clear();
        }
        self.credentials_changed
            .send_modify(|generation| *generation = generation.wrapping_add(1));
    }

    /// Forgets every cached authentication whenever `changes` tells of a revocation or
    /// a change of grants made through any replica (or of missed changes), so that it
    /// takes effect everywhere at once; the cache's TTL remains the bound when the feed
    /// is down. Runs on a task of its own for as long as the feed lives.
    pub fn follow_changes(&self, mut changes: tokio::sync::broadcast::Receiver<Change>) {
        let service = self.clone();
        tokio::spawn(async move {
            loop {
                match changes.recv().await {
                    Ok(Change::Credentials | Change::Resync)
                    | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        service.forget_cached();
                    }
                    Ok(Change::Deployment { .. }) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    /// Changes each time this process revokes a token or changes an account's grants.
    /// A request that outlives its authentication (an event stream) waits on it, and on
    /// a timer for changes made through other processes, and then calls
    /// [`Self::authenticate_hash`] again.
    pub fn credentials_changed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.credentials_changed.subscribe()
    }

    /// Who `presented` (a token's secret, as sent) belongs to.
    ///
    /// # Errors
    /// [`AuthenticationError`] when it is malformed, unknown, expired or revoked.
    pub async fn authenticate(
        &self,
        presented: &str,
    ) -> Result<Authenticated, AuthenticationError> {
        let secret = TokenSecret::parse(presented)?;
        self.authenticate_hash(secret.hash()).await
    }

    /// Who the token with this hash belongs to: [`Self::authenticate`] once the secret
    /// is hashed. For checking a credential again later without keeping its secret.
    ///
    /// # Errors
    /// [`AuthenticationError`] when the token is unknown, expired or revoked.
    pub async fn authenticate_hash(
        &self,
        hash: TokenHash,
    ) -> Result<Authenticated, AuthenticationError> {
        let at = now();
        let cached = self
            .cache
            .lock()
            .ok()
            .and_then(|cache| cache.get(&hash).cloned());
        if let Some(cached) = cached
            && cached.fetched.elapsed() < self.cache_settings.ttl
        {
            if at >= cached.authenticated.expires_at {
                return Err(AuthenticationError::Expired);
            }
            if cached.touched.elapsed() >= self.cache_settings.touch_every {
                self.touch(hash, &cached.authenticated, at);
            }
            return Ok(cached.authenticated);
        }
        if let Some(refusal) = self.refused_lately(&hash) {
            return Err(refusal.into());
        }
        let Some((token, account)) = self.repository.find_token(&hash).await? else {
            return Err(self.refuse(hash, Refusal::Unknown));
        };
        if token.revoked_at.is_some() {
            return Err(self.refuse(hash, Refusal::Revoked));
        }
        if at >= token.expires_at {
            return Err(self.refuse(hash, Refusal::Expired));
        }
        let authenticated = Authenticated {
            principal: Principal::of(&account),
            account: account.name,
            token: token.id,
            hash,
            expires_at: token.expires_at,
        };
        let stale = token.last_used_at.is_none_or(|last| {
            (at - last).to_std().unwrap_or_default() >= self.cache_settings.touch_every
        });
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
            cache.insert(
                hash,
                Cached {
                    authenticated: authenticated.clone(),
                    fetched: Instant::now(),
                    touched: Instant::now(),
                },
            );
        }
        if stale {
            self.touch(hash, &authenticated, at);
        }
        Ok(authenticated)
    }

    fn refused_lately(&self, hash: &TokenHash) -> Option<Refusal> {
        let refused = self.refused.lock().ok()?;
        refused
            .get(hash)
            .filter(|(at, _)| at.elapsed() < self.cache_settings.refusal_ttl)
            .map(|(_, refusal)| *refusal)
    }

    fn refuse(&self, hash: TokenHash, refusal: Refusal) -> AuthenticationError {
        if let Ok(mut refused) = self.refused.lock() {
            if refused.len() >= MAX_CACHED {
                let ttl = self.cache_settings.refusal_ttl;
                refused.retain(|_, (at, _)| at.elapsed() < ttl);
                if refused.len() >= MAX_CACHED {
                    refused.clear();
                }
            }
            refused.insert(hash, (Instant::now(), refusal));
        }
        refusal.into()
    }

    /// Writes the token's last-used time in the background: a request never waits on it.
    fn touch(&self, hash: TokenHash, authenticated: &Authenticated, at: DateTime<Utc>) {
        if let Ok(mut cache) = self.cache.lock()
            && let Some(entry) = cache.get_mut(&hash)
        {
            entry.touched = Instant::now();
        }
        let repository = self.repository.clone();
        let id = authenticated.token;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(error) = repository.touch_token(id, at).await {
                    tracing::warn!(token = %id, %error, "could not record the token's last use");
                }
            });
        }
    }

    /// Creates an account with its grants. Admin only.
    ///
    /// # Errors
    /// [`AccessError::AccountExists`] when the name is taken.
    pub async fn create_account(
        &self,
        new: NewAccount,
        caller: &Caller,
    ) -> Result<Account, AccessError> {
        caller.require(Permission::Administer)?;
        let mut grants = new.grants;
        grants.sort();
        grants.dedup();
        let account = Account {
            name: new.name,
            kind: new.kind,
            grants,
            created_at: now(),
            created_by: caller.actor().clone(),
        };
        let audit = caller.audit(
            AuditAction::AccountCreated,
            format!("account/{}", account.name),
            serde_json::json!({
                "kind": account.kind.as_str(),
                "grants": account.grants.iter().map(ToString::to_string).collect::<Vec<_>>(),
            }),
        );
        match self.repository.insert_account(&account, &audit).await {
            Ok(()) => {
                // Grants were stored (as PostgreSQL's trigger on them announces).
                if !account.grants.is_empty() {
                    self.announce_credentials();
                }
                Ok(account)
            }
            Err(InsertAccountError::Duplicate) => Err(AccessError::AccountExists(account.name)),
            Err(InsertAccountError::Repository(error)) => Err(error.into()),
        }
    }

    /// Every account. Admin only.
    ///
    /// # Errors
    /// [`AccessError::Forbidden`] for anyone else.
    pub async fn list_accounts(&self, caller: &Caller) -> Result<Vec<Account>, AccessError> {
        caller.require(Permission::Administer)?;
        Ok(self.repository.list_accounts().await?)
    }

    /// The account named `name`: admins may read any, everyone their own.
    ///
    /// # Errors
    /// [`AccessError::AccountNotFound`], [`AccessError::Forbidden`].
    pub async fn account(
        &self,
        name: &AccountName,
        caller: &Caller,
    ) -> Result<Account, AccessError> {
        if caller.actor().as_str() != name.as_str() {
            caller.require(Permission::Administer)?;
        }
        self.repository
            .find_account(name)
            .await?
            .ok_or_else(|| AccessError::AccountNotFound(name.clone()))
    }

    /// Grants `grant` to the account. Admin only. Granting what is held changes nothing.
    ///
    /// # Errors
    /// [`AccessError::AccountNotFound`], [`AccessError::Forbidden`].
    pub async fn grant(
        &self,
        account: &AccountName,
        grant: Grant,
        caller: &Caller,
    ) -> Result<Account, AccessError> {
        self.change_grant(account, grant, caller, true).await
    }

    /// Takes `grant` from the account. Admin only. Taking what is not held changes nothing.
    ///
    /// # Errors
    /// [`AccessError::AccountNotFound`], [`AccessError::Forbidden`].
    pub async fn revoke_grant(
        &self,
        account: &AccountName,
        grant: Grant,
        caller: &Caller,
    ) -> Result<Account, AccessError> {
        self.change_grant(account, grant, caller, false).await
    }

    async fn change_grant(
        &self,
        account: &AccountName,
        grant: Grant,
        caller: &Caller,
        add: bool,
    ) -> Result<Account, AccessError> {
        caller.require(Permission::Administer)?;
        let (action, verb) = if add {
            (AuditAction::RoleGranted, "granted")
        } else {
            (AuditAction::RoleRevoked, "revoked")
        };
        let audit = caller.audit(
            action,
            format!("account/{account}"),
            serde_json::json!({
                "role": grant.role.as_str(),
                "scope": grant.scope.to_string(),
                "change": verb,
            }),
        );
        let change = if add {
            self.repository.add_grant(account, &grant, &audit).await?
        } else {
            self.repository
                .remove_grant(account, &grant, &audit)
                .await?
        };
        if change == GrantChange::AccountNotFound {
            return Err(AccessError::AccountNotFound(account.clone()));
        }
        self.forget_cached();
        if change == GrantChange::Changed {
            self.announce_credentials();
        }
        self.repository
            .find_account(account)
            .await?
            .ok_or_else(|| AccessError::AccountNotFound(account.clone()))
    }

    /// The account a token is for: the one named, or the caller's own.
    fn token_account(
        &self,
        named: Option<&AccountName>,
        caller: &Caller,
    ) -> Result<AccountName, AccessError> {
        let own = AccountName::parse(caller.actor().as_str()).ok();
        match named {
            Some(name) if own.as_ref() == Some(name) => Ok(name.clone()),
            Some(name) => {
                caller.require(Permission::Administer)?;
                Ok(name.clone())
            }
            None => own.ok_or_else(|| {
                AccessError::Invalid(FieldError::new(
                    "account",
                    format!("{} has no account: name one", caller.actor()),
                ))
            }),
        }
    }

    /// Issues a token. Everyone may issue tokens for their own account (they carry the
    /// account's grants, no more); admins for any account.
    ///
    /// # Errors
    /// [`AccessError::Invalid`] for a bad name or lifetime; [`AccessError::AccountNotFound`];
    /// [`AccessError::Forbidden`] for another's account without admin.
    pub async fn create_token(
        &self,
        new: NewToken,
        caller: &Caller,
    ) -> Result<IssuedToken, AccessError> {
        let account = self.token_account(new.account.as_ref(), caller)?;
        let name = new.name.trim().to_owned();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(AccessError::Invalid(FieldError::new(
                "name",
                "a token's name is 1 to 100 printable characters",
            )));
        }
        let lifetime = new.expires_in.unwrap_or(Self::DEFAULT_TOKEN_LIFETIME);
        if lifetime < Duration::from_secs(60) || lifetime > Self::MAX_TOKEN_LIFETIME {
            return Err(AccessError::Invalid(FieldError::new(
                "expires_in",
                "a token lives at least a minute and at most 366 days",
            )));
        }
        let created_at = now();
        let secret = TokenSecret::generate();
        let token = ApiToken {
            id: TokenId::generate(),
            account,
            name,
            hint: secret.hint(),
            hash: secret.hash(),
            created_at,
            created_by: caller.actor().clone(),
            expires_at: created_at
                + chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::days(90)),
            last_used_at: None,
            revoked_at: None,
            revoked_by: None,
        };
        let audit = caller.audit(
            AuditAction::TokenCreated,
            format!("token/{}", token.id),
            serde_json::json!({
                "account": token.account.as_str(),
                "name": token.name,
                "expires_at": token.expires_at,
            }),
        );
        match self.repository.insert_token(&token, &audit).await {
            Ok(()) => Ok(IssuedToken { token, secret }),
            Err(InsertTokenError::AccountNotFound) => {
                Err(AccessError::AccountNotFound(token.account))
            }
            Err(InsertTokenError::Repository(error)) => Err(error.into()),
        }
    }

    /// Tokens, newest first: admins see everyone's (or `account`'s), others their own.
    ///
    /// # Errors
    /// [`AccessError::Forbidden`] when a non-admin asks for another account's tokens.
    pub async fn list_tokens(
        &self,
        account: Option<&AccountName>,
        caller: &Caller,
    ) -> Result<Vec<ApiToken>, AccessError> {
        if account.is_none() && caller.allows(&Permission::Administer) {
            return Ok(self.repository.list_tokens(None).await?);
        }
        let account = self.token_account(account, caller)?;
        Ok(self.repository.list_tokens(Some(account)).await?)
    }

    /// Revokes a token: admins any, others their own. Revoking twice changes nothing.
    ///
    /// # Errors
    /// [`AccessError::TokenNotFound`] for unknown ids and others' tokens (a non-admin
    /// learns nothing about them).
    pub async fn revoke_token(
        &self,
        id: TokenId,
        caller: &Caller,
    ) -> Result<ApiToken, AccessError> {
        let token = self
            .repository
            .find_token_by_id(id)
            .await?
            .ok_or(AccessError::TokenNotFound)?;
        if token.account.as_str() != caller.actor().as_str()
            && !caller.allows(&Permission::Administer)
        {
            return Err(AccessError::TokenNotFound);
        }
        let audit = caller.audit(
            AuditAction::TokenRevoked,
            format!("token/{id}"),
            serde_json::json!({ "account": token.account.as_str(), "name": token.name }),
        );
        let outcome = self
            .repository
            .revoke_token(id, caller.actor(), now(), &audit)
            .await?;
        if outcome == RevokeTokenOutcome::NotFound {
            return Err(AccessError::TokenNotFound);
        }
        self.forget_cached();
        if outcome == RevokeTokenOutcome::Revoked {
            self.announce_credentials();
        }
        self.repository
            .find_token_by_id(id)
            .await?
            .ok_or(AccessError::TokenNotFound)
    }

    /// Sets up access on a fresh install, with every permission as `caller` (use
    /// [`Caller::system`]): creates the account when it is missing, grants it `grant`
    /// when it lacks it, and issues a token named `token_name`.
    ///
    /// # Errors
    /// [`AccessError`] when storing fails or the token is invalid.
    pub async fn bootstrap(
        &self,
        account: NewAccount,
        token_name: &str,
        expires_in: Option<Duration>,
        caller: &Caller,
    ) -> Result<IssuedToken, AccessError> {
        let name = account.name.clone();
        let grants = account.grants.clone();
        match self.create_account(account, caller).await {
            Ok(_) => {}
            Err(AccessError::AccountExists(_)) => {
                for grant in grants {
                    self.grant(&name, grant, caller).await?;
                }
            }
            Err(error) => return Err(error),
        }
        self.create_token(
            NewToken {
                account: Some(name),
                name: token_name.to_owned(),
                expires_in,
            },
            caller,
        )
        .await
    }

    /// A page of the audit trail, newest first. Admin only.
    ///
    /// # Errors
    /// [`AccessError::Forbidden`] for anyone else.
    pub async fn audit_trail(
        &self,
        query: &AuditQuery,
        caller: &Caller,
    ) -> Result<Page<AuditEntry>, AccessError> {
        caller.require(Permission::Administer)?;
        let limit = usize::from(query.limit.get());
        let mut items = self.audit.list(query, limit + 1).await?;
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(AuditEntry::cursor)
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }
}

#[cfg(test)]
#[path = "access_service_tests.rs"]
mod tests;
