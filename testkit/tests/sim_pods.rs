//! Pod failure modes, events and logs, and the StatefulSet, DaemonSet and Job controllers.

mod sim_support;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStatus, Event, Pod};
use kube::api::{ListParams, LogParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use kubernaut_testkit::sim::{Behaviour, Simulator};
use serde_json::json;
use sim_support::{TIME_SCALE, client_for, deployment, start, wait_for};

/// Waits until a pod of deployment `app` has a container status satisfying `check`.
async fn wait_container(
    pods: &Api<Pod>,
    app: &str,
    what: &str,
    check: impl Fn(&Pod, &ContainerStatus) -> bool,
) -> Pod {
    wait_for(what, || {
        let pods = pods.clone();
        let app = app.to_owned();
        let check = &check;
        async move {
            let list = pods
                .list(&ListParams::default().labels(&format!("app={app}")))
                .await
                .ok()?;
            list.items.into_iter().find(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| check(p, c)))
            })
        }
    })
    .await
}

async fn events_of(client: &kube::Client, pod: &str) -> Vec<Event> {
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    events
        .list(&ListParams::default().fields(&format!("involvedObject.name={pod}")))
        .await
        .expect("events")
        .items
}

async fn wait_event(client: &kube::Client, pod: &str, reason: &str) -> Event {
    wait_for(&format!("event {reason} for {pod}"), || async move {
        events_of(client, pod)
            .await
            .into_iter()
            .find(|e| e.reason.as_deref() == Some(reason))
    })
    .await
}

fn waiting_reason(c: &ContainerStatus) -> Option<&str> {
    c.state.as_ref()?.waiting.as_ref()?.reason.as_deref()
}

async fn apply(client: &kube::Client, name: &str, image: &str, replicas: i32) {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deployments
        .patch(
            name,
            &PatchParams::apply("test"),
            &Patch::Apply(deployment(name, image, replicas)),
        )
        .await
        .expect("apply");
}

#[tokio::test]
async fn a_good_pod_reports_the_kubelet_events_in_order() {
    let (_sim, client) = start().await;
    apply(&client, "good", "nginx:1.27", 1).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod = wait_container(&pods, "good", "a ready container", |_, c| c.ready).await;
    let name = pod.name_any();
    wait_event(&client, &name, "Started").await;
    let mut events = events_of(&client, &name).await;
    events.sort_by_key(|e| {
        e.metadata
            .resource_version
            .as_ref()
            .and_then(|rv| rv.parse::<u64>().ok())
    });
    let reasons: Vec<String> = events.iter().filter_map(|e| e.reason.clone()).collect();
    assert_eq!(
        reasons,
        ["Scheduled", "Pulling", "Pulled", "Created", "Started"]
    );
    let scheduled = &events[0];
    assert_eq!(scheduled.type_.as_deref(), Some("Normal"));
    assert_eq!(scheduled.involved_object.uid, pod.uid());
    assert_eq!(scheduled.involved_object.kind.as_deref(), Some("Pod"));
    assert!(
        scheduled
            .message
            .as_deref()
            .is_some_and(|m| m.starts_with(&format!(
                "Successfully assigned default/{name} to kube-sim-node-"
            )))
    );
    assert!(events[1].first_timestamp.is_some() && events[1].count == Some(1));
    let logs = pods.logs(&name, &LogParams::default()).await.expect("logs");
    assert!(logs.contains("starting nginx:1.27"), "{logs}");
}

#[tokio::test]
async fn an_image_that_does_not_exist_fails_to_pull_then_backs_off() {
    let (_sim, client) = start().await;
    apply(&client, "missing", "ghcr.io/acme/api:does-not-exist", 1).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod = wait_container(&pods, "missing", "ErrImagePull", |_, c| {
        waiting_reason(c) == Some("ErrImagePull")
    })
    .await;
    let status = &pod
        .status
        .as_ref()
        .expect("status")
        .container_statuses
        .as_ref()
        .expect("statuses")[0];
    let message = status
        .state
        .as_ref()
        .and_then(|s| s.waiting.as_ref())
        .and_then(|w| w.message.clone())
        .unwrap_or_default();
    assert!(message.contains("not found"), "{message}");
    assert!(
        message.contains("ghcr.io/acme/api:does-not-exist"),
        "{message}"
    );
    let pod = wait_container(&pods, "missing", "ImagePullBackOff", |_, c| {
        waiting_reason(c) == Some("ImagePullBackOff")
    })
    .await;
    assert_eq!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Pending")
    );
    let failed = wait_event(&client, &pod.name_any(), "Failed").await;
    assert_eq!(failed.type_.as_deref(), Some("Warning"));
    wait_event(&client, &pod.name_any(), "BackOff").await;
    let logs = pods.logs(&pod.name_any(), &LogParams::default()).await;
    assert!(logs.is_err(), "a container that never started has no logs");
}

