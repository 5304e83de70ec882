//! The simulator's API semantics, driven through kube-rs.

mod sim_support;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ReplicationController, Service};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use sim_support::{deployment, start, wait_for};

fn api_code(err: kube::Error) -> (u16, String) {
    match err {
        kube::Error::Api(status) => (status.code, status.reason),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn config_map(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "data": {"key": "value"}
    }))
    .expect("configmap")
}

#[tokio::test]
async fn discovery_lists_the_served_groups_and_resources() {
    let (_sim, client) = start().await;
    let discovery = kube::Discovery::new(client.clone())
        .run()
        .await
        .expect("discovery");
    let groups: Vec<String> = discovery.groups().map(|g| g.name().to_owned()).collect();
    for g in [
        "",
        "apps",
        "batch",
        "networking.k8s.io",
        "policy",
        "autoscaling",
    ] {
        assert!(
            groups.iter().any(|x| x == g),
            "group {g:?} missing from {groups:?}"
        );
    }
    let apps = discovery.get("apps").expect("apps group");
    let (deploy, caps) = apps
        .recommended_resources()
        .into_iter()
        .find(|(r, _)| r.kind == "Deployment")
        .expect("deployments served");
    assert_eq!(deploy.plural, "deployments");
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
    let version = client.apiserver_version().await.expect("version");
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "33")
    );
}

#[tokio::test]
async fn create_get_list_replace_and_delete_round_trip() {
    let (_sim, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let created = cms
        .create(
            &PostParams::default(),
            &config_map("one", json!({"tier": "a"})),
        )
        .await
        .expect("create");
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    let rv1: u64 = created
        .resource_version()
        .expect("rv")
        .parse()
        .expect("numeric rv");

    let again = cms
        .create(&PostParams::default(), &config_map("one", json!({})))
        .await;
    assert_eq!(
        api_code(again.expect_err("duplicate")),
        (409, "AlreadyExists".to_owned())
    );

    let fetched = cms.get("one").await.expect("get");
    assert_eq!(fetched.data.expect("data")["key"], "value");

    let mut changed = created.clone();
    changed.data = Some([("key".to_owned(), "other".to_owned())].into());
    let replaced = cms
        .replace("one", &PostParams::default(), &changed)
        .await
        .expect("replace");
    let rv2: u64 = replaced
        .resource_version()
        .expect("rv")
        .parse()
        .expect("numeric");
    assert!(rv2 > rv1, "resourceVersion must grow: {rv1} -> {rv2}");

    // Replacing with the stale resourceVersion is a conflict (optimistic concurrency).
    let stale = cms.replace("one", &PostParams::default(), &changed).await;
    assert_eq!(
        api_code(stale.expect_err("stale")),
        (409, "Conflict".to_owned())
    );

    let list = cms.list(&ListParams::default()).await.expect("list");
    assert_eq!(list.items.len(), 1);
    let list_rv: u64 = list
        .metadata
        .resource_version
        .expect("list rv")
        .parse()
        .expect("numeric");
    assert!(list_rv >= rv2);

    cms.delete("one", &DeleteParams::default())
        .await
        .expect("delete");
    let gone = cms.get("one").await;
    assert_eq!(
        api_code(gone.expect_err("deleted")),
        (404, "NotFound".to_owned())
    );
}

#[tokio::test]
async fn objects_in_a_missing_namespace_are_not_found_until_it_is_created() {
    let (_sim, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "team-a");
    let err = cms
        .create(&PostParams::default(), &config_map("x", json!({})))
        .await
        .expect_err("namespace missing");
    assert_eq!(api_code(err).0, 404);
    let namespaces: Api<Namespace> = Api::all(client);
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "team-a"}})).expect("ns");
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace");
    cms.create(&PostParams::default(), &config_map("x", json!({})))
        .await
        .expect("created once the namespace exists");
    let defaults = namespaces
        .get("default")
        .await
        .expect("default namespace exists at start");
    assert_eq!(
        defaults.status.and_then(|s| s.phase).as_deref(),
        Some("Active")
    );
    assert!(namespaces.get("kube-system").await.is_ok());
}

