//! Contract tests of [`AccessService`] over an in-memory repository.

use std::sync::Mutex;

use async_trait::async_trait;

use super::*;
use crate::access::{Role, Scope};
use crate::actor::Actor;
use crate::ports::MockAuditRepository;

#[derive(Default)]
struct Store {
    accounts: Vec<Account>,
    tokens: Vec<ApiToken>,
    audit: Vec<AuditEntry>,
    touched: usize,
    lookups: usize,
}

#[derive(Default)]
struct InMemory(Mutex<Store>);

impl InMemory {
    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.0.lock().expect("lock")
    }
}

#[async_trait]
impl AccessRepository for InMemory {
    async fn insert_account(
        &self,
        account: &Account,
        audit: &AuditEntry,
    ) -> Result<(), InsertAccountError> {
        let mut store = self.store();
        if store.accounts.iter().any(|a| a.name == account.name) {
            return Err(InsertAccountError::Duplicate);
        }
        store.accounts.push(account.clone());
        store.audit.push(audit.clone());
        Ok(())
    }

    async fn find_account(&self, name: &AccountName) -> Result<Option<Account>, RepositoryError> {
        Ok(self
            .store()
            .accounts
            .iter()
            .find(|a| &a.name == name)
            .cloned())
    }

    async fn list_accounts(&self) -> Result<Vec<Account>, RepositoryError> {
        Ok(self.store().accounts.clone())
    }

    async fn add_grant(
        &self,
        account: &AccountName,
        grant: &Grant,
        audit: &AuditEntry,
    ) -> Result<GrantChange, RepositoryError> {
        let mut store = self.store();
        let Some(found) = store.accounts.iter_mut().find(|a| &a.name == account) else {
            return Ok(GrantChange::AccountNotFound);
        };
        if found.grants.contains(grant) {
            return Ok(GrantChange::Unchanged);
        }
        found.grants.push(grant.clone());
        store.audit.push(audit.clone());
        Ok(GrantChange::Changed)
    }

    async fn remove_grant(
        &self,
        account: &AccountName,
        grant: &Grant,
        audit: &AuditEntry,
    ) -> Result<GrantChange, RepositoryError> {
        let mut store = self.store();
        let Some(found) = store.accounts.iter_mut().find(|a| &a.name == account) else {
            return Ok(GrantChange::AccountNotFound);
        };
        let before = found.grants.len();
        found.grants.retain(|g| g != grant);
        if found.grants.len() == before {
            return Ok(GrantChange::Unchanged);
        }
        store.audit.push(audit.clone());
        Ok(GrantChange::Changed)
    }

    async fn insert_token(
        &self,
        token: &ApiToken,
        audit: &AuditEntry,
    ) -> Result<(), InsertTokenError> {
        let mut store = self.store();
        if !store.accounts.iter().any(|a| a.name == token.account) {
            return Err(InsertTokenError::AccountNotFound);
        }
        store.tokens.push(token.clone());
        store.audit.push(audit.clone());
        Ok(())
    }