#[tokio::test]
async fn a_crashing_container_loops_with_rising_restarts_and_serves_its_logs() {
    let (_sim, client) = start().await;
    apply(&client, "crashy", "acme/worker-crashloop:2", 1).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod = wait_container(
        &pods,
        "crashy",
        "two restarts in CrashLoopBackOff",
        |_, c| c.restart_count >= 2 && waiting_reason(c) == Some("CrashLoopBackOff"),
    )
    .await;
    let status = &pod
        .status
        .as_ref()
        .expect("status")
        .container_statuses
        .as_ref()
        .expect("statuses")[0];
    assert!(!status.ready);
    let last = status
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .expect("last terminated state");
    assert_eq!(last.exit_code, 1);
    assert_eq!(last.reason.as_deref(), Some("Error"));
    let waiting = status
        .state
        .as_ref()
        .and_then(|s| s.waiting.as_ref())
        .and_then(|w| w.message.clone())
        .unwrap_or_default();
    assert!(
        waiting.contains(&format!(
            "restarting failed container=app pod={}_default(",
            pod.name_any()
        )),
        "{waiting}"
    );
    let backoff = wait_event(&client, &pod.name_any(), "BackOff").await;
    assert_eq!(backoff.type_.as_deref(), Some("Warning"));
    assert!(
        backoff
            .message
            .as_deref()
            .is_some_and(|m| m.starts_with("Back-off restarting failed container app in pod"))
    );
    let params = LogParams {
        container: Some("app".into()),
        previous: true,
        tail_lines: Some(1),
        ..LogParams::default()
    };
    let previous = pods
        .logs(&pod.name_any(), &params)
        .await
        .expect("previous logs");
    assert_eq!(
        previous,
        "fatal: could not connect to the database, exiting\n"
    );
}

#[tokio::test]
async fn behaviours_can_be_chosen_per_image_through_the_api() {
    let (sim, client) = start().await;
    sim.set_image_behaviour(
        "acme/app:v2",
        Behaviour::CrashLoop {
            exit_code: 3,
            logs: vec!["panic: boom".into()],
        },
    );
    apply(&client, "chosen", "acme/app:v2", 1).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod = wait_container(&pods, "chosen", "a terminated run", |_, c| {
        c.last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .is_some_and(|t| t.exit_code == 3)
    })
    .await;
    // Until the container is restarted, its current logs are those of the run that crashed.
    let logs = pods
        .logs(&pod.name_any(), &LogParams::default())
        .await
        .expect("logs");
    assert_eq!(logs, "panic: boom\n");
}

#[tokio::test]
async fn a_never_ready_container_runs_with_failing_readiness() {
    let (_sim, client) = start().await;
    apply(&client, "unready", "acme/api-neverready:1", 1).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod = wait_container(&pods, "unready", "a running container", |_, c| {
        c.state.as_ref().is_some_and(|s| s.running.is_some())
    })
    .await;
    let unhealthy = wait_event(&client, &pod.name_any(), "Unhealthy").await;
    assert!(
        unhealthy
            .message
            .as_deref()
            .is_some_and(|m| m.starts_with("Readiness probe failed"))
    );
    let pod = pods.get(&pod.name_any()).await.expect("pod");
    let status = pod.status.expect("status");
    assert_eq!(status.phase.as_deref(), Some("Running"));
    let ready = status
        .conditions
        .expect("conditions")
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_deref()),
        ("False", Some("ContainersNotReady"))
    );
    assert!(!status.container_statuses.expect("statuses")[0].ready);
}

