use kubernaut::settings::{DatabaseUrl, Settings};
use kubernaut::{Application, Storage};
use kubernaut_domain::{Role, Scope};
use kubernaut_testkit::database::TestDatabase;
use serde_json::{Value, json};

/// What keeps a test's database alive until the test ends.
enum Database {
    Postgres(TestDatabase),
    Sqlite(tempfile::TempDir),
}

/// A Kubernaut server on a free port over its own fresh database, with an admin token.
pub struct TestApp {
    pub address: String,
    /// The separate metrics address (`metrics.bind`), when the test set one.
    pub metrics_address: Option<String>,
    /// Sends the admin token with every request.
    pub client: reqwest::Client,
    /// The admin token's secret.
    pub token: String,
    /// The server's database, to issue tokens on as `kubernaut admin create-token` does.
    pub storage: Storage,
    database: Database,
}

/// A client that sends `token` as a bearer token with every request.
pub fn client_with_token(token: &str) -> reqwest::Client {
    let mut value =
        reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).expect("a header");
    value.set_sensitive(true);
    let headers = reqwest::header::HeaderMap::from_iter([(reqwest::header::AUTHORIZATION, value)]);
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("an HTTP client")
}

pub const TEMPLATE: &str = "---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: \"{{service}}\"\n  labels:\n    version: \"{{version}}\"\nspec:\n  replicas: {{replicas}}\n  template:\n    spec:\n      containers:\n      - name: \"{{service}}\"\n        image: \"{{image}}\"\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: \"{{service}}\"\n  namespace: \"{{namespace}}\"\n";

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// A server whose settings `adjust` changes first (to add clusters, say).
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    install_crypto_provider();
    let mut settings = Settings::load(None).expect("default settings");
    // `crate::BACKEND` names the database of the test binary: a fresh file of the
    // embedded SQLite database in a temporary directory, or a fresh PostgreSQL database.
    let database = if crate::BACKEND == "sqlite" {
        let directory = tempfile::tempdir().expect("a temporary data directory");
        settings.database.url = DatabaseUrl::empty();
        settings.database.data_dir = Some(directory.path().to_path_buf());
        Database::Sqlite(directory)
    } else {
        let database = TestDatabase::create().expect("a fresh test database");
        settings.database.url = DatabaseUrl::new(database.url());
        Database::Postgres(database)
    };
    settings.deployments.use_current_kubeconfig_context = false;
    adjust(&mut settings);
    settings.database.pool_size = 4;
    settings.server.bind = "127.0.0.1:0".to_owned();
    settings.server.workers = 1;
    let application = Application::build(settings)
        .await
        .expect("the application builds");
    let address = format!("http://127.0.0.1:{}", application.port());
    let metrics_address = application
        .metrics_port()
        .map(|port| format!("http://127.0.0.1:{port}"));
    let storage = application.storage().clone();
    tokio::spawn(application.run_until_stopped());
    let token = kubernaut::issue_token(&storage, "test-admin", Role::Admin, None, None)
        .await
        .expect("an admin token")
        .expose()
        .to_owned();
    TestApp {
        address,
        metrics_address,
        client: client_with_token(&token),
        token,
        storage,
        database,
    }
}

/// reqwest is built with rustls and no default provider; use ring, as kube does.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub fn release_body(service: &str, version: &str) -> Value {
    json!({
        "service": service,
        "version": version,
        "image": format!("registry.local:5000/{service}:{version}"),
        "template": TEMPLATE,
        "attributes": { "replicas": "2", "team": "payments" },
        "comment": "built by Jenkins #42",
    })
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// A token for a robot account `name` holding `role` (for `scope`), made through
    /// the database as `kubernaut admin create-token` makes them.
    pub async fn token_for(&self, name: &str, role: Role, scope: Option<&str>) -> String {
        let scope = scope.map(|s| Scope::parse(s).expect("a scope"));
        kubernaut::issue_token(&self.storage, name, role, scope, None)
            .await
            .expect("a token")
            .expose()
            .to_owned()
    }

    /// Runs SQL on the server's database behind its back, with the database's own
    /// client (`psql`, `sqlite3`), as an operator would: for states the API cannot make
    /// (an expired token). `postgres` and `sqlite` are the statement in each dialect.
    pub fn sql(&self, postgres: &str, sqlite: &str) -> String {
        let output = match &self.database {
            Database::Postgres(database) => std::process::Command::new("psql")
                .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-d"])
                .arg(database.url())
                .args(["-c", postgres])
                .output()
                .expect("psql runs"),
            Database::Sqlite(directory) => std::process::Command::new("sqlite3")
                .args(["-bail", "-cmd", ".timeout 5000"])
                .arg(directory.path().join(kubernaut::storage::SQLITE_FILE))
                .arg(sqlite)
                .output()
                .expect("sqlite3 runs (scripts/install-test-deps installs it)"),
        };
        assert!(output.status.success(), "{postgres}: {output:?}");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    pub async fn post_release(&self, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url("/api/releases"))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    /// Creates a release and returns its JSON, failing the test unless it was created.
    pub async fn create_release(&self, service: &str, version: &str) -> Value {
        let response = self.post_release(&release_body(service, version)).await;
        assert_eq!(response.status(), 201, "creating {service} {version}");
        response.json().await.expect("release JSON")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
    }

    pub async fn delete(&self, path: &str) -> reqwest::Response {
        self.client
            .delete(self.url(path))
            .send()
            .await
            .expect("request sent")
    }
}

/// Reads a problem+json response, checking its content type and status field.
pub async fn problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status(), status);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.expect("problem JSON");
    assert_eq!(body["status"], status);
    assert!(body["type"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(body["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(body["detail"].as_str().is_some_and(|t| !t.is_empty()));
    body
}

/// The fields a validation problem names.
pub fn problem_fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .filter_map(|e| e["field"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}
