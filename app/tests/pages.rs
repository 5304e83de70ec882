//! The web pages, rendered by the real server over real data: releases, a deployment
//! that rolled out and one that crash-looped on the simulated cluster.

#[path = "ui_support/session.rs"]
mod session;
mod ui_support;

use serde_json::Value;
use session::{form_body, no_redirects, set_cookies, sign_in_with};
use ui_support::{Seeded, UiApp, seeded_app};

/// A page as a browser gets it: status, content type and HTML.
struct Page {
    status: u16,
    content_type: String,
    html: String,
}

/// The session cookie of each server the tests signed in to, by address.
static SESSIONS: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

/// A client signed in to `app`'s pages as its admin (signing in on first use).
async fn signed_in(app: &UiApp) -> reqwest::Client {
    let address = app.url("");
    let known = SESSIONS
        .lock()
        .expect("sessions")
        .iter()
        .find(|(a, _)| *a == address)
        .map(|(_, cookie)| cookie.clone());
    let cookie = match known {
        Some(cookie) => cookie,
        None => {
            let cookie = sign_in_with(&app.url(""), &app.token).await;
            SESSIONS
                .lock()
                .expect("sessions")
                .push((address, cookie.clone()));
            cookie
        }
    };
    no_redirects(Some(&cookie))
}

/// Whether `response` says "sign in first": a redirect to the sign-in page or a 401.
fn asks_to_sign_in(response: &reqwest::Response) -> bool {
    let to_sign_in = response
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|l| l.contains("sign-in"));
    response.status() == 401 || (response.status().is_redirection() && to_sign_in)
}

async fn get(app: &UiApp, path: &str) -> Page {
    let response = signed_in(app)
        .await
        .get(app.url(path))
        .send()
        .await
        .expect("page request");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let html = response.text().await.expect("page body");
    Page {
        status,
        content_type,
        html,
    }
}

/// A page that must render: 200, HTML, in the common layout.
async fn page(app: &UiApp, path: &str) -> String {
    let page = get(app, path).await;
    assert_eq!(page.status, 200, "{path}: {}", page.html);
    assert!(
        page.content_type.starts_with("text/html"),
        "{path}: {}",
        page.content_type
    );
    assert_layout(path, &page.html);
    page.html
}

fn assert_layout(path: &str, html: &str) {
    for landmark in [
        "<html lang=\"en\">",
        "<meta name=\"viewport\"",
        "href=\"/static/kubernaut.css\"",
        "<header",
        "<nav aria-label=\"Main\">",
        "<main id=\"main\"",
        "<footer",
        "<h1>",
        "href=\"#main\"",
    ] {
        assert!(html.contains(landmark), "{path} lacks {landmark}:\n{html}");
    }
}

fn assert_contains(html: &str, expected: &[&str]) {
    for text in expected {
        assert!(html.contains(text), "missing {text:?} in:\n{html}");
    }
}

fn text(value: &Value) -> &str {
    value.as_str().expect("a string")
}

#[tokio::test]
async fn the_home_page_shows_what_runs_where_and_how_the_last_deploy_went() {
    let Seeded {
        app,
        succeeded,
        failed,
    } = seeded_app().await;
    let html = page(&app, "/").await;
    assert_contains(
        &html,
        &[
            "What runs where",
            "<th scope=\"col\">sim/<wbr>shop</th>",
            "<th scope=\"row\"><a href=\"/services/web\">web</a></th>",
            &format!(
                "<a class=\"version\" href=\"/deployments/{}\"",
                text(&succeeded["id"])
            ),
            ">1.0.0</a>",
            // crashy never ran: its cell says so and links the failure.
            "not running",
            &format!(
                "<a class=\"last\" href=\"/deployments/{}\">",
                text(&failed["id"])
            ),
            "status-failed",
            "crash loop",
        ],
    );
    assert!(
        html.contains("<th scope=\"col\">"),
        "tables have column headers"
    );
}

#[tokio::test]
async fn the_failed_deployment_page_shows_the_reason_the_events_and_the_log_lines() {
    let Seeded {
        app,
        succeeded,
        failed,
    } = seeded_app().await;
    let html = page(&app, &format!("/deployments/{}", text(&failed["id"]))).await;
    assert_contains(
        &html,
        &[
            "Why it failed",
            "<span class=\"failure-reason\">crash loop</span>",
            "Deployment/crashy",
            // An event, warnings first, and a log line of the crashing container.
            "<th scope=\"row\">BackOff</th>",
            "could not connect to the database",
            "Last log lines",
            // Per-resource status and the timeline.
            "Service/crashy",
            "not blamed",
            "<ol id=\"timeline\"",
            // (Not the verdict's own line: it is written just after the verdict.)
            "applied Deployment/crashy",
        ],
    );
    assert!(
        !html.contains("new EventSource"),
        "a finished deployment does not follow the event stream"
    );

    let html = page(&app, &format!("/deployments/{}", text(&succeeded["id"]))).await;
    assert_contains(
        &html,
        &["status-succeeded", "Deployment/web", "ready", "rolled out"],
    );
    assert!(!html.contains("Why it failed"));
}

