//! Clusters as the domain sees them: their configured rules, how a rendered manifest is
//! made ready for one, and what applying and watching a rollout yields.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::deployment::{DeploymentId, Diagnostics, Namespace, ResourceRef, Target};
use crate::release::{ReleaseId, ServiceName};

/// Labels and annotations Kubernaut puts on every object it applies.
pub mod labels {
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    pub const MANAGED_BY_VALUE: &str = "kubernaut";
    pub const SERVICE: &str = "kubernaut.io/service";
    pub const RELEASE_ID: &str = "kubernaut.io/release-id";
    pub const DEPLOYMENT_ID: &str = "kubernaut.io/deployment-id";
    /// The label selector that finds a service's objects: what prune looks at.
    pub fn selector(service: &str) -> String {
        format!("{MANAGED_BY}={MANAGED_BY_VALUE},{SERVICE}={service}")
    }
}

/// `object` without the deployment id Kubernaut marks it with (which every deploy
/// changes), as label or annotation: what a comparison of a release with what runs
/// leaves out.
pub fn without_deployment_id(mut object: Value) -> Value {
    for place in ["/metadata/labels", "/metadata/annotations"] {
        if let Some(marks) = object.pointer_mut(place).and_then(Value::as_object_mut) {
            marks.remove(labels::DEPLOYMENT_ID);
        }
    }
    object
}

/// The live object cut down to what the desired one sets: of each map only the keys
/// `desired` has, lists item by item (extra live items kept, missing ones left out),
/// anything else as it is live. Equal to `desired` exactly when applying `desired`
/// would leave every field it sets as it is, whatever the API server defaulted or
/// others manage besides.
pub fn live_as_desired(live: &Value, desired: &Value) -> Value {
    match (live, desired) {
        (Value::Object(live), Value::Object(desired)) => Value::Object(
            desired
                .iter()
                .filter_map(|(key, wanted)| {
                    live.get(key)
                        .map(|value| (key.clone(), live_as_desired(value, wanted)))
                })
                .collect(),
        ),
        (Value::Array(live), Value::Array(desired)) => Value::Array(
            live.iter()
                .enumerate()
                .map(|(index, value)| match desired.get(index) {
                    Some(wanted) => live_as_desired(value, wanted),
                    None => value.clone(),
                })
                .collect(),
        ),
        _ => live.clone(),
    }
}

/// A kind as a manifest names it: its `apiVersion` and `kind`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct KindRef {
    pub api_version: String,
    pub kind: String,
}

impl KindRef {
    pub fn new(api_version: impl Into<String>, kind: impl Into<String>) -> Self {
        Self {
            api_version: api_version.into(),
            kind: kind.into(),
        }
    }

    /// The API group (`""` for the core group of `v1`).
    pub fn group(&self) -> &str {
        self.api_version
            .rsplit_once('/')
            .map_or("", |(group, _version)| group)
    }

    /// The kinds of `objects`, each once, in the order they first appear.
    pub fn distinct_in(objects: &[Value]) -> Vec<Self> {
        let mut kinds: Vec<Self> = Vec::new();
        for object in objects {
            let reference = resource_ref_of(object);
            let kind = Self::new(reference.api_version, reference.kind);
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        kinds
    }
}

impl std::fmt::Display for KindRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.api_version, self.kind)
    }
}

/// Where the objects of a kind live, as the API server's discovery says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KindScope {
    /// In a namespace.
    Namespaced,
    /// Outside namespaces: one object for the whole cluster.
    Cluster,
}

/// The scopes of the kinds a manifest holds: what the cluster's discovery says, and
/// for kinds defined by a CustomResourceDefinition of the same manifest (not served yet
/// before it is applied), what that definition says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KindScopes(BTreeMap<KindRef, KindScope>);