    async fn find_token(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<(ApiToken, Account)>, RepositoryError> {
        let mut store = self.store();
        store.lookups += 1;
        Ok(store
            .tokens
            .iter()
            .find(|t| &t.hash == hash)
            .and_then(|token| {
                let account = store.accounts.iter().find(|a| a.name == token.account)?;
                Some((token.clone(), account.clone()))
            }))
    }

    async fn find_token_by_id(&self, id: TokenId) -> Result<Option<ApiToken>, RepositoryError> {
        Ok(self.store().tokens.iter().find(|t| t.id == id).cloned())
    }

    async fn list_tokens(
        &self,
        account: Option<AccountName>,
    ) -> Result<Vec<ApiToken>, RepositoryError> {
        Ok(self
            .store()
            .tokens
            .iter()
            .filter(|t| account.as_ref().is_none_or(|a| &t.account == a))
            .cloned()
            .collect())
    }

    async fn revoke_token(
        &self,
        id: TokenId,
        by: &Actor,
        at: DateTime<Utc>,
        audit: &AuditEntry,
    ) -> Result<RevokeTokenOutcome, RepositoryError> {
        let mut store = self.store();
        let Some(token) = store.tokens.iter_mut().find(|t| t.id == id) else {
            return Ok(RevokeTokenOutcome::NotFound);
        };
        if token.revoked_at.is_some() {
            return Ok(RevokeTokenOutcome::AlreadyRevoked);
        }
        token.revoked_at = Some(at);
        token.revoked_by = Some(by.clone());
        store.audit.push(audit.clone());
        Ok(RevokeTokenOutcome::Revoked)
    }

    async fn touch_token(&self, id: TokenId, at: DateTime<Utc>) -> Result<(), RepositoryError> {
        let mut store = self.store();
        if let Some(token) = store.tokens.iter_mut().find(|t| t.id == id) {
            token.last_used_at = Some(at);
        }
        store.touched += 1;
        Ok(())
    }
}

fn name(text: &str) -> AccountName {
    AccountName::parse(text).expect("account name")
}

fn setup() -> (AccessService, Arc<InMemory>) {
    let repository = Arc::new(InMemory::default());
    let service = AccessService::new(repository.clone(), Arc::new(MockAuditRepository::new()));
    (service, repository)
}

async fn account_with_token(
    service: &AccessService,
    account: &str,
    grants: Vec<Grant>,
) -> IssuedToken {
    service
        .bootstrap(
            NewAccount {
                name: name(account),
                kind: AccountKind::Person,
                grants,
            },
            "first",
            None,
            &Caller::system("setup"),
        )
        .await
        .expect("bootstrap")
}

async fn caller_of(service: &AccessService, token: &IssuedToken) -> Caller {
    let authenticated = service
        .authenticate(token.secret.expose())
        .await
        .expect("authenticates");
    Caller::new(authenticated.principal)
}

#[tokio::test]
async fn a_token_authenticates_its_account_with_its_grants() {
    let (service, repository) = setup();
    let deployer =
        Grant::new(Role::Deployer, Scope::parse("staging/*").expect("scope")).expect("grant");
    let issued = account_with_token(&service, "alice", vec![deployer.clone()]).await;
    let authenticated = service
        .authenticate(issued.secret.expose())
        .await
        .expect("authenticates");
    assert_eq!(authenticated.account, name("alice"));
    assert_eq!(authenticated.principal.grants, vec![deployer]);
    assert_eq!(authenticated.token, issued.token.id);
    // Only the hash is stored.
    let stored = repository.store().tokens[0].clone();
    assert_eq!(stored.hash, issued.secret.hash());
    assert!(!format!("{stored:?}").contains(&issued.secret.expose()[4..]));
    tokio::task::yield_now().await;
    assert_eq!(repository.store().touched, 1, "the first use is recorded");
}

#[tokio::test]
async fn unknown_malformed_expired_and_revoked_tokens_do_not_authenticate() {
    let (service, repository) = setup();
    let issued = account_with_token(&service, "alice", vec![Grant::global(Role::Admin)]).await;
    assert!(matches!(
        service.authenticate("knt_nope").await,
        Err(AuthenticationError::Malformed(_))
    ));
    assert!(matches!(
        service.authenticate(TokenSecret::generate().expose()).await,
        Err(AuthenticationError::Unknown)
    ));

    repository.store().tokens[0].expires_at = Utc::now() - chrono::Duration::seconds(1);
    assert!(matches!(
        service.authenticate(issued.secret.expose()).await,
        Err(AuthenticationError::Expired)
    ));

    let other = service
        .create_token(
            NewToken {
                account: None,
                name: "second".into(),
                expires_in: None,
            },
            &Caller::new(Principal {
                actor: Actor::named("alice"),
                grants: vec![],
            }),
        )
        .await
        .expect("own token without any grant");
    let alice = caller_of(&service, &other).await;
    service
        .revoke_token(other.token.id, &alice)
        .await
        .expect("revokes its own token");
    assert!(
        matches!(
            service.authenticate(other.secret.expose()).await,
            Err(AuthenticationError::Revoked)
        ),
        "a revoked token stops working at once, cache or not"
    );
}

#[tokio::test]
async fn a_refused_token_is_refused_again_without_asking_the_repository() {
    let (service, repository) = setup();
    let issued = account_with_token(&service, "alice", vec![Grant::global(Role::Viewer)]).await;
    let stranger = TokenSecret::generate();
    let lookups = || repository.store().lookups;
    let before = lookups();
    for _ in 0..50 {
        assert!(matches!(
            service.authenticate(stranger.expose()).await,
            Err(AuthenticationError::Unknown)
        ));
    }
    assert_eq!(lookups() - before, 1, "one lookup for fifty tries");

    // A revoked token too: refused for the same reason, from memory.
    let alice = caller_of(&service, &issued).await;
    service
        .revoke_token(issued.token.id, &alice)
        .await
        .expect("revokes its own token");
    let before = lookups();
    for _ in 0..10 {
        assert!(matches!(
            service.authenticate(issued.secret.expose()).await,
            Err(AuthenticationError::Revoked)
        ));
    }
    assert_eq!(lookups() - before, 1);

    // Past the refusal's time the repository is asked again.
    let (short, repository) = setup();
    let short = short.with_cache(AuthenticationCache {
        refusal_ttl: Duration::from_millis(50),
        ..AuthenticationCache::default()
    });
    assert!(short.authenticate(stranger.expose()).await.is_err());
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert!(short.authenticate(stranger.expose()).await.is_err());
    assert_eq!(repository.store().lookups, 2);
}

#[tokio::test]
async fn a_revocation_is_signalled_and_the_hash_no_longer_authenticates() {
    let (service, _repository) = setup();
    let issued = account_with_token(&service, "alice", vec![Grant::global(Role::Viewer)]).await;
    let authenticated = service
        .authenticate(issued.secret.expose())
        .await
        .expect("authenticates");
    assert_eq!(authenticated.hash, issued.secret.hash());
    let changed = service.credentials_changed();
    assert!(!changed.has_changed().expect("the service is alive"));

    // The hash alone (what a long request keeps) authenticates like the secret...
    let again = service
        .authenticate_hash(authenticated.hash)
        .await
        .expect("the hash authenticates");
    assert_eq!(again.token, issued.token.id);

    let alice = caller_of(&service, &issued).await;
    service
        .revoke_token(issued.token.id, &alice)
        .await
        .expect("revokes its own token");
    // ...the revocation is signalled to whoever waits on it, and the hash is refused.
    assert!(changed.has_changed().expect("the service is alive"));
    assert!(matches!(
        service.authenticate_hash(authenticated.hash).await,
        Err(AuthenticationError::Revoked)
    ));
}

#[tokio::test]
async fn only_admins_manage_accounts_and_others_tokens() {
    let (service, repository) = setup();
    let admin_token = account_with_token(&service, "root", vec![Grant::global(Role::Admin)]).await;
    let admin = caller_of(&service, &admin_token).await;
    let bob_token = account_with_token(&service, "bob", vec![Grant::global(Role::Deployer)]).await;
    let bob = caller_of(&service, &bob_token).await;
    let audited = repository.store().audit.len();

    let new = NewAccount {
        name: name("jenkins"),
        kind: AccountKind::Robot,
        grants: vec![Grant::global(Role::Releaser)],
    };
    assert!(matches!(
        service.create_account(new.clone(), &bob).await,
        Err(AccessError::Forbidden(_))
    ));
    assert!(matches!(
        service
            .grant(&name("bob"), Grant::global(Role::Admin), &bob)
            .await,
        Err(AccessError::Forbidden(_))
    ));
    assert!(matches!(
        service
            .create_token(
                NewToken {
                    account: Some(name("root")),
                    name: "stolen".into(),
                    expires_in: None,
                },
                &bob,
            )
            .await,
        Err(AccessError::Forbidden(_))
    ));
    assert!(matches!(
        service.revoke_token(admin_token.token.id, &bob).await,
        Err(AccessError::TokenNotFound)
    ));
    assert!(matches!(
        service.list_tokens(Some(&name("root")), &bob).await,
        Err(AccessError::Forbidden(_))
    ));
    assert_eq!(
        repository.store().audit.len(),
        audited,
        "refusals are not audited"
    );
    let own = service.list_tokens(None, &bob).await.expect("own tokens");
    assert!(own.iter().all(|t| t.account == name("bob")));

    service
        .create_account(new, &admin)
        .await
        .expect("admin creates accounts");
    let jenkins = service
        .create_token(
            NewToken {
                account: Some(name("jenkins")),
                name: "ci".into(),
                expires_in: Some(Duration::from_secs(3600)),
            },
            &admin,
        )
        .await
        .expect("admin issues tokens for robots");
    assert_eq!(jenkins.token.created_by, Actor::named("root"));
    let store = repository.store();
    let actions: Vec<_> = store.audit[audited..].iter().map(|a| a.action).collect();
    assert_eq!(
        actions,
        vec![AuditAction::AccountCreated, AuditAction::TokenCreated]
    );
    assert!(
        store
            .audit
            .iter()
            .all(|a| !a.details.to_string().contains("knt_")),
        "no secret reaches the audit trail"
    );
}

#[tokio::test]
async fn a_new_grant_applies_to_the_next_request() {
    let (service, _) = setup();
    let admin = Caller::system("setup");
    let token = account_with_token(&service, "carol", vec![Grant::global(Role::Viewer)]).await;
    let before = caller_of(&service, &token).await;
    assert!(!before.allows(&Permission::ManageReleases));
    service
        .grant(&name("carol"), Grant::global(Role::Releaser), &admin)
        .await
        .expect("granted");
    let after = caller_of(&service, &token).await;
    assert!(after.allows(&Permission::ManageReleases));
}

#[tokio::test]
async fn token_names_and_lifetimes_are_checked() {
    let (service, _) = setup();
    account_with_token(&service, "dave", vec![Grant::global(Role::Viewer)]).await;
    let dave = Caller::new(Principal {
        actor: Actor::named("dave"),
        grants: vec![],
    });
    for (token_name, lifetime, field) in [
        ("", None, "name"),
        ("ok", Some(Duration::from_secs(1)), "expires_in"),
        (
            "ok",
            Some(Duration::from_secs(400 * 24 * 3600)),
            "expires_in",
        ),
    ] {
        let error = service
            .create_token(
                NewToken {
                    account: None,
                    name: token_name.into(),
                    expires_in: lifetime,
                },
                &dave,
            )
            .await
            .expect_err("invalid");
        assert!(
            matches!(&error, AccessError::Invalid(e) if e.field == field),
            "{error:?}"
        );
    }
}

#[tokio::test]
async fn the_audit_trail_is_for_admins() {
    let (service, _) = setup();
    let viewer = Caller::new(Principal {
        actor: Actor::named("eve"),
        grants: vec![Grant::global(Role::Deployer)],
    });
    assert!(matches!(
        service.audit_trail(&AuditQuery::default(), &viewer).await,
        Err(AccessError::Forbidden(_))
    ));
}

/// Revocations and grant changes are published on the change feed (when the service
/// has one), once each and only when something changed, as PostgreSQL's triggers
/// announce them: a single process on SQLite hears of them only this way.
#[tokio::test]
async fn revocations_and_grant_changes_are_published_on_the_change_feed() {
    use crate::changes::{ChangeFeed as _, LocalChanges};

    let repository = Arc::new(InMemory::default());
    let changes = Arc::new(LocalChanges::new());
    let service = AccessService::new(repository, Arc::new(MockAuditRepository::new()))
        .with_changes(changes.clone());
    let admin = Caller::system("setup");
    let mut heard = changes.subscribe();
    let mut published = || {
        let mut count = 0;
        while let Ok(change) = heard.try_recv() {
            assert_eq!(change, Change::Credentials);
            count += 1;
        }
        count
    };

    service
        .create_account(
            NewAccount {
                name: name("robot"),
                kind: AccountKind::Robot,
                grants: Vec::new(),
            },
            &admin,
        )
        .await
        .expect("created");
    assert_eq!(
        published(),
        0,
        "an account without grants changes no credentials"
    );
    let issued = account_with_token(&service, "alice", vec![Grant::global(Role::Viewer)]).await;
    assert_eq!(published(), 1, "an account with grants");

    service
        .grant(&name("alice"), Grant::global(Role::Releaser), &admin)
        .await
        .expect("granted");
    assert_eq!(published(), 1, "a new grant");
    service
        .grant(&name("alice"), Grant::global(Role::Releaser), &admin)
        .await
        .expect("granted again");
    assert_eq!(published(), 0, "a grant held already changes nothing");
    service
        .revoke_grant(&name("alice"), Grant::global(Role::Releaser), &admin)
        .await
        .expect("revoked");
    assert_eq!(published(), 1, "a grant taken");

    service
        .revoke_token(issued.token.id, &admin)
        .await
        .expect("revoked");
    assert_eq!(published(), 1, "a revocation");
    service
        .revoke_token(issued.token.id, &admin)
        .await
        .expect("revoked again");
    assert_eq!(published(), 0, "revoking twice changes nothing");
}
