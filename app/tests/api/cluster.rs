//! A Kubernaut server wired to a simulated cluster.

use std::time::Duration;

use kubernaut::settings::{ClusterConfig, Settings};
use kubernaut_testkit::sim::Simulator;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app_with};

/// Simulated seconds per real second: rollouts take a fraction of a second.
pub const TIME_SCALE: f64 = 20.0;

pub struct Deploying {
    pub app: TestApp,
    pub sim: Simulator,
}

pub async fn start_simulator() -> Simulator {
    crate::helpers::install_crypto_provider();
    Simulator::builder()
        .time_scale(TIME_SCALE)
        .start()
        .await
        .expect("the simulator starts")
}

pub fn sim_cluster(sim: &Simulator) -> ClusterConfig {
    ClusterConfig {
        name: "sim".to_owned(),
        kubeconfig: Some(sim.kubeconfig_path().to_path_buf()),
        context: None,
        in_cluster: false,
        clock_scale: TIME_SCALE,
        max_requests: kubernaut::settings::DEFAULT_MAX_REQUESTS,
        rules: kubernaut_domain::cluster::ClusterSettings {
            attributes: [("region".to_owned(), "eu-sim".to_owned())].into(),
            ..Default::default()
        },
    }
}

pub async fn spawn_deploying_app() -> Deploying {
    spawn_deploying_app_with(|_| {}).await
}

/// [`spawn_deploying_app`] with settings `adjust` changes too.
pub async fn spawn_deploying_app_with(adjust: impl FnOnce(&mut Settings)) -> Deploying {
    let sim = start_simulator().await;
    create_namespace(&sim, "shop").await;
    let cluster = sim_cluster(&sim);
    let app = spawn_app_with(move |settings| {
        settings.clusters = vec![cluster];
        settings.deployments.unschedulable_grace_seconds = 1;
        adjust(settings);
    })
    .await;
    Deploying { app, sim }
}

pub async fn create_namespace(sim: &Simulator, name: &str) {
    let response = reqwest::Client::new()
        .post(format!("{}/api/v1/namespaces", sim.url()))
        .json(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}))
        .send()
        .await
        .expect("namespace request");
    assert!(
        response.status().is_success(),
        "namespace {name}: {}",
        response.status()
    );
}

/// A Deployment, a Service and a ConfigMap; `extra` adds a second ConfigMap (to prune).
pub fn web_template(extra: bool) -> String {
    let mut template = String::from(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ service }}\nspec:\n  replicas: {{ replicas }}\n  progressDeadlineSeconds: 60\n  selector:\n    matchLabels:\n      app: {{ service }}\n  template:\n    metadata:\n      labels:\n        app: {{ service }}\n    spec:\n      containers:\n      - name: web\n        image: {{ image }}\n        ports:\n        - containerPort: 8080\n        readinessProbe:\n          httpGet:\n            path: /health\n            port: 8080\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {{ service }}\nspec:\n  selector:\n    app: {{ service }}\n  ports:\n  - port: 80\n    targetPort: 8080\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ service }}-settings\ndata:\n  region: \"{{ region }}\"\n  namespace: \"{{ namespace }}\"\n",
    );
    if extra {
        template.push_str("---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ service }}-extra\ndata:\n  a: b\n");
    }
    template
}

pub fn job_template() -> &'static str {
    "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {{ service }}-{{ version | replace('.', '-') }}\nspec:\n  backoffLimit: 1\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: migrate\n        image: {{ image }}\n"
}

impl Deploying {
    pub async fn release(
        &self,
        service: &str,
        version: &str,
        image: &str,
        template: &str,
    ) -> Value {
        let response = self
            .app
            .post_release(&json!({
                "service": service,
                "version": version,
                "image": image,
                "template": template,
                "attributes": { "replicas": "2" },
            }))
            .await;
        assert_eq!(response.status(), 201, "release {service} {version}");
        response.json().await.expect("release JSON")
    }

    pub async fn deploy(&self, body: Value) -> reqwest::Response {
        self.app
            .client
            .post(self.app.url("/api/deployments"))
            .json(&body)
            .send()
            .await
            .expect("sent")
    }

    /// Deploys and waits for the verdict, returning the deployment.
    pub async fn deploy_and_wait(&self, service: &str, version: &str, extra: Value) -> Value {
        let mut body = json!({
            "service": service, "version": version, "cluster": "sim", "namespace": "shop",
        });
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            for (key, value) in extra {
                body.insert(key.clone(), value.clone());
            }
        }
        let response = self.deploy(body).await;
        assert_eq!(response.status(), 202, "deploy {service} {version}");
        let started: Value = response.json().await.expect("deployment JSON");
        self.wait(started["id"].as_str().expect("id")).await
    }

    pub async fn wait(&self, id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        loop {
            let deployment: Value = self
                .app
                .get(&format!("/api/deployments/{id}?wait=20"))
                .await
                .json()
                .await
                .expect("deployment JSON");
            let status = deployment["status"].as_str().unwrap_or_default().to_owned();
            if !["queued", "applying", "rolling_out"].contains(&status.as_str()) {
                return deployment;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no verdict in time: {deployment}"
            );
        }
    }
}