#[tokio::test]
async fn the_deployments_list_filters_by_status_and_pages() {
    let Seeded {
        app,
        succeeded,
        failed,
    } = seeded_app().await;
    let html = page(&app, "/deployments").await;
    assert_contains(
        &html,
        &[
            "<label for=\"filter-service\">Service</label>",
            "<label for=\"filter-cluster\">Cluster</label>",
            "<label for=\"filter-namespace\">Namespace</label>",
            "<label for=\"filter-status\">Status</label>",
            "id=\"filter-status\"",
            text(&succeeded["id"]),
            text(&failed["id"]),
        ],
    );

    let html = page(&app, "/deployments?status=failed&service=&cluster=sim").await;
    assert!(html.contains(text(&failed["id"])), "{html}");
    assert!(!html.contains(text(&succeeded["id"])), "{html}");
    assert!(
        html.contains("<option value=\"failed\" selected>"),
        "{html}"
    );

    let html = page(&app, "/deployments?status=exploded").await;
    assert_contains(
        &html,
        &["role=\"alert\"", "is not a status of a deployment"],
    );

    // Newest first; the next page starts after the last row.
    let first = page(&app, "/deployments?status=&cursor=").await;
    assert!(first.find(text(&failed["id"])) < first.find(text(&succeeded["id"])));
}

#[tokio::test]
async fn the_release_pages_show_attributes_template_preview_and_deployments() {
    let Seeded { app, succeeded, .. } = seeded_app().await;
    let html = page(&app, "/releases").await;
    assert_contains(
        &html,
        &[
            "<label for=\"filter-service\">Service</label>",
            "<label for=\"filter-version\">Version</label>",
            ">1.1.0</a>",
            ">1.0.0</a>",
            "crashy",
        ],
    );
    let html = page(&app, "/releases?service=crashy").await;
    assert!(!html.contains(">1.1.0</a>"), "{html}");
    assert!(html.contains("crashy 1, built by Jenkins #42"), "{html}");

    let release = format!("/releases/{}", text(&succeeded["release_id"]));
    let html = page(&app, &release).await;
    assert_contains(
        &html,
        &[
            "registry.local/web:1.0.0",
            "<th scope=\"row\" class=\"mono\">team</th>",
            "payments",
            "{{ service }}-settings",
            "<label for=\"preview-cluster\">Cluster</label>",
            "<label for=\"preview-namespace\">Namespace</label>",
            text(&succeeded["id"]),
        ],
    );
    let html = page(&app, &format!("{release}?cluster=sim&namespace=staging")).await;
    assert_contains(&html, &["aria-label=\"The rendered manifest\"", "eu-sim"]);
    let html = page(
        &app,
        &format!("{release}?cluster=nowhere&namespace=staging"),
    )
    .await;
    assert_contains(&html, &["role=\"alert\"", "nowhere"]);
}

#[tokio::test]
async fn the_service_and_cluster_pages_show_where_each_version_went() {
    let Seeded { app, succeeded, .. } = seeded_app().await;
    let html = page(&app, "/services/web").await;
    assert_contains(
        &html,
        &[
            "Service web",
            "<th scope=\"row\">sim/shop</th>",
            &format!(
                "<a href=\"/deployments/{}\">1.0.0</a>",
                text(&succeeded["id"])
            ),
            "nowhere yet",
            ">1.1.0</a>",
        ],
    );
    // In the release history, 1.0.0 went to sim/shop and 1.1.0 nowhere.
    let history_row = |version: &str| {
        html.split("<tr>")
            .find(|row| row.contains(&format!("\">{version}</a></th>")))
            .unwrap_or_else(|| panic!("no history row for {version}: {html}"))
            .to_owned()
    };
    assert!(
        history_row("1.0.0").contains(&format!(
            "<a href=\"/deployments/{}\">sim/shop</a>",
            text(&succeeded["id"])
        )),
        "{html}"
    );
    assert!(history_row("1.1.0").contains("nowhere yet"), "{html}");

    let html = page(&app, "/clusters").await;
    assert_contains(
        &html,
        &[
            ">sim",
            "reachable",
            "region=eu-sim",
            "Namespaces in use",
            ">shop</a>",
            "<a href=\"/services/crashy\">crashy</a>",
        ],
    );
}

