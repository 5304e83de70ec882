//! Against a real cluster, when `KUBERNAUT_TEST_KUBECONFIG` names its kubeconfig.

use kubernaut::settings::ClusterConfig;
use serde_json::{Value, json};

use crate::helpers::spawn_app_with;

#[tokio::test]
async fn a_release_rolls_out_on_a_real_cluster() {
    let Ok(kubeconfig) = std::env::var("KUBERNAUT_TEST_KUBECONFIG") else {
        eprintln!(
            "skipped: set KUBERNAUT_TEST_KUBECONFIG to a kubeconfig to run against a real cluster"
        );
        return;
    };
    let namespace = std::env::var("KUBERNAUT_TEST_NAMESPACE").unwrap_or_else(|_| "default".into());
    let app = spawn_app_with(|settings| {
        settings.clusters = vec![ClusterConfig {
            name: "real".into(),
            kubeconfig: Some(kubeconfig.into()),
            context: None,
            in_cluster: false,
            clock_scale: 1.0,
            max_requests: kubernaut::settings::DEFAULT_MAX_REQUESTS,
            rules: Default::default(),
        }];
    })
    .await;
    let template = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: kubernaut-smoke\nspec:\n  replicas: 1\n  selector:\n    matchLabels:\n      app: kubernaut-smoke\n  template:\n    metadata:\n      labels:\n        app: kubernaut-smoke\n    spec:\n      containers:\n      - name: web\n        image: {{ image }}\n";
    let created = app
        .post_release(&json!({"service": "kubernaut-smoke", "version": "1", "image": "registry.k8s.io/pause:3.10", "template": template}))
        .await;
    assert_eq!(created.status(), 201);
    let deployment: Value = app
        .client
        .post(app.url("/api/deployments?wait=600"))
        .json(&json!({"service": "kubernaut-smoke", "version": "1", "cluster": "real", "namespace": namespace}))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(deployment["status"], "succeeded", "{deployment}");
}
