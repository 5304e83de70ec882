//! Who may do what: accounts, roles granted globally or for a scope of clusters and
//! namespaces, and the [`Caller`] every use case is asked on behalf of.
//!
//! The rules, checked by the services themselves so that every way in (the REST API,
//! the web UI, a tool embedding this crate) gets the same answer:
//!
//! | role | may |
//! |---|---|
//! | `viewer` | read releases, deployments and clusters |
//! | `releaser` | read; create and delete releases |
//! | `deployer` | read; deploy, cancel and roll back in the clusters and namespaces its scope matches |
//! | `admin` | everything: accounts, grants, tokens, the audit trail |
//!
//! Only `deployer` can be scoped (`staging/*`, `*/team-a-*`, `prod/payments`): releases
//! belong to no cluster, and reading is not narrowed by scope, so a scope on the other
//! roles would promise a restriction that does not exist. They are granted globally.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use wildmatch::WildMatch;

use crate::actor::Actor;
use crate::audit::{AuditAction, AuditEntry};
use crate::deployment::{ClusterName, Target};
use crate::validation::FieldError;

/// A role, from least to most powerful; `Metrics` stands apart: it may read the
/// metrics (a Prometheus scrape) and nothing else, not even the deployments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Metrics,
    Viewer,
    Releaser,
    Deployer,
    Admin,
}

impl Role {
    pub const ALL: [Self; 5] = [
        Self::Metrics,
        Self::Viewer,
        Self::Releaser,
        Self::Deployer,
        Self::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Metrics => "metrics",
            Self::Viewer => "viewer",
            Self::Releaser => "releaser",
            Self::Deployer => "deployer",
            Self::Admin => "admin",
        }
    }

    /// # Errors
    /// A message naming the roles when `text` is none of them.
    pub fn parse(text: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|role| role.as_str() == text)
            .ok_or_else(|| {
                format!("{text:?} is not a role: use metrics, viewer, releaser, deployer or admin")
            })
    }

    /// Whether a grant of this role may be narrowed to a scope.
    pub fn scopable(self) -> bool {
        self == Self::Deployer
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which clusters and namespaces a grant covers: `cluster/namespace`, each part a
/// name or a wildcard pattern (`*` for any run of characters, `?` for one). `*` alone
/// means `*/*`, every namespace of every cluster.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope {
    cluster: String,
    namespace: String,
}

impl Scope {
    /// Every namespace of every cluster.
    pub fn global() -> Self {
        Self {
            cluster: "*".to_owned(),
            namespace: "*".to_owned(),
        }
    }

    /// # Errors
    /// A message saying what is wrong with `text`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text == "*" {
            return Ok(Self::global());
        }
        let Some((cluster, namespace)) = text.split_once('/') else {
            return Err(format!(
                "{text:?} is not a scope: write cluster/namespace, e.g. staging/* or prod/payments"
            ));
        };
        for (part, what) in [(cluster, "cluster"), (namespace, "namespace")] {
            let valid_chars = part
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-.*?".contains(c));
            if part.is_empty() || part.len() > 253 || !valid_chars {
                return Err(format!(
                    "the {what} part of the scope {text:?} must be a name or a pattern of lowercase letters, digits, '-', '.', '*' and '?'"
                ));
            }
        }
        Ok(Self {
            cluster: cluster.to_owned(),
            namespace: namespace.to_owned(),
        })
    }

    pub fn is_global(&self) -> bool {
        self.cluster == "*" && self.namespace == "*"
    }

    /// Whether this scope covers every namespace of `cluster` (`cluster/*` or wider):
    /// what objects outside namespaces, which affect them all, need.
    /// Whether some namespace of `cluster` falls within this scope.
    pub fn reaches_cluster(&self, cluster: &ClusterName) -> bool {
        WildMatch::new(&self.cluster).matches(cluster.as_str())
    }

    /// The one namespace this scope names, when it is not a pattern.
    pub fn exact_namespace(&self) -> Option<&str> {
        (!self.namespace.contains(['*', '?'])).then_some(self.namespace.as_str())
    }

    pub fn covers_cluster(&self, cluster: &ClusterName) -> bool {
        self.namespace == "*" && WildMatch::new(&self.cluster).matches(cluster.as_str())
    }

    pub fn matches(&self, target: &Target) -> bool {
        WildMatch::new(&self.cluster).matches(target.cluster.as_str())
            && WildMatch::new(&self.namespace).matches(target.namespace.as_str())
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.cluster, self.namespace)
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scope({self})")
    }
}

