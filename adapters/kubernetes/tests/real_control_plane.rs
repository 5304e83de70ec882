//! One verdict suite, two clusters: each rollout scenario below runs with the same
//! code against kube-sim and against a real Kubernetes control plane (etcd,
//! kube-apiserver, kube-controller-manager and kube-scheduler built by
//! `scripts/build-control-plane`, testkit's fake kubelet for the pods), and must give
//! the same verdict on both.
//!
//! The real control plane is shared by the tests of this file, each in a namespace of
//! its own. Without its programs the `control_plane` tests fail and say how to build
//! them.

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use kube::api::{Api, DynamicObject, PostParams};
use kube::discovery::ApiResource;
use kubernaut_domain::cluster::RolloutOutcome;
use kubernaut_domain::deployment::{Diagnostics, FailureReason, Namespace, ResourceRef};
use kubernaut_domain::ports::Cluster;
use kubernaut_domain::release::ServiceName;
use kubernaut_kubernetes::KubernetesCluster;
use kubernaut_testkit::control_plane::proxy::TcpProxy;
use kubernaut_testkit::control_plane::{ControlPlane, Options, SharedControlPlane};
use kubernaut_testkit::sim::{Behaviour, Simulator};
use serde_json::{Value, json};
use support::{GENEROUS, SERVICE, Watched};

/// Where a scenario runs.
enum Backend {
    Sim(Simulator),
    Real(&'static SharedControlPlane),
}

/// A cluster to run a scenario on, and the namespace it runs in.
struct Env {
    backend: Backend,
    cluster: KubernetesCluster,
    namespace: String,
}

impl Env {
    async fn sim() -> Self {
        let (sim, cluster) = support::start().await;
        Self {
            backend: Backend::Sim(sim),
            cluster,
            namespace: support::NAMESPACE.to_owned(),
        }
    }

    async fn real(test: &str) -> Self {
        let plane = SharedControlPlane::get().expect("the real control plane starts");
        let cluster = KubernetesCluster::from_kubeconfig(Some(plane.kubeconfig_path()), None)
            .await
            .expect("a cluster from the control plane's kubeconfig")
            .with_unschedulable_grace(Duration::from_secs(2))
            .with_retries(8, Duration::from_millis(50));
        let namespace = test.replace('_', "-");
        let client = client_for(plane.kubeconfig_path()).await;
        let namespaces: Api<DynamicObject> =
            Api::all_with(client, &core("Namespace", "namespaces"));
        let object: DynamicObject = serde_json::from_value(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
        )
        .expect("a namespace object");
        namespaces
            .create(&PostParams::default(), &object)
            .await
            .expect("the test's namespace is created");
        // The namespace's default ServiceAccount, which pods need, comes from a
        // controller: wait for it rather than race it.
        let accounts: Api<DynamicObject> = Api::namespaced_with(
            namespaces.clone().into_client(),
            &namespace,
            &core("ServiceAccount", "serviceaccounts"),
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while accounts.get_opt("default").await.ok().flatten().is_none() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the default ServiceAccount of {namespace} appears"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self {
            backend: Backend::Real(plane),
            cluster,
            namespace,
        }
    }

    fn kubeconfig_path(&self) -> &std::path::Path {
        match &self.backend {
            Backend::Sim(sim) => sim.kubeconfig_path(),
            Backend::Real(plane) => plane.kubeconfig_path(),
        }
    }

    /// Whether the object of `resource` named `name` exists in the test's namespace.
    async fn exists(&self, resource: &ApiResource, name: &str) -> bool {
        let client = client_for(self.kubeconfig_path()).await;
        let api: Api<DynamicObject> = Api::namespaced_with(client, &self.namespace, resource);
        api.get_opt(name).await.expect("the object reads").is_some()
    }

    /// The names of the objects of `resource` in the test's namespace.
    async fn names(&self, resource: &ApiResource) -> Vec<String> {
        let client = client_for(self.kubeconfig_path()).await;
        let api: Api<DynamicObject> = Api::namespaced_with(client, &self.namespace, resource);
        api.list(&Default::default())
            .await
            .expect("the objects list")
            .items
            .into_iter()
            .filter_map(|o| o.metadata.name)
            .collect()
    }

