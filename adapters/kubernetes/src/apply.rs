//! Server-side apply of a manifest, any kind the API server's discovery knows.

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{self, ApiCapabilities, ApiResource, Scope};
use serde_json::Value;

use std::time::Duration;

use kubernaut_domain::cluster::{AppliedResource, KindRef, KindScope, resource_ref_of};
use kubernaut_domain::deployment::ResourceRef;
use kubernaut_domain::ports::ClusterError;

use crate::KubernetesCluster;
use crate::failures::{retrying, status_code, to_cluster_error};

/// The field manager of every apply.
pub(crate) const FIELD_MANAGER: &str = "kubernaut";

pub(crate) async fn apply_all(
    cluster: &KubernetesCluster,
    objects: &[Value],
) -> Result<Vec<AppliedResource>, ClusterError> {
    let mut applied: Vec<AppliedResource> = Vec::with_capacity(objects.len());
    for object in objects {
        // A custom resource may follow its definition in the same manifest: the API
        // server serves the new kind a moment after accepting the definition.
        let defines_kinds = applied.iter().any(|a| {
            a.resource.kind == "CustomResourceDefinition"
                && a.resource.api_version.starts_with("apiextensions.k8s.io/")
        });
        applied.push(apply_one(cluster, object, defines_kinds).await?);
    }
    Ok(applied)
}

/// How long a kind defined earlier in the same manifest may take to be served.
const NEW_KIND_WAIT: Duration = Duration::from_secs(10);

async fn apply_one(
    cluster: &KubernetesCluster,
    object: &Value,
    wait_for_new_kinds: bool,
) -> Result<AppliedResource, ClusterError> {
    let reference = resource_ref_of(object);
    let display = reference.to_string();
    let rejected = |message: String| ClusterError::Rejected {
        resource: display.clone(),
        message,
    };
    if reference.name.is_empty() {
        return Err(rejected("the object has no metadata.name".to_owned()));
    }
    let gvk = group_version_kind(&reference).ok_or_else(|| {
        rejected(format!(
            "apiVersion {:?} and kind {:?} do not name a kind",
            reference.api_version, reference.kind
        ))
    })?;
    let waiting_since = tokio::time::Instant::now();
    let (resource, capabilities) = loop {
        match cluster.resolve(&gvk).await {
            Ok(found) => break found,
            Err(Resolve::Unknown)
                if wait_for_new_kinds && waiting_since.elapsed() < NEW_KIND_WAIT =>
            {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(Resolve::Unknown) => return Err(unknown_kind(&gvk, &display)),
            Err(Resolve::Failed(error)) => return Err(to_cluster_error(&error, &display)),
        }
    };
    let api = match (&capabilities.scope, reference.namespace.as_deref()) {
        (Scope::Cluster, _) => Api::<DynamicObject>::all_with(cluster.client.clone(), &resource),
        (Scope::Namespaced, Some(namespace)) => {
            Api::namespaced_with(cluster.client.clone(), namespace, &resource)
        }
        (Scope::Namespaced, None) => {
            return Err(rejected(format!(
                "{} is namespaced, and the object names no namespace",
                reference.kind
            )));
        }
    };
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let patch = Patch::Apply(object);
    let stored = retrying(&cluster.settings, || {
        api.patch(&reference.name, &params, &patch)
    })
    .await
    .map_err(|error| to_cluster_error(&error, &display))?;
    Ok(AppliedResource {
        resource: ResourceRef {
            namespace: match capabilities.scope {
                Scope::Namespaced => reference.namespace.clone(),
                Scope::Cluster => None,
            },
            ..reference
        },
        uid: stored.metadata.uid.unwrap_or_default(),
        generation: stored.metadata.generation,
    })
}

/// The group, version and kind of a reference; `None` when they cannot name a kind.
pub(crate) fn group_version_kind(reference: &ResourceRef) -> Option<GroupVersionKind> {
    let (group, version) = match reference.api_version.split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", reference.api_version.as_str()),
    };
    (!version.is_empty() && !reference.kind.is_empty() && !version.contains('/'))
        .then(|| GroupVersionKind::gvk(group, version, &reference.kind))
}

/// The scope of each kind (`None`: not served), from the discovery cache or the API
/// server.
pub(crate) async fn kind_scopes(
    cluster: &KubernetesCluster,
    kinds: &[KindRef],
) -> Result<Vec<Option<KindScope>>, ClusterError> {
    let mut scopes = Vec::with_capacity(kinds.len());
    for kind in kinds {
        let reference = ResourceRef {
            api_version: kind.api_version.clone(),
            kind: kind.kind.clone(),
            namespace: None,
            name: String::new(),
        };
        let Some(gvk) = group_version_kind(&reference) else {
            scopes.push(None);
            continue;
        };
        scopes.push(match cluster.resolve(&gvk).await {
            Ok((_, capabilities)) => Some(match capabilities.scope {
                Scope::Cluster => KindScope::Cluster,
                Scope::Namespaced => KindScope::Namespaced,
            }),
            Err(Resolve::Unknown) => None,
            Err(Resolve::Failed(error)) => {
                return Err(match to_cluster_error(&error, &kind.to_string()) {
                    // Discovery refused (403): nothing to learn by retrying, but not a
                    // reason to call the kind unknown either.
                    ClusterError::Rejected { resource, message } => {
                        ClusterError::Unavailable(format!("discovery of {resource}: {message}"))
                    }
                    unavailable => unavailable,
                });
            }
        });
    }
    Ok(scopes)
}

