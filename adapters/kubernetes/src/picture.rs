//! How a rollout stands right now, read once (not watched) for a deployment's page:
//! each workload's counts and conditions, and its pods sorted into the new revision's
//! and older ones'. One request per object, without retries: a page must not hang on a
//! cluster that does not answer.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::Api;
use kube::api::ListParams;
use kube::core::Selector;
use kubernaut_domain::cluster::{PodPicture, PodState, WorkloadCondition, WorkloadPicture};
use kubernaut_domain::deployment::{Namespace, ResourceRef};
use kubernaut_domain::ports::ClusterError;

use crate::KubernetesCluster;
use crate::failures::to_cluster_error;
use crate::rollout::pods;

const REVISION: &str = "deployment.kubernetes.io/revision";

/// The picture of each workload among `resources` that exists.
pub(crate) async fn picture(
    cluster: &KubernetesCluster,
    namespace: &Namespace,
    resources: &[ResourceRef],
) -> Result<Vec<WorkloadPicture>, ClusterError> {
    let mut pictures = Vec::new();
    for resource in resources {
        let group = resource
            .api_version
            .split_once('/')
            .map_or("", |(group, _)| group);
        let reader = Reader {
            cluster,
            namespace: namespace.as_str(),
            resource,
        };
        let found = match (group, resource.kind.as_str()) {
            ("apps", "Deployment") => reader.deployment().await?,
            ("apps", "StatefulSet") => reader.stateful_set().await?,
            ("apps", "DaemonSet") => reader.daemon_set().await?,
            ("batch", "Job") => reader.job().await?,
            _ => None,
        };
        pictures.extend(found);
    }
    Ok(pictures)
}

struct Reader<'a> {
    cluster: &'a KubernetesCluster,
    namespace: &'a str,
    resource: &'a ResourceRef,
}

