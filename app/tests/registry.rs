//! Registry awareness against a real registry: Debian's `docker-registry` on a free
//! 127.0.0.1 port, holding an image that `skopeo` pushed from a small OCI layout this
//! test builds. Checks the adapter's answers and the release API's.
//!
//! `.ci/run` installs both programs; elsewhere the tests skip with the reason printed
//! when one is missing (and fail instead when `CI` is set).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kubernaut::Application;
use kubernaut::settings::{DatabaseUrl, RegistryConfig, Settings};
use kubernaut_domain::ImageRef;
use kubernaut_domain::ports::{ImageLookup, ImageRegistry as _};
use kubernaut_registry::{DockerRegistry, MANIFEST_MEDIA_TYPES};
use kubernaut_testkit::database::TestDatabase;
use serde_json::{Value, json};

const REGISTRY: &str = "/usr/bin/docker-registry";
const SKOPEO: &str = "/usr/bin/skopeo";
const TEMPLATE: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: \"{{service}}\"\nspec:\n  replicas: 1\n  template:\n    spec:\n      containers:\n      - name: app\n        image: \"{{image}}\"\n";

/// Whether the programs are there; when they are not, says why the test skips (or
/// fails under CI, which installs them).
fn programs_installed() -> bool {
    let missing: Vec<_> = [REGISTRY, SKOPEO]
        .into_iter()
        .filter(|program| !Path::new(program).exists())
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI installs docker-registry and skopeo, yet {missing:?} is missing"
    );
    eprintln!("skipped: {missing:?} is not installed (apt-get install docker-registry skopeo)");
    false
}

/// A `docker-registry serve` on a free port with its storage in a temporary folder;
/// killed when dropped.
struct RealRegistry {
    port: u16,
    process: Child,
    _storage: tempfile::TempDir,
}

impl Drop for RealRegistry {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl RealRegistry {
    async fn start() -> Self {
        let storage = tempfile::tempdir().expect("a storage folder");
        let port = free_port();
        let config = storage.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                storage.path().join("data").display()
            ),
        )
        .expect("the registry's configuration");
        let process = Command::new(REGISTRY)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // It logs every 404 as an error; a registry that fails to start shows as
            // the wait below running out.
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry starts");
        let registry = Self {
            port,
            process,
            _storage: storage,
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let answer = client.get(format!("{}/v2/", registry.url())).send().await;
            if answer.is_ok_and(|r| r.status() == 200) {
                break registry;
            }
            assert!(Instant::now() < deadline, "docker-registry did not come up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Pushes a one-layer image built as an OCI layout to `repository:tag`. (skopeo
    /// may rewrite the manifest on the way, so only the registry knows its digest.)
    fn push(&self, repository: &str, tag: &str) {
        let layout = tempfile::tempdir().expect("a layout folder");
        write_oci_layout(layout.path(), tag);
        let output = Command::new(SKOPEO)
            .args(["copy", "--insecure-policy", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:{tag}", layout.path().display()))
            .arg(format!("docker://{}/{repository}:{tag}", self.host()))
            .output()
            .expect("skopeo runs");
        assert!(
            output.status.success(),
            "skopeo copy failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The digest the registry itself reports for `repository:reference`.
    async fn reported_digest(&self, repository: &str, reference: &str) -> String {
        let response = reqwest::Client::new()
            .head(format!(
                "{}/v2/{repository}/manifests/{reference}",
                self.url()
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
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// `sha256:<hex>` of `bytes`, by coreutils' `sha256sum`.
fn sha256(bytes: &[u8]) -> String {
    let file = tempfile::NamedTempFile::new().expect("a temporary file");
    std::fs::write(file.path(), bytes).expect("write");
    let output = Command::new("sha256sum")
        .arg(file.path())
        .output()
        .expect("sha256sum runs");
    let text = String::from_utf8_lossy(&output.stdout);
    let hex = text.split_whitespace().next().expect("a digest");
    format!("sha256:{hex}")
}

/// Stores `bytes` as a blob of the layout, returning its descriptor's digest and size.
fn write_blob(layout: &Path, bytes: &[u8]) -> (String, usize) {
    let digest = sha256(bytes);
    let hex = digest.trim_start_matches("sha256:");
    let folder = layout.join("blobs").join("sha256");
    std::fs::create_dir_all(&folder).expect("blobs folder");
    std::fs::write(folder.join(hex), bytes).expect("blob");
    (digest, bytes.len())
}

/// An OCI image layout holding one image tagged `tag`: an empty tar as its layer.
fn write_oci_layout(layout: &Path, tag: &str) {
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("oci-layout");
    // Two zero blocks: the end-of-archive marker, an empty but valid tar.
    let layer = vec![0_u8; 1024];
    let (layer_digest, layer_size) = write_blob(layout, &layer);
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    });
    let (config_digest, config_size) = write_blob(layout, config.to_string().as_bytes());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_digest,
            "size": layer_size,
        }],
    });
    let (manifest_digest, manifest_size) = write_blob(layout, manifest.to_string().as_bytes());
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    std::fs::write(layout.join("index.json"), index.to_string()).expect("index.json");
}

fn image(text: &str) -> ImageRef {
    ImageRef::parse(text).expect("an image reference")
}

#[tokio::test]
async fn the_adapter_finds_a_pushed_image_with_the_digest_the_registry_reports() {
    if !programs_installed() {
        return;
    }
    let registry = RealRegistry::start().await;
    registry.push("hello-world", "1.0");
    let reported = registry.reported_digest("hello-world", "1.0").await;
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
        let application = Application::build(settings)
            .await
            .expect("the application builds");
        let address = format!("http://127.0.0.1:{}", application.port());
        tokio::spawn(application.run_until_stopped());
        Self {
            address,
            client: reqwest::Client::new(),
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
    if !programs_installed() {
        return;
    }
    let mut registry = RealRegistry::start().await;
    registry.push("hello-world", "1.0");
    let reported = registry.reported_digest("hello-world", "1.0").await;
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
    let _ = registry.process.kill();
    let _ = registry.process.wait();
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