impl Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A role for a scope.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Grant {
    pub role: Role,
    pub scope: Scope,
}

impl Grant {
    /// A grant of `role` for `scope`.
    ///
    /// # Errors
    /// When a role other than `deployer` is given a scope narrower than `*/*`.
    pub fn new(role: Role, scope: Scope) -> Result<Self, FieldError> {
        if !scope.is_global() && !role.scopable() {
            return Err(FieldError::new(
                "scope",
                format!(
                    "the {role} role is granted globally (scope \"*\"): only deployer can be limited to clusters and namespaces"
                ),
            ));
        }
        Ok(Self { role, scope })
    }

    pub fn global(role: Role) -> Self {
        Self {
            role,
            scope: Scope::global(),
        }
    }

    /// Whether this grant allows `permission`.
    pub fn allows(&self, permission: &Permission) -> bool {
        match (self.role, permission) {
            (Role::Admin, _) | (Role::Metrics, Permission::ReadMetrics) => true,
            (Role::Metrics, _) => false,
            (_, Permission::Read) => true,
            (Role::Releaser, Permission::ManageReleases) => true,
            (Role::Deployer, Permission::Deploy(target)) => self.scope.matches(target),
            (Role::Deployer, Permission::DeploySomewhere) => true,
            (Role::Deployer, Permission::DeployClusterWide(cluster)) => {
                self.scope.covers_cluster(cluster)
            }
            _ => false,
        }
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on {}", self.role, self.scope)
    }
}

impl<'de> Deserialize<'de> for Grant {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            role: Role,
            #[serde(default = "Scope::global")]
            scope: Scope,
        }
        let raw = Raw::deserialize(deserializer)?;
        Self::new(raw.role, raw.scope).map_err(|e| serde::de::Error::custom(e.reason))
    }
}

/// What a use case needs of its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Permission {
    /// Read releases, deployments and clusters.
    Read,
    /// Create and delete releases.
    ManageReleases,
    /// Deploy, cancel and roll back in this cluster and namespace.
    Deploy(Target),
    /// Deploy to some target: what a deploy request needs before its body, and so its
    /// target, is even read. The request's own target is checked afterwards.
    DeploySomewhere,
    /// Deploy objects outside namespaces (cluster-scoped kinds) to this cluster: they
    /// affect every namespace, so the deploy scope must cover them all.
    DeployClusterWide(ClusterName),
    /// Accounts, grants, everyone's tokens, the audit trail.
    Administer,
    /// The operational metrics of this replica (`/metrics`): request rates, pool use,
    /// every target's deployment counts. The `metrics` role (a scraper's token, which
    /// reads nothing else) or admin; or no token on the separate metrics address
    /// (`metrics.bind`).
    ReadMetrics,
}

impl Permission {
    /// The roles that grant this permission, for messages.
    fn needs(&self) -> String {
        match self {
            Self::Read => "any role".to_owned(),
            Self::ManageReleases => "the releaser or admin role".to_owned(),
            Self::Deploy(target) => {
                format!("the deployer role for a scope matching {target}, or admin")
            }
            Self::DeploySomewhere => "the deployer or admin role".to_owned(),
            Self::DeployClusterWide(cluster) => {
                format!("the deployer role for scope {cluster}/* (every namespace), or admin")
            }
            Self::Administer => "the admin role".to_owned(),
            Self::ReadMetrics => "the metrics or admin role".to_owned(),
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read => f.write_str("read"),
            Self::ManageReleases => f.write_str("manage releases"),
            Self::Deploy(target) => write!(f, "deploy to {target}"),
            Self::DeploySomewhere => f.write_str("deploy"),
            Self::DeployClusterWide(cluster) => {
                write!(f, "deploy cluster-scoped objects to {cluster}")
            }
            Self::Administer => f.write_str("administer"),
            Self::ReadMetrics => f.write_str("read the metrics"),
        }
    }
}

