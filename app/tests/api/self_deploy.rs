//! Kubernaut releases and deploys Kubernaut: the manifests in `deploy/kubernetes/`
//! (Kubernaut's own templates) go through Kubernaut's API to a real control plane and
//! roll out (the image is a placeholder: there is no Docker engine here, the fake
//! kubelet runs it), and the access they grant is what they say: deploying in the
//! namespaces given to it, nothing cluster-wide, nothing elsewhere.

use std::path::Path;

use kube::api::{Api, DynamicObject, PostParams};
use kube::discovery::ApiResource;
use kubernaut::settings::ClusterConfig;
use kubernaut_testkit::control_plane::SharedControlPlane;
use serde_json::{Value, json};

use crate::helpers::spawn_app_with;

fn template(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/kubernetes")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: if group.is_empty() {
            version.into()
        } else {
            format!("{group}/{version}")
        },
        kind: kind.into(),
        plural: plural.into(),
    }
}

async fn create(
    client: &kube::Client,
    namespace: Option<&str>,
    resource: &ApiResource,
    object: Value,
) {
    let api: Api<DynamicObject> = match namespace {
        Some(namespace) => Api::namespaced_with(client.clone(), namespace, resource),
        None => Api::all_with(client.clone(), resource),
    };
    let object: DynamicObject = serde_json::from_value(object).expect("an object");
    api.create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|e| panic!("creating a {}: {e}", resource.kind));
}

/// Whether the API server lets Kubernaut's ServiceAccount (in `home`) do `verb` on
/// `resource` of `group` in `namespace` (all namespaces when `None`).
async fn allowed(
    client: &kube::Client,
    home: &str,
    verb: &str,
    group: &str,
    resource_name: &str,
    namespace: Option<&str>,
) -> bool {
    let review = resource(
        "authorization.k8s.io",
        "v1",
        "SubjectAccessReview",
        "subjectaccessreviews",
    );
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &review);
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "metadata": {},
        "spec": {
            "user": format!("system:serviceaccount:{home}:kubernaut"),
            "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{home}"), "system:authenticated"],
            "resourceAttributes": {
                "verb": verb, "group": group, "resource": resource_name,
                "namespace": namespace.unwrap_or_default(),
            },
        },
    }))
    .expect("a review");
    let answered = api
        .create(&PostParams::default(), &object)
        .await
        .expect("the review is answered");
    answered.data["status"]["allowed"] == json!(true)
}

#[tokio::test]
async fn kubernaut_deploys_kubernaut_with_least_privilege() {
    let plane = SharedControlPlane::get().expect("the real control plane starts");
    let kubeconfig =
        kube::config::Kubeconfig::read_from(plane.kubeconfig_path()).expect("the kubeconfig reads");
    let client = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("a client config"),
    )
    .expect("a client");
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let home = format!("kubernaut-{suffix}");
    let team = format!("team-{suffix}");
    let namespaces = resource("", "v1", "Namespace", "namespaces");
    for namespace in [&home, &team] {
        create(
            &client,
            None,
            &namespaces,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
        )
        .await;
    }
    // What an operator creates once, out of band: the database URL and session key.
    create(
        &client,
        Some(&home),
        &resource("", "v1", "Secret", "secrets"),
        json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "kubernaut"},
            "stringData": {"database-url": "postgres://kubernaut@db/kubernaut", "session-key": "c2VjcmV0"},
        }),
    )
    .await;

    let app = spawn_app_with(|settings| {
        settings.clusters = vec![ClusterConfig {
            name: "home".into(),
            kubeconfig: Some(plane.kubeconfig_path().to_path_buf()),
            context: None,
            in_cluster: false,
            clock_scale: 1.0,
            max_requests: kubernaut::settings::DEFAULT_MAX_REQUESTS,
            rules: Default::default(),
        }];
    })
    .await;
    let releases = [
        (
            "kubernaut",
            "kubernaut.yaml",
            json!({"replicas": "2", "log_filter": "info"}),
        ),
        (
            "kubernaut-access",
            "access.yaml",
            json!({"kubernaut_namespace": home}),
        ),
    ];
    for (service, file, attributes) in releases {
        let created = app
            .post_release(&json!({
                "service": service,
                "version": "1.0.0",
                // A placeholder: no Docker engine builds the real image here.
                "image": "registry.example.com/kubernaut:1.0.0",
                "template": template(file),
                "attributes": attributes,
            }))
            .await;
        let status = created.status();
        assert_eq!(
            status,
            201,
            "{service}: {}",
            created.text().await.unwrap_or_default()
        );
    }
    for (service, namespace) in [("kubernaut", &home), ("kubernaut-access", &team)] {
        let deployment: Value = app
            .client
            .post(app.url("/api/deployments?wait=300"))
            .json(&json!({"service": service, "version": "1.0.0", "cluster": "home", "namespace": namespace}))
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("a deployment");
        assert_eq!(
            deployment["status"], "succeeded",
            "{service}: {deployment:#}"
        );
    }

    // It rolled out as written: two ready replicas, probes on /readyz and /healthz, a
    // disruption budget, non-root.
    let deployments: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &home,
        &resource("apps", "v1", "Deployment", "deployments"),
    );
    let running = deployments.get("kubernaut").await.expect("the Deployment");
    assert_eq!(
        running.data["status"]["readyReplicas"],
        json!(2),
        "{:#}",
        running.data
    );
    let container = &running.data["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(
        running.data["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"],
        json!(true)
    );
    let budgets: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &home,
        &resource(
            "policy",
            "v1",
            "PodDisruptionBudget",
            "poddisruptionbudgets",
        ),
    );
    budgets
        .get("kubernaut")
        .await
        .expect("the PodDisruptionBudget");

    // Least privilege: services' kinds in the namespaces given to it, read-only where
    // verdicts are read, nothing elsewhere or cluster-wide.
    assert!(allowed(&client, &home, "create", "apps", "deployments", Some(&team)).await);
    assert!(allowed(&client, &home, "get", "", "pods/log", Some(&team)).await);
    assert!(allowed(&client, &home, "watch", "", "pods", Some(&team)).await);
    assert!(
        !allowed(
            &client,
            &home,
            "create",
            "apps",
            "deployments",
            Some("default")
        )
        .await
    );
    assert!(!allowed(&client, &home, "delete", "", "pods", Some(&team)).await);
    assert!(!allowed(&client, &home, "create", "", "pods/exec", Some(&team)).await);
    assert!(!allowed(&client, &home, "list", "", "secrets", None).await);
    assert!(
        !allowed(
            &client,
            &home,
            "create",
            "rbac.authorization.k8s.io",
            "clusterroles",
            None
        )
        .await
    );
}
