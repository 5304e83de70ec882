//! Deployment rollouts through the simulated controllers, watched through kube-rs.

mod sim_support;

use std::collections::BTreeMap;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams, WatchEvent, WatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use sim_support::{WAIT, deployment, start, wait_for};

fn condition(d: &Deployment, kind: &str) -> Option<(String, String)> {
    d.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default()))
}

/// kubectl's rule: observed, all replicas updated and available, no old ones left.
fn rolled_out(d: &Deployment) -> bool {
    let Some(status) = &d.status else {
        return false;
    };
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    d.metadata.generation <= status.observed_generation
        && status.updated_replicas == Some(want)
        && status.replicas == Some(want)
        && status.available_replicas == Some(want)
}

async fn wait_rolled_out(api: &Api<Deployment>, name: &str) -> Deployment {
    wait_for(&format!("deployment {name} to roll out"), || {
        let api = api.clone();
        let name = name.to_owned();
        async move { api.get(&name).await.ok().filter(rolled_out) }
    })
    .await
}

#[tokio::test]
async fn a_good_rollout_becomes_available_with_kubectl_style_status() {
    let (_sim, client) = start().await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deployments
        .patch(
            "web",
            &PatchParams::apply("test"),
            &Patch::Apply(deployment("web", "nginx:1.27", 3)),
        )
        .await
        .expect("apply");
    let d = wait_rolled_out(&deployments, "web").await;
    let status = d.status.clone().expect("status");
    assert_eq!(status.ready_replicas, Some(3));
    assert_eq!(status.unavailable_replicas, None);
    assert_eq!(
        condition(&d, "Available"),
        Some(("True".into(), "MinimumReplicasAvailable".into()))
    );
    assert_eq!(
        condition(&d, "Progressing"),
        Some(("True".into(), "NewReplicaSetAvailable".into()))
    );
    assert_eq!(
        d.annotations()
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("1")
    );

    let replicasets: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let rs = replicasets
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("list");
    assert_eq!(rs.items.len(), 1);
    let hash = rs.items[0].labels()["pod-template-hash"].clone();
    assert_eq!(rs.items[0].name_any(), format!("web-{hash}"));
    assert_eq!(rs.items[0].owner_references()[0].uid, d.uid().expect("uid"));

    let pods: Api<Pod> = Api::namespaced(client, "default");
    let listed = pods
        .list(&ListParams::default().labels(&format!("pod-template-hash={hash}")))
        .await
        .expect("pods");
    assert_eq!(listed.items.len(), 3);
    for pod in &listed.items {
        let status = pod.status.as_ref().expect("status");
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert!(status.pod_ip.is_some());
        assert!(
            pod.spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .is_some()
        );
    }
    let running = pods
        .list(&ListParams::default().fields("status.phase=Running"))
        .await
        .expect("pods");
    assert_eq!(running.items.len(), 3);
}

#[tokio::test]
async fn a_rolling_update_honours_max_surge_and_max_unavailable() {
    let (_sim, client) = start().await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let mut d = deployment("roll", "nginx:1", 4);
    let strategy =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}});
    d.spec.as_mut().expect("spec").strategy =
        Some(serde_json::from_value(strategy).expect("strategy"));
    let pp = PatchParams::apply("test");
    deployments
        .patch("roll", &pp, &Patch::Apply(&d))
        .await
        .expect("apply");
    let before = wait_rolled_out(&deployments, "roll").await;

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let rv = pods
        .list(&ListParams::default().labels("app=roll"))
        .await
        .expect("list")
        .metadata
        .resource_version
        .expect("rv");
    let mut stream = pods
        .watch(&WatchParams::default().labels("app=roll").timeout(60), &rv)
        .await
        .expect("watch")
        .boxed();

    let mut updated = d.clone();
    updated
        .spec
        .as_mut()
        .expect("spec")
        .template
        .spec
        .as_mut()
        .expect("pod spec")
        .containers[0]
        .image = Some("nginx:2".into());
    deployments
        .patch("roll", &pp, &Patch::Apply(&updated))
        .await
        .expect("update");

    // Replay every pod change: never more than 5 pods, never fewer than 4 ready.
    let mut ready: BTreeMap<String, bool> = BTreeMap::new();
    for pod in pods
        .list(&ListParams::default().labels("app=roll"))
        .await
        .expect("list")
        .items
    {
        ready.insert(pod.name_any(), true);
    }
    let mut max_pods = 0;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let event = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("rollout finishes")
            .expect("stream")
            .expect("event");
        match event {
            // Terminating pods no longer count, as for the real controller.
            WatchEvent::Modified(p) if p.metadata.deletion_timestamp.is_some() => {
                ready.remove(&p.name_any());
            }
            WatchEvent::Added(p) | WatchEvent::Modified(p) => {
                let is_ready = p
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                ready.insert(p.name_any(), is_ready);
            }
            WatchEvent::Deleted(p) => {
                ready.remove(&p.name_any());
            }
            _ => {}
        }
        max_pods = max_pods.max(ready.len());
        assert!(
            ready.len() <= 5,
            "maxSurge 1 allows at most 5 pods, saw {}",
            ready.len()
        );
        assert!(
            ready.values().filter(|r| **r).count() >= 4,
            "maxUnavailable 0 keeps 4 ready pods"
        );
        let d = deployments.get("roll").await.expect("get");
        if rolled_out(&d)
            && d.metadata.generation == Some(2)
            && ready.len() == 4
            && ready.values().all(|r| *r)
        {
            break;
        }
    }
    assert_eq!(max_pods, 5, "the rollout used its surge");
    let after = deployments.get("roll").await.expect("get");
    assert_eq!(
        after.annotations()["deployment.kubernetes.io/revision"],
        "2"
    );
    assert_eq!(
        before.annotations()["deployment.kubernetes.io/revision"],
        "1"
    );
    let replicasets: Api<ReplicaSet> = Api::namespaced(client, "default");
    let mut revisions: Vec<(String, i32)> = replicasets
        .list(&ListParams::default().labels("app=roll"))
        .await
        .expect("list")
        .items
        .iter()
        .map(|rs| {
            (
                rs.annotations()["deployment.kubernetes.io/revision"].clone(),
                rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0),
            )
        })
        .collect();
    revisions.sort();
    assert_eq!(revisions, [("1".to_owned(), 0), ("2".to_owned(), 4)]);
}

