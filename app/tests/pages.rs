//! The web pages, rendered by the real server over real data: releases, a deployment
//! that rolled out and one that crash-looped on the simulated cluster.

#[path = "ui_support/session.rs"]
mod session;
mod ui_support;

use serde_json::Value;
use session::{csrf_field, form_body, no_redirects, set_cookies, sign_in_with};
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
            "aria-label=\"How web ships on sim/shop\">sim/shop</a></th>",
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

/// What a form's POST answered: status, `Location` and body.
struct Posted {
    status: u16,
    location: String,
    html: String,
}

/// POSTs `fields` to `path` as the signed-in admin's browser does (same origin).
async fn post_form(app: &UiApp, path: &str, fields: &[(&str, &str)]) -> Posted {
    let response = signed_in(app)
        .await
        .post(app.url(path))
        .header(reqwest::header::ORIGIN, app.url(""))
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(form_body(fields))
        .send()
        .await
        .expect("form request");
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let html = response.text().await.expect("form answer");
    Posted {
        status,
        location,
        html,
    }
}

/// The hidden fields of the form with id `form_id` in `html`, as sent.
fn hidden_fields(html: &str, form_id: &str) -> Vec<(String, String)> {
    let start = html
        .find(&format!("id=\"{form_id}\""))
        .unwrap_or_else(|| panic!("no form {form_id} in:\n{html}"));
    let form = &html[start..start + html[start..].find("</form>").expect("the form's end")];
    form.split("<input type=\"hidden\" ")
        .skip(1)
        .map(|tag| {
            let attribute = |name: &str| {
                tag.split(&format!("{name}=\""))
                    .nth(1)
                    .and_then(|rest| rest.split('"').next())
                    .unwrap_or_default()
                    .to_owned()
            };
            (attribute("name"), attribute("value"))
        })
        .collect()
}

/// The id at the end of a `/deployments/{id}` location.
fn deployment_id_of(location: &str) -> String {
    location
        .strip_prefix("/deployments/")
        .unwrap_or_else(|| panic!("not a deployment's page: {location}"))
        .to_owned()
}