    fn set_image_behaviour(&self, image: &str, behaviour: Behaviour) {
        match &self.backend {
            Backend::Sim(sim) => sim.set_image_behaviour(image, behaviour),
            Backend::Real(plane) => plane.set_image_behaviour(image, behaviour),
        }
    }

    fn labelled(&self, object: Value) -> Value {
        let mut object = support::labelled(object);
        object["metadata"]["namespace"] = json!(self.namespace);
        object
    }

    fn deployment(&self, name: &str, image: &str, replicas: i32) -> Value {
        self.labelled(support::deployment(name, image, replicas))
    }

    fn stateful_set(&self, name: &str, image: &str, replicas: i32) -> Value {
        self.labelled(json!({
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "serviceName": name,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "app", "image": image}]}
                }
            }
        }))
    }

    fn daemon_set(&self, name: &str, image: &str) -> Value {
        self.labelled(json!({
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": name},
            "spec": {
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "app", "image": image}]}
                }
            }
        }))
    }

    fn job(&self, name: &str, image: &str, backoff_limit: i32) -> Value {
        self.labelled(json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name},
            "spec": {
                "backoffLimit": backoff_limit,
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "app", "image": image}]
                    }
                }
            }
        }))
    }

    async fn deploy(&self, objects: &[Value], timeout: Duration) -> Watched {
        match self.backend {
            // In the default namespace, as every other kube-sim test.
            Backend::Sim(_) => support::deploy(&self.cluster, objects, timeout).await,
            Backend::Real(_) => {
                let applied = support::apply(&self.cluster, objects).await;
                support::watch_in(&self.cluster, &self.namespace, applied, timeout).await
            }
        }
    }
}

async fn client_for(kubeconfig: &std::path::Path) -> kube::Client {
    kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(kubeconfig).expect("the kubeconfig reads"),
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .expect("a client configuration"),
    )
    .expect("a client")
}

/// A resource of the core group (`v1`).
fn core(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: String::new(),
        version: "v1".into(),
        api_version: "v1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

fn log_lines(diagnostics: &Diagnostics) -> Vec<&str> {
    diagnostics
        .resources
        .iter()
        .flat_map(|r| &r.logs)
        .flat_map(|l| &l.lines)
        .map(String::as_str)
        .collect()
}

fn events_say(diagnostics: &Diagnostics, reason: &str) -> bool {
    diagnostics
        .resources
        .iter()
        .flat_map(|r| &r.events)
        .any(|e| e.reason == reason)
}

/// Runs a scenario on kube-sim (`<scenario>::kube_sim`) and on the real control plane
/// (`<scenario>::control_plane`).
macro_rules! on_both_clusters {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test]
            async fn kube_sim() {
                super::$scenario(super::Env::sim().await).await;
            }

            #[tokio::test]
            async fn control_plane() {
                super::$scenario(super::Env::real(stringify!($scenario)).await).await;
            }
        }
    )*};
}

on_both_clusters!(
    a_good_rollout_succeeds,
    an_update_succeeds_and_a_broken_update_fails,
    a_crash_loop_fails_as_a_crash_loop,
    a_missing_image_fails_as_image_not_found,
    a_refused_pull_fails_as_a_pull_failure,
    pods_that_never_become_ready_fail_on_their_probe,
    pods_no_node_can_take_fail_as_unschedulable,
    a_job_out_of_retries_fails,
    a_job_that_completes_succeeds,
    a_slow_rollout_times_out,
    kinds_without_a_rollout_succeed_once_applied,
    a_rollout_stuck_past_its_progress_deadline_fails_with_it,
    a_stateful_set_succeeds_and_updates,
    a_crash_looping_stateful_set_fails,
    a_daemon_set_succeeds_on_every_node,
    a_daemon_set_whose_image_is_missing_fails,
    prune_deletes_exactly_the_dropped_object,
    rolling_back_to_the_previous_release_succeeds,
);