#[tokio::test]
async fn a_doomed_rollout_exceeds_its_progress_deadline() {
    let (_sim, client) = start().await;
    let deployments: Api<Deployment> = Api::namespaced(client, "default");
    let mut d = deployment("doomed", "registry.example.com/app:does-not-exist", 2);
    d.spec.as_mut().expect("spec").progress_deadline_seconds = Some(10);
    deployments
        .patch("doomed", &PatchParams::apply("test"), &Patch::Apply(&d))
        .await
        .expect("apply");
    let d = wait_for("ProgressDeadlineExceeded", || {
        let deployments = deployments.clone();
        async move {
            let d = deployments.get("doomed").await.ok()?;
            (condition(&d, "Progressing")?
                == ("False".to_owned(), "ProgressDeadlineExceeded".to_owned()))
                .then_some(d)
        }
    })
    .await;
    let status = d.status.expect("status");
    assert_eq!(status.available_replicas, None);
    assert_eq!(status.unavailable_replicas, Some(2));
    assert_eq!(status.updated_replicas, Some(2));
}

#[tokio::test]
async fn scaling_down_removes_pods_and_keeps_the_revision() {
    let (_sim, client) = start().await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deployments
        .patch(
            "scale",
            &PatchParams::apply("test"),
            &Patch::Apply(deployment("scale", "nginx:1", 3)),
        )
        .await
        .expect("apply");
    wait_rolled_out(&deployments, "scale").await;
    deployments
        .patch(
            "scale",
            &PatchParams::apply("test"),
            &Patch::Apply(deployment("scale", "nginx:1", 1)),
        )
        .await
        .expect("scale down");
    let d = wait_rolled_out(&deployments, "scale").await;
    assert_eq!(d.annotations()["deployment.kubernetes.io/revision"], "1");
    let pods: Api<Pod> = Api::namespaced(client, "default");
    // Scaled-down pods terminate gracefully, then disappear.
    wait_for("one pod left", || {
        let pods = pods.clone();
        async move {
            let left = pods
                .list(&ListParams::default().labels("app=scale"))
                .await
                .ok()?;
            (left.items.len() == 1).then_some(())
        }
    })
    .await;
    assert_eq!(
        pods.list(&ListParams::default().labels("app=scale"))
            .await
            .expect("list")
            .items
            .len(),
        1
    );
}

#[tokio::test]
async fn a_recreate_rollout_stops_every_old_pod_before_starting_new_ones() {
    let (_sim, client) = start().await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let mut d = deployment("recreate", "nginx:1", 2);
    d.spec.as_mut().expect("spec").strategy =
        Some(serde_json::from_value(json!({"type": "Recreate"})).expect("strategy"));
    let pp = PatchParams::apply("test");
    deployments
        .patch("recreate", &pp, &Patch::Apply(&d))
        .await
        .expect("apply");
    wait_rolled_out(&deployments, "recreate").await;

    let pods: Api<Pod> = Api::namespaced(client, "default");
    let listed = pods
        .list(&ListParams::default().labels("app=recreate"))
        .await
        .expect("list");
    let rv = listed.metadata.resource_version.expect("rv");
    let mut old: std::collections::BTreeSet<String> =
        listed.items.iter().map(ResourceExt::name_any).collect();
    let mut stream = pods
        .watch(
            &WatchParams::default().labels("app=recreate").timeout(60),
            &rv,
        )
        .await
        .expect("watch")
        .boxed();
    d.spec
        .as_mut()
        .expect("spec")
        .template
        .spec
        .as_mut()
        .expect("pod spec")
        .containers[0]
        .image = Some("nginx:2".into());
    deployments
        .patch("recreate", &pp, &Patch::Apply(&d))
        .await
        .expect("update");
    let mut new_pods = 0;
    while new_pods < 2 {
        let event = tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("events")
            .expect("stream")
            .expect("event");
        match event {
            WatchEvent::Deleted(p) => {
                old.remove(&p.name_any());
            }
            WatchEvent::Added(p) => {
                assert!(
                    old.is_empty(),
                    "new pod {} created while old pods remain: {old:?}",
                    p.name_any()
                );
                new_pods += 1;
            }
            _ => {}
        }
    }
    wait_rolled_out(&deployments, "recreate").await;
}