/// A refusal: the caller lacks `permission`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{actor} may not {permission}: that needs {needs}")]
pub struct AccessDenied {
    pub actor: Actor,
    pub permission: Permission,
    needs: String,
}

/// The name of an account: a person (often an e-mail address) or a robot (`jenkins`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct AccountName(String);

impl AccountName {
    /// # Errors
    /// When `text` is empty, longer than 128 characters, or holds characters other
    /// than ASCII letters, digits and `.`, `_`, `@`, `+`, `-` (starting with a letter
    /// or digit).
    pub fn parse(text: &str) -> Result<Self, String> {
        let valid = text.len() <= 128
            && text
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric())
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._@+-".contains(c));
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            Err(format!(
                "{text:?} is not an account name: 1 to 128 ASCII letters, digits, '.', '_', '@', '+' or '-', starting with a letter or digit"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for AccountName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A person signs in to the web UI; a robot is a CI job or another tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    #[default]
    Person,
    Robot,
}

impl AccountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Person => "person",
            Self::Robot => "robot",
        }
    }

    /// # Errors
    /// When `text` is neither `person` nor `robot`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "person" => Ok(Self::Person),
            "robot" => Ok(Self::Robot),
            other => Err(format!("{other:?} is not an account kind: person or robot")),
        }
    }
}

/// An account and what it has been granted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Account {
    pub name: AccountName,
    pub kind: AccountKind,
    pub grants: Vec<Grant>,
    pub created_at: DateTime<Utc>,
    pub created_by: Actor,
}

/// An authenticated identity and its grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub actor: Actor,
    pub grants: Vec<Grant>,
}

impl Principal {
    pub fn of(account: &Account) -> Self {
        Self {
            actor: Actor::named(account.name.as_str()),
            grants: account.grants.clone(),
        }
    }

    pub fn allows(&self, permission: &Permission) -> bool {
        self.grants.iter().any(|grant| grant.allows(permission))
    }

    /// Whether some namespace of `cluster` may be deployed to: the clusters a deploy
    /// form offers (the namespace chosen is checked by the deploy itself).
    pub fn may_deploy_in(&self, cluster: &ClusterName) -> bool {
        self.grants.iter().any(|grant| match grant.role {
            Role::Admin => true,
            Role::Deployer => grant.scope.reaches_cluster(cluster),
            Role::Metrics | Role::Viewer | Role::Releaser => false,
        })
    }

    /// The namespaces of `cluster` the grants name one by one (`prod/payments`), to
    /// suggest in a deploy form.
    pub fn named_namespaces(&self, cluster: &ClusterName) -> Vec<String> {
        let mut names: Vec<String> = self
            .grants
            .iter()
            .filter(|grant| grant.role == Role::Deployer && grant.scope.reaches_cluster(cluster))
            .filter_map(|grant| grant.scope.exact_namespace().map(str::to_owned))
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

/// On whose behalf a use case runs, and where the request came from: what the audit
/// trail records next to each change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    principal: Principal,
    /// The id of the request that asked (the `X-Request-Id` of an HTTP request).
    pub request_id: Option<String>,
    /// The address the request came from.
    pub source: Option<String>,
}

impl Caller {
    pub fn new(principal: Principal) -> Self {
        Self {
            principal,
            request_id: None,
            source: None,
        }
    }

    /// Kubernaut itself, or a trusted tool embedding this crate, acting with every
    /// permission under `name` (recorded as the actor).
    pub fn system(name: &str) -> Self {
        Self::new(Principal {
            actor: Actor::named(name),
            grants: vec![Grant::global(Role::Admin)],
        })
    }

    /// The caller with the request's id and source address, for the audit trail.
    #[must_use]
    pub fn with_request(mut self, request_id: Option<String>, source: Option<String>) -> Self {
        self.request_id = request_id;
        self.source = source;
        self
    }

