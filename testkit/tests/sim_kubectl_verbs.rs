//! kubectl's verbs against the simulator: `create` (whose typed clients send protobuf
//! bodies), `scale`, `edit`, `replace`, `label`, `rollout restart` and `status`, and
//! `delete` with each cascade. Each checks the effect in kube-sim's state.

mod sim_support;

use std::path::Path;
use std::process::Output;

use base64::Engine as _;
use kubernaut_testkit::sim::Simulator;
use serde_json::Value;
use sim_support::{start, wait_for};

const KUBECTL: &str = "/usr/bin/kubectl";

fn kubectl_missing() -> bool {
    let missing = !Path::new(KUBECTL).exists();
    if missing {
        eprintln!("skipped: {KUBECTL} is not installed");
    }
    missing
}

async fn kubectl_with(sim: &Simulator, args: &[&str], env: &[(&str, &str)]) -> Output {
    let output = tokio::process::Command::new(KUBECTL)
        .args(args)
        .env("KUBECONFIG", sim.kubeconfig_path())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .envs(env.iter().copied())
        .output()
        .await
        .expect("kubectl runs");
    assert!(
        output.status.success(),
        "kubectl {}\nstatus {:?}\nstdout:\n{}\nstderr:\n{}",
        args.join(" "),
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs kubectl and fails the test unless it succeeds.
async fn kubectl(sim: &Simulator, args: &[&str]) -> Output {
    kubectl_with(sim, args, &[]).await
}

fn object(sim: &Simulator, kind: &str, namespace: &str, name: &str) -> Value {
    sim.get_object(kind, namespace, name)
        .unwrap_or_else(|| panic!("{kind} {namespace}/{name} is not in kube-sim"))
}

#[tokio::test]
async fn kubectl_create_makes_each_kind_from_protobuf_bodies() {
    if kubectl_missing() {
        return;
    }
    let (sim, _client) = start().await;
    kubectl(&sim, &["create", "namespace", "shop"]).await;
    assert_eq!(
        object(&sim, "Namespace", "", "shop")["metadata"]["name"],
        "shop"
    );

    // The namespace first: what follows `--` is the job's command.
    let run = |args: &'static [&'static str]| {
        let mut all = vec!["-n", "shop"];
        all.extend(args);
        all
    };
    kubectl(
        &sim,
        &run(&[
            "create",
            "deployment",
            "web",
            "--image=nginx:1.27",
            "--replicas=2",
            "--port=80",
        ]),
    )
    .await;
    let d = object(&sim, "Deployment", "shop", "web");
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], "web");
    let container = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "nginx:1.27");
    assert_eq!(container["ports"][0]["containerPort"], 80);
    assert!(
        d["metadata"]
            .get("creationTimestamp")
            .is_some_and(Value::is_string),
        "{d}"
    );

    kubectl(
        &sim,
        &run(&[
            "create",
            "configmap",
            "settings",
            "--from-literal=mode=fast",
            "--from-literal=level=3",
        ]),
    )
    .await;
    let cm = object(&sim, "ConfigMap", "shop", "settings");
    assert_eq!(
        cm["data"],
        serde_json::json!({"mode": "fast", "level": "3"})
    );

    kubectl(
        &sim,
        &run(&[
            "create",
            "secret",
            "generic",
            "creds",
            "--from-literal=password=hunter2",
        ]),
    )
    .await;
    let secret = object(&sim, "Secret", "shop", "creds");
    assert_eq!(
        secret["data"]["password"], "aHVudGVyMg==",
        "base64 of hunter2"
    );
    assert_eq!(secret["type"], "Opaque");

    kubectl(
        &sim,
        &run(&["create", "service", "clusterip", "web", "--tcp=80:8080"]),
    )
    .await;
    let svc = object(&sim, "Service", "shop", "web");
    assert_eq!(svc["spec"]["ports"][0]["port"], 80);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080);
    assert_eq!(svc["spec"]["type"], "ClusterIP");
    assert_eq!(svc["spec"]["selector"]["app"], "web");

    kubectl(&sim, &run(&["create", "serviceaccount", "robot"])).await;
    object(&sim, "ServiceAccount", "shop", "robot");

    let out = kubectl(
        &sim,
        &run(&[
            "create",
            "token",
            "robot",
            "--duration=20m",
            "--audience=api",
        ]),
    )
    .await;
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let payload = token.split('.').nth(1).expect("a JWT's three parts");
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("base64url"),
    )
    .expect("JSON claims");
    assert_eq!(claims["sub"], "system:serviceaccount:shop:robot");
    assert_eq!(claims["aud"], serde_json::json!(["api"]));
    assert_eq!(
        claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat"),
        1200
    );
    let out = tokio::process::Command::new(KUBECTL)
        .args(["create", "token", "robot", "-n", "shop", "--duration=1m"])
        .env("KUBECONFIG", sim.kubeconfig_path())
        .output()
        .await
        .expect("kubectl runs");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("may not specify a duration less than 10 minutes"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    kubectl(
        &sim,
        &run(&[
            "create",
            "role",
            "reader",
            "--verb=get",
            "--verb=list",
            "--resource=pods",
        ]),
    )
    .await;
    let role = object(&sim, "Role", "shop", "reader");
    assert_eq!(
        role["rules"][0]["verbs"],
        serde_json::json!(["get", "list"])
    );
    assert_eq!(role["rules"][0]["resources"], serde_json::json!(["pods"]));

    kubectl(
        &sim,
        &run(&[
            "create",
            "rolebinding",
            "reader",
            "--role=reader",
            "--serviceaccount=shop:robot",
        ]),
    )
    .await;
    let binding = object(&sim, "RoleBinding", "shop", "reader");
    assert_eq!(binding["roleRef"]["name"], "reader");
    assert_eq!(binding["subjects"][0]["name"], "robot");

    kubectl(
        &sim,
        &run(&[
            "create",
            "job",
            "once",
            "--image=busybox:1.36",
            "--",
            "echo",
            "hi",
        ]),
    )
    .await;
    let job = object(&sim, "Job", "shop", "once");
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["command"],
        serde_json::json!(["echo", "hi"])
    );
    kubectl(
        &sim,
        &run(&[
            "create",
            "cronjob",
            "nightly",
            "--image=busybox:1.36",
            "--schedule=0 3 * * *",
        ]),
    )
    .await;
    assert_eq!(
        object(&sim, "CronJob", "shop", "nightly")["spec"]["schedule"],
        "0 3 * * *"
    );

    kubectl(
        &sim,
        &run(&[
            "create",
            "quota",
            "small",
            "--hard=pods=3,requests.cpu=500m",
        ]),
    )
    .await;
    let quota = object(&sim, "ResourceQuota", "shop", "small");
    assert_eq!(
        quota["spec"]["hard"],
        serde_json::json!({"pods": "3", "requests.cpu": "500m"})
    );

    kubectl(
        &sim,
        &run(&[
            "create",
            "poddisruptionbudget",
            "web",
            "--selector=app=web",
            "--min-available=50%",
        ]),
    )
    .await;
    let pdb = object(&sim, "PodDisruptionBudget", "shop", "web");
    assert_eq!(pdb["spec"]["minAvailable"], "50%", "an IntOrString string");

    kubectl(
        &sim,
        &run(&["create", "ingress", "web", "--rule=web.example/*=web:80"]),
    )
    .await;
    let ingress = object(&sim, "Ingress", "shop", "web");
    let path = &ingress["spec"]["rules"][0]["http"]["paths"][0];
    assert_eq!(
        path["backend"]["service"]["port"]["number"], 80,
        "{ingress}"
    );
    assert_eq!(path["pathType"], "Prefix");

    kubectl(
        &sim,
        &run(&["create", "service", "nodeport", "edge", "--tcp=443:8443"]),
    )
    .await;
    assert_eq!(
        object(&sim, "Service", "shop", "edge")["spec"]["type"],
        "NodePort"
    );

    kubectl(
        &sim,
        &run(&[
            "autoscale",
            "deployment",
            "web",
            "--min=2",
            "--max=5",
            "--cpu-percent=80",
        ]),
    )
    .await;
    let hpa = object(&sim, "HorizontalPodAutoscaler", "shop", "web");
    assert_eq!(hpa["spec"]["maxReplicas"], 5);
    assert_eq!(
        hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        80
    );

    kubectl(
        &sim,
        &[
            "create",
            "priorityclass",
            "high",
            "--value=1000",
            "--description=urgent",
        ],
    )
    .await;
    let class = object(&sim, "PriorityClass", "", "high");
    assert_eq!(
        (&class["value"], &class["description"]),
        (&1000.into(), &"urgent".into())
    );

    kubectl(
        &sim,
        &[
            "create",
            "clusterrole",
            "viewer",
            "--verb=get",
            "--resource=deployments.apps",
        ],
    )
    .await;
    let role = object(&sim, "ClusterRole", "", "viewer");
    assert_eq!(role["rules"][0]["apiGroups"], serde_json::json!(["apps"]));
    kubectl(
        &sim,
        &[
            "create",
            "clusterrolebinding",
            "viewer",
            "--clusterrole=viewer",
            "--user=ann",
        ],
    )
    .await;
    let binding = object(&sim, "ClusterRoleBinding", "", "viewer");
    assert_eq!(binding["subjects"][0]["kind"], "User");

    wait_for("the job to complete", || async {
        let job = sim.get_object("Job", "shop", "once")?;
        (job["status"]["succeeded"] == 1).then_some(())
    })
    .await;
}