impl KindScopes {
    /// The scopes `discovered` for `kinds` (`None`: the cluster does not serve the
    /// kind), completed by the definitions among `objects`.
    pub fn new(kinds: &[KindRef], discovered: &[Option<KindScope>], objects: &[Value]) -> Self {
        let mut scopes: BTreeMap<KindRef, KindScope> = kinds
            .iter()
            .zip(discovered)
            .filter_map(|(kind, scope)| scope.map(|scope| (kind.clone(), scope)))
            .collect();
        for definition in objects.iter().filter(|object| {
            object.get("kind").and_then(Value::as_str) == Some("CustomResourceDefinition")
                && object
                    .get("apiVersion")
                    .and_then(Value::as_str)
                    .is_some_and(|v| v.starts_with("apiextensions.k8s.io/"))
        }) {
            let text = |pointer: &str| definition.pointer(pointer).and_then(Value::as_str);
            let (Some(group), Some(kind), Some(scope)) = (
                text("/spec/group"),
                text("/spec/names/kind"),
                text("/spec/scope"),
            ) else {
                continue;
            };
            let scope = match scope {
                "Cluster" => KindScope::Cluster,
                _ => KindScope::Namespaced,
            };
            for version in definition
                .pointer("/spec/versions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|version| version.get("name").and_then(Value::as_str))
            {
                scopes
                    .entry(KindRef::new(format!("{group}/{version}"), kind))
                    .or_insert(scope);
            }
        }
        Self(scopes)
    }

    /// Every kind of `objects` in the same scope (tests and simple callers).
    pub fn all(objects: &[Value], scope: KindScope) -> Self {
        Self(
            KindRef::distinct_in(objects)
                .into_iter()
                .map(|kind| (kind, scope))
                .collect(),
        )
    }

    /// The scope of `kind`; `None` when neither the cluster nor the manifest knows it.
    pub fn get(&self, kind: &KindRef) -> Option<KindScope> {
        self.0.get(kind).copied()
    }
}

/// What an operator configured for one cluster.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ClusterSettings {
    /// Template variables every deploy to this cluster gets (lowest priority).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Per-namespace template variables (over the cluster's).
    #[serde(default)]
    pub namespace_attributes: BTreeMap<String, BTreeMap<String, String>>,
    /// Namespaces deploys may target: exact names or `prefix-*` patterns; empty allows all.
    #[serde(default)]
    pub allowed_namespaces: Vec<String>,
    /// Whether manifests may hold cluster-scoped kinds (as the cluster's discovery
    /// names them, custom resources included). Only callers whose deploy scope covers
    /// every namespace of the cluster may deploy them.
    #[serde(default)]
    pub allow_cluster_scoped: bool,
    /// The kinds manifests may hold: `Kind` (any group), `group/Kind` (`apps/Deployment`;
    /// the core group is written `core/Service`) or `group/*`; empty allows every kind.
    #[serde(default)]
    pub allowed_kinds: Vec<String>,
    /// Whether manifests may name namespaces other than the deployment's.
    #[serde(default)]
    pub allow_other_namespaces: bool,
    /// A simulated cluster (`kubernaut dev`'s sandbox), shown as such everywhere. Set by
    /// the program, never by a settings file.
    #[serde(default, skip_deserializing)]
    pub simulated: bool,
}

impl ClusterSettings {
    pub fn allows_namespace(&self, namespace: &Namespace) -> bool {
        self.allowed_namespaces.is_empty()
            || self
                .allowed_namespaces
                .iter()
                .any(|pattern| match pattern.strip_suffix('*') {
                    Some(prefix) => namespace.as_str().starts_with(prefix),
                    None => pattern == namespace.as_str(),
                })
    }

    /// Whether `allowed_kinds` lets manifests hold `kind`.
    pub fn allows_kind(&self, kind: &KindRef) -> bool {
        let group = match kind.group() {
            "" => "core",
            group => group,
        };
        self.allowed_kinds.is_empty()
            || self
                .allowed_kinds
                .iter()
                .any(|entry| match entry.rsplit_once('/') {
                    Some((g, k)) => g == group && (k == "*" || k == kind.kind),
                    None => entry == &kind.kind,
                })
    }
}

/// Why a rendered manifest cannot go to its target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestRejected {
    #[error(
        "{object} is cluster-scoped, and cluster {cluster} does not allow cluster-scoped kinds"
    )]
    ClusterScoped { object: String, cluster: String },
    #[error(
        "{object} names namespace {named}, not the deployment's {target}, and the cluster does not allow other namespaces"
    )]
    OtherNamespace {
        object: String,
        named: String,
        target: String,
    },
    #[error(
        "{object}: cluster {cluster} does not serve kind {kind} (not in its discovery, and no CustomResourceDefinition of this manifest defines it)"
    )]
    UnknownKind {
        object: String,
        kind: String,
        cluster: String,
    },
    #[error("{object}: cluster {cluster} does not allow kind {kind} (allowed_kinds)")]
    KindNotAllowed {
        object: String,
        kind: String,
        cluster: String,
    },
    #[error("{object} appears twice in the manifest")]
    Duplicate { object: String },
    #[error(
        "{object} names namespace {named}, which cluster {cluster} does not allow (allowed_namespaces)"
    )]
    NamespaceNotAllowed {
        object: String,
        named: String,
        cluster: String,
    },
}