/// The live object of each of `objects`, `None` where there is none (or its kind is
/// not served): plain reads, nothing changed. The fields every read adds
/// (`managedFields`, `resourceVersion`, ...) stay: the caller compares only the fields
/// it sets.
pub(crate) async fn read_all(
    cluster: &KubernetesCluster,
    objects: &[Value],
) -> Result<Vec<Option<Value>>, ClusterError> {
    let mut live = Vec::with_capacity(objects.len());
    for object in objects {
        live.push(read_one(cluster, object).await?);
    }
    Ok(live)
}

async fn read_one(
    cluster: &KubernetesCluster,
    object: &Value,
) -> Result<Option<Value>, ClusterError> {
    let reference = resource_ref_of(object);
    let display = reference.to_string();
    let Some(gvk) = group_version_kind(&reference) else {
        return Ok(None);
    };
    if reference.name.is_empty() {
        return Ok(None);
    }
    let (resource, capabilities) = match cluster.resolve(&gvk).await {
        Ok(found) => found,
        Err(Resolve::Unknown) => return Ok(None),
        Err(Resolve::Failed(error)) => return Err(to_cluster_error(&error, &display)),
    };
    let api = match (&capabilities.scope, reference.namespace.as_deref()) {
        (Scope::Namespaced, Some(namespace)) => {
            Api::<DynamicObject>::namespaced_with(cluster.client.clone(), namespace, &resource)
        }
        (Scope::Namespaced, None) => return Ok(None),
        (Scope::Cluster, _) => Api::<DynamicObject>::all_with(cluster.client.clone(), &resource),
    };
    let found = retrying(&cluster.settings, || api.get_opt(&reference.name))
        .await
        .map_err(|error| to_cluster_error(&error, &display))?;
    found
        .map(|object| {
            serde_json::to_value(object).map_err(|error| {
                ClusterError::Unavailable(format!("{display} could not be read: {error}"))
            })
        })
        .transpose()
}

/// Why a kind could not be resolved.
#[derive(Debug)]
enum Resolve {
    /// The API server does not serve this group, version or kind.
    Unknown,
    Failed(kube::Error),
}

impl KubernetesCluster {
    /// The resource and capabilities of a kind, from the cache or, on a miss, from the
    /// API server's discovery of its group version.
    async fn resolve(
        &self,
        gvk: &GroupVersionKind,
    ) -> Result<(ApiResource, ApiCapabilities), Resolve> {
        if let Some(found) = self.discovery.read().await.get(gvk) {
            return Ok(found.clone());
        }
        let found = retrying(&self.settings, || discovery::pinned_kind(&self.client, gvk))
            .await
            .map_err(|error| match error {
                kube::Error::Discovery(_) => Resolve::Unknown,
                error if status_code(&error) == Some(404) => Resolve::Unknown,
                error => Resolve::Failed(error),
            })?;
        self.discovery
            .write()
            .await
            .insert(gvk.clone(), found.clone());
        Ok(found)
    }
}

fn unknown_kind(gvk: &GroupVersionKind, display: &str) -> ClusterError {
    let api_version = if gvk.group.is_empty() {
        gvk.version.clone()
    } else {
        format!("{}/{}", gvk.group, gvk.version)
    };
    ClusterError::Rejected {
        resource: display.to_owned(),
        message: format!(
            "the cluster does not know kind {} in {api_version}",
            gvk.kind
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(api_version: &str, kind: &str) -> ResourceRef {
        ResourceRef {
            api_version: api_version.into(),
            kind: kind.into(),
            name: "x".into(),
            namespace: None,
        }
    }

    #[test]
    fn core_and_grouped_api_versions_name_their_group() {
        let core = group_version_kind(&reference("v1", "ConfigMap")).expect("core");
        assert_eq!((core.group.as_str(), core.version.as_str()), ("", "v1"));
        let apps = group_version_kind(&reference("apps/v1", "Deployment")).expect("apps");
        assert_eq!((apps.group.as_str(), apps.version.as_str()), ("apps", "v1"));
        assert!(group_version_kind(&reference("", "Deployment")).is_none());
        assert!(group_version_kind(&reference("a/b/c", "Deployment")).is_none());
        assert!(group_version_kind(&reference("v1", "")).is_none());
    }
}