#[tokio::test]
async fn kubectl_scales_edits_replaces_and_labels() {
    if kubectl_missing() {
        return;
    }
    let (sim, _client) = start().await;
    kubectl(
        &sim,
        &[
            "create",
            "deployment",
            "web",
            "--image=nginx:1.27",
            "--replicas=1",
        ],
    )
    .await;

    kubectl(&sim, &["scale", "deployment", "web", "--replicas=3"]).await;
    assert_eq!(
        object(&sim, "Deployment", "default", "web")["spec"]["replicas"],
        3
    );
    wait_for("three ready replicas", || async {
        let d = sim.get_object("Deployment", "default", "web")?;
        (d["status"]["readyReplicas"] == 3).then_some(())
    })
    .await;

    // kubectl edit writes the object to a file and runs the editor on it.
    kubectl_with(
        &sim,
        &["edit", "deployment", "web"],
        &[(
            "KUBE_EDITOR",
            "sed -i -e s/replicas:\\ 3/replicas:\\ 2/ -e s/nginx:1.27/nginx:1.28/",
        )],
    )
    .await;
    let d = object(&sim, "Deployment", "default", "web");
    assert_eq!(d["spec"]["replicas"], 2, "{d}");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.28"
    );

    kubectl(
        &sim,
        &[
            "create",
            "configmap",
            "settings",
            "--from-literal=mode=fast",
        ],
    )
    .await;
    let out = kubectl(&sim, &["get", "configmap", "settings", "-o", "json"]).await;
    let mut cm: Value = serde_json::from_slice(&out.stdout).expect("json");
    cm["data"]["mode"] = "slow".into();
    cm["data"]["extra"] = "1".into();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("cm.json");
    std::fs::write(&file, cm.to_string()).expect("write");
    kubectl(&sim, &["replace", "-f", &file.to_string_lossy()]).await;
    let cm = object(&sim, "ConfigMap", "default", "settings");
    assert_eq!(
        cm["data"],
        serde_json::json!({"mode": "slow", "extra": "1"})
    );

    kubectl(
        &sim,
        &["label", "deployment", "web", "tier=frontend", "team=a"],
    )
    .await;
    let labels = &object(&sim, "Deployment", "default", "web")["metadata"]["labels"];
    assert_eq!(labels["tier"], "frontend");
    assert_eq!(labels["team"], "a");
    kubectl(&sim, &["label", "deployment", "web", "team-"]).await;
    let labels = &object(&sim, "Deployment", "default", "web")["metadata"]["labels"];
    assert!(labels.get("team").is_none(), "{labels}");
    assert_eq!(labels["tier"], "frontend");
}

