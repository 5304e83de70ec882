//! Deletes what a service's new manifest no longer holds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PropagationPolicy};
use kube::discovery::{ApiResource, Discovery, Scope, verbs};

use kubernaut_domain::cluster::labels;
use kubernaut_domain::deployment::{Namespace, ResourceRef};
use kubernaut_domain::ports::ClusterError;
use kubernaut_domain::release::ServiceName;

use crate::KubernetesCluster;
use crate::failures::{retrying, status_code, to_cluster_error};

/// The API groups prune looks in: where the kinds of an application's manifest live.
/// Objects of other groups (custom resources included) are never pruned, which errs on
/// the side of leaving an object behind rather than deleting one we cannot reason about.
const PRUNED_GROUPS: [&str; 6] = [
    "",
    "apps",
    "batch",
    "networking.k8s.io",
    "policy",
    "autoscaling",
];

/// Kinds that carry no configuration of their own: written by controllers, never by us.
const NEVER_PRUNED: [&str; 4] = ["Event", "Endpoints", "ControllerRevision", "Pod"];

pub(crate) async fn prune(
    cluster: &KubernetesCluster,
    namespace: &Namespace,
    service: &ServiceName,
    keep: &[ResourceRef],
) -> Result<Vec<ResourceRef>, ClusterError> {
    let kinds = prunable_kinds(cluster).await?;
    let selector = labels::selector(service.as_str());
    let list_params = ListParams::default().labels(&selector);
    let delete_params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    let mut deleted = Vec::new();
    for resource in kinds.iter() {
        let api: Api<DynamicObject> =
            Api::namespaced_with(cluster.client.clone(), namespace.as_str(), resource);
        let kind_display = format!("{}s", resource.kind);
        let listed = retrying(&cluster.settings, || api.list(&list_params))
            .await
            .map_err(|error| to_cluster_error(&error, &kind_display))?;
        for object in listed {
            let Some(name) = object.metadata.name.clone() else {
                continue;
            };
            let controlled = object
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|owner| owner.controller == Some(true));
            let reference = ResourceRef {
                api_version: resource.api_version.clone(),
                kind: resource.kind.clone(),
                name: name.clone(),
                namespace: Some(namespace.as_str().to_owned()),
            };
            if controlled || keep.iter().any(|kept| same_object(kept, &reference)) {
                continue;
            }
            let shown = reference.to_string();
            match retrying(&cluster.settings, || api.delete(&name, &delete_params)).await {
                Ok(_) => {
                    tracing::info!(object = %shown, namespace = %namespace, "pruned");
                    deleted.push(reference);
                }
                // Someone else deleted it first: the outcome we wanted.
                Err(error) if status_code(&error) == Some(404) => {}
                Err(error) => return Err(to_cluster_error(&error, &shown)),
            }
        }
    }
    Ok(deleted)
}

/// How long the kinds prune looks in are kept before discovery is asked again. They
/// are the built-in kinds of [`PRUNED_GROUPS`], which change only when the API server
/// is upgraded; kubectl keeps its discovery cache for hours.
const PRUNABLE_KINDS_TTL: Duration = Duration::from_secs(10 * 60);

/// What a cluster remembers of the kinds prune looks in, and since when.
pub(crate) type PrunableKinds = tokio::sync::Mutex<Option<(Instant, Arc<Vec<ApiResource>>)>>;

/// The namespaced kinds of [`PRUNED_GROUPS`] that can be listed and deleted, from the
/// cluster's cache, or from discovery when it is empty or older than
/// [`PRUNABLE_KINDS_TTL`]. Prunes at the same moment wait for one discovery: a burst of
/// a thousand deploys ran a thousand discoveries (22 MB of answers held at once, and
/// seven requests each to the API server).
async fn prunable_kinds(
    cluster: &KubernetesCluster,
) -> Result<Arc<Vec<ApiResource>>, ClusterError> {
    let mut cached = cluster.prunable.lock().await;
    if let Some((at, kinds)) = cached.as_ref()
        && at.elapsed() < PRUNABLE_KINDS_TTL
    {
        return Ok(Arc::clone(kinds));
    }
    let discovery = retrying(&cluster.settings, || {
        Discovery::new(cluster.client.clone())
            .filter(&PRUNED_GROUPS)
            .run()
    })
    .await
    .map_err(|error| to_cluster_error(&error, "discovery"))?;
    let kinds: Arc<Vec<ApiResource>> = Arc::new(
        discovery
            .groups()
            .flat_map(|group| group.recommended_resources())
            .filter(|(resource, capabilities)| {
                capabilities.scope == Scope::Namespaced
                    && capabilities.supports_operation(verbs::LIST)
                    && capabilities.supports_operation(verbs::DELETE)
                    && !NEVER_PRUNED.contains(&resource.kind.as_str())
            })
            .map(|(resource, _)| resource)
            .collect(),
    );
    *cached = Some((Instant::now(), Arc::clone(&kinds)));
    Ok(kinds)
}

/// Whether two references name the same object: the same group (any version), kind,
/// name and namespace.
fn same_object(a: &ResourceRef, b: &ResourceRef) -> bool {
    fn group(api_version: &str) -> &str {
        api_version.split_once('/').map_or("", |(group, _)| group)
    }
    group(&a.api_version) == group(&b.api_version)
        && a.kind == b.kind
        && a.name == b.name
        && a.namespace == b.namespace
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(api_version: &str, kind: &str, name: &str) -> ResourceRef {
        ResourceRef {
            api_version: api_version.into(),
            kind: kind.into(),
            name: name.into(),
            namespace: Some("shop".into()),
        }
    }

    #[test]
    fn objects_are_the_same_across_versions_of_their_group() {
        assert!(same_object(
            &reference("autoscaling/v1", "HorizontalPodAutoscaler", "web"),
            &reference("autoscaling/v2", "HorizontalPodAutoscaler", "web"),
        ));
        assert!(!same_object(
            &reference("v1", "Service", "web"),
            &reference("v1", "Service", "api"),
        ));
        assert!(!same_object(
            &reference("v1", "ConfigMap", "web"),
            &reference("v1", "Service", "web"),
        ));
    }
}
