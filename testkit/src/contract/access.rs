//! The access repository's contract (accounts, grants, API tokens), each test on a
//! fresh store.

use std::sync::Arc;

use chrono::{DateTime, SubsecRound as _, TimeDelta, Utc};
use kubernaut_domain::access::{Account, AccountKind, AccountName, Caller, Grant, Role, Scope};
use kubernaut_domain::actor::Actor;
use kubernaut_domain::audit::{AuditAction, AuditEntry, AuditQuery};
use kubernaut_domain::ports::{
    AccessRepository, GrantChange, InsertAccountError, InsertTokenError, RevokeTokenOutcome,
};
use kubernaut_domain::token::{ApiToken, TokenHash, TokenId, TokenSecret};

use crate::contract::Backend;

struct Harness<B> {
    access: Arc<dyn AccessRepository>,
    backend: B,
}

impl<B: Backend> Harness<B> {
    fn new() -> Self {
        let backend = B::create(4);
        Self {
            access: backend.access(),
            backend,
        }
    }

    /// Every audit record, newest first.
    async fn audit(&self) -> Vec<AuditEntry> {
        self.backend
            .audit()
            .list(&AuditQuery::default(), 500)
            .await
            .expect("the audit trail lists")
    }

    async fn insert_account(&self, account: &Account) {
        self.access
            .insert_account(account, &audit(AuditAction::AccountCreated, &account.name))
            .await
            .expect("the account is stored");
    }

    async fn find_account(&self, account: &str) -> Option<Account> {
        self.access
            .find_account(&name(account))
            .await
            .expect("the lookup succeeds")
    }
}

fn name(text: &str) -> AccountName {
    AccountName::parse(text).expect("an account name")
}

fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

fn deployer(scope: &str) -> Grant {
    Grant::new(Role::Deployer, Scope::parse(scope).expect("a scope")).expect("a grant")
}

fn account(account: &str, kind: AccountKind, grants: Vec<Grant>) -> Account {
    Account {
        name: name(account),
        kind,
        grants,
        created_at: now(),
        created_by: Actor::named("setup"),
    }
}

/// An audit record by `root` from a known request.
fn audit(action: AuditAction, target: impl std::fmt::Display) -> AuditEntry {
    Caller::system("root")
        .with_request(Some("req-1".to_owned()), Some("192.0.2.7".to_owned()))
        .audit(
            action,
            format!("{}/{target}", target_kind(action)),
            serde_json::json!({ "note": action.as_str() }),
        )
}

fn target_kind(action: AuditAction) -> &'static str {
    match action {
        AuditAction::TokenCreated | AuditAction::TokenRevoked => "token",
        _ => "account",
    }
}

fn token(account: &str, created_at: DateTime<Utc>) -> (ApiToken, TokenSecret) {
    let secret = TokenSecret::generate();
    let token = ApiToken {
        id: TokenId::generate(),
        account: name(account),
        name: format!("token of {account}"),
        hint: secret.hint(),
        hash: secret.hash(),
        created_at,
        created_by: Actor::named("root"),
        expires_at: created_at + TimeDelta::days(30),
        last_used_at: None,
        revoked_at: None,
        revoked_by: None,
    };
    (token, secret)
}

pub async fn accounts_and_their_grants_round_trip<B: Backend>() {
    let harness = Harness::<B>::new();
    let mut alice = account(
        "alice@example.com",
        AccountKind::Person,
        vec![
            Grant::global(Role::Viewer),
            // The scraper's role: the schema knows it too.
            Grant::global(Role::Metrics),
            deployer("staging/*"),
            deployer("*/team-a-*"),
        ],
    );
    let jenkins = account("jenkins", AccountKind::Robot, vec![]);
    harness.insert_account(&jenkins).await;
    harness.insert_account(&alice).await;

    // Grants read back sorted (role, then scope).
    alice.grants.sort();
    assert_eq!(
        harness.find_account("alice@example.com").await,
        Some(alice.clone())
    );
    assert_eq!(harness.find_account("jenkins").await, Some(jenkins.clone()));
    assert_eq!(harness.find_account("nobody").await, None);
    let listed = harness
        .access
        .list_accounts()
        .await
        .expect("the listing succeeds");
    assert_eq!(listed, vec![alice, jenkins], "by name");

    let audited = harness.audit().await;
    assert_eq!(audited.len(), 2);
    assert_eq!(audited[0].target, "account/alice@example.com");
    assert_eq!(audited[0].action, AuditAction::AccountCreated);
    assert_eq!(audited[0].request_id.as_deref(), Some("req-1"));
    assert_eq!(audited[0].source.as_deref(), Some("192.0.2.7"));
}