#[tokio::test]
async fn kubectl_rollout_restart_rolls_the_pods_and_status_waits_for_it() {
    if kubectl_missing() {
        return;
    }
    let (sim, _client) = start().await;
    kubectl(
        &sim,
        &[
            "create",
            "deployment",
            "web",
            "--image=nginx:1.27",
            "--replicas=2",
        ],
    )
    .await;
    kubectl(
        &sim,
        &["rollout", "status", "deployment/web", "--timeout=30s"],
    )
    .await;
    let before: Vec<String> = pod_names(&sim);
    assert_eq!(before.len(), 2);

    kubectl(&sim, &["rollout", "restart", "deployment/web"]).await;
    let d = object(&sim, "Deployment", "default", "web");
    assert!(
        d["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
            .is_string(),
        "{d}"
    );
    let out = kubectl(
        &sim,
        &["rollout", "status", "deployment/web", "--timeout=30s"],
    )
    .await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("successfully rolled out"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let replica_sets = sim.list_objects("ReplicaSet", Some("default"));
    assert_eq!(replica_sets.len(), 2, "a new ReplicaSet for the restart");
    wait_for("the old pods to be replaced", || async {
        let now = pod_names(&sim);
        (now.len() == 2 && now.iter().all(|p| !before.contains(p))).then_some(())
    })
    .await;
}

fn pod_names(sim: &Simulator) -> Vec<String> {
    sim.list_objects("Pod", Some("default"))
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
        .collect()
}

fn owned_by(sim: &Simulator, kind: &str, owner: &str) -> Vec<Value> {
    sim.list_objects(kind, Some("default"))
        .into_iter()
        .filter(|o| o["metadata"]["labels"]["app"] == owner)
        .collect()
}

#[tokio::test]
async fn kubectl_delete_cascades_in_the_background_in_the_foreground_or_orphans() {
    if kubectl_missing() {
        return;
    }
    let (sim, _client) = start().await;
    for name in ["background", "foreground", "orphan"] {
        kubectl(&sim, &["create", "deployment", name, "--image=nginx:1.27"]).await;
        kubectl(
            &sim,
            &[
                "rollout",
                "status",
                &format!("deployment/{name}"),
                "--timeout=30s",
            ],
        )
        .await;
        assert_eq!(owned_by(&sim, "ReplicaSet", name).len(), 1);
    }

    kubectl(&sim, &["delete", "deployment", "background"]).await;
    assert!(
        sim.get_object("Deployment", "default", "background")
            .is_none()
    );
    wait_for(
        "the background deployment's replica set and pods to go",
        || async {
            (owned_by(&sim, "ReplicaSet", "background").is_empty()
                && owned_by(&sim, "Pod", "background").is_empty())
            .then_some(())
        },
    )
    .await;

    kubectl(
        &sim,
        &["delete", "deployment", "foreground", "--cascade=foreground"],
    )
    .await;
    wait_for(
        "the foreground deployment and its dependents to go",
        || async {
            (sim.get_object("Deployment", "default", "foreground")
                .is_none()
                && owned_by(&sim, "ReplicaSet", "foreground").is_empty()
                && owned_by(&sim, "Pod", "foreground").is_empty())
            .then_some(())
        },
    )
    .await;

    kubectl(
        &sim,
        &["delete", "deployment", "orphan", "--cascade=orphan"],
    )
    .await;
    assert!(sim.get_object("Deployment", "default", "orphan").is_none());
    let orphans = owned_by(&sim, "ReplicaSet", "orphan");
    assert_eq!(orphans.len(), 1, "the replica set stays");
    assert!(
        orphans[0]["metadata"]["ownerReferences"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "{}",
        orphans[0]
    );
    assert_eq!(owned_by(&sim, "Pod", "orphan").len(), 1, "its pod stays");
}