async fn a_good_rollout_succeeds(env: Env) {
    let watched = env
        .deploy(&[env.deployment("web", "nginx:1.27", 3)], GENEROUS)
        .await;
    watched.assert_succeeded();
    assert!(
        watched.told("Deployment/web: rolled out"),
        "{:?}",
        watched.progress
    );
}

async fn an_update_succeeds_and_a_broken_update_fails(env: Env) {
    env.deploy(&[env.deployment("web", "nginx:1.27", 2)], GENEROUS)
        .await
        .assert_succeeded();
    env.deploy(&[env.deployment("web", "nginx:1.28", 2)], GENEROUS)
        .await
        .assert_succeeded();
    // The previous rollout left healthy pods and a finished Progressing condition
    // behind; a broken update fails all the same.
    env.deploy(&[env.deployment("web", "web:crashloop", 2)], GENEROUS)
        .await
        .assert_failed_with(FailureReason::CrashLoop);
}

async fn a_crash_loop_fails_as_a_crash_loop(env: Env) {
    let watched = env
        .deploy(&[env.deployment("web", "shop/web:crashloop", 2)], GENEROUS)
        .await;
    let diagnostics = watched.assert_failed_with(FailureReason::CrashLoop);
    assert!(events_say(diagnostics, "BackOff"), "{diagnostics:#?}");
    // The container's own last words, read through pods/log.
    assert!(
        log_lines(diagnostics)
            .iter()
            .any(|l| l.contains("could not connect to the database")),
        "{diagnostics:#?}"
    );
    assert!(watched.told("CrashLoopBackOff"), "{:?}", watched.progress);
}

async fn a_missing_image_fails_as_image_not_found(env: Env) {
    let watched = env
        .deploy(&[env.deployment("web", "shop/web:notfound", 2)], GENEROUS)
        .await;
    let diagnostics = watched.assert_failed_with(FailureReason::ImageNotFound);
    assert!(events_say(diagnostics, "Failed"), "{diagnostics:#?}");
    assert_eq!(diagnostics.resources[0].resource.kind, "Deployment");
}

async fn a_refused_pull_fails_as_a_pull_failure(env: Env) {
    env.deploy(
        &[env.deployment("web", "private.example.com/web:denied", 1)],
        GENEROUS,
    )
    .await
    .assert_failed_with(FailureReason::ImagePullFailed);
}

