//! Against a real cluster, when `KUBERNAUT_TEST_KUBECONFIG` names a kubeconfig (its
//! current context is used; `KUBERNAUT_TEST_NAMESPACE`, default `default`, must exist).
//! Skipped, saying so, otherwise.

use std::path::PathBuf;
use std::time::Duration;

use chrono::Utc;
use kubernaut_domain::cluster::{RolloutOutcome, RolloutRequest};
use kubernaut_domain::deployment::{DeploymentId, FailureReason, Namespace, ResourceRef};
use kubernaut_domain::ports::Cluster;
use kubernaut_domain::release::ServiceName;
use kubernaut_kubernetes::KubernetesCluster;
use serde_json::{Value, json};

const SERVICE: &str = "kubernaut-adapter-test";

fn labelled(namespace: &str, mut object: Value) -> Value {
    object["metadata"]["namespace"] = json!(namespace);
    object["metadata"]["labels"]["app.kubernetes.io/managed-by"] = json!("kubernaut");
    object["metadata"]["labels"]["kubernaut.io/service"] = json!(SERVICE);
    object
}

fn deployment(namespace: &str, image: &str) -> Value {
    labelled(
        namespace,
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": SERVICE},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": SERVICE}},
                "template": {
                    "metadata": {"labels": {"app": SERVICE}},
                    "spec": {"containers": [{"name": "app", "image": image}]}
                }
            }
        }),
    )
}

async fn rollout(
    cluster: &KubernetesCluster,
    namespace: &Namespace,
    objects: &[Value],
) -> RolloutOutcome {
    let applied = cluster.apply(objects).await.expect("apply");
    let started_at = Utc::now();
    let request = RolloutRequest {
        deployment: DeploymentId::generate(),
        namespace: namespace.clone(),
        resources: applied,
        started_at,
        deadline: started_at + chrono::Duration::minutes(5),
    };
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    cluster
        .watch_rollout(&request, tx)
        .await
        .expect("the cluster stays reachable")
}

#[tokio::test]
async fn a_real_cluster_applies_rolls_out_fails_fast_and_prunes() {
    let Some(path) = std::env::var_os("KUBERNAUT_TEST_KUBECONFIG").map(PathBuf::from) else {
        eprintln!("skipped: set KUBERNAUT_TEST_KUBECONFIG to run against a real cluster");
        return;
    };
    let namespace_name =
        std::env::var("KUBERNAUT_TEST_NAMESPACE").unwrap_or_else(|_| "default".to_owned());
    let namespace = Namespace::parse(&namespace_name).expect("a namespace name");
    let cluster = KubernetesCluster::from_kubeconfig(Some(&path), None)
        .await
        .expect("a cluster from the kubeconfig");
    let status = cluster.status().await;
    assert!(status.reachable, "{status:?}");

    let config = labelled(
        &namespace_name,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": SERVICE}, "data": {"a": "b"}}),
    );
    let good = deployment(&namespace_name, "registry.k8s.io/pause:3.10");
    let outcome = rollout(&cluster, &namespace, &[good.clone(), config]).await;
    assert!(
        matches!(outcome, RolloutOutcome::Succeeded { .. }),
        "{outcome:?}"
    );

    let missing = deployment(
        &namespace_name,
        "registry.k8s.io/kubernaut-does-not-exist:0.0.0",
    );
    let outcome = rollout(&cluster, &namespace, &[missing]).await;
    let RolloutOutcome::Failed(diagnostics) = &outcome else {
        panic!("expected a failure, got {outcome:?}");
    };
    assert!(
        matches!(
            diagnostics.primary_reason(),
            Some(FailureReason::ImageNotFound | FailureReason::ImagePullFailed)
        ),
        "{diagnostics:#?}"
    );

    // Put the good release back, then prune everything: the test leaves nothing behind.
    let outcome = tokio::time::timeout(
        Duration::from_secs(360),
        rollout(&cluster, &namespace, &[good]),
    )
    .await
    .expect("the rollout ends");
    assert!(
        matches!(outcome, RolloutOutcome::Succeeded { .. }),
        "{outcome:?}"
    );
    let pruned = cluster
        .prune(
            &namespace,
            &ServiceName::parse(SERVICE).expect("a service name"),
            &[],
        )
        .await
        .expect("prune");
    let kinds: Vec<&str> = pruned
        .iter()
        .map(|r: &ResourceRef| r.kind.as_str())
        .collect();
    assert!(
        kinds.contains(&"ConfigMap") && kinds.contains(&"Deployment"),
        "{pruned:?}"
    );
}