impl Reader<'_> {
    fn error(&self, error: &kube::Error) -> ClusterError {
        to_cluster_error(error, &self.resource.to_string())
    }

    async fn get<K>(&self) -> Result<Option<K>, ClusterError>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let api: Api<K> = Api::namespaced(self.cluster.client.clone(), self.namespace);
        api.get_opt(&self.resource.name)
            .await
            .map_err(|e| self.error(&e))
    }

    async fn list<K>(&self, selector: Option<&LabelSelector>) -> Result<Vec<K>, ClusterError>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let api: Api<K> = Api::namespaced(self.cluster.client.clone(), self.namespace);
        let selector = selector
            .cloned()
            .and_then(|s| Selector::try_from(s).ok())
            .map(|s| s.to_string())
            .unwrap_or_default();
        let params = ListParams::default().labels(&selector);
        Ok(api.list(&params).await.map_err(|e| self.error(&e))?.items)
    }

    async fn deployment(&self) -> Result<Option<WorkloadPicture>, ClusterError> {
        let Some(deployment) = self.get::<Deployment>().await? else {
            return Ok(None);
        };
        let selector = deployment.spec.as_ref().map(|s| &s.selector);
        let uid = uid_of(&deployment.metadata);
        let revision = annotation(&deployment.metadata, REVISION);
        let replica_sets: Vec<ReplicaSet> = self
            .list::<ReplicaSet>(selector)
            .await?
            .into_iter()
            .filter(|rs| pods::controlled_by(&rs.metadata, &uid))
            .collect();
        let new_rs = replica_sets
            .iter()
            .find(|rs| revision.is_some() && annotation(&rs.metadata, REVISION) == revision)
            .map(|rs| uid_of(&rs.metadata));
        let pods = self
            .list::<Pod>(selector)
            .await?
            .into_iter()
            .filter_map(|pod| {
                let owner = replica_sets
                    .iter()
                    .map(|rs| uid_of(&rs.metadata))
                    .find(|rs| pods::controlled_by(&pod.metadata, rs))?;
                Some(pod_picture(&pod, new_rs.as_deref() == Some(owner.as_str())))
            })
            .collect();
        let status = deployment.status.clone().unwrap_or_default();
        Ok(Some(picture_of(
            self.resource,
            Counts {
                desired: deployment
                    .spec
                    .as_ref()
                    .and_then(|s| s.replicas)
                    .unwrap_or(1),
                updated: status.updated_replicas.unwrap_or(0),
                ready: status.ready_replicas.unwrap_or(0),
                available: status.available_replicas.unwrap_or(0),
            },
            status
                .conditions
                .unwrap_or_default()
                .into_iter()
                .map(|c| (c.type_, c.status, c.reason, c.message))
                .collect(),
            pods,
        )))
    }

    async fn stateful_set(&self) -> Result<Option<WorkloadPicture>, ClusterError> {
        let Some(set) = self.get::<StatefulSet>().await? else {
            return Ok(None);
        };
        let uid = uid_of(&set.metadata);
        let status = set.status.clone().unwrap_or_default();
        let update_revision = status.update_revision.clone();
        let pods = self
            .list::<Pod>(set.spec.as_ref().map(|s| &s.selector))
            .await?
            .into_iter()
            .filter(|pod| pods::controlled_by(&pod.metadata, &uid))
            .map(|pod| {
                let new = update_revision.is_some()
                    && label(&pod.metadata, "controller-revision-hash")
                        == update_revision.as_deref();
                pod_picture(&pod, new)
            })
            .collect();
        Ok(Some(picture_of(
            self.resource,
            Counts {
                desired: set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                updated: status.updated_replicas.unwrap_or(0),
                ready: status.ready_replicas.unwrap_or(0),
                available: status.available_replicas.unwrap_or(0),
            },
            status
                .conditions
                .unwrap_or_default()
                .into_iter()
                .map(|c| (c.type_, c.status, c.reason, c.message))
                .collect(),
            pods,
        )))
    }

    async fn daemon_set(&self) -> Result<Option<WorkloadPicture>, ClusterError> {
        let Some(set) = self.get::<DaemonSet>().await? else {
            return Ok(None);
        };
        let uid = uid_of(&set.metadata);
        let generation = set.metadata.generation.map(|g| g.to_string());
        let status = set.status.clone().unwrap_or_default();
        let pods = self
            .list::<Pod>(set.spec.as_ref().map(|s| &s.selector))
            .await?
            .into_iter()
            .filter(|pod| pods::controlled_by(&pod.metadata, &uid))
            .map(|pod| {
                let new = generation.is_some()
                    && label(&pod.metadata, "pod-template-generation") == generation.as_deref();
                pod_picture(&pod, new)
            })
            .collect();
        Ok(Some(picture_of(
            self.resource,
            Counts {
                desired: status.desired_number_scheduled,
                updated: status.updated_number_scheduled.unwrap_or(0),
                ready: status.number_ready,
                available: status.number_available.unwrap_or(0),
            },
            status
                .conditions
                .unwrap_or_default()
                .into_iter()
                .map(|c| (c.type_, c.status, c.reason, c.message))
                .collect(),
            pods,
        )))
    }

    async fn job(&self) -> Result<Option<WorkloadPicture>, ClusterError> {
        let Some(job) = self.get::<Job>().await? else {
            return Ok(None);
        };
        let uid = uid_of(&job.metadata);
        let status = job.status.clone().unwrap_or_default();
        let pods = self
            .list::<Pod>(job.spec.as_ref().and_then(|s| s.selector.as_ref()))
            .await?
            .into_iter()
            .filter(|pod| pods::controlled_by(&pod.metadata, &uid))
            .map(|pod| pod_picture(&pod, true))
            .collect();
        let spec = job.spec.as_ref();
        Ok(Some(picture_of(
            self.resource,
            Counts {
                desired: spec
                    .and_then(|s| s.completions.or(s.parallelism))
                    .unwrap_or(1),
                updated: status.active.unwrap_or(0) + status.succeeded.unwrap_or(0),
                ready: status.ready.unwrap_or(0),
                available: status.succeeded.unwrap_or(0),
            },
            status
                .conditions
                .unwrap_or_default()
                .into_iter()
                .map(|c| (c.type_, c.status, c.reason, c.message))
                .collect(),
            pods,
        )))
    }
}