#[tokio::test]
async fn label_and_field_selectors_filter_lists() {
    let (_sim, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    for (name, tier) in [("a", "web"), ("b", "web"), ("c", "db")] {
        cms.create(
            &PostParams::default(),
            &config_map(name, json!({"tier": tier})),
        )
        .await
        .expect("create");
    }
    let names = |l: kube::core::ObjectList<ConfigMap>| {
        l.items
            .iter()
            .map(ResourceExt::name_any)
            .collect::<Vec<_>>()
    };
    let web = cms
        .list(&ListParams::default().labels("tier=web"))
        .await
        .expect("list");
    assert_eq!(names(web), ["a", "b"]);
    let not_web = cms
        .list(&ListParams::default().labels("tier notin (web)"))
        .await
        .expect("list");
    assert_eq!(names(not_web), ["c"]);
    let by_name = cms
        .list(&ListParams::default().fields("metadata.name=b"))
        .await
        .expect("list");
    assert_eq!(names(by_name), ["b"]);
    let by_ns = cms
        .list(&ListParams::default().fields("metadata.namespace=kube-system"))
        .await
        .expect("list");
    assert!(by_ns.items.is_empty());
}

#[tokio::test]
async fn lists_are_paginated_with_limit_and_continue() {
    let (_sim, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    for i in 0..5 {
        cms.create(
            &PostParams::default(),
            &config_map(&format!("cm-{i}"), json!({})),
        )
        .await
        .expect("create");
    }
    let first = cms
        .list(&ListParams::default().limit(2))
        .await
        .expect("page 1");
    assert_eq!(first.items.len(), 2);
    assert_eq!(first.metadata.remaining_item_count, Some(3));
    let token = first.metadata.continue_.clone().expect("continue token");
    let second = cms
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .expect("page 2");
    let third = cms
        .list(
            &ListParams::default()
                .limit(2)
                .continue_token(&second.metadata.continue_.clone().expect("token")),
        )
        .await
        .expect("page 3");
    assert_eq!(third.items.len(), 1);
    assert!(
        third
            .metadata
            .continue_
            .as_deref()
            .is_none_or(str::is_empty)
    );
    let all: Vec<String> = [first, second, third]
        .into_iter()
        .flat_map(|l| l.items.into_iter().map(|c| c.name_any()))
        .collect();
    assert_eq!(all, ["cm-0", "cm-1", "cm-2", "cm-3", "cm-4"]);
}

#[tokio::test]
async fn generation_is_bumped_by_spec_changes_only() {
    let (_sim, client) = start().await;
    let deployments: Api<Deployment> = Api::namespaced(client, "default");
    let pp = PatchParams::apply("test").force();
    let d = deployments
        .patch("gen", &pp, &Patch::Apply(deployment("gen", "nginx:1", 1)))
        .await
        .expect("apply");
    assert_eq!(d.metadata.generation, Some(1));
    let relabelled = deployments
        .patch(
            "gen",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"extra": "yes"}}})),
        )
        .await
        .expect("label patch");
    assert_eq!(
        relabelled.metadata.generation,
        Some(1),
        "metadata changes keep the generation"
    );
    let scaled = deployments
        .patch(
            "gen",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 2}})),
        )
        .await
        .expect("scale");
    assert_eq!(scaled.metadata.generation, Some(2));
    // Re-applying the same configuration is a no-op: same generation, same resourceVersion.
    let reapplied = deployments
        .patch("gen", &pp, &Patch::Apply(deployment("gen", "nginx:1", 2)))
        .await
        .expect("reapply");
    assert_eq!(reapplied.metadata.generation, Some(2));
    let observed = wait_for("observedGeneration", || {
        let deployments = deployments.clone();
        async move {
            let d = deployments.get("gen").await.ok()?;
            (d.status?.observed_generation? == 2).then_some(())
        }
    })
    .await;
    let () = observed;
}

#[tokio::test]
async fn server_side_apply_tracks_owners_and_reports_conflicts() {
    let (_sim, client) = start().await;
    let deployments: Api<Deployment> = Api::namespaced(client, "default");
    let created = deployments
        .patch(
            "ssa",
            &PatchParams::apply("team-a"),
            &Patch::Apply(deployment("ssa", "nginx:1", 2)),
        )
        .await
        .expect("apply creates");
    let managers: Vec<String> = created
        .managed_fields()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert_eq!(managers, ["team-a"]);
    assert_eq!(
        created.managed_fields()[0].operation.as_deref(),
        Some("Apply")
    );

    let mut other = deployment("ssa", "nginx:1", 5);
    other.metadata.labels = None;
    let err = deployments
        .patch("ssa", &PatchParams::apply("team-b"), &Patch::Apply(&other))
        .await
        .expect_err("replicas are owned by team-a");
    let (code, reason) = api_code(err);
    assert_eq!((code, reason.as_str()), (409, "Conflict"));

    let forced = deployments
        .patch(
            "ssa",
            &PatchParams::apply("team-b").force(),
            &Patch::Apply(&other),
        )
        .await
        .expect("force takes ownership");
    assert_eq!(forced.spec.and_then(|s| s.replicas), Some(5));

    // A field team-a stops applying, and nobody else owns, is removed.
    let mut without_label = deployment("ssa", "nginx:1", 5);
    without_label.metadata.labels = None;
    let after = deployments
        .patch(
            "ssa",
            &PatchParams::apply("team-a").force(),
            &Patch::Apply(&without_label),
        )
        .await
        .expect("apply");
    assert!(
        after.labels().get("app").is_none(),
        "labels: {:?}",
        after.labels()
    );
}