#[tokio::test]
async fn an_unschedulable_pod_stays_pending_with_a_failed_scheduling_event() {
    let (_sim, client) = start().await;
    apply(&client, "nowhere", "acme/big-unschedulable:1", 1).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod = wait_for("PodScheduled=False", || {
        let pods = pods.clone();
        async move {
            let list = pods
                .list(&ListParams::default().labels("app=nowhere"))
                .await
                .ok()?;
            list.items.into_iter().find(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| {
                        cs.iter().any(|c| {
                            c.type_ == "PodScheduled"
                                && c.status == "False"
                                && c.reason.as_deref() == Some("Unschedulable")
                        })
                    })
            })
        }
    })
    .await;
    assert_eq!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Pending")
    );
    assert!(
        pod.spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .is_none()
    );
    let event = wait_event(&client, &pod.name_any(), "FailedScheduling").await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert!(
        event
            .message
            .as_deref()
            .is_some_and(|m| m.contains("nodes are available"))
    );
}

#[tokio::test]
async fn a_slow_image_keeps_the_pod_creating_while_it_pulls() {
    let (sim, client) = start().await;
    sim.set_image_behaviour("acme/huge:1", Behaviour::SlowStart { seconds: 3600 });
    apply(&client, "slow", "acme/huge:1", 1).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod = wait_container(&pods, "slow", "ContainerCreating", |p, c| {
        waiting_reason(c) == Some("ContainerCreating")
            && p.spec.as_ref().is_some_and(|s| s.node_name.is_some())
    })
    .await;
    wait_event(&client, &pod.name_any(), "Pulling").await;
    let reasons: Vec<String> = events_of(&client, &pod.name_any())
        .await
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    assert!(
        !reasons.iter().any(|r| r == "Pulled"),
        "still pulling: {reasons:?}"
    );
}

#[tokio::test]
async fn jobs_complete_or_fail_after_their_backoff_limit() {
    let (_sim, client) = start().await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let job = |name: &str, image: &str| -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"backoffLimit": 1, "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "run", "image": image}]}}}
        }))
        .expect("job")
    };
    jobs.create(&PostParams::default(), &job("ok", "busybox:1"))
        .await
        .expect("create");
    jobs.create(
        &PostParams::default(),
        &job("broken", "acme/migrate-fail:1"),
    )
    .await
    .expect("create");
    let condition = |name: &'static str, kind: &'static str| {
        let jobs = jobs.clone();
        async move {
            wait_for(&format!("{name} to be {kind}"), || {
                let jobs = jobs.clone();
                async move {
                    let j = jobs.get(name).await.ok()?;
                    j.status
                        .clone()?
                        .conditions?
                        .iter()
                        .any(|c| c.type_ == kind && c.status == "True")
                        .then_some(j)
                }
            })
            .await
        }
    };
    let ok = condition("ok", "Complete").await;
    assert_eq!(ok.status.as_ref().and_then(|s| s.succeeded), Some(1));
    assert!(
        ok.status
            .as_ref()
            .and_then(|s| s.completion_time.as_ref())
            .is_some()
    );
    let broken = condition("broken", "Failed").await;
    let reason = broken
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Failed"))
        .and_then(|c| c.reason.clone());
    assert_eq!(reason.as_deref(), Some("BackoffLimitExceeded"));
    assert_eq!(broken.status.as_ref().and_then(|s| s.failed), Some(2));
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let failed = pods
        .list(
            &ListParams::default()
                .labels("job-name=broken")
                .fields("status.phase=Failed"),
        )
        .await
        .expect("pods");
    assert_eq!(failed.items.len(), 2);
}

