//! Registry awareness against a real registry: Debian's `docker-registry` on a free
//! 127.0.0.1 port, holding an image that `skopeo` pushed from a small OCI layout this
//! test builds. Checks the adapter's answers and the release API's.
//!
//! `.ci/run` installs both programs; elsewhere the tests skip with the reason printed
//! when one is missing (and fail instead when `CI` is set).

use kubernaut::Application;
use kubernaut::settings::{DatabaseUrl, RegistryConfig, Settings};
use kubernaut_domain::ImageRef;
use kubernaut_domain::ports::{ImageLookup, ImageRegistry as _};
use kubernaut_registry::{DockerRegistry, MANIFEST_MEDIA_TYPES};
use kubernaut_testkit::database::TestDatabase;
use kubernaut_testkit::registry::TestRegistry;
use serde_json::{Value, json};

const TEMPLATE: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: \"{{service}}\"\nspec:\n  replicas: 1\n  template:\n    spec:\n      containers:\n      - name: app\n        image: \"{{image}}\"\n";

/// The digest the registry itself reports for `repository:reference`.
async fn reported_digest(registry: &TestRegistry, repository: &str, reference: &str) -> String {
    let response = reqwest::Client::new()
        .head(format!(
            "{}/v2/{repository}/manifests/{reference}",
            registry.url()
        ))
        .header("accept", MANIFEST_MEDIA_TYPES)
        .send()
        .await
        .expect("the registry answers");
    assert_eq!(response.status(), 200);
    response
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .expect("a Docker-Content-Digest header")
        .to_owned()
}

fn image(text: &str) -> ImageRef {
    ImageRef::parse(text).expect("an image reference")
}

#[tokio::test]
async fn the_adapter_finds_a_pushed_image_with_the_digest_the_registry_reports() {
    if !TestRegistry::available() {
        return;
    }
    let registry = TestRegistry::start().expect("the registry starts");
    registry.push("hello-world", "1.0").expect("skopeo pushes");
    let reported = reported_digest(&registry, "hello-world", "1.0").await;
    let host = registry.host();
    let adapter = DockerRegistry::new(&registry.url(), None, None).expect("the adapter");
    assert!(adapter.covers(&host));

    let found = adapter
        .resolve(&image(&format!("{host}/hello-world:1.0")))
        .await
        .expect("an answer");
    assert_eq!(
        found,
        ImageLookup::Found {
            digest: reported.clone()
        }
    );
    let by_digest = adapter
        .resolve(&image(&format!("{host}/hello-world@{reported}")))
        .await
        .expect("an answer");
    assert_eq!(
        by_digest,
        ImageLookup::Found {
            digest: reported.clone()
        }
    );
    for missing in [
        format!("{host}/hello-world:2.0"),
        format!("{host}/no-such-image:1.0"),
        format!("{host}/hello-world@sha256:{}", "0".repeat(64)),
    ] {
        let answer = adapter.resolve(&image(&missing)).await.expect("an answer");
        assert_eq!(answer, ImageLookup::NotFound, "{missing}");
    }
}

/// A Kubernaut server on a free port, over a fresh database, checking `registry`.
struct TestApp {
    address: String,
    client: reqwest::Client,
    _database: TestDatabase,
}

impl TestApp {
    async fn spawn(registry_url: &str) -> Self {
        let database = TestDatabase::create().expect("a fresh test database");
        let mut settings = Settings::load(None).expect("default settings");
        settings.database.url = DatabaseUrl::new(database.url());
        settings.database.pool_size = 4;
        settings.deployments.use_current_kubeconfig_context = false;
        settings.server.bind = "127.0.0.1:0".to_owned();
        settings.server.workers = 1;
        settings.registries = vec![RegistryConfig {
            url: registry_url.to_owned(),
            host: None,
            username: None,
            password: None,
        }];
        let application = Application::build(settings.clone())
            .await
            .expect("the application builds");
        let address = format!("http://127.0.0.1:{}", application.port());
        tokio::spawn(application.run_until_stopped());
        let token = kubernaut::bootstrap_token(
            &settings,
            "registry-test",
            kubernaut_domain::Role::Releaser,
            None,
            None,
        )
        .await
        .expect("a releaser token");
        let mut bearer =
            reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                .expect("a header");
        bearer.set_sensitive(true);
        Self {
            address,
            client: reqwest::Client::builder()
                .default_headers(reqwest::header::HeaderMap::from_iter([(
                    reqwest::header::AUTHORIZATION,
                    bearer,
                )]))
                .build()
                .expect("an HTTP client"),
            _database: database,
        }
    }

    async fn post_release(&self, version: &str, image: &str) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}/api/releases", self.address))
            .json(&json!({
                "service": "hello-world",
                "version": version,
                "image": image,
                "template": TEMPLATE,
            }))
            .send()
            .await
            .expect("request sent");
        let status = response.status().as_u16();
        (status, response.json().await.expect("a JSON answer"))
    }

    async fn get(&self, path: &str) -> Value {
        let response = self
            .client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request sent");
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.expect("a JSON answer")
    }
}

#[tokio::test]
async fn releases_are_checked_against_the_registry_and_record_the_digest() {
    if !TestRegistry::available() {
        return;
    }
    let mut registry = TestRegistry::start().expect("the registry starts");
    registry.push("hello-world", "1.0").expect("skopeo pushes");
    let reported = reported_digest(&registry, "hello-world", "1.0").await;
    let host = registry.host();
    let app = TestApp::spawn(&registry.url()).await;

    let (status, problem) = app
        .post_release("2.0.0", &format!("{host}/hello-world:2.0"))
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "image", "{problem}");
    let reason = problem["errors"][0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("not in the registry"), "{problem}");

    let pushed = format!("{host}/hello-world:1.0");
    let (status, created) = app.post_release("1.0.0", &pushed).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["image_digest"], reported.as_str());
    let id = created["id"].as_str().expect("an id").to_owned();
    let read = app.get(&format!("/api/releases/{id}")).await;
    assert_eq!(read["image_digest"], reported.as_str());
    let listed = app.get("/api/releases?service=hello-world").await;
    assert_eq!(listed["items"][0]["image_digest"], reported.as_str());

    let (status, again) = app.post_release("1.0.0", &pushed).await;
    assert_eq!(status, 200, "a retry is the same release: {again}");
    assert_eq!(again["id"], id.as_str());

    let (status, unchecked) = app
        .post_release("3.0.0", "registry.elsewhere.example/hello-world:3.0")
        .await;
    assert_eq!(status, 201, "images of other registries are not checked");
    assert_eq!(unchecked["image_digest"], Value::Null);

    // With the registry gone, a new release cannot be checked: 503, not 422 or 500;
    // a retry of a registered one is still answered.
    registry.stop();
    let (status, problem) = app
        .post_release("4.0.0", &format!("{host}/hello-world:1.0"))
        .await;
    assert_eq!(status, 503, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains(&host)),
        "{problem}"
    );
    let (status, _) = app.post_release("1.0.0", &pushed).await;
    assert_eq!(status, 200);
}