pub async fn a_taken_name_is_a_duplicate_and_stores_nothing<B: Backend>() {
    let harness = Harness::<B>::new();
    let first = account(
        "alice",
        AccountKind::Person,
        vec![Grant::global(Role::Admin)],
    );
    harness.insert_account(&first).await;

    let second = account(
        "alice",
        AccountKind::Robot,
        vec![Grant::global(Role::Viewer)],
    );
    let outcome = harness
        .access
        .insert_account(&second, &audit(AuditAction::AccountCreated, "alice"))
        .await;
    assert!(
        matches!(outcome, Err(InsertAccountError::Duplicate)),
        "{outcome:?}"
    );
    assert_eq!(harness.find_account("alice").await, Some(first));
    assert_eq!(harness.audit().await.len(), 1, "no record of the refusal");
}

pub async fn grants_are_added_and_removed_once_and_audited_only_when_they_change<B: Backend>() {
    let harness = Harness::<B>::new();
    harness
        .insert_account(&account("bob", AccountKind::Person, vec![]))
        .await;
    let staging = deployer("staging/*");
    let grant = |grant: Grant| {
        let access = harness.access.clone();
        async move {
            access
                .add_grant(
                    &name("bob"),
                    &grant,
                    &audit(AuditAction::RoleGranted, "bob"),
                )
                .await
                .expect("the grant runs")
        }
    };
    let revoke = |grant: Grant, account: &'static str| {
        let access = harness.access.clone();
        async move {
            access
                .remove_grant(
                    &name(account),
                    &grant,
                    &audit(AuditAction::RoleRevoked, account),
                )
                .await
                .expect("the revocation runs")
        }
    };

    assert_eq!(grant(staging.clone()).await, GrantChange::Changed);
    assert_eq!(grant(staging.clone()).await, GrantChange::Unchanged);
    assert_eq!(
        grant(Grant::global(Role::Releaser)).await,
        GrantChange::Changed
    );
    assert_eq!(
        harness
            .access
            .add_grant(
                &name("nobody"),
                &staging,
                &audit(AuditAction::RoleGranted, "nobody")
            )
            .await
            .expect("the grant runs"),
        GrantChange::AccountNotFound
    );
    let bob = harness.find_account("bob").await.expect("bob exists");
    assert_eq!(
        bob.grants,
        vec![Grant::global(Role::Releaser), staging.clone()]
    );

    assert_eq!(revoke(staging.clone(), "bob").await, GrantChange::Changed);
    assert_eq!(revoke(staging.clone(), "bob").await, GrantChange::Unchanged);
    assert_eq!(
        revoke(deployer("production/*"), "bob").await,
        GrantChange::Unchanged
    );
    assert_eq!(
        revoke(staging, "nobody").await,
        GrantChange::AccountNotFound
    );
    let bob = harness.find_account("bob").await.expect("bob exists");
    assert_eq!(bob.grants, vec![Grant::global(Role::Releaser)]);

    let actions: Vec<AuditAction> = harness
        .audit()
        .await
        .into_iter()
        .rev()
        .map(|entry| entry.action)
        .collect();
    assert_eq!(
        actions,
        [
            AuditAction::AccountCreated,
            AuditAction::RoleGranted,
            AuditAction::RoleGranted,
            AuditAction::RoleRevoked,
        ],
        "only the changes are audited"
    );
}

