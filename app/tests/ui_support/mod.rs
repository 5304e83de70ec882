//! What the page and browser tests share: a Kubernaut server over a fresh database,
//! wired to a simulated cluster, with a release that rolls out and one that crash-loops.
//! (A small copy of the API tests' helpers, which belong to those tests.)

use std::time::Duration;

use kubernaut::Application;
use kubernaut::settings::{ClusterConfig, DatabaseUrl, Settings};
use kubernaut_testkit::database::TestDatabase;
use kubernaut_testkit::sim::{Behaviour, Simulator};
use serde_json::{Value, json};

/// Simulated seconds per real second: rollouts take a fraction of a second.
const TIME_SCALE: f64 = 20.0;

/// A Deployment, a Service and a ConfigMap of `{{ service }}`.
const TEMPLATE: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ service }}\nspec:\n  replicas: {{ replicas }}\n  progressDeadlineSeconds: 60\n  selector:\n    matchLabels:\n      app: {{ service }}\n  template:\n    metadata:\n      labels:\n        app: {{ service }}\n    spec:\n      containers:\n      - name: web\n        image: {{ image }}\n        ports:\n        - containerPort: 8080\n        readinessProbe:\n          httpGet:\n            path: /health\n            port: 8080\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {{ service }}\nspec:\n  selector:\n    app: {{ service }}\n  ports:\n  - port: 80\n    targetPort: 8080\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ service }}-settings\ndata:\n  region: \"{{ region }}\"\n";

/// A Kubernaut server on a free port with the simulated cluster `sim`.
pub struct UiApp {
    address: String,
    /// Sends the admin token with every request (the API).
    client: reqwest::Client,
    /// The admin token's secret, for signing in to the pages.
    pub token: String,
    sim: Simulator,
    _database: TestDatabase,
}

/// A client that sends `token` as a bearer token with every request.
fn client_with_token(token: &str) -> reqwest::Client {
    let mut value =
        reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).expect("a header");
    value.set_sensitive(true);
    let headers = reqwest::header::HeaderMap::from_iter([(reqwest::header::AUTHORIZATION, value)]);
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("an HTTP client")
}

/// The deployments every UI test looks at.
pub struct Seeded {
    pub app: UiApp,
    /// `web` 1.0.0, rolled out to sim/shop.
    pub succeeded: Value,
    /// `crashy` 1, crash-looping on sim/shop.
    pub failed: Value,
}

/// A server with a succeeded and a failed deployment on `sim/shop`.
pub async fn seeded_app() -> Seeded {
    let app = spawn_app().await;
    app.release("web", "1.0.0", "registry.local/web:1.0.0")
        .await;
    // Registered, never deployed.
    app.release("web", "1.1.0", "registry.local/web:1.1.0")
        .await;
    app.release("crashy", "1", "registry.local/crashloop:1")
        .await;
    let succeeded = app.deploy_and_wait("web", "1.0.0").await;
    assert_eq!(succeeded["status"], "succeeded", "{succeeded}");
    let failed = app.deploy_and_wait("crashy", "1").await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["reason"], "crash_loop", "{failed}");
    Seeded {
        app,
        succeeded,
        failed,
    }
}

async fn spawn_app() -> UiApp {
    // reqwest and kube use rustls without a default provider; use ring, as kube does.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = Simulator::builder()
        .time_scale(TIME_SCALE)
        .start()
        .await
        .expect("the simulator starts");
    let namespace = reqwest::Client::new()
        .post(format!("{}/api/v1/namespaces", sim.url()))
        .json(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}))
        .send()
        .await
        .expect("namespace request");
    assert!(namespace.status().is_success(), "{}", namespace.status());
    let database = TestDatabase::create().expect("a fresh test database");
    let mut settings = Settings::load(None).expect("default settings");
    settings.database.url = DatabaseUrl::new(database.url());
    settings.database.pool_size = 4;
    settings.deployments.use_current_kubeconfig_context = false;
    settings.deployments.unschedulable_grace_seconds = 1;
    settings.clusters = vec![ClusterConfig {
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
    }];
    settings.server.bind = "127.0.0.1:0".to_owned();
    settings.server.workers = 1;
    let application = Application::build(settings.clone())
        .await
        .expect("the application builds");
    let address = format!("http://127.0.0.1:{}", application.port());
    tokio::spawn(application.run_until_stopped());
    let token = kubernaut::bootstrap_token(
        &settings,
        "ui-admin",
        kubernaut_domain::Role::Admin,
        None,
        None,
    )
    .await
    .expect("an admin token")
    .expose()
    .to_owned();
    UiApp {
        address,
        client: client_with_token(&token),
        token,
        sim,
        _database: database,
    }
}

impl UiApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// Registers a release of the web template, returning its JSON.
    pub async fn release(&self, service: &str, version: &str, image: &str) -> Value {
        let response = self
            .client
            .post(self.url("/api/releases"))
            .json(&json!({
                "service": service,
                "version": version,
                "image": image,
                "template": TEMPLATE,
                "attributes": { "replicas": "2", "team": "payments" },
                "comment": format!("{service} {version}, built by Jenkins #42"),
            }))
            .send()
            .await
            .expect("release request");
        assert_eq!(response.status(), 201, "release {service} {version}");
        response.json().await.expect("release JSON")
    }

    /// Deploys a release to sim/shop and waits for the verdict.
    pub async fn deploy_and_wait(&self, service: &str, version: &str) -> Value {
        let body =
            json!({"service": service, "version": version, "cluster": "sim", "namespace": "shop"});
        let response = self
            .client
            .post(self.url("/api/deployments"))
            .json(&body)
            .send()
            .await
            .expect("deploy request");
        assert_eq!(response.status(), 202, "deploy {body}");
        let started: Value = response.json().await.expect("deployment JSON");
        self.verdict_of(started["id"].as_str().expect("an id"))
            .await
    }

    /// The deployment `id` once it has a verdict (or ended cancelled).
    pub async fn verdict_of(&self, id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let deployment = self
                .api_get(&format!("/api/deployments/{id}?wait=20"))
                .await;
            let status = deployment["status"].as_str().unwrap_or_default();
            if !["queued", "applying", "rolling_out"].contains(&status) {
                return deployment;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no verdict in time: {deployment}"
            );
        }
    }

    /// `GET path` of the API as the admin, as JSON.
    pub async fn api_get(&self, path: &str) -> Value {
        let response = self
            .client
            .get(self.url(path))
            .send()
            .await
            .expect("API request");
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json().await.expect("API JSON")
    }

    /// Makes the pods of `image` take `seconds` of the simulated clock (a twentieth
    /// of that in real time) to start: a rollout still running when the test looks.
    pub fn make_slow(&self, image: &str, seconds: u64) {
        self.sim
            .set_image_behaviour(image, Behaviour::SlowStart { seconds });
    }
}