#[tokio::test]
async fn merge_and_strategic_patches_follow_their_rules() {
    let (_sim, client) = start().await;
    let deployments: Api<Deployment> = Api::namespaced(client, "default");
    let mut d = deployment("patchy", "nginx:1", 1);
    if let Some(spec) = d.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
        spec.containers.push(
            serde_json::from_value(json!({"name": "sidecar", "image": "envoy:1"}))
                .expect("container"),
        );
    }
    deployments
        .create(&PostParams::default(), &d)
        .await
        .expect("create");
    let strategic = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx:2"}]}}}});
    let patched = deployments
        .patch(
            "patchy",
            &PatchParams::default(),
            &Patch::Strategic(strategic),
        )
        .await
        .expect("strategic");
    let containers = patched
        .spec
        .expect("spec")
        .template
        .spec
        .expect("pod spec")
        .containers;
    let images: Vec<_> = containers
        .iter()
        .map(|c| (c.name.as_str(), c.image.clone().unwrap_or_default()))
        .collect();
    assert_eq!(
        images,
        [
            ("app", "nginx:2".to_owned()),
            ("sidecar", "envoy:1".to_owned())
        ]
    );

    let merge = json!({"spec": {"template": {"spec": {"containers": [{"name": "only", "image": "busybox"}]}}}});
    let merged = deployments
        .patch("patchy", &PatchParams::default(), &Patch::Merge(merge))
        .await
        .expect("merge patch");
    let containers = merged
        .spec
        .expect("spec")
        .template
        .spec
        .expect("pod spec")
        .containers;
    assert_eq!(containers.len(), 1, "a JSON merge patch replaces lists");
}

#[tokio::test]
async fn status_is_a_subresource() {
    let (_sim, client) = start().await;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "svc"},
        "spec": {"selector": {"app": "x"}, "ports": [{"port": 80}]}
    }))
    .expect("service");
    let created = services
        .create(&PostParams::default(), &svc)
        .await
        .expect("create");
    let spec = created.spec.expect("spec");
    assert!(spec.cluster_ip.is_some_and(|ip| ip.starts_with("10.96.")));
    assert_eq!(
        spec.ports.expect("ports")[0].target_port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(80))
    );

    let deployments: Api<Deployment> = Api::namespaced(client, "default");
    deployments
        .create(&PostParams::default(), &deployment("st", "nginx:1", 1))
        .await
        .expect("create");
    let patched = deployments
        .patch_status(
            "st",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"collisionCount": 7}, "spec": {"replicas": 9}})),
        )
        .await
        .expect("status patch");
    assert_eq!(patched.status.and_then(|s| s.collision_count), Some(7));
    assert_eq!(
        patched.spec.and_then(|s| s.replicas),
        Some(1),
        "spec is ignored on /status"
    );
    let main = deployments
        .patch(
            "st",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"collisionCount": 1}})),
        )
        .await
        .expect("main patch");
    assert_ne!(
        main.status.and_then(|s| s.collision_count),
        Some(1),
        "status is ignored on the main resource"
    );
}

#[tokio::test]
async fn deleting_an_owner_collects_or_orphans_its_dependents() {
    let (sim, client) = start().await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let replicasets: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client, "default");
    for name in ["gc", "orphan"] {
        deployments
            .create(&PostParams::default(), &deployment(name, "nginx:1", 2))
            .await
            .expect("create");
    }
    for name in ["gc", "orphan"] {
        wait_for("pods to exist", || {
            let pods = pods.clone();
            async move {
                let l = pods
                    .list(&ListParams::default().labels(&format!("app={name}")))
                    .await
                    .ok()?;
                (l.items.len() == 2).then_some(())
            }
        })
        .await;
    }
    deployments
        .delete("gc", &DeleteParams::background())
        .await
        .expect("delete");
    wait_for("replicasets and pods of gc to be collected", || {
        let (pods, replicasets) = (pods.clone(), replicasets.clone());
        async move {
            let p = pods
                .list(&ListParams::default().labels("app=gc"))
                .await
                .ok()?;
            let r = replicasets
                .list(&ListParams::default().labels("app=gc"))
                .await
                .ok()?;
            (p.items.is_empty() && r.items.is_empty()).then_some(())
        }
    })
    .await;

    deployments
        .delete("orphan", &DeleteParams::orphan())
        .await
        .expect("delete orphan");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let left = replicasets
        .list(&ListParams::default().labels("app=orphan"))
        .await
        .expect("list");
    assert_eq!(left.items.len(), 1, "orphaned ReplicaSet stays");
    assert!(left.items[0].owner_references().is_empty());
    assert_eq!(sim.list_objects("Pod", Some("default")).len(), 2);
}