async fn pods_that_never_become_ready_fail_on_their_probe(env: Env) {
    let mut never_ready = env.deployment("web", "shop/web:neverready", 2);
    never_ready["spec"]["template"]["spec"]["containers"][0]["readinessProbe"] =
        json!({"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 10});
    let watched = env.deploy(&[never_ready], GENEROUS).await;
    let diagnostics = watched.assert_failed_with(FailureReason::FailedProbe);
    assert!(events_say(diagnostics, "Unhealthy"), "{diagnostics:#?}");
}

async fn pods_no_node_can_take_fail_as_unschedulable(env: Env) {
    // No node of either cluster carries this label: the scheduler finds no fit.
    let mut pinned = env.deployment("web", "shop/web:1", 1);
    pinned["spec"]["template"]["spec"]["nodeSelector"] = json!({"disktype": "tape"});
    let watched = env.deploy(&[pinned], GENEROUS).await;
    let diagnostics = watched.assert_failed_with(FailureReason::Unschedulable);
    assert!(
        events_say(diagnostics, "FailedScheduling"),
        "{diagnostics:#?}"
    );
}

async fn a_job_out_of_retries_fails(env: Env) {
    let watched = env
        .deploy(&[env.job("migrate", "shop/migrate:fail", 1)], GENEROUS)
        .await;
    let diagnostics = watched.assert_failed_with(FailureReason::JobFailed);
    assert!(
        log_lines(diagnostics).iter().any(|l| l.contains("fatal")),
        "{diagnostics:#?}"
    );
    assert!(
        diagnostics.resources[0]
            .events
            .iter()
            .any(|e| e.reason == "BackoffLimitExceeded"),
        "{diagnostics:#?}"
    );
}

async fn a_job_that_completes_succeeds(env: Env) {
    env.deploy(&[env.job("migrate", "shop/migrate:1", 2)], GENEROUS)
        .await
        .assert_succeeded();
}

async fn a_slow_rollout_times_out(env: Env) {
    env.set_image_behaviour("shop/web:slow", Behaviour::SlowStart { seconds: 100_000 });
    let watched = env
        .deploy(
            &[env.deployment("web", "shop/web:slow", 2)],
            Duration::from_secs(3),
        )
        .await;
    let RolloutOutcome::TimedOut(diagnostics) = &watched.outcome else {
        panic!("expected a timeout, got {:#?}", watched.outcome);
    };
    assert_eq!(diagnostics.primary_reason(), Some(FailureReason::TimedOut));
    assert!(
        diagnostics.resources[0].message.contains("replicas"),
        "{diagnostics:#?}"
    );
}

async fn kinds_without_a_rollout_succeed_once_applied(env: Env) {
    let config = env.labelled(support::config_map("web-config"));
    let service = env.labelled(support::service(SERVICE));
    env.deploy(&[config, service], GENEROUS)
        .await
        .assert_succeeded();
}

async fn a_rollout_stuck_past_its_progress_deadline_fails_with_it(env: Env) {
    // The Deployment controller's own deadline: 10 s of the cluster's clock (real
    // seconds on the real control plane, simulated ones on kube-sim).
    env.set_image_behaviour("shop/web:stuck", Behaviour::SlowStart { seconds: 100_000 });
    let mut stuck = env.deployment("web", "shop/web:stuck", 1);
    stuck["spec"]["progressDeadlineSeconds"] = json!(10);
    env.deploy(&[stuck], GENEROUS)
        .await
        .assert_failed_with(FailureReason::ProgressDeadlineExceeded);
}

async fn a_stateful_set_succeeds_and_updates(env: Env) {
    env.deploy(&[env.stateful_set("db", "postgres:17", 3)], GENEROUS)
        .await
        .assert_succeeded();
    env.deploy(&[env.stateful_set("db", "postgres:18", 3)], GENEROUS)
        .await
        .assert_succeeded();
}

async fn a_crash_looping_stateful_set_fails(env: Env) {
    env.deploy(&[env.stateful_set("db", "shop/db:crashloop", 2)], GENEROUS)
        .await
        .assert_failed_with(FailureReason::CrashLoop);
}

async fn a_daemon_set_succeeds_on_every_node(env: Env) {
    env.deploy(&[env.daemon_set("agent", "fluent-bit:3")], GENEROUS)
        .await
        .assert_succeeded();
}

async fn a_daemon_set_whose_image_is_missing_fails(env: Env) {
    env.deploy(&[env.daemon_set("agent", "shop/agent:notfound")], GENEROUS)
        .await
        .assert_failed_with(FailureReason::ImageNotFound);
}

async fn prune_deletes_exactly_the_dropped_object(env: Env) {
    let mut others = env.labelled(support::config_map("other-config"));
    others["metadata"]["labels"]["kubernaut.io/service"] = json!("other");
    let unmanaged = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "hand-made", "namespace": env.namespace}});
    support::apply(
        &env.cluster,
        &[
            env.deployment("web", "nginx:1.27", 1),
            env.labelled(support::service("web")),
            env.labelled(support::config_map("web-config")),
            others,
            unmanaged,
        ],
    )
    .await;
    let reference = |api_version: &str, kind: &str, name: &str| ResourceRef {
        api_version: api_version.into(),
        kind: kind.into(),
        name: name.into(),
        namespace: Some(env.namespace.clone()),
    };
    let keep = [
        reference("apps/v1", "Deployment", "web"),
        reference("v1", "Service", "web"),
    ];
    let pruned = env
        .cluster
        .prune(
            &Namespace::parse(&env.namespace).expect("namespace"),
            &ServiceName::parse(SERVICE).expect("service"),
            &keep,
        )
        .await
        .expect("prune");
    assert_eq!(pruned, vec![reference("v1", "ConfigMap", "web-config")]);
    let config_maps = core("ConfigMap", "configmaps");
    assert!(!env.exists(&config_maps, "web-config").await);
    for name in ["other-config", "hand-made"] {
        assert!(
            env.exists(&config_maps, name).await,
            "ConfigMap/{name} kept"
        );
    }
    assert!(env.exists(&core("Service", "services"), "web").await);
    let deployments = ApiResource {
        group: "apps".into(),
        version: "v1".into(),
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        plural: "deployments".into(),
    };
    assert!(env.exists(&deployments, "web").await);
    // The Deployment's ReplicaSet is its controller's, not ours to prune.
    let replica_sets = ApiResource {
        kind: "ReplicaSet".into(),
        plural: "replicasets".into(),
        ..deployments
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while env.names(&replica_sets).await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the ReplicaSet is kept"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn rolling_back_to_the_previous_release_succeeds(env: Env) {
    env.deploy(&[env.deployment("web", "nginx:1.27", 2)], GENEROUS)
        .await
        .assert_succeeded();
    env.deploy(&[env.deployment("web", "shop/web:crashloop", 2)], GENEROUS)
        .await
        .assert_failed_with(FailureReason::CrashLoop);
    // Back to the first release: the Deployment controller scales its old ReplicaSet
    // up again under a new revision, and the verdict is judged on that one.
    env.deploy(&[env.deployment("web", "nginx:1.27", 2)], GENEROUS)
        .await
        .assert_succeeded();
}