#[tokio::test]
async fn unknown_ids_and_names_are_an_html_not_found_page_and_the_stylesheet_is_css() {
    let Seeded { app, .. } = seeded_app().await;
    for path in [
        "/deployments/0190e0a4-0000-7000-8000-000000000000",
        "/deployments/not-an-id",
        "/releases/0190e0a4-0000-7000-8000-000000000000",
        "/releases/not-an-id",
        "/services/nobody",
        "/services/Not_A_Name",
    ] {
        let page = get(&app, path).await;
        assert_eq!(page.status, 404, "{path}");
        assert!(page.content_type.starts_with("text/html"), "{path}");
        assert_layout(path, &page.html);
        assert!(page.html.contains("Not found"), "{path}: {}", page.html);
    }

    let response = reqwest::get(app.url("/static/kubernaut.css"))
        .await
        .expect("stylesheet request");
    assert_eq!(response.status(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(content_type.starts_with("text/css"), "{content_type}");
    let css = response.text().await.expect("stylesheet");
    assert!(css.contains(":focus-visible"), "keyboard focus is visible");
    assert!(css.contains("@media (max-width"), "a layout for phones");
}

#[tokio::test]
async fn pages_need_a_session_and_a_tampered_cookie_is_no_session() {
    let Seeded { app, .. } = seeded_app().await;
    let anonymous = no_redirects(None)
        .get(app.url("/"))
        .send()
        .await
        .expect("sent");
    assert!(asks_to_sign_in(&anonymous), "{}", anonymous.status());

    let cookie = sign_in_with(&app.url(""), &app.token).await;
    let signed_in = no_redirects(Some(&cookie))
        .get(app.url("/"))
        .send()
        .await
        .expect("sent");
    assert_eq!(signed_in.status(), 200);

    // Flip one character of the session cookie's value: its signature no longer holds.
    let tampered: String = cookie
        .split("; ")
        .map(|c| match c.strip_prefix("kubernaut_session=") {
            Some(value) => {
                let mut chars: Vec<char> = value.chars().collect();
                let middle = chars.len() / 2;
                chars[middle] = if chars[middle] == 'A' { 'B' } else { 'A' };
                format!(
                    "kubernaut_session={}",
                    chars.into_iter().collect::<String>()
                )
            }
            None => c.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("; ");
    assert_ne!(tampered, cookie);
    let response = no_redirects(Some(&tampered))
        .get(app.url("/"))
        .send()
        .await
        .expect("sent");
    assert!(asks_to_sign_in(&response), "{}", response.status());

    // A wrong token does not sign in.
    let refused = no_redirects(None)
        .post(app.url("/sign-in"))
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(form_body(&[(
            "token",
            "knt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        )]))
        .send()
        .await
        .expect("sent");
    assert!(
        !set_cookies(&refused)
            .iter()
            .any(|c| c.starts_with("kubernaut_session=") && c.len() > "kubernaut_session=".len()),
        "{:?}",
        set_cookies(&refused)
    );
}

#[tokio::test]
async fn a_form_posted_without_its_csrf_field_is_refused() {
    let Seeded { app, .. } = seeded_app().await;
    let cookie = sign_in_with(&app.url(""), &app.token).await;
    let client = no_redirects(Some(&cookie));
    let response = client
        .post(app.url("/sign-out"))
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(form_body(&[("nothing", "here")]))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 403);
    // The session survived the forged request.
    let still = client.get(app.url("/")).send().await.expect("sent");
    assert_eq!(still.status(), 200);
    // With a wrong csrf value, too.
    let response = client
        .post(app.url("/sign-out"))
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(form_body(&[("csrf", "forged")]))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 403);
}

#[tokio::test]
async fn pages_carry_the_security_headers() {
    let Seeded { app, .. } = seeded_app().await;
    let response = signed_in(&app)
        .await
        .get(app.url("/"))
        .send()
        .await
        .expect("sent");
    let headers = response.headers();
    for name in ["content-security-policy", "x-content-type-options"] {
        assert!(headers.contains_key(name), "{name}: {headers:?}");
    }
    // Not `no-referrer`: with it browsers send `Origin: null` on the UI's own forms.
    assert_eq!(
        headers.get("referrer-policy").and_then(|v| v.to_str().ok()),
        Some("same-origin")
    );
}