#[tokio::test]
async fn the_scale_subresource_reads_and_sets_replicas() {
    let (_sim, client) = start().await;
    let deployments: Api<Deployment> = Api::namespaced(client, "default");
    deployments
        .create(&PostParams::default(), &deployment("scaled", "nginx:1", 2))
        .await
        .expect("create");
    let scale = deployments.get_scale("scaled").await.expect("get scale");
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(2));
    assert_eq!(
        scale.status.map(|s| s.selector),
        Some(Some("app=scaled".to_owned()))
    );
    deployments
        .patch_scale(
            "scaled",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await
        .expect("patch scale");
    let d = deployments.get("scaled").await.expect("get");
    assert_eq!(d.spec.and_then(|s| s.replicas), Some(4));
    assert_eq!(d.metadata.generation, Some(2));
}

#[tokio::test]
async fn a_replication_controller_keeps_its_pods_and_scales() {
    let (sim, client) = start().await;
    let controllers: Api<ReplicationController> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let rc: ReplicationController = serde_json::from_value(json!({
        "metadata": {"name": "legacy"},
        "spec": {"replicas": 2, "template": {
            "metadata": {"labels": {"app": "legacy"}},
            "spec": {"containers": [{"name": "app", "image": "nginx:1"}]}
        }}
    }))
    .expect("a ReplicationController");
    let created = controllers
        .create(&PostParams::default(), &rc)
        .await
        .expect("create");
    // The selector and the labels default to the template's labels.
    let selector = created.spec.and_then(|s| s.selector).unwrap_or_default();
    assert_eq!(selector.get("app").map(String::as_str), Some("legacy"));
    assert_eq!(
        created
            .metadata
            .labels
            .unwrap_or_default()
            .get("app")
            .map(String::as_str),
        Some("legacy")
    );
    let settled = |want: i32| {
        let controllers = controllers.clone();
        move || {
            let controllers = controllers.clone();
            async move {
                let status = controllers.get("legacy").await.ok()?.status?;
                (status.replicas == want
                    && status.ready_replicas == Some(want)
                    && status.available_replicas == Some(want)
                    && status.fully_labeled_replicas == Some(want)
                    && status.observed_generation.is_some())
                .then_some(())
            }
        }
    };
    wait_for("two pods available", settled(2)).await;
    let owned = pods
        .list(&ListParams::default().labels("app=legacy"))
        .await
        .expect("list");
    assert_eq!(owned.items.len(), 2);
    for pod in &owned.items {
        let owner = &pod.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("ReplicationController", Some(true))
        );
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("legacy-"));
    }
    let scale = controllers.get_scale("legacy").await.expect("get scale");
    assert_eq!(
        scale.status.and_then(|s| s.selector).as_deref(),
        Some("app=legacy")
    );
    controllers
        .patch_scale(
            "legacy",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .expect("scale up");
    wait_for("three pods available", settled(3)).await;
    controllers
        .patch(
            "legacy",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .expect("scale down");
    wait_for("one pod left", settled(1)).await;
    let events: Vec<String> = sim
        .events_for("default", "legacy")
        .iter()
        .map(|e| e["reason"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        events.contains(&"SuccessfulCreate".to_owned()),
        "{events:?}"
    );
    assert!(
        events.contains(&"SuccessfulDelete".to_owned()),
        "{events:?}"
    );
}

#[tokio::test]
async fn deleting_a_namespace_deletes_what_it_contains() {
    let (sim, client) = start().await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "doomed"}})).expect("ns");
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
    let cms: Api<ConfigMap> = Api::namespaced(client, "doomed");
    cms.create(&PostParams::default(), &config_map("inside", json!({})))
        .await
        .expect("create");
    let terminating = namespaces
        .delete("doomed", &DeleteParams::default())
        .await
        .expect("delete namespace")
        .left()
        .expect("the namespace, terminating");
    assert_eq!(
        terminating.status.and_then(|s| s.phase).as_deref(),
        Some("Terminating")
    );
    wait_for("the namespace to go", || {
        let namespaces = namespaces.clone();
        async move {
            namespaces
                .get_opt("doomed")
                .await
                .ok()?
                .is_none()
                .then_some(())
        }
    })
    .await;
    assert!(sim.get_object("ConfigMap", "doomed", "inside").is_none());
    let err = cms
        .get("inside")
        .await
        .expect_err("gone with its namespace");
    assert_eq!(api_code(err).0, 404);
}
