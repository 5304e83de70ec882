//! Server-side apply through discovery, refusals, prune and status against the
//! simulated API server.

#[expect(dead_code, reason = "the rollout helpers serve the rollout tests")]
mod support;

use kubernaut_domain::cluster::{KindRef, KindScope};
use kubernaut_domain::deployment::{Namespace, ResourceRef};
use kubernaut_domain::ports::{Cluster, ClusterError};
use kubernaut_domain::release::ServiceName;
use kubernaut_kubernetes::KubernetesCluster;
use serde_json::json;
use support::{NAMESPACE, SERVICE, apply, config_map, deployment, labelled, service, start};

fn reference(api_version: &str, kind: &str, name: &str) -> ResourceRef {
    ResourceRef {
        api_version: api_version.into(),
        kind: kind.into(),
        name: name.into(),
        namespace: Some(NAMESPACE.into()),
    }
}

#[tokio::test]
async fn apply_returns_each_objects_uid_and_generation_and_is_idempotent() {
    let (sim, cluster) = start().await;
    let objects = [deployment("web", "nginx:1.27", 1), config_map("web-config")];
    let first = apply(&cluster, &objects).await;
    assert_eq!(first.len(), 2);
    assert_eq!(first[0].resource.to_string(), "Deployment/web");
    assert_eq!(first[0].resource.namespace.as_deref(), Some(NAMESPACE));
    assert_eq!(first[0].generation, Some(1));
    let stored = sim
        .get_object("Deployment", NAMESPACE, "web")
        .expect("applied");
    assert_eq!(stored["metadata"]["uid"], json!(first[0].uid));

    let again = apply(&cluster, &objects).await;
    assert_eq!(again[0].uid, first[0].uid);
    assert_eq!(
        again[0].generation,
        Some(1),
        "an unchanged apply changes nothing"
    );
}

#[tokio::test]
async fn cluster_scoped_kinds_are_applied_without_a_namespace() {
    let (sim, cluster) = start().await;
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}});
    let applied = apply(&cluster, &[namespace]).await;
    assert_eq!(applied[0].resource.namespace, None);
    assert!(sim.get_object("Namespace", "", "shop").is_some());
}

#[tokio::test]
async fn kind_scopes_come_from_the_api_servers_discovery() {
    let (_sim, cluster) = start().await;
    let kinds = [
        KindRef::new("v1", "Namespace"),
        KindRef::new("v1", "ConfigMap"),
        KindRef::new("apps/v1", "Deployment"),
        KindRef::new("example.com/v1", "Widget"),
        KindRef::new("v1", "Gadget"),
        KindRef::new("not/a/version", "Odd"),
    ];
    let scopes = cluster
        .kind_scopes(&kinds)
        .await
        .expect("discovery answers");
    assert_eq!(
        scopes,
        vec![
            Some(KindScope::Cluster),
            Some(KindScope::Namespaced),
            Some(KindScope::Namespaced),
            None,
            None,
            None,
        ]
    );
}

#[tokio::test]
async fn an_unknown_kind_is_rejected_naming_the_object() {
    let (_sim, cluster) = start().await;
    let widget = labelled(json!({
        "apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}
    }));
    let error = cluster.apply(&[widget]).await.expect_err("refused");
    let ClusterError::Rejected { resource, message } = error else {
        panic!("expected a refusal, got {error:?}");
    };
    assert_eq!(resource, "Widget/w");
    assert!(message.contains("Widget"), "{message}");

    let unknown_in_core =
        labelled(json!({"apiVersion": "v1", "kind": "Gadget", "metadata": {"name": "g"}}));
    assert!(matches!(
        cluster.apply(&[unknown_in_core]).await,
        Err(ClusterError::Rejected { .. })
    ));
}

#[tokio::test]
async fn an_invalid_object_is_rejected_with_the_servers_message() {
    let (_sim, cluster) = start().await;
    let mut invalid = deployment("web", "nginx:1.27", 1);
    invalid["spec"]["selector"]["matchLabels"]["app"] = json!("elsewhere");
    let error = cluster.apply(&[invalid]).await.expect_err("refused");
    assert!(
        matches!(&error, ClusterError::Rejected { resource, message }
            if resource == "Deployment/web" && message.contains("selector")),
        "{error:?}"
    );
}

#[tokio::test]
async fn prune_deletes_exactly_the_dropped_object() {
    let (sim, cluster) = start().await;
    let mut others = config_map("other-config");
    others["metadata"]["labels"]["kubernaut.io/service"] = json!("other");
    let unmanaged = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "hand-made", "namespace": NAMESPACE}});
    apply(
        &cluster,
        &[
            deployment("web", "nginx:1.27", 1),
            service("web"),
            config_map("web-config"),
            others,
            unmanaged,
        ],
    )
    .await;

    let keep = [
        reference("apps/v1", "Deployment", "web"),
        reference("v1", "Service", "web"),
    ];
    let pruned = cluster
        .prune(
            &Namespace::parse(NAMESPACE).expect("namespace"),
            &ServiceName::parse(SERVICE).expect("service"),
            &keep,
        )
        .await
        .expect("prune");
    assert_eq!(pruned, vec![reference("v1", "ConfigMap", "web-config")]);
    assert!(
        sim.get_object("ConfigMap", NAMESPACE, "web-config")
            .is_none()
    );
    for (kind, name) in [
        ("Deployment", "web"),
        ("Service", "web"),
        ("ConfigMap", "other-config"),
        ("ConfigMap", "hand-made"),
    ] {
        assert!(
            sim.get_object(kind, NAMESPACE, name).is_some(),
            "{kind}/{name} kept"
        );
    }
    // The Deployment's ReplicaSet and pods are its controller's, not ours to prune.
    assert!(!sim.list_objects("ReplicaSet", Some(NAMESPACE)).is_empty());
}