/// Labels, annotates and namespaces every object of a rendered manifest for its
/// deployment, refusing what the cluster's settings do not allow.
///
/// # Errors
/// [`ManifestRejected`] for the first object that breaks a rule.
pub fn prepare_objects(
    objects: &[Value],
    scopes: &KindScopes,
    settings: &ClusterSettings,
    target: &Target,
    service: &ServiceName,
    release: ReleaseId,
    deployment: DeploymentId,
) -> Result<Vec<Value>, ManifestRejected> {
    let (cluster, namespace) = (&target.cluster, &target.namespace);
    let mut prepared = Vec::with_capacity(objects.len());
    let mut seen = std::collections::BTreeSet::new();
    for object in objects {
        let mut object = object.clone();
        let resource = resource_ref_of(&object);
        let display = resource.to_string();
        let kind = KindRef::new(resource.api_version.clone(), resource.kind.clone());
        let Some(scope) = scopes.get(&kind) else {
            return Err(ManifestRejected::UnknownKind {
                object: display,
                kind: kind.to_string(),
                cluster: cluster.to_string(),
            });
        };
        if !settings.allows_kind(&kind) {
            return Err(ManifestRejected::KindNotAllowed {
                object: display,
                kind: kind.to_string(),
                cluster: cluster.to_string(),
            });
        }
        let cluster_scoped = scope == KindScope::Cluster;
        if cluster_scoped && !settings.allow_cluster_scoped {
            return Err(ManifestRejected::ClusterScoped {
                object: display,
                cluster: cluster.to_string(),
            });
        }
        let metadata = object_map(&mut object, "metadata");
        if cluster_scoped {
            // A namespace written on a cluster-scoped object means nothing to the API
            // server; dropped, so that what is stored says where the object lives.
            metadata.remove("namespace");
        } else {
            match metadata.get("namespace").and_then(Value::as_str) {
                Some(named) if named != namespace.as_str() && !settings.allow_other_namespaces => {
                    return Err(ManifestRejected::OtherNamespace {
                        object: display,
                        named: named.to_owned(),
                        target: namespace.to_string(),
                    });
                }
                // Another namespace the cluster allows objects in must still be one of its
                // allowed namespaces (the deploy's caller's scope is checked by the planner).
                Some(named)
                    if named != namespace.as_str()
                        && !Namespace::parse(named)
                            .is_ok_and(|named| settings.allows_namespace(&named)) =>
                {
                    return Err(ManifestRejected::NamespaceNotAllowed {
                        object: display,
                        named: named.to_owned(),
                        cluster: cluster.to_string(),
                    });
                }
                Some(_) => {}
                None => {
                    metadata.insert("namespace".into(), Value::from(namespace.as_str()));
                }
            }
        }
        let labels = object_map_in(metadata, "labels");
        labels.insert(labels::MANAGED_BY.into(), labels::MANAGED_BY_VALUE.into());
        labels.insert(labels::SERVICE.into(), service.as_str().into());
        let annotations = object_map_in(metadata, "annotations");
        annotations.insert(labels::RELEASE_ID.into(), release.to_string().into());
        annotations.insert(labels::DEPLOYMENT_ID.into(), deployment.to_string().into());
        let identity = (
            resource.api_version.clone(),
            resource.kind.clone(),
            object_namespace(&object),
            resource.name.clone(),
        );
        if !seen.insert(identity) {
            return Err(ManifestRejected::Duplicate { object: display });
        }
        prepared.push(object);
    }
    Ok(prepared)
}

fn object_map<'a>(object: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    let map = object
        .as_object_mut()
        .map(|o| o.entry(key).or_insert_with(|| Value::Object(Map::new())));
    ensure_map(map)
}

fn object_map_in<'a>(map: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    ensure_map(Some(
        map.entry(key).or_insert_with(|| Value::Object(Map::new())),
    ))
}

fn ensure_map(value: Option<&mut Value>) -> &mut Map<String, Value> {
    // Rendered objects were checked to be mappings with a metadata mapping; a null
    // `labels:` written in a template is replaced by an empty mapping.
    match value {
        Some(value) => {
            if !value.is_object() {
                *value = Value::Object(Map::new());
            }
            match value {
                Value::Object(map) => map,
                _ => unreachable!("just made an object"),
            }
        }
        None => unreachable!("objects are mappings"),
    }
}