/// Real only (kube-sim's dropped watches and server errors are in resilience.rs): the
/// API server is killed and started again in the middle of a rollout, so every watch
/// and connection drops and the server's watch cache starts anew; the verdict stands.
#[tokio::test]
async fn a_rollout_survives_a_restart_of_the_api_server() {
    let mut plane = ControlPlane::start()
        .await
        .expect("a control plane of this test's own starts");
    let cluster = KubernetesCluster::from_kubeconfig(Some(plane.kubeconfig_path()), None)
        .await
        .expect("a cluster from the control plane's kubeconfig")
        // Enough attempts to outlast a restart on a loaded machine.
        .with_retries(12, Duration::from_millis(200));
    // Each pod takes some 5 s to pull its image: the restart falls mid-rollout.
    plane
        .kubelet()
        .set_image_behaviour("shop/web:steady", Behaviour::SlowStart { seconds: 50 });
    let applied = support::apply(
        &cluster,
        &[support::deployment("web", "shop/web:steady", 2)],
    )
    .await;
    let (watched, restarted) = tokio::join!(
        support::watch_in(&cluster, support::NAMESPACE, applied, GENEROUS),
        async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            plane.restart_api_server().await
        }
    );
    restarted.expect("the API server comes back");
    watched.assert_succeeded();
}

static TICKS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// What drops every watch of a rollout in the middle and makes the resourceVersions
/// its watches had reached expire, so they must list again.
enum WatchFault<'a> {
    /// kube-sim's own fault switch.
    Sim(kubernaut_testkit::sim::Faults),
    /// The real API server (its watch cache off, so etcd serves watches) behind a
    /// proxy that cuts every connection and refuses new ones for a moment, while etcd
    /// moves on and is compacted.
    Real {
        plane: &'a ControlPlane,
        proxy: &'a TcpProxy,
    },
}

impl WatchFault<'_> {
    async fn strike(&self) {
        match self {
            Self::Sim(faults) => faults.force_gone(),
            Self::Real { plane, proxy } => {
                proxy.hold();
                proxy.cut();
                // Something changes while the watches are down, then history goes.
                let config_maps: Api<DynamicObject> = Api::namespaced_with(
                    plane.client(),
                    support::NAMESPACE,
                    &core("ConfigMap", "configmaps"),
                );
                let name = format!(
                    "tick-{}",
                    TICKS.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                );
                let tick: DynamicObject = serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
                }))
                .expect("a config map");
                config_maps
                    .create(&PostParams::default(), &tick)
                    .await
                    .expect("the API server takes a write while clients are cut off");
                plane.compact_etcd().await.expect("etcd compacts");
                tokio::time::sleep(Duration::from_millis(300)).await;
                proxy.release();
            }
        }
    }
}

