//! A browser drives the pages: headless Chromium, through chromedriver, against a
//! Kubernaut server and the simulated cluster. It opens the home page, follows the
//! failed deployment to its diagnostics, and saves screenshots (to the target directory,
//! or to `docs/screenshots` with `KUBERNAUT_UPDATE_SCREENSHOTS=1`).
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

    /// The text of the element `css` selects. A page that reloads itself (as a
    /// deployment's page does after its verdict) can replace the element between
    /// finding and reading it: then it is found again.
    async fn text_of(&self, css: &str) -> String {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let element = self.find(css).await;
            let answer = self
                .client
                .get(format!("{}/element/{element}/text", self.session))
                .send()
                .await
                .expect("text request");
            let read = answer.status().is_success();
            let body: Value = answer.json().await.expect("text JSON");
            if read {
                return body["value"].as_str().unwrap_or_default().to_owned();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the text of {css} could not be read: {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
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

    /// Runs `body` (a function body) in the page and returns what it returns.
    async fn script(&self, body: &str) -> Value {
        self.post("/execute/sync", json!({ "script": body, "args": [] }))
            .await
    }

    /// Waits until `body` returns `true` in the page.
    async fn wait_until(&self, what: &str, body: &str) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let answer = self
                .client
                .post(format!("{}/execute/sync", self.session))
                .json(&json!({ "script": body, "args": [] }))
                .send()
                .await
                .expect("script request");
            // A page being replaced answers an error; ask again.
            if answer.status().is_success() {
                let value: Value = answer.json().await.expect("script JSON");
                if value["value"] == true {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not seen in time on {}",
                self.current_url().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the page's address contains `part`.
    async fn wait_for_url(&self, part: &str) -> String {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let url = self.current_url().await;
            if url.contains(part) {
                return url;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "still at {url}, waiting for {part}"
            );
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

    /// Saves a PNG of the window as `NAME.png`, checking it shows something (see
    /// [`screenshot_directory`]).
    async fn screenshot(&self, name: &str) -> PathBuf {
        let encoded = self.get("/screenshot").await;
        let png = STANDARD
            .decode(encoded.as_str().expect("a base64 screenshot"))
            .expect("valid base64");
        assert_not_blank(name, &png);
        let directory = screenshot_directory();
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

/// Where screenshots go: `docs/screenshots` when `KUBERNAUT_UPDATE_SCREENSHOTS=1` (to
/// refresh the committed ones), else a directory under the target directory, so that
/// `cargo test` leaves the work tree as it found it.
fn screenshot_directory() -> PathBuf {
    if std::env::var("KUBERNAUT_UPDATE_SCREENSHOTS").as_deref() == Ok("1") {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots")
    } else {
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots")
    }
}

/// Fails unless `png` decodes to a picture with some content: many colours, and no
/// single colour covering nearly all of it (a blank or half-painted page).
fn assert_not_blank(name: &str, png: &[u8]) {
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{name}: not a PNG");
    let mut reader = png::Decoder::new(std::io::Cursor::new(png))
        .read_info()
        .unwrap_or_else(|error| panic!("{name}: an unreadable PNG: {error}"));
    let mut pixels = vec![0; reader.output_buffer_size().expect("a PNG of sane size")];
    let frame = reader
        .next_frame(&mut pixels)
        .unwrap_or_else(|error| panic!("{name}: an unreadable PNG: {error}"));
    let channels = frame.color_type.samples();
    let mut counts: std::collections::HashMap<&[u8], usize> = std::collections::HashMap::new();
    for pixel in pixels[..frame.buffer_size()].chunks_exact(channels) {
        *counts.entry(pixel).or_default() += 1;
    }
    let total = (frame.width * frame.height) as usize;
    let commonest = counts.values().copied().max().unwrap_or(0);
    assert!(
        counts.len() >= 16,
        "{name}: a picture of {} colours only",
        counts.len()
    );
    assert!(
        commonest * 100 < total * 97,
        "{name}: one colour covers {commonest} of {total} pixels"
    );
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

/// The deployment id at the end of a page's address.
fn deployment_of(url: &str) -> String {
    url.rsplit_once("/deployments/")
        .map(|(_, id)| id.trim_end_matches(['#', '?']).to_owned())
        .unwrap_or_else(|| panic!("not a deployment's page: {url}"))
}

/// Whether the page fits a phone's width (nothing scrolls the whole page sideways).
const FITS: &str = "return document.documentElement.scrollWidth <= window.innerWidth + 1;";

#[tokio::test]
async fn a_person_deploys_watches_the_verdict_live_rolls_back_and_cancels_from_the_pages() {
    let (Some(chromium), Some(chromedriver)) =
        (first_existing(&CHROMIUM), first_existing(&CHROMEDRIVER))
    else {
        eprintln!(
            "skipped: the browser test needs Chromium and chromedriver \
             (Debian packages chromium and chromium-driver)"
        );
        return;
    };
    let Seeded { app, .. } = seeded_app().await;
    // 1.1.0's pods take a few real seconds to start (40 simulated seconds each, within
    // the template's progress deadline of 60): long enough to watch it live.
    app.make_slow("registry.local/web:1.1.0", 40);
    let newer = app.api_get("/api/releases?service=web&version=1.1.0").await;
    let newer_id = newer["items"][0]["id"].as_str().expect("an id").to_owned();
    let driver = Driver::start(&chromedriver).await;
    let profile = tempfile::tempdir().expect("a browser profile directory");
    let browser = Browser::open(&driver, &chromium, profile.path()).await;
    browser.sign_in(&app.url(""), &app.token).await;

    // Deploy from the release page: choose the target, preview, confirm.
    browser
        .visit(&app.url(&format!("/releases/{newer_id}")))
        .await;
    // From the keyboard: Enter in the namespace field asks for the preview.
    browser
        .type_into("#deploy-attributes", "greeting=hello")
        .await;
    browser.type_into("#deploy-namespace", "shop\u{E007}").await;
    browser.find("#confirm-deploy").await;
    let preview = browser.text_of("section.confirm pre").await;
    assert!(preview.contains("registry.local/web:1.1.0"), "{preview}");
    browser.screenshot("deploy-preview").await;
    browser
        .click("#confirm-deploy button[type=\"submit\"]")
        .await;
    let url = browser.wait_for_url("/deployments/").await;
    let deployed = deployment_of(&url);

    // The page follows the rollout: the picture shows the new pods coming up beside
    // the old ones, and the verdict arrives on the timeline without a reload.
    // The page reloads itself 1.5 s after the verdict, which a busy machine can let
    // slip between two looks: an observer in this very page (no reload has happened
    // while it exists) writes down the moment the verdict shows, in the tab's session
    // storage, which outlives the reload.
    browser
        .script(
            "sessionStorage.removeItem('kubernautLiveVerdict'); \
             new MutationObserver(function () { \
               var status = document.getElementById('deployment-status'); \
               if (document.querySelector('#timeline li.verdict') && status \
                   && status.textContent.trim() === 'succeeded') { \
                 sessionStorage.setItem('kubernautLiveVerdict', 'seen'); \
               } \
             }).observe(document.body, { subtree: true, childList: true, characterData: true }); \
             return true;",
        )
        .await;
    browser.find("#live-note").await;
    browser
        .wait_until(
            "the new pods starting",
            "return !!document.querySelector('#rollout-picture .revision-new .pod-updating');",
        )
        .await;
    browser.screenshot("deployment-rolling-out").await;
    browser
        .wait_until(
            "the verdict, live",
            "return sessionStorage.getItem('kubernautLiveVerdict') === 'seen';",
        )
        .await;
    // Then the page shows the finished deployment as it is now.
    browser
        .wait_until(
            "the finished page",
            "return !document.getElementById('live-note') && !!document.getElementById('rollback-deployment');",
        )
        .await;
    assert_eq!(browser.text_of("#deployment-status").await, "succeeded");
    assert_eq!(
        browser
            .script("return document.querySelectorAll('#rollout-picture .revision-new .pod-ready').length;")
            .await,
        2
    );
    browser.screenshot("deployment-succeeded").await;
    let api = app.api_get(&format!("/api/deployments/{deployed}")).await;
    assert_eq!(api["status"], "succeeded");
    assert_eq!(api["attributes"]["greeting"], "hello");

    // Roll back: 1.0.0 again, on a new deployment's page.
    browser.click("#rollback-deployment").await;
    browser
        .wait_until(
            "the rollback's page",
            &format!("return location.pathname.startsWith('/deployments/') && !location.pathname.endsWith('{deployed}');"),
        )
        .await;
    let rollback = deployment_of(&browser.current_url().await);
    let finished = app.verdict_of(&rollback).await;
    assert_eq!(finished["rollback_of"], deployed.as_str(), "{finished}");
    assert_eq!(finished["version"], "1.0.0");
    browser
        .wait_until(
            "the rollback's verdict",
            "return document.getElementById('deployment-status').textContent.trim() === 'succeeded' && !!document.getElementById('rollback-deployment');",
        )
        .await;
    let facts = browser.text_of("dl.facts").await;
    assert!(facts.contains(&deployed), "{facts}");
    browser.screenshot("rollback").await;

    // Cancel a slow rollout.
    app.make_slow("registry.local/web:2.0.0", 3600);
    let slow = app
        .release("web", "2.0.0", "registry.local/web:2.0.0")
        .await;
    let slow_id = slow["id"].as_str().expect("an id");
    browser
        .visit(&app.url(&format!(
            "/releases/{slow_id}/deploy?cluster=sim&namespace=shop"
        )))
        .await;
    browser
        .click("#confirm-deploy button[type=\"submit\"]")
        .await;
    browser.find("#cancel-deployment").await;
    let running = deployment_of(&browser.current_url().await);
    browser
        .wait_until(
            "the slow pods",
            "return !!document.querySelector('#rollout-picture .revision-new .pod-updating') && !!document.querySelector('#rollout-picture .revision-old .pod-ready');",
        )
        .await;
    browser.click("#cancel-deployment").await;
    browser
        .wait_until(
            "the cancelled page",
            "return document.getElementById('deployment-status').textContent.trim() === 'cancelled';",
        )
        .await;
    assert_eq!(
        app.api_get(&format!("/api/deployments/{running}")).await["status"],
        "cancelled"
    );
    let timeline = browser.text_of("#timeline li.verdict").await;
    assert!(timeline.contains("cancelled by ui-admin"), "{timeline}");
    browser.screenshot("cancelled").await;

    // How deploys go: the charts of the fleet and of the service.
    browser.visit(&app.url("/")).await;
    browser.find("svg#fleet-per-day[role=\"img\"]").await;
    browser
        .script("document.getElementById('fleet-heading').scrollIntoView(); return true;")
        .await;
    browser.screenshot("home-chart").await;
    browser.visit(&app.url("/services/web")).await;
    browser.find("svg#service-durations").await;
    browser
        .script("document.getElementById('delivery-heading').scrollIntoView(); return true;")
        .await;
    browser.screenshot("service-charts").await;

    // A phone: the deploy form and the live picture fit a narrow window.
    browser.resize(390, 844).await;
    browser
        .visit(&app.url(&format!(
            "/releases/{newer_id}/deploy?cluster=sim&namespace=shop"
        )))
        .await;
    browser.find("#confirm-deploy").await;
    browser
        .wait_until("the deploy page fits a phone", FITS)
        .await;
    browser.screenshot("deploy-phone").await;
    browser
        .visit(&app.url(&format!("/deployments/{running}")))
        .await;
    browser.find("#rollout-picture").await;
    browser
        .wait_until("the deployment page fits a phone", FITS)
        .await;
    browser
        .script("document.getElementById('rollout-heading').scrollIntoView(); return true;")
        .await;
    browser.screenshot("deployment-phone").await;
    browser.visit(&app.url("/services/web")).await;
    browser.wait_until("the charts fit a phone", FITS).await;

    browser.close().await;
}