fn object_namespace(object: &Value) -> Option<String> {
    object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// The reference of a rendered object.
pub fn resource_ref_of(object: &Value) -> ResourceRef {
    let text = |pointer: &str| {
        object
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    ResourceRef {
        api_version: text("/apiVersion"),
        kind: text("/kind"),
        name: text("/metadata/name"),
        namespace: object_namespace(object),
    }
}

/// An object as the API server stored it after an apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedResource {
    pub resource: ResourceRef,
    pub uid: String,
    /// `metadata.generation` after the apply: a rollout is judged only once the
    /// controller has observed at least this generation.
    pub generation: Option<i64>,
}

/// What to watch, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutRequest {
    pub deployment: DeploymentId,
    pub namespace: Namespace,
    pub resources: Vec<AppliedResource>,
    /// Events before this time belong to earlier deploys and are not reported.
    pub started_at: DateTime<Utc>,
    /// The rollout's verdict must come by this time, or it is a timeout.
    pub deadline: DateTime<Utc>,
}

/// How a watched rollout ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloutOutcome {
    /// Every resource is rolled out; warnings note what was judged leniently (an
    /// `OnDelete` StatefulSet).
    Succeeded { warnings: Vec<String> },
    /// A resource failed; the diagnostics say which and why.
    Failed(Diagnostics),
    /// The deadline passed first; the diagnostics say what was still waiting.
    TimedOut(Diagnostics),
}

/// Something worth a line on the deployment's timeline, seen while watching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutProgress {
    pub resource: Option<String>,
    pub message: String,
}

/// How a workload's rollout stands right now, as the cluster shows it: what the live
/// picture of a deployment's page draws.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadPicture {
    /// `Deployment/web`.
    pub resource: String,
    /// The replicas the spec asks for.
    pub desired: i32,
    /// Replicas of the new revision (its pods, for kinds without that count).
    pub updated: i32,
    pub ready: i32,
    pub available: i32,
    /// The workload's status conditions (`Available`, `Progressing`, ...).
    pub conditions: Vec<WorkloadCondition>,
    /// Its pods, the new revision's first.
    pub pods: Vec<PodPicture>,
}

/// A status condition of a workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadCondition {
    pub kind: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: Option<String>,
    pub message: Option<String>,
}

/// One pod of a workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodPicture {
    pub name: String,
    /// Of the revision being rolled out (else of an older one).
    pub new_revision: bool,
    pub state: PodState,
    /// What the pod waits on or why it fails (`CrashLoopBackOff`), when anything.
    pub detail: Option<String>,
}

/// Where a pod stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PodState {
    Ready,
    /// Starting, or running but not ready yet.
    Updating,
    /// Crash-looping, failing to pull, unschedulable, failed.
    Failing,
    /// Being deleted.
    Terminating,
}

impl PodState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Updating => "updating",
            Self::Failing => "failing",
            Self::Terminating => "terminating",
        }
    }
}

/// Whether a cluster answers, for the clusters listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub reachable: bool,
    /// The API server's version (`v1.33.1`) when reachable.
    pub version: Option<String>,
    /// Why it is not reachable.
    pub error: Option<String>,
}