pub async fn tokens_are_stored_found_by_hash_and_by_id_and_listed_newest_first<B: Backend>() {
    let harness = Harness::<B>::new();
    let carol = account("carol", AccountKind::Person, vec![deployer("staging/*")]);
    harness.insert_account(&carol).await;
    harness
        .insert_account(&account("jenkins", AccountKind::Robot, vec![]))
        .await;
    let start = now();
    let (older, older_secret) = token("carol", start);
    let (newer, _) = token("carol", start + TimeDelta::seconds(1));
    let (robot, _) = token("jenkins", start + TimeDelta::seconds(2));
    for stored in [&older, &newer, &robot] {
        harness
            .access
            .insert_token(stored, &audit(AuditAction::TokenCreated, stored.id))
            .await
            .expect("the token is stored");
    }

    let (found, owner) = harness
        .access
        .find_token(&older_secret.hash())
        .await
        .expect("the lookup succeeds")
        .expect("the token exists");
    assert_eq!(found, older);
    assert_eq!(owner, carol, "with its account and grants");
    assert_eq!(
        harness
            .access
            .find_token(&TokenSecret::generate().hash())
            .await
            .expect("the lookup succeeds"),
        None
    );
    assert_eq!(
        harness
            .access
            .find_token(&TokenHash([0; 32]))
            .await
            .expect("the lookup succeeds"),
        None
    );
    assert_eq!(
        harness
            .access
            .find_token_by_id(newer.id)
            .await
            .expect("the lookup succeeds"),
        Some(newer.clone())
    );
    assert_eq!(
        harness
            .access
            .find_token_by_id(TokenId::generate())
            .await
            .expect("the lookup succeeds"),
        None
    );

    let of_carol = harness
        .access
        .list_tokens(Some(name("carol")))
        .await
        .expect("the listing succeeds");
    assert_eq!(of_carol, vec![newer.clone(), older.clone()]);
    let everyone = harness
        .access
        .list_tokens(None)
        .await
        .expect("the listing succeeds");
    assert_eq!(everyone, vec![robot, newer, older]);
    assert!(
        harness
            .access
            .list_tokens(Some(name("nobody")))
            .await
            .expect("the listing succeeds")
            .is_empty()
    );
}

pub async fn a_token_of_a_missing_account_is_refused_and_stores_nothing<B: Backend>() {
    let harness = Harness::<B>::new();
    let (orphan, secret) = token("ghost", now());
    let outcome = harness
        .access
        .insert_token(&orphan, &audit(AuditAction::TokenCreated, orphan.id))
        .await;
    assert!(
        matches!(outcome, Err(InsertTokenError::AccountNotFound)),
        "{outcome:?}"
    );
    assert_eq!(
        harness
            .access
            .find_token(&secret.hash())
            .await
            .expect("the lookup succeeds"),
        None
    );
    assert!(harness.audit().await.is_empty(), "no record of the refusal");
}

pub async fn a_token_is_revoked_once_and_its_use_only_moves_forward<B: Backend>() {
    let harness = Harness::<B>::new();
    harness
        .insert_account(&account("dave", AccountKind::Person, vec![]))
        .await;
    let (stored, secret) = token("dave", now());
    harness
        .access
        .insert_token(&stored, &audit(AuditAction::TokenCreated, stored.id))
        .await
        .expect("the token is stored");

    let used = now() + TimeDelta::seconds(5);
    harness
        .access
        .touch_token(stored.id, used)
        .await
        .expect("the use is recorded");
    harness
        .access
        .touch_token(stored.id, used - TimeDelta::seconds(3))
        .await
        .expect("an earlier use is ignored");
    harness
        .access
        .touch_token(TokenId::generate(), used)
        .await
        .expect("an unknown token is ignored");
    let found = harness
        .access
        .find_token_by_id(stored.id)
        .await
        .expect("the lookup succeeds")
        .expect("the token exists");
    assert_eq!(found.last_used_at, Some(used));

    let revoked_at = now();
    let revoke = |id: TokenId, by: &'static str, at: DateTime<Utc>| {
        let access = harness.access.clone();
        async move {
            access
                .revoke_token(
                    id,
                    &Actor::named(by),
                    at,
                    &audit(AuditAction::TokenRevoked, id),
                )
                .await
                .expect("the revocation runs")
        }
    };
    assert_eq!(
        revoke(stored.id, "root", revoked_at).await,
        RevokeTokenOutcome::Revoked
    );
    assert_eq!(
        revoke(stored.id, "eve", now()).await,
        RevokeTokenOutcome::AlreadyRevoked
    );
    assert_eq!(
        revoke(TokenId::generate(), "root", now()).await,
        RevokeTokenOutcome::NotFound
    );
    let (found, _) = harness
        .access
        .find_token(&secret.hash())
        .await
        .expect("the lookup succeeds")
        .expect("revoked tokens are still found");
    assert_eq!(found.revoked_at, Some(revoked_at));
    assert_eq!(
        found.revoked_by,
        Some(Actor::named("root")),
        "the first one"
    );
    assert!(!found.is_usable(now()));

    let actions: Vec<AuditAction> = harness
        .audit()
        .await
        .into_iter()
        .rev()
        .map(|entry| entry.action)
        .collect();
    assert_eq!(
        actions,
        [
            AuditAction::AccountCreated,
            AuditAction::TokenCreated,
            AuditAction::TokenRevoked,
        ],
        "touches and repeated revocations are not audited"
    );
}