#[tokio::test]
async fn prunes_at_once_share_one_discovery_and_each_still_deletes_its_own() {
    let (sim, cluster) = start().await;
    let namespace = Namespace::parse(NAMESPACE).expect("namespace");
    let services: Vec<String> = (0..8).map(|n| format!("svc-{n}")).collect();
    for name in &services {
        let mut kept = config_map(&format!("{name}-kept"));
        kept["metadata"]["labels"]["kubernaut.io/service"] = json!(name);
        let mut dropped = config_map(&format!("{name}-dropped"));
        dropped["metadata"]["labels"]["kubernaut.io/service"] = json!(name);
        apply(&cluster, &[kept, dropped]).await;
    }
    let before = sim.group_lists();
    let prunes = services.iter().map(|name| {
        let cluster = &cluster;
        let namespace = &namespace;
        async move {
            let keep = [reference("v1", "ConfigMap", &format!("{name}-kept"))];
            cluster
                .prune(
                    namespace,
                    &ServiceName::parse(name).expect("service"),
                    &keep,
                )
                .await
                .expect("prune")
        }
    });
    let pruned = futures_util::future::join_all(prunes).await;
    for (name, pruned) in services.iter().zip(&pruned) {
        assert_eq!(
            pruned,
            &vec![reference("v1", "ConfigMap", &format!("{name}-dropped"))]
        );
        assert!(
            sim.get_object("ConfigMap", NAMESPACE, &format!("{name}-kept"))
                .is_some()
        );
    }
    assert_eq!(
        sim.group_lists() - before,
        1,
        "eight prunes at once asked discovery once"
    );
    // A later prune uses what the first learnt.
    cluster
        .prune(
            &namespace,
            &ServiceName::parse("svc-0").expect("service"),
            &[],
        )
        .await
        .expect("prune");
    assert_eq!(sim.group_lists() - before, 1);
}

#[tokio::test]
async fn status_reports_the_version_of_a_reachable_cluster_and_why_not_otherwise() {
    let (_sim, cluster) = start().await;
    let status = cluster.status().await;
    assert!(status.reachable, "{status:?}");
    assert!(status.version.is_some_and(|v| v.starts_with('v')));

    let nowhere = kube::Config::new("http://127.0.0.1:1".parse().expect("a url"));
    let status = KubernetesCluster::from_client(kube::Client::try_from(nowhere).expect("client"))
        .with_retries(2, std::time::Duration::from_millis(10))
        .status()
        .await;
    assert!(!status.reachable);
    assert!(status.error.is_some());
}

#[tokio::test]
async fn the_current_context_names_the_default_cluster() {
    let (sim, _cluster) = start().await;
    assert_eq!(
        kubernaut_kubernetes::current_context_name(Some(sim.kubeconfig_path())).as_deref(),
        Some("kube-sim")
    );
    assert_eq!(
        kubernaut_kubernetes::current_context_name(Some(std::path::Path::new("/nonexistent"))),
        None
    );
}

#[tokio::test]
async fn a_custom_resource_is_applied_after_its_definition_in_the_same_manifest() {
    let (sim, cluster) = start().await;
    let crd = labelled(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
    }));
    let widget = labelled(json!({
        "apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "w", "namespace": NAMESPACE}, "spec": {"size": 3}
    }));
    let applied = apply(&cluster, &[crd, widget]).await;
    assert_eq!(applied[0].resource.namespace, None);
    assert_eq!(applied[1].resource.to_string(), "Widget/w");
    let stored = sim
        .get_object("Widget", NAMESPACE, "w")
        .expect("the widget is stored");
    assert_eq!(stored["spec"]["size"], json!(3));
}

#[tokio::test]
async fn read_returns_each_live_object_and_none_for_what_is_not_there() {
    let (sim, cluster) = start().await;
    apply(&cluster, &[config_map("web-config")]).await;
    let objects = [
        config_map("web-config"),
        config_map("not-applied"),
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": NAMESPACE}}),
    ];
    let live = cluster.read(&objects).await.expect("the cluster answers");
    assert_eq!(live.len(), 3);
    let stored = sim
        .get_object("ConfigMap", NAMESPACE, "web-config")
        .expect("applied");
    let found = live[0].as_ref().expect("the applied object is read");
    assert_eq!(found["metadata"]["uid"], stored["metadata"]["uid"]);
    assert_eq!(found["data"], objects[0]["data"]);
    assert_eq!(live[1], None, "never applied");
    assert_eq!(live[2], None, "a kind the cluster does not serve");
}