#[cfg(test)]
mod live_tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn defaults_and_fields_of_others_do_not_count_as_a_difference() {
        let desired = json!({"spec": {"replicas": 2, "ports": [{"port": 80}]}});
        let live = json!({"spec": {"replicas": 2, "ports": [{"port": 80, "protocol": "TCP"}],
                          "revisionHistoryLimit": 10}, "status": {"ready": 1}});
        assert_eq!(live_as_desired(&live, &desired), desired);
    }

    #[test]
    fn a_changed_value_a_missing_field_and_an_extra_item_do() {
        let desired = json!({"spec": {"replicas": 3, "image": "a:2", "args": ["x"]}});
        let live = json!({"spec": {"replicas": 2, "args": ["x", "y"]}});
        assert_eq!(
            live_as_desired(&live, &desired),
            json!({"spec": {"replicas": 2, "args": ["x", "y"]}})
        );
    }

    #[test]
    fn the_deployment_id_label_is_left_out() {
        let object =
            json!({"metadata": {"labels": {labels::DEPLOYMENT_ID: "d", labels::SERVICE: "web"}}});
        assert_eq!(
            without_deployment_id(object),
            json!({"metadata": {"labels": {labels::SERVICE: "web"}}})
        );
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::deployment::ClusterName;

    /// The scopes a v1.33 API server gives the kinds these tests use.
    fn served() -> KindScopes {
        let kinds = [
            ("v1", "Service", KindScope::Namespaced),
            ("v1", "ConfigMap", KindScope::Namespaced),
            ("apps/v1", "Deployment", KindScope::Namespaced),
            ("v1", "Namespace", KindScope::Cluster),
            (
                "flowcontrol.apiserver.k8s.io/v1",
                "PriorityLevelConfiguration",
                KindScope::Cluster,
            ),
            (
                "apiextensions.k8s.io/v1",
                "CustomResourceDefinition",
                KindScope::Cluster,
            ),
        ];
        let refs: Vec<KindRef> = kinds.iter().map(|(v, k, _)| KindRef::new(*v, *k)).collect();
        let scopes: Vec<Option<KindScope>> = kinds.iter().map(|(_, _, s)| Some(*s)).collect();
        KindScopes::new(&refs, &scopes, &[])
    }

    fn prepare(
        objects: &[Value],
        settings: &ClusterSettings,
    ) -> Result<Vec<Value>, ManifestRejected> {
        prepare_with(objects, &served(), settings)
    }

    fn prepare_with(
        objects: &[Value],
        scopes: &KindScopes,
        settings: &ClusterSettings,
    ) -> Result<Vec<Value>, ManifestRejected> {
        prepare_objects(
            objects,
            scopes,
            settings,
            &Target {
                cluster: ClusterName::parse("eu").expect("cluster"),
                namespace: Namespace::parse("shop").expect("namespace"),
            },
            &ServiceName::parse("hello").expect("service"),
            ReleaseId::generate(),
            DeploymentId::generate(),
        )
    }

    #[test]
    fn every_object_is_labelled_annotated_and_namespaced() {
        let objects = [
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hello", "labels": {"app": "hello"}}}),
        ];
        let prepared = prepare(&objects, &ClusterSettings::default()).expect("prepared");
        let metadata = &prepared[0]["metadata"];
        assert_eq!(metadata["namespace"], "shop");
        assert_eq!(metadata["labels"]["app"], "hello");
        assert_eq!(metadata["labels"][labels::MANAGED_BY], "kubernaut");
        assert_eq!(metadata["labels"][labels::SERVICE], "hello");
        assert!(metadata["annotations"][labels::RELEASE_ID].is_string());
        assert!(metadata["annotations"][labels::DEPLOYMENT_ID].is_string());
    }

    #[test]
    fn cluster_scoped_kinds_and_other_namespaces_need_the_clusters_permission() {
        let namespace =
            [json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}})];
        assert!(matches!(
            prepare(&namespace, &ClusterSettings::default()),
            Err(ManifestRejected::ClusterScoped { .. })
        ));
        let allowed = ClusterSettings {
            allow_cluster_scoped: true,
            ..ClusterSettings::default()
        };
        let prepared = prepare(&namespace, &allowed).expect("allowed");
        assert!(prepared[0]["metadata"].get("namespace").is_none());

        let elsewhere = [
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "kube-system"}}),
        ];
        assert!(matches!(
            prepare(&elsewhere, &ClusterSettings::default()),
            Err(ManifestRejected::OtherNamespace { .. })
        ));
        let allowed = ClusterSettings {
            allow_other_namespaces: true,
            ..ClusterSettings::default()
        };
        let prepared = prepare(&elsewhere, &allowed).expect("allowed");
        assert_eq!(prepared[0]["metadata"]["namespace"], "kube-system");
        // ... but only into the namespaces the cluster allows.
        let fenced = ClusterSettings {
            allow_other_namespaces: true,
            allowed_namespaces: vec!["shop".into(), "team-*".into()],
            ..ClusterSettings::default()
        };
        assert!(matches!(
            prepare(&elsewhere, &fenced),
            Err(ManifestRejected::NamespaceNotAllowed { .. })
        ));
    }

    #[test]
    fn scope_comes_from_discovery_not_from_a_list_of_names() {
        // A kind no list of names knew: the cluster's discovery says it is cluster-wide.
        let flow = [json!({
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
            "kind": "PriorityLevelConfiguration",
            "metadata": {"name": "greedy", "namespace": "shop"}
        })];
        assert!(matches!(
            prepare(&flow, &ClusterSettings::default()),
            Err(ManifestRejected::ClusterScoped { .. })
        ));
        let allowed = ClusterSettings {
            allow_cluster_scoped: true,
            ..ClusterSettings::default()
        };
        let prepared = prepare(&flow, &allowed).expect("allowed");
        assert!(
            prepared[0]["metadata"].get("namespace").is_none(),
            "a namespace on a cluster-wide object is dropped: {}",
            prepared[0]
        );

        // A kind the cluster does not serve is refused before anything is applied.
        let unknown =
            [json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})];
        let refused = prepare(&unknown, &allowed).expect_err("unknown kind");
        assert!(matches!(refused, ManifestRejected::UnknownKind { .. }));
        assert!(
            refused.to_string().contains("example.com/v1 Widget"),
            "{refused}"
        );
    }

    #[test]
    fn a_definition_in_the_manifest_gives_its_kinds_their_scope() {
        let definition = |scope: &str| {
            json!({
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {"name": "policies.example.com"},
                "spec": {
                    "group": "example.com",
                    "scope": scope,
                    "names": {"kind": "Policy", "plural": "policies"},
                    "versions": [{"name": "v1"}, {"name": "v1beta1"}]
                }
            })
        };
        let policy = json!({"apiVersion": "example.com/v1beta1", "kind": "Policy", "metadata": {"name": "p"}});
        let allowed = ClusterSettings {
            allow_cluster_scoped: true,
            ..ClusterSettings::default()
        };
        for (scope, namespaced) in [("Namespaced", true), ("Cluster", false)] {
            let objects = [definition(scope), policy.clone()];
            let kinds = KindRef::distinct_in(&objects);
            // The cluster serves the definition kind, not yet the new one.
            let discovered: Vec<Option<KindScope>> = kinds
                .iter()
                .map(|k| (k.kind == "CustomResourceDefinition").then_some(KindScope::Cluster))
                .collect();
            let scopes = KindScopes::new(&kinds, &discovered, &objects);
            let prepared = prepare_with(&objects, &scopes, &allowed).expect("prepared");
            assert_eq!(
                prepared[1]["metadata"].get("namespace").is_some(),
                namespaced,
                "{scope}: {}",
                prepared[1]
            );
        }
    }

    #[test]
    fn the_kinds_a_cluster_allows_are_named_by_group_and_kind() {
        let settings = ClusterSettings {
            allowed_kinds: vec![
                "apps/Deployment".into(),
                "core/Service".into(),
                "ConfigMap".into(),
                "networking.k8s.io/*".into(),
            ],
            ..ClusterSettings::default()
        };
        let allows = |v: &str, k: &str| settings.allows_kind(&KindRef::new(v, k));
        assert!(allows("apps/v1", "Deployment"));
        assert!(allows("v1", "Service"));
        assert!(allows("v1", "ConfigMap"));
        assert!(allows("networking.k8s.io/v1", "Ingress"));
        assert!(!allows("apps/v1", "DaemonSet"));
        assert!(!allows("v1", "Secret"));
        assert!(!allows("example.com/v1", "Deployment"));
        assert!(ClusterSettings::default().allows_kind(&KindRef::new("v1", "Secret")));

        let secret = [
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}}),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}}),
        ];
        let refused = prepare(
            &secret,
            &ClusterSettings {
                allow_cluster_scoped: true,
                ..settings
            },
        )
        .expect_err("Namespace is not an allowed kind");
        assert!(
            matches!(&refused, ManifestRejected::KindNotAllowed { kind, .. } if kind == "v1 Namespace"),
            "{refused}"
        );
    }

    #[test]
    fn the_same_object_twice_is_refused() {
        let object = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}});
        assert!(matches!(
            prepare(&[object.clone(), object], &ClusterSettings::default()),
            Err(ManifestRejected::Duplicate { .. })
        ));
    }

    #[test]
    fn namespace_patterns_allow_what_they_name() {
        let settings = ClusterSettings {
            allowed_namespaces: vec!["staging".into(), "team-*".into()],
            ..ClusterSettings::default()
        };
        let allows = |n: &str| settings.allows_namespace(&Namespace::parse(n).expect("namespace"));
        assert!(allows("staging"));
        assert!(allows("team-a"));
        assert!(!allows("production"));
        assert!(ClusterSettings::default().allows_namespace(&Namespace::parse("any").expect("ns")));
    }
}
