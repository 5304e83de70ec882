//! A browser drives the pages: headless Chromium, through chromedriver, against a
//! Kubernaut server and the simulated cluster. It opens the home page, follows the
//! failed deployment to its diagnostics, and saves screenshots to `docs/screenshots`.
//!
//! Needs Debian's `chromium` and `chromium-driver` (CI installs them); skips, saying
//! why, when they are missing.

mod ui_support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use ui_support::{Seeded, seeded_app};

/// How long the browser may take for anything: CI machines are slow and shared.
const PATIENCE: Duration = Duration::from_secs(60);

const CHROMIUM: [&str; 2] = ["/usr/bin/chromium", "/usr/bin/chromium-browser"];
const CHROMEDRIVER: [&str; 2] = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"];

fn first_existing(candidates: &[&str]) -> Option<PathBuf> {
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|path| path.is_file())
}

/// chromedriver, listening on 127.0.0.1 only; stopped when dropped.
struct Driver {
    process: Child,
    url: String,
}

impl Driver {
    async fn start(binary: &Path) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let process = Command::new(binary)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let driver = Self {
            process,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let ready = reqwest::get(format!("{}/status", driver.url))
                .await
                .ok()
                .filter(|response| response.status().is_success());
            if let Some(response) = ready {
                let status: Value = response.json().await.expect("status JSON");
                if status["value"]["ready"] == true {
                    return driver;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// A WebDriver session: the few commands this test needs, over plain HTTP.
struct Browser {
    client: reqwest::Client,
    session: String,
}

/// The key of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    async fn open(driver: &Driver, chromium: &Path, profile: &Path) -> Self {
        let client = reqwest::Client::builder()
            .timeout(PATIENCE * 2)
            .build()
            .expect("an HTTP client");
        let capabilities = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chromium,
                    "args": [
                        "--headless",
                        "--no-sandbox",
                        "--disable-gpu",
                        "--disable-dev-shm-usage",
                        "--no-first-run",
                        "--disable-background-networking",
                        "--disable-component-update",
                        "--disable-sync",
                        "--window-size=1280,1000",
                        format!("--user-data-dir={}", profile.display()),
                    ],
                },
            }},
        });
        let answer = send(
            client
                .post(format!("{}/session", driver.url))
                .json(&capabilities),
        )
        .await;
        let session = answer["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {answer}"))
            .to_owned();
        let browser = Self {
            client,
            session: format!("{}/session/{session}", driver.url),
        };
        browser
            .post(
                "/timeouts",
                json!({"pageLoad": 60_000, "script": 30_000, "implicit": 0}),
            )
            .await;
        browser
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        send(
            self.client
                .post(format!("{}{path}", self.session))
                .json(&body),
        )
        .await
    }

    async fn get(&self, path: &str) -> Value {
        send(self.client.get(format!("{}{path}", self.session))).await
    }

    async fn visit(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await;
    }

    async fn resize(&self, width: u32, height: u32) {
        self.post("/window/rect", json!({ "width": width, "height": height }))
            .await;
    }

    /// The element `css` selects, waiting for it to appear.
    async fn find(&self, css: &str) -> String {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let answer = self
                .client
                .post(format!("{}/element", self.session))
                .json(&json!({ "using": "css selector", "value": css }))
                .send()
                .await
                .expect("find request");
            let found = answer.status().is_success();
            let body: Value = answer.json().await.expect("find JSON");
            if found && let Some(id) = body["value"][ELEMENT].as_str() {
                return id.to_owned();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no element matches {css}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn text_of(&self, css: &str) -> String {
        let element = self.find(css).await;
        self.get(&format!("/element/{element}/text"))
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.post(&format!("/element/{element}/click"), json!({}))
            .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.post(
            &format!("/element/{element}/value"),
            json!({ "text": text }),
        )
        .await;
    }

    /// Signs in on the sign-in page, as a person pasting their token.
    async fn sign_in(&self, base: &str, token: &str) {
        self.visit(&format!("{base}/sign-in")).await;
        self.type_into("input[name=\"token\"]", token).await;
        self.click("form button[type=\"submit\"], form input[type=\"submit\"]")
            .await;
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while self.current_url().await.contains("/sign-in") {
            if tokio::time::Instant::now() >= deadline {
                let source = self.get("/source").await;
                panic!("still on the sign-in page: {source}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn current_url(&self) -> String {
        self.get("/url")
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Saves a PNG of the window to `docs/screenshots/NAME.png`, checking it holds one.
    async fn screenshot(&self, name: &str) -> PathBuf {
        let encoded = self.get("/screenshot").await;
        let png = STANDARD
            .decode(encoded.as_str().expect("a base64 screenshot"))
            .expect("valid base64");
        assert!(
            png.len() > 1000,
            "{name}: a screenshot of {} bytes",
            png.len()
        );
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{name}: not a PNG");
        let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots");
        std::fs::create_dir_all(&directory).expect("the screenshots directory");
        let path = directory.join(format!("{name}.png"));
        std::fs::write(&path, &png).expect("the screenshot is written");
        let written = std::fs::metadata(&path)
            .expect("the screenshot exists")
            .len();
        assert!(written > 1000, "{name}: {written} bytes on disk");
        path
    }

    async fn close(self) {
        let _ = self.client.delete(&self.session).send().await;
    }
}

/// Sends a WebDriver command, failing the test on an error answer.
async fn send(request: reqwest::RequestBuilder) -> Value {
    let response = request.send().await.expect("WebDriver request");
    let status = response.status();
    let body: Value = response.json().await.expect("WebDriver JSON");
    assert!(status.is_success(), "WebDriver answered {status}: {body}");
    body["value"].clone()
}

#[tokio::test]
async fn a_browser_follows_a_failed_deployment_from_the_home_page_to_its_diagnostics() {
    let (Some(chromium), Some(chromedriver)) =
        (first_existing(&CHROMIUM), first_existing(&CHROMEDRIVER))
    else {
        eprintln!(
            "skipped: the browser test needs Chromium and chromedriver \
             (Debian packages chromium and chromium-driver)"
        );
        return;
    };
    let Seeded {
        app,
        succeeded,
        failed,
    } = seeded_app().await;
    let driver = Driver::start(&chromedriver).await;
    let profile = tempfile::tempdir().expect("a browser profile directory");
    let browser = Browser::open(&driver, &chromium, profile.path()).await;

    browser.sign_in(&app.url(""), &app.token).await;
    browser.visit(&app.url("/")).await;
    let version = browser.text_of("tr[data-service=\"web\"] a.version").await;
    assert_eq!(version, "1.0.0");
    browser.screenshot("home").await;

    browser.click("tr[data-service=\"crashy\"] a.last").await;
    let heading = browser.text_of("#diagnosis-heading").await;
    assert_eq!(heading, "Why it failed");
    let failed_id = failed["id"].as_str().expect("an id");
    assert!(
        browser
            .current_url()
            .await
            .ends_with(&format!("/deployments/{failed_id}")),
        "followed the link to the failed deployment"
    );
    assert_eq!(browser.text_of(".failure-reason").await, "crash loop");
    let logs = browser.text_of("figure.logs pre").await;
    assert!(logs.contains("could not connect to the database"), "{logs}");
    let events = browser.text_of("table.events").await;
    assert!(events.contains("BackOff"), "{events}");
    browser.screenshot("deployment-failed").await;

    // Keyboard users reach the content first.
    browser.visit(&app.url("/")).await;
    browser.find("a.skip-link").await;

    browser
        .visit(&app.url(&format!(
            "/releases/{}?cluster=sim&namespace=shop",
            succeeded["release_id"].as_str().expect("a release id")
        )))
        .await;
    browser.find("#preview-heading").await;
    browser.screenshot("release").await;

    browser.visit(&app.url("/clusters")).await;
    let clusters = browser.text_of("main").await;
    assert!(clusters.contains("reachable"), "{clusters}");
    browser.screenshot("clusters").await;

    // A phone: the failure is readable in a narrow window too.
    browser.resize(390, 844).await;
    browser
        .visit(&app.url(&format!("/deployments/{failed_id}")))
        .await;
    browser.find("#diagnosis-heading").await;
    browser.screenshot("deployment-failed-phone").await;

    browser.close().await;
}