#[tokio::test]
async fn statefulsets_create_pods_in_order_and_respect_the_partition() {
    let (sim, client) = start().await;
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    let sts = |image: &str, partition: i32| -> StatefulSet {
        serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "db"},
            "spec": {
                "replicas": 3, "serviceName": "db",
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": partition}},
                "selector": {"matchLabels": {"app": "db"}},
                "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "db", "image": image}]}}
            }
        }))
        .expect("statefulset")
    };
    let pp = PatchParams::apply("test");
    sets.patch("db", &pp, &Patch::Apply(sts("postgres:16", 0)))
        .await
        .expect("apply");
    let ready = |want_updated: i32| {
        let sets = sets.clone();
        async move {
            wait_for("statefulset ready", || {
                let sets = sets.clone();
                async move {
                    let s = sets.get("db").await.ok()?;
                    let st = s.status.clone()?;
                    (st.ready_replicas == Some(3) && st.updated_replicas == Some(want_updated))
                        .then_some(s)
                }
            })
            .await
        }
    };
    ready(3).await;
    // The first event of each pod (its Scheduled event) orders the pods by creation.
    let names: Vec<String> = {
        let pods = sim.list_objects("Pod", Some("default"));
        let mut by_creation: Vec<(u64, String)> = pods
            .iter()
            .map(|p| {
                let first_rv = sim
                    .events_for(
                        "default",
                        p["metadata"]["name"].as_str().unwrap_or_default(),
                    )
                    .iter()
                    .filter_map(|e| {
                        e["metadata"]["resourceVersion"]
                            .as_str()?
                            .parse::<u64>()
                            .ok()
                    })
                    .min()
                    .unwrap_or(u64::MAX);
                (
                    first_rv,
                    p["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
            })
            .collect();
        by_creation.sort();
        by_creation.into_iter().map(|(_, n)| n).collect()
    };
    assert_eq!(
        names,
        ["db-0", "db-1", "db-2"],
        "pods are started in ordinal order"
    );

    sets.patch("db", &pp, &Patch::Apply(sts("postgres:17", 2)))
        .await
        .expect("update with partition");
    let s = ready(1).await;
    let status = s.status.expect("status");
    assert_ne!(status.current_revision, status.update_revision);
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let image = |p: &Pod| {
        p.spec
            .as_ref()
            .map(|s| s.containers[0].image.clone().unwrap_or_default())
    };
    assert_eq!(
        image(&pods.get("db-2").await.expect("db-2")).as_deref(),
        Some("postgres:17")
    );
    assert_eq!(
        image(&pods.get("db-0").await.expect("db-0")).as_deref(),
        Some("postgres:16")
    );
}

#[tokio::test]
async fn daemonsets_run_one_pod_per_node() {
    let sim = Simulator::builder()
        .time_scale(TIME_SCALE)
        .nodes(2)
        .start()
        .await
        .expect("sim");
    let client = client_for(&sim).await;
    let sets: Api<DaemonSet> = Api::namespaced(client.clone(), "default");
    let ds: DaemonSet = serde_json::from_value(json!({
        "metadata": {"name": "agent"},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {"metadata": {"labels": {"app": "agent"}}, "spec": {"containers": [{"name": "agent", "image": "fluent-bit:3"}]}}
        }
    }))
    .expect("daemonset");
    sets.create(&PostParams::default(), &ds)
        .await
        .expect("create");
    wait_for("daemonset available", || {
        let sets = sets.clone();
        async move {
            let st = sets.get("agent").await.ok()?.status?;
            (st.desired_number_scheduled == 2
                && st.number_available == Some(2)
                && st.updated_number_scheduled == Some(2))
            .then_some(())
        }
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let mut nodes: Vec<String> = pods
        .list(&ListParams::default().labels("app=agent"))
        .await
        .expect("pods")
        .items
        .iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect();
    nodes.sort();
    assert_eq!(nodes, sim.nodes());
}

#[tokio::test]
async fn pods_asking_for_missing_claims_or_devices_are_unschedulable_until_they_exist() {
    let sim = Simulator::builder()
        .time_scale(TIME_SCALE)
        .start()
        .await
        .expect("sim");
    let client = client_for(&sim).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let gpu: Pod = serde_json::from_value(json!({
        "metadata": {"name": "gpu"},
        "spec": {"containers": [{"name": "llm", "image": "vllm/vllm-openai:v0.11.0",
            "resources": {"limits": {"nvidia.com/gpu": "1", "cpu": "2", "memory": "10Gi"}}}]}
    }))
    .expect("pod");
    let claim: Pod = serde_json::from_value(json!({
        "metadata": {"name": "claim"},
        "spec": {
            "containers": [{"name": "app", "image": "nginx:1"}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]
        }
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &gpu)
        .await
        .expect("create");
    pods.create(&PostParams::default(), &claim)
        .await
        .expect("create");
    let gpu_event = wait_event(&client, "gpu", "FailedScheduling").await;
    assert!(
        gpu_event
            .message
            .as_deref()
            .is_some_and(|m| m.contains("Insufficient nvidia.com/gpu")),
        "{gpu_event:?}"
    );
    let claim_event = wait_event(&client, "claim", "FailedScheduling").await;
    assert!(
        claim_event
            .message
            .as_deref()
            .is_some_and(|m| m.contains("persistentvolumeclaim \"data\" not found"))
    );

    let pvcs: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        Api::namespaced(client.clone(), "default");
    let pvc = serde_json::from_value(json!({"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}))
        .expect("pvc");
    pvcs.create(&PostParams::default(), &pvc)
        .await
        .expect("create pvc");
    wait_for("the pod with its claim to run", || {
        let pods = pods.clone();
        async move { (pods.get("claim").await.ok()?.status?.phase? == "Running").then_some(()) }
    })
    .await;
    let gpu = pods.get("gpu").await.expect("gpu pod");
    assert_eq!(gpu.status.and_then(|s| s.phase).as_deref(), Some("Pending"));
}

#[tokio::test]
async fn a_missing_secret_is_a_create_container_config_error_until_it_appears() {
    let (_sim, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "needs-secret"},
        "spec": {"containers": [{"name": "app", "image": "nginx:1", "env": [
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-secret", "key": "hf_token"}}}
        ]}]}
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create");
    let failing = wait_for("CreateContainerConfigError", || {
        let pods = pods.clone();
        async move {
            let p = pods.get("needs-secret").await.ok()?;
            let c = p.status.clone()?.container_statuses?.into_iter().next()?;
            (waiting_reason(&c) == Some("CreateContainerConfigError")).then_some(c)
        }
    })
    .await;
    let message = failing
        .state
        .and_then(|s| s.waiting)
        .and_then(|w| w.message)
        .unwrap_or_default();
    assert_eq!(message, "secret \"hf-secret\" not found");
    let failed = wait_event(&client, "needs-secret", "Failed").await;
    assert_eq!(
        failed.message.as_deref(),
        Some("Error: secret \"hf-secret\" not found")
    );

    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client, "default");
    let secret = serde_json::from_value(
        json!({"metadata": {"name": "hf-secret"}, "stringData": {"hf_token": "x"}}),
    )
    .expect("secret");
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("create secret");
    wait_for("the container to start once the secret exists", || {
        let pods = pods.clone();
        async move {
            let p = pods.get("needs-secret").await.ok()?;
            p.status?.container_statuses?.first()?.ready.then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn deleted_pods_terminate_gracefully_with_killing_events() {
    let (sim, client) = start().await;
    apply(&client, "term", "nginx:1", 1).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod = wait_container(&pods, "term", "a ready container", |_, c| c.ready).await;
    let name = pod.name_any();
    let uid = pod.uid();
    let deleted = pods
        .delete(&name, &Default::default())
        .await
        .expect("delete");
    let marked = deleted.left().expect("the pod, marked for deletion");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(marked.metadata.deletion_grace_period_seconds, Some(30));
    wait_for("the pod to be gone", || async {
        sim.get_object("Pod", "default", &name)
            .is_none()
            .then_some(())
    })
    .await;
    let killing = sim
        .list_objects("Event", Some("default"))
        .into_iter()
        .find(|e| e["reason"] == "Killing" && e["involvedObject"]["uid"].as_str() == uid.as_deref())
        .expect("a Killing event");
    assert_eq!(killing["message"], "Stopping container app");
    // The ReplicaSet replaced the pod.
    wait_container(&pods, "term", "a replacement", |p, c| {
        c.ready && p.name_any() != name
    })
    .await;
}

#[tokio::test]
async fn a_refused_pull_backs_off_without_saying_not_found() {
    let (_sim, client) = start().await;
    apply(&client, "private", "acme/api-denied:1", 1).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod = wait_container(&pods, "private", "ImagePullBackOff", |_, c| {
        waiting_reason(c) == Some("ImagePullBackOff")
    })
    .await;
    let status = &pod
        .status
        .as_ref()
        .expect("status")
        .container_statuses
        .as_ref()
        .expect("statuses")[0];
    let message = status
        .state
        .as_ref()
        .and_then(|s| s.waiting.as_ref())
        .and_then(|w| w.message.clone())
        .unwrap_or_default();
    assert!(message.contains("pull access denied"), "{message}");
    assert!(!message.contains("not found"), "{message}");
}