/// Strikes `fault` three times, a second and a half apart, while a slow rollout and a
/// crash-looping one are watched: the first still succeeds and the second still fails
/// as a crash loop, each exactly once.
async fn verdicts_survive(
    cluster: &KubernetesCluster,
    namespace: &str,
    set_behaviour: impl Fn(&str, Behaviour),
    fault: WatchFault<'_>,
) {
    set_behaviour("shop/web:steady", Behaviour::SlowStart { seconds: 100 });
    let mut good = support::deployment("web", "shop/web:steady", 2);
    let mut bad = support::deployment("worker", "shop/worker:crashloop", 1);
    bad["metadata"]["labels"]["app"] = json!("worker");
    for object in [&mut good, &mut bad] {
        object["metadata"]["namespace"] = json!(namespace);
    }
    let good = support::apply(cluster, &[good]).await;
    let bad = support::apply(cluster, &[bad]).await;
    let (good, bad, ()) = tokio::join!(
        support::watch_in(cluster, namespace, good, GENEROUS),
        support::watch_in(cluster, namespace, bad, GENEROUS),
        async {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                fault.strike().await;
            }
        }
    );
    good.assert_succeeded();
    bad.assert_failed_with(FailureReason::CrashLoop);
}

/// Dropped watches and expired resourceVersions in the middle of rollouts, on both
/// clusters: no false verdict, no lost one.
mod dropped_watches_and_expired_resource_versions {
    use super::*;

    #[tokio::test]
    async fn kube_sim() {
        let (sim, cluster) = support::start().await;
        verdicts_survive(
            &cluster,
            support::NAMESPACE,
            |image, behaviour| sim.set_image_behaviour(image, behaviour),
            WatchFault::Sim(sim.faults()),
        )
        .await;
    }

    #[tokio::test]
    async fn control_plane() {
        let plane = ControlPlane::start_with(Options { watch_cache: false })
            .await
            .expect("a control plane of this test's own starts");
        let target = plane
            .server()
            .trim_start_matches("https://")
            .parse()
            .expect("the API server's address");
        let proxy = TcpProxy::start(target).await.expect("the proxy starts");
        let kubeconfig = plane
            .kubeconfig_through(&proxy)
            .expect("a kubeconfig through the proxy");
        let cluster = KubernetesCluster::from_kubeconfig(Some(&kubeconfig), None)
            .await
            .expect("a cluster through the proxy")
            .with_retries(12, Duration::from_millis(200));
        // A resourceVersion from before the faults: after them it must be gone, so the
        // watches that had reached it (or any later one before the last compaction)
        // were answered 410 and had to list again.
        let config_maps: Api<DynamicObject> = Api::namespaced_with(
            plane.client(),
            support::NAMESPACE,
            &core("ConfigMap", "configmaps"),
        );
        let before = config_maps
            .list(&Default::default())
            .await
            .expect("config maps list")
            .metadata
            .resource_version
            .expect("a list has a resourceVersion");
        let connections = proxy.connections();
        verdicts_survive(
            &cluster,
            support::NAMESPACE,
            |image, behaviour| plane.kubelet().set_image_behaviour(image, behaviour),
            WatchFault::Real {
                plane: &plane,
                proxy: &proxy,
            },
        )
        .await;
        let expired = config_maps
            .watch(&Default::default(), &before)
            .await
            .expect("a watch request is answered");
        let first = std::pin::pin!(expired).next().await;
        assert!(
            matches!(&first, Some(Err(kube::Error::Api(status))) if status.code == 410)
                || matches!(&first, Some(Ok(kube::api::WatchEvent::Error(status))) if status.code == 410),
            "a resourceVersion from before the faults is expired: {first:?}"
        );
        assert!(
            proxy.connections() > connections + 3,
            "the rollouts' clients reconnected after the cuts ({} connections)",
            proxy.connections() - connections
        );
    }
}
