//! Clusters as the domain sees them: their configured rules, how a rendered manifest is
//! made ready for one, and what applying and watching a rollout yields.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::deployment::{ClusterName, DeploymentId, Diagnostics, Namespace, ResourceRef};
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

/// Kinds that live outside namespaces; refused unless the cluster allows them.
pub const CLUSTER_SCOPED_KINDS: [&str; 18] = [
    "Namespace",
    "Node",
    "PersistentVolume",
    "StorageClass",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PriorityClass",
    "IngressClass",
    "RuntimeClass",
    "CSIDriver",
    "CSINode",
    "VolumeAttachment",
    "APIService",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
    "ValidatingAdmissionPolicy",
    "ClusterIssuer",
];

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
    /// Whether manifests may hold cluster-scoped kinds.
    #[serde(default)]
    pub allow_cluster_scoped: bool,
    /// Whether manifests may name namespaces other than the deployment's.
    #[serde(default)]
    pub allow_other_namespaces: bool,
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
    settings: &ClusterSettings,
    cluster: &ClusterName,
    namespace: &Namespace,
    service: &ServiceName,
    release: ReleaseId,
    deployment: DeploymentId,
) -> Result<Vec<Value>, ManifestRejected> {
    let mut prepared = Vec::with_capacity(objects.len());
    let mut seen = std::collections::BTreeSet::new();
    for object in objects {
        let mut object = object.clone();
        let resource = resource_ref_of(&object);
        let display = resource.to_string();
        let cluster_scoped = CLUSTER_SCOPED_KINDS.contains(&resource.kind.as_str());
        if cluster_scoped && !settings.allow_cluster_scoped {
            return Err(ManifestRejected::ClusterScoped {
                object: display,
                cluster: cluster.to_string(),
            });
        }
        let metadata = object_map(&mut object, "metadata");
        if !cluster_scoped {
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
mod tests {
    use serde_json::json;

    use super::*;

    fn prepare(
        objects: &[Value],
        settings: &ClusterSettings,
    ) -> Result<Vec<Value>, ManifestRejected> {
        prepare_objects(
            objects,
            settings,
            &ClusterName::parse("eu").expect("cluster"),
            &Namespace::parse("shop").expect("namespace"),
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