    pub fn actor(&self) -> &Actor {
        &self.principal.actor
    }

    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    pub fn allows(&self, permission: &Permission) -> bool {
        self.principal.allows(permission)
    }

    /// # Errors
    /// [`AccessDenied`] naming `permission` when no grant of the caller allows it.
    pub fn require(&self, permission: Permission) -> Result<(), AccessDenied> {
        if self.allows(&permission) {
            Ok(())
        } else {
            Err(AccessDenied {
                actor: self.principal.actor.clone(),
                needs: permission.needs(),
                permission,
            })
        }
    }

    /// An audit record of `action` on `target` by this caller, now.
    pub fn audit(
        &self,
        action: AuditAction,
        target: impl Into<String>,
        details: serde_json::Value,
    ) -> AuditEntry {
        AuditEntry::new(
            self.actor().clone(),
            action,
            target.into(),
            self.request_id.clone(),
            self.source.clone(),
            details,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deployment::{ClusterName, Namespace};

    fn target(text: &str) -> Target {
        let (cluster, namespace) = text.split_once('/').expect("cluster/namespace");
        Target {
            cluster: ClusterName::parse(cluster).expect("cluster"),
            namespace: Namespace::parse(namespace).expect("namespace"),
        }
    }

    fn caller(grants: &[(Role, &str)]) -> Caller {
        Caller::new(Principal {
            actor: Actor::named("someone"),
            grants: grants
                .iter()
                .map(|(role, scope)| {
                    Grant::new(*role, Scope::parse(scope).expect("scope")).expect("grant")
                })
                .collect(),
        })
    }

    #[test]
    fn each_role_allows_exactly_its_permissions() {
        let production = Permission::Deploy(target("production/web"));
        let cases = [
            (Role::Metrics, [false, false, false, false, false]),
            (Role::Viewer, [true, false, false, false, false]),
            (Role::Releaser, [true, true, false, false, false]),
            (Role::Deployer, [true, false, true, true, false]),
            (Role::Admin, [true, true, true, true, true]),
        ];
        for (role, expected) in cases {
            let caller = caller(&[(role, "*")]);
            let got = [
                caller.allows(&Permission::Read),
                caller.allows(&Permission::ManageReleases),
                caller.allows(&production),
                caller.allows(&Permission::DeploySomewhere),
                caller.allows(&Permission::Administer),
            ];
            assert_eq!(got, expected, "{role}");
        }
    }

    #[test]
    fn only_the_metrics_and_admin_roles_read_the_metrics() {
        for role in Role::ALL {
            let allowed = caller(&[(role, "*")]).allows(&Permission::ReadMetrics);
            assert_eq!(
                allowed,
                matches!(role, Role::Metrics | Role::Admin),
                "{role}"
            );
        }
        assert_eq!(Role::parse("metrics"), Ok(Role::Metrics));
    }

    #[test]
    fn a_deploy_form_offers_the_clusters_and_named_namespaces_of_the_grants() {
        let cluster = |name: &str| ClusterName::parse(name).expect("cluster");
        let deployer = caller(&[
            (Role::Deployer, "staging/*"),
            (Role::Deployer, "prod-*/payments"),
            (Role::Deployer, "prod-eu/shop"),
            (Role::Viewer, "*"),
        ]);
        let principal = deployer.principal();
        assert!(principal.may_deploy_in(&cluster("staging")));
        assert!(principal.may_deploy_in(&cluster("prod-eu")));
        assert!(!principal.may_deploy_in(&cluster("dev")));
        assert_eq!(
            principal.named_namespaces(&cluster("prod-eu")),
            ["payments", "shop"]
        );
        assert_eq!(
            principal.named_namespaces(&cluster("prod-us")),
            ["payments"]
        );
        assert!(principal.named_namespaces(&cluster("staging")).is_empty());
        let viewer = caller(&[(Role::Viewer, "*"), (Role::Releaser, "*")]);
        assert!(!viewer.principal().may_deploy_in(&cluster("staging")));
        assert!(
            caller(&[(Role::Admin, "*")])
                .principal()
                .may_deploy_in(&cluster("dev"))
        );
    }

    #[test]
    fn a_scoped_deployer_deploys_only_where_its_scope_matches() {
        let staging = caller(&[(Role::Deployer, "staging/*")]);
        assert!(staging.allows(&Permission::Deploy(target("staging/web"))));
        assert!(staging.allows(&Permission::Deploy(target("staging/payments"))));
        assert!(!staging.allows(&Permission::Deploy(target("production/web"))));
        assert!(staging.allows(&Permission::DeploySomewhere));
        let team = caller(&[(Role::Deployer, "*/team-a-*")]);
        assert!(team.allows(&Permission::Deploy(target("production/team-a-api"))));
        assert!(!team.allows(&Permission::Deploy(target("production/team-b-api"))));
        let denied = staging
            .require(Permission::Deploy(target("production/web")))
            .expect_err("denied");
        assert_eq!(
            denied.to_string(),
            "someone may not deploy to production/web: that needs the deployer role for a scope matching production/web, or admin"
        );
    }

    #[test]
    fn cluster_wide_objects_need_a_scope_over_every_namespace_of_the_cluster() {
        let staging = ClusterName::parse("staging").expect("cluster");
        let wide = |scope: &str| {
            caller(&[(Role::Deployer, scope)])
                .allows(&Permission::DeployClusterWide(staging.clone()))
        };
        assert!(wide("*"));
        assert!(wide("staging/*"));
        assert!(wide("stag*/*"));
        assert!(
            !wide("staging/web"),
            "one namespace is not the whole cluster"
        );
        assert!(!wide("staging/team-*"));
        assert!(!wide("production/*"));
        for role in [Role::Viewer, Role::Releaser] {
            assert!(
                !caller(&[(role, "*")]).allows(&Permission::DeployClusterWide(staging.clone()))
            );
        }
        assert!(caller(&[(Role::Admin, "*")]).allows(&Permission::DeployClusterWide(staging)));
    }

    #[test]
    fn no_grant_allows_nothing() {
        let nobody = caller(&[]);
        assert!(!nobody.allows(&Permission::Read));
        assert!(nobody.require(Permission::Read).is_err());
    }

    #[test]
    fn only_deployer_can_be_scoped() {
        let scope = Scope::parse("staging/*").expect("scope");
        for role in [Role::Viewer, Role::Releaser, Role::Admin] {
            let error = Grant::new(role, scope.clone()).expect_err("must be global");
            assert_eq!(error.field, "scope");
        }
        assert!(Grant::new(Role::Deployer, scope).is_ok());
        assert!(Grant::new(Role::Admin, Scope::parse("*/*").expect("scope")).is_ok());
    }

    #[test]
    fn scopes_and_names_are_validated() {
        assert_eq!(Scope::parse("*").expect("global"), Scope::global());
        assert_eq!(
            Scope::parse("prod/payments").expect("scope").to_string(),
            "prod/payments"
        );
        for bad in ["", "prod", "prod/", "/x", "Prod/x", "prod/x/y", "prod/$"] {
            assert!(Scope::parse(bad).is_err(), "{bad:?}");
        }
        assert!(AccountName::parse("alice@example.com").is_ok());
        assert!(AccountName::parse("jenkins").is_ok());
        for bad in ["", "-x", "a b", "a/b", &"x".repeat(129)] {
            assert!(AccountName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn grants_read_from_json_check_their_scope() {
        let grant: Grant =
            serde_json::from_str(r#"{"role":"deployer","scope":"staging/*"}"#).expect("grant");
        assert_eq!(grant.to_string(), "deployer on staging/*");
        let global: Grant = serde_json::from_str(r#"{"role":"admin"}"#).expect("grant");
        assert!(global.scope.is_global());
        assert!(serde_json::from_str::<Grant>(r#"{"role":"admin","scope":"staging/*"}"#).is_err());
        assert!(serde_json::from_str::<Grant>(r#"{"role":"root"}"#).is_err());
    }
}