/// The rows of the table with id `table_id`, as the text of their cells.
fn table_rows(html: &str, table_id: &str) -> Vec<Vec<String>> {
    let start = html
        .find(&format!("id=\"{table_id}\""))
        .unwrap_or_else(|| panic!("no table {table_id} in:\n{html}"));
    let table = &html[start..start + html[start..].find("</table>").expect("the table's end")];
    let body = table.split("<tbody>").nth(1).unwrap_or_default();
    body.split("<tr>")
        .skip(1)
        .map(|row| {
            row.split(['<', '>'])
                .collect::<Vec<_>>()
                .windows(2)
                .filter(|pair| pair[0].starts_with("th") || pair[0].starts_with("td"))
                .map(|pair| pair[1].to_owned())
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn a_release_is_deployed_from_its_page_after_a_preview_and_the_deploy_is_audited() {
    let Seeded { app, .. } = seeded_app().await;
    let releases = app.api_get("/api/releases?service=web&version=1.1.0").await;
    let release_id = text(&releases["items"][0]["id"]).to_owned();
    let html = page(&app, &format!("/releases/{release_id}")).await;
    assert_contains(
        &html,
        &[
            &format!("action=\"/releases/{release_id}/deploy\""),
            "<label for=\"deploy-cluster\">Cluster</label>",
            "<option value=\"sim\" selected>sim</option>",
            "<label for=\"deploy-namespace\">Namespace</label>",
            // The namespace in use is suggested.
            "<datalist id=\"deploy-namespaces\"><option value=\"shop\">",
            "<label for=\"deploy-attributes\">Deploy-time attributes</label>",
        ],
    );

    // The preview: the manifest as it would be applied, with a deploy-time attribute.
    let preview_path = format!(
        "/releases/{release_id}/deploy?cluster=sim&namespace=shop&attributes=region%3Dsomewhere-else&sent=1&prune=on"
    );
    let html = page(&app, &preview_path).await;
    assert_contains(
        &html,
        &[
            "Deploy to sim/shop?",
            "registry.local/web:1.1.0",
            "region: &#34;somewhere-else&#34;",
            "Deploy web 1.1.0 to sim/shop</button>",
        ],
    );
    assert!(!html.contains("eu-sim"), "the attribute wins: {html}");
    let mut fields = hidden_fields(&html, "confirm-deploy");
    assert!(
        fields
            .iter()
            .any(|(name, value)| name == "csrf" && !value.is_empty()),
        "{fields:?}"
    );

    // Without the session's CSRF token, nothing is deployed.
    let forged: Vec<(&str, &str)> = fields
        .iter()
        .filter(|(name, _)| name != "csrf")
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let refused = post_form(&app, &format!("/releases/{release_id}/deploy"), &forged).await;
    assert_eq!(refused.status, 403, "{}", refused.html);

    fields.retain(|(name, _)| !name.is_empty());
    let sent: Vec<(&str, &str)> = fields
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let posted = post_form(&app, &format!("/releases/{release_id}/deploy"), &sent).await;
    assert_eq!(posted.status, 303, "{}", posted.html);
    let id = deployment_id_of(&posted.location);
    let deployment = app.verdict_of(&id).await;
    assert_eq!(deployment["status"], "succeeded", "{deployment}");
    assert_eq!(deployment["release_id"], release_id.as_str());
    assert_eq!(deployment["requested_by"], "ui-admin");
    assert_eq!(deployment["attributes"]["region"], "somewhere-else");
    let audit = app
        .api_get(&format!(
            "/api/audit?action=deployment.requested&target=deployment/{id}"
        ))
        .await;
    assert_eq!(audit["items"][0]["actor"], "ui-admin", "{audit}");

    // Its page: the verdict marked on the timeline, the picture of the rollout with
    // both new pods ready and no old one left, and the actions of a finished deploy.
    let html = page(&app, &format!("/deployments/{id}")).await;
    assert_contains(
        &html,
        &[
            "<strong class=\"verdict-mark\">Verdict</strong>",
            "data-resource=\"Deployment/web\"",
            "<dd class=\"count-desired\">2</dd>",
            "<dd class=\"count-ready\">2</dd>",
            "<h4>New revision: 2 pods</h4>",
            "id=\"rollback-deployment\"",
            "id=\"rollout-status\" class=\"visually-hidden\" aria-live=\"polite\"",
        ],
    );
    let (new_revision, old_revisions) = html
        .split_once("class=\"revision revision-old\"")
        .expect("the older revisions");
    assert_eq!(
        new_revision.matches("class=\"pod pod-ready\"").count(),
        2,
        "{html}"
    );
    // The old pods are gone, or going.
    let old_revisions = &old_revisions[..old_revisions.find("</div>").expect("its end")];
    assert!(
        !["pod-ready", "pod-updating", "pod-failing"]
            .iter()
            .any(|state| old_revisions.contains(state)),
        "{html}"
    );
    assert!(!html.contains("id=\"cancel-deployment\""), "{html}");
    // The same picture as a fragment, for the page's script.
    let fragment = get(&app, &format!("/deployments/{id}/rollout")).await;
    assert_eq!(fragment.status, 200);
    assert!(
        fragment.html.starts_with("<div id=\"rollout-picture\""),
        "{}",
        fragment.html
    );
    assert!(
        fragment.html.contains("<h4>New revision: 2 pods</h4>"),
        "{}",
        fragment.html
    );
}

#[tokio::test]
async fn a_refused_deploy_says_why_in_the_form() {
    let Seeded { app, .. } = seeded_app().await;
    // A release whose template needs a variable nobody supplies.
    let response = reqwest::Client::new()
        .post(app.url("/api/releases"))
        .bearer_auth(&app.token)
        .json(&serde_json::json!({
            "service": "needy",
            "version": "1",
            "image": "registry.local/needy:1",
            "template": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: needy\ndata:\n  owner: \"{{ owner }}\"\n",
        }))
        .send()
        .await
        .expect("release request");
    assert_eq!(response.status(), 201);
    let needy: Value = response.json().await.expect("release JSON");
    let needy_id = text(&needy["id"]).to_owned();
    let html = page(&app, &format!("/releases/{needy_id}")).await;
    assert_contains(
        &html,
        &["<label for=\"deploy-var-owner\">Variable <code>owner</code></label>"],
    );
    let missing = get(
        &app,
        &format!("/releases/{needy_id}/deploy?cluster=sim&namespace=shop&sent=1"),
    )
    .await;
    assert_eq!(missing.status, 422, "{}", missing.html);
    assert_contains(
        &missing.html,
        &[
            "role=\"alert\"",
            "<code>attributes</code>",
            "does not supply: owner",
        ],
    );
    assert!(!missing.html.contains("id=\"confirm-deploy\""));
    // Posted anyway (a stale confirmation): the same answer, nothing started.
    let csrf = csrf_field(&page(&app, &format!("/releases/{needy_id}")).await).expect("csrf");
    let posted = post_form(
        &app,
        &format!("/releases/{needy_id}/deploy"),
        &[
            ("csrf", &csrf),
            ("cluster", "sim"),
            ("namespace", "shop"),
            ("sent", "1"),
        ],
    )
    .await;
    assert_eq!(posted.status, 422, "{}", posted.html);
    assert!(
        posted.html.contains("does not supply: owner"),
        "{}",
        posted.html
    );
    // Supplied in its field, it renders.
    let html = page(
        &app,
        &format!(
            "/releases/{needy_id}/deploy?cluster=sim&namespace=shop&var.owner=payments&sent=1"
        ),
    )
    .await;
    assert_contains(
        &html,
        &["owner: &#34;payments&#34;", "id=\"confirm-deploy\""],
    );

    // A bad namespace is named.
    let bad = get(
        &app,
        &format!("/releases/{needy_id}/deploy?cluster=sim&namespace=Not_A_Namespace&sent=1"),
    )
    .await;
    assert_eq!(bad.status, 400, "{}", bad.html);
    assert_contains(&bad.html, &["<code>namespace</code>"]);

    // An active deployment of the service on the target: 409, with a link to it.
    app.make_slow("registry.local/web:slow", 3600);
    app.release("web", "2.0.0", "registry.local/web:slow").await;
    let slow = app.api_get("/api/releases?service=web&version=2.0.0").await;
    let slow_id = text(&slow["items"][0]["id"]).to_owned();
    let fields = [
        ("csrf", csrf.as_str()),
        ("cluster", "sim"),
        ("namespace", "shop"),
        ("sent", "1"),
        ("prune", "on"),
    ];
    let first = post_form(&app, &format!("/releases/{slow_id}/deploy"), &fields).await;
    assert_eq!(first.status, 303, "{}", first.html);
    let active = deployment_id_of(&first.location);
    let second = post_form(&app, &format!("/releases/{slow_id}/deploy"), &fields).await;
    assert_eq!(second.status, 409, "{}", second.html);
    assert_contains(
        &second.html,
        &[
            "role=\"alert\"",
            "is still active",
            &format!("<a href=\"/deployments/{active}\">Open the active deployment</a>"),
        ],
    );

    // The running deployment's page offers to cancel; once the new pods exist, its
    // picture shows them starting beside the old ones still serving.
    let html = page(&app, &format!("/deployments/{active}")).await;
    assert_contains(
        &html,
        &["id=\"cancel-deployment\"", "data-picture=\"/deployments/"],
    );
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let html = loop {
        let fragment = get(&app, &format!("/deployments/{active}/rollout")).await;
        let (new_revision, old_revisions) = fragment
            .html
            .split_once("class=\"revision revision-old\"")
            .unwrap_or_default();
        if new_revision.contains("class=\"pod pod-updating\"")
            && old_revisions.contains("class=\"pod pod-ready\"")
        {
            break fragment.html;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no new pod seen starting beside the old ones: {}",
            fragment.html
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_contains(&html, &["<dd class=\"count-desired\">2</dd>"]);
    let cancelled = post_form(
        &app,
        &format!("/deployments/{active}/cancel"),
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(cancelled.status, 303, "{}", cancelled.html);
    assert_eq!(cancelled.location, format!("/deployments/{active}"));
    let deployment = app.verdict_of(&active).await;
    assert_eq!(deployment["status"], "cancelled");
    // Cancelled twice: the page says it already ended.
    let again = post_form(
        &app,
        &format!("/deployments/{active}/cancel"),
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(again.status, 409, "{}", again.html);
    assert_contains(
        &again.html,
        &["id=\"action-error\"", "already ended (cancelled)"],
    );
    let audit = app
        .api_get(&format!(
            "/api/audit?action=deployment.cancelled&target=deployment/{active}"
        ))
        .await;
    assert_eq!(audit["items"][0]["actor"], "ui-admin", "{audit}");
}

#[tokio::test]
async fn a_deployment_is_rolled_back_from_its_page_when_there_is_something_to_roll_back_to() {
    let Seeded {
        app,
        succeeded,
        failed,
    } = seeded_app().await;
    let csrf = csrf_field(&page(&app, "/").await).expect("csrf");
    // crashy never succeeded anywhere: nothing to roll back to.
    let failed_id = text(&failed["id"]);
    let nothing = post_form(
        &app,
        &format!("/deployments/{failed_id}/rollback"),
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(nothing.status, 409, "{}", nothing.html);
    assert_contains(
        &nothing.html,
        &["id=\"action-error\"", "no earlier release succeeded"],
    );

    // web 1.1.0 succeeds after 1.0.0; rolling it back deploys 1.0.0 again.
    let newer = app.deploy_and_wait("web", "1.1.0").await;
    assert_eq!(newer["status"], "succeeded", "{newer}");
    let newer_id = text(&newer["id"]);
    let rolled = post_form(
        &app,
        &format!("/deployments/{newer_id}/rollback"),
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(rolled.status, 303, "{}", rolled.html);
    let rollback = app.verdict_of(&deployment_id_of(&rolled.location)).await;
    assert_eq!(rollback["rollback_of"], newer_id, "{rollback}");
    assert_eq!(
        rollback["release_id"], succeeded["release_id"],
        "{rollback}"
    );
    assert_eq!(rollback["status"], "succeeded", "{rollback}");
    // The rolled-back deployment's page no longer draws the cluster's picture, which
    // is the rollback's now: it points there.
    let rollback_id = text(&rollback["id"]);
    let html = page(&app, &format!("/deployments/{newer_id}")).await;
    assert_contains(
        &html,
        &[&format!(
            "the cluster now shows <a href=\"/deployments/{rollback_id}\">its rollout</a>"
        )],
    );
    assert!(!html.contains("data-resource=\"Deployment/web\""), "{html}");
    let audit = app
        .api_get("/api/audit?action=deployment.rolled_back")
        .await;
    assert_eq!(audit["items"][0]["actor"], "ui-admin", "{audit}");
    // Without the CSRF token: refused.
    let forged = post_form(&app, &format!("/deployments/{newer_id}/rollback"), &[]).await;
    assert_eq!(forged.status, 403);
}

/// Whole seconds between two RFC 3339 times, as the charts' tables write them (the
/// simulated cluster is fast: under a minute).
fn seconds_between(from: &Value, to: &Value) -> u64 {
    let parse = |value: &Value| {
        chrono::DateTime::parse_from_rfc3339(text(value)).expect("an RFC 3339 time")
    };
    let seconds = (parse(to) - parse(from))
        .to_std()
        .expect("a positive duration")
        .as_secs();
    assert!(seconds < 60, "{seconds} s: written in minutes");
    seconds
}

#[tokio::test]
async fn the_charts_count_and_time_the_deployments_that_made_them() {
    let Seeded {
        app,
        succeeded,
        failed,
    } = seeded_app().await;
    let today = chrono::Utc::now().date_naive().to_string();
    // The fleet: two deploys today, one failed.
    let html = page(&app, "/").await;
    assert_contains(
        &html,
        &[
            "<svg class=\"chart-svg\" id=\"fleet-per-day\" role=\"img\" aria-labelledby=\"fleet-per-day-title fleet-per-day-desc\"",
            "<title id=\"fleet-per-day-title\">Deploys per day across the fleet</title>",
            "2 deploys over the last 14 days, 1 of them failed",
            "class=\"fail-mark\"",
        ],
    );
    assert_eq!(
        table_rows(&html, "fleet-per-day-table"),
        [vec![
            today.clone(),
            "2".into(),
            "1".into(),
            "1".into(),
            "0".into()
        ]]
    );

    // web: one deploy, rolled out in the time between its start and its verdict.
    let html = page(&app, "/services/web").await;
    let rows = table_rows(&html, "service-durations-table");
    assert_eq!(rows.len(), 1, "{rows:?}");
    let took = seconds_between(&succeeded["started_at"], &succeeded["finished_at"]);
    assert_eq!(rows[0][1], "1.0.0");
    assert_eq!(rows[0][2], "sim/shop");
    assert_eq!(rows[0][4], "succeeded");
    assert_eq!(rows[0][5], format!("{took} s"), "{rows:?}");
    // The DORA four: one success in 30 days, no failed change, and the lead time from
    // the release's registration to the verdict.
    let release = app
        .api_get(&format!("/api/releases/{}", text(&succeeded["release_id"])))
        .await;
    let lead = seconds_between(&release["created_at"], &succeeded["finished_at"]);
    let dora = table_rows(&html, "dora-table");
    assert_eq!(
        dora,
        [vec![
            "sim/shop".to_owned(),
            "1".into(),
            "0.03 a day".into(),
            "0 %".into(),
            format!("{lead} s"),
            "none".into(),
        ]]
    );
    for id in [
        "dora-frequency",
        "dora-failure-rate",
        "dora-lead-time",
        "dora-restore",
    ] {
        assert!(
            html.contains(&format!(
                "<svg class=\"chart-svg\" id=\"{id}\" role=\"img\""
            )) || html.contains(&format!("id=\"{id}-caption\"")),
            "{id}: {html}"
        );
    }

    // crashy on its target: one failed rollout, failing since its verdict.
    let html = page(&app, "/services/crashy?target=sim/shop&days=7").await;
    let rows = table_rows(&html, "service-durations-table");
    let took = seconds_between(&failed["started_at"], &failed["finished_at"]);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0][4], "failed");
    assert_eq!(rows[0][5], format!("{took} s"));
    assert_eq!(
        table_rows(&html, "service-per-day-table"),
        [vec![today, "1".into(), "0".into(), "1".into(), "0".into()]]
    );
    assert_contains(
        &html,
        &["How crashy ships on sim/shop", "100 %", "failing since"],
    );
    // A target it never went to is said, not a 500.
    let html = page(&app, "/services/crashy?target=sim/elsewhere&days=0").await;
    assert_contains(&html, &["never deployed to sim/elsewhere", "from 1 to 365"]);
}

/// A token for a new account with `grants`, made through the API as the admin.
async fn token_for(app: &UiApp, name: &str, grants: Value) -> String {
    let admin = reqwest::Client::new();
    let created = admin
        .post(app.url("/api/accounts"))
        .bearer_auth(&app.token)
        .json(&serde_json::json!({ "name": name, "grants": grants }))
        .send()
        .await
        .expect("account request");
    assert_eq!(created.status(), 201, "{name}");
    let issued: Value = admin
        .post(app.url("/api/tokens"))
        .bearer_auth(&app.token)
        .json(&serde_json::json!({ "name": "laptop", "account": name }))
        .send()
        .await
        .expect("token request")
        .json()
        .await
        .expect("token JSON");
    text(&issued["secret"]).to_owned()
}

#[tokio::test]
async fn only_those_who_may_deploy_get_the_forms_and_the_domain_checks_the_target() {
    let Seeded { app, succeeded, .. } = seeded_app().await;
    let release = text(&succeeded["release_id"]).to_owned();
    let deployment = text(&succeeded["id"]).to_owned();

    // A viewer: no deploy form, no buttons, and a POST of its own is refused.
    let viewer = token_for(&app, "vera", serde_json::json!([{ "role": "viewer" }])).await;
    let cookie = sign_in_with(&app.url(""), &viewer).await;
    let client = no_redirects(Some(&cookie));
    let html = client
        .get(app.url(&format!("/releases/{release}")))
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("page");
    assert!(html.contains("Your account may not deploy"), "{html}");
    assert!(!html.contains("id=\"deploy-preview\""), "{html}");
    let denied = client
        .get(app.url(&format!(
            "/releases/{release}/deploy?cluster=sim&namespace=shop"
        )))
        .send()
        .await
        .expect("sent");
    assert_eq!(denied.status(), 403);
    let html = client
        .get(app.url(&format!("/deployments/{deployment}")))
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("page");
    assert!(!html.contains("id=\"rollback-deployment\""), "{html}");
    let csrf = csrf_field(&html).expect("the sign-out form's csrf");
    let refused = client
        .post(app.url(&format!("/deployments/{deployment}/rollback")))
        .header(reqwest::header::ORIGIN, app.url(""))
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(form_body(&[("csrf", &csrf)]))
        .send()
        .await
        .expect("sent");
    assert_eq!(refused.status(), 403);
    let html = refused.text().await.expect("page");
    assert!(html.contains("vera may not deploy to sim/shop"), "{html}");

    // A deployer for sim/staging only: the form offers sim and suggests staging, and
    // deploying to sim/shop is refused by the domain, said in the form.
    let dana = token_for(
        &app,
        "dana",
        serde_json::json!([{ "role": "deployer", "scope": "sim/staging" }]),
    )
    .await;
    let cookie = sign_in_with(&app.url(""), &dana).await;
    let client = no_redirects(Some(&cookie));
    let html = client
        .get(app.url(&format!("/releases/{release}")))
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("page");
    assert_contains(
        &html,
        &[
            "<option value=\"sim\" selected>sim</option>",
            "<datalist id=\"deploy-namespaces\"><option value=\"staging\"></datalist>",
        ],
    );
    let csrf = csrf_field(&html).expect("csrf");
    let refused = client
        .post(app.url(&format!("/releases/{release}/deploy")))
        .header(reqwest::header::ORIGIN, app.url(""))
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(form_body(&[
            ("csrf", &csrf),
            ("cluster", "sim"),
            ("namespace", "shop"),
            ("sent", "1"),
        ]))
        .send()
        .await
        .expect("sent");
    assert_eq!(refused.status(), 403);
    let html = refused.text().await.expect("page");
    assert_contains(
        &html,
        &["role=\"alert\"", "dana may not deploy to sim/shop"],
    );
    let deployments = app.api_get("/api/deployments?service=web").await;
    assert_eq!(
        deployments["items"].as_array().expect("items").len(),
        1,
        "nothing started: {deployments}"
    );
}