struct Counts {
    desired: i32,
    updated: i32,
    ready: i32,
    available: i32,
}

type RawCondition = (String, String, Option<String>, Option<String>);

fn picture_of(
    resource: &ResourceRef,
    counts: Counts,
    conditions: Vec<RawCondition>,
    mut pods: Vec<PodPicture>,
) -> WorkloadPicture {
    pods.sort_by(|a, b| {
        b.new_revision
            .cmp(&a.new_revision)
            .then_with(|| a.name.cmp(&b.name))
    });
    WorkloadPicture {
        resource: format!("{}/{}", resource.kind, resource.name),
        desired: counts.desired,
        updated: counts.updated,
        ready: counts.ready,
        available: counts.available,
        conditions: conditions
            .into_iter()
            .map(|(kind, status, reason, message)| WorkloadCondition {
                kind,
                status,
                reason,
                message,
            })
            .collect(),
        pods,
    }
}

/// Where a pod stands: being deleted, failing (what the timeline would note about it),
/// ready, or on its way.
fn pod_picture(pod: &Pod, new_revision: bool) -> PodPicture {
    let (state, detail) = if pods::terminating(pod) {
        (PodState::Terminating, None)
    } else if let Some(state) = pods::notable_state(pod) {
        (PodState::Failing, Some(state))
    } else if pods::is_ready(pod) {
        (PodState::Ready, None)
    } else {
        (
            PodState::Updating,
            pod.status.as_ref().and_then(|s| s.phase.clone()),
        )
    };
    PodPicture {
        name: pods::name(pod),
        new_revision,
        state,
        detail,
    }
}

fn uid_of(meta: &ObjectMeta) -> String {
    meta.uid.clone().unwrap_or_default()
}

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a String> {
    meta.annotations.as_ref().and_then(|a| a.get(key))
}

fn label<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(key))
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(metadata: serde_json::Value, status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": metadata, "status": status})).expect("a pod")
    }

    #[test]
    fn a_pod_is_terminating_failing_ready_or_updating() {
        let ready = pod(
            json!({"name": "web-1"}),
            json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}),
        );
        assert_eq!(pod_picture(&ready, true).state, PodState::Ready);
        let crashing = pod(
            json!({"name": "web-2"}),
            json!({"phase": "Running", "containerStatuses": [{"name": "web", "image": "x", "imageID": "", "ready": false, "restartCount": 4,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}),
        );
        let failing = pod_picture(&crashing, true);
        assert_eq!(failing.state, PodState::Failing);
        assert_eq!(failing.detail.as_deref(), Some("CrashLoopBackOff"));
        let starting = pod(json!({"name": "web-3"}), json!({"phase": "Pending"}));
        let updating = pod_picture(&starting, false);
        assert_eq!(updating.state, PodState::Updating);
        assert!(!updating.new_revision);
        let leaving = pod(
            json!({"name": "web-4", "deletionTimestamp": "2026-12-04T10:00:00Z"}),
            json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}),
        );
        assert_eq!(pod_picture(&leaving, false).state, PodState::Terminating);
    }

    #[test]
    fn the_new_revision_s_pods_come_first() {
        let resource = ResourceRef {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "web".into(),
            namespace: Some("shop".into()),
        };
        let pod = |name: &str, new_revision| PodPicture {
            name: name.to_owned(),
            new_revision,
            state: PodState::Ready,
            detail: None,
        };
        let picture = picture_of(
            &resource,
            Counts {
                desired: 2,
                updated: 1,
                ready: 2,
                available: 2,
            },
            Vec::new(),
            vec![pod("web-a", false), pod("web-c", true), pod("web-b", true)],
        );
        let names: Vec<_> = picture.pods.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["web-b", "web-c", "web-a"]);
        assert_eq!(picture.resource, "Deployment/web");
    }
}
