//! The pages' sessions end to end over the whole app (`crate::configure`) with mock
//! repositories: the redirect to the sign-in form, signing in and out, the CSRF and
//! origin checks, and the admin-only audit trail.

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::body::to_bytes;
use actix_web::cookie::{Cookie, SameSite};
use actix_web::dev::ServiceResponse;
use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{App, test};
use chrono::Utc;
use kubernaut_domain::access::{Account, AccountKind, AccountName, Grant, Role};
use kubernaut_domain::access_service::AccessService;
use kubernaut_domain::changes::LocalChanges;
use kubernaut_domain::deployment_service::DeploymentService;
use kubernaut_domain::ports::{
    MockAccessRepository, MockAuditRepository, MockDeploymentRepository, MockLeaseRepository,
    MockReleaseRepository,
};
use kubernaut_domain::token::{ApiToken, TokenHash, TokenId, TokenSecret};
use kubernaut_domain::{Actor, AuditAction, AuditEntry, ReleaseService};

use crate::auth::SESSION_COOKIE;
use crate::{ApiServices, SecuritySettings, configure};

struct Secrets {
    viewer: String,
    admin: String,
}

fn account(name: &str, role: Role) -> Account {
    Account {
        name: AccountName::parse(name).expect("name"),
        kind: AccountKind::Person,
        grants: vec![Grant::global(role)],
        created_at: Utc::now(),
        created_by: Actor::named("test"),
    }
}

fn token(secret: &TokenSecret, account: &Account) -> ApiToken {
    let now = Utc::now();
    ApiToken {
        id: TokenId::generate(),
        account: account.name.clone(),
        name: "test".to_owned(),
        hint: secret.hint(),
        hash: secret.hash(),
        created_at: now,
        created_by: Actor::named("test"),
        expires_at: now + chrono::Duration::hours(2),
        last_used_at: Some(now),
        revoked_at: None,
        revoked_by: None,
    }
}

fn settings() -> SecuritySettings {
    let id = uuid::Uuid::new_v4();
    SecuritySettings {
        session_key: (0..64_u8)
            .map(|i| id.as_bytes()[usize::from(i % 16)] ^ i)
            .collect(),
        secure_cookies: true,
        mutations_per_minute: 0,
        trust_forwarded_headers: false,
        streams_per_credential: 16,
        streams_total: 1000,
        failed_authentications_per_minute: 0,
    }
}

fn services(settings: SecuritySettings) -> (ApiServices, Secrets) {
    let viewer = account("viewer@example.com", Role::Viewer);
    let admin = account("admin", Role::Admin);
    let viewer_secret = TokenSecret::generate();
    let admin_secret = TokenSecret::generate();
    let tokens: HashMap<TokenHash, (ApiToken, Account)> = [
        (token(&viewer_secret, &viewer), viewer),
        (token(&admin_secret, &admin), admin),
    ]
    .into_iter()
    .map(|(token, account)| (token.hash, (token, account)))
    .collect();
    let mut repository = MockAccessRepository::new();
    repository
        .expect_find_token()
        .returning(move |hash| Ok(tokens.get(hash).cloned()));
    repository.expect_touch_token().returning(|_, _| Ok(()));
    let mut audit = MockAuditRepository::new();
    audit.expect_list().returning(|_, _| {
        Ok(vec![AuditEntry::new(
            Actor::named("admin"),
            AuditAction::ReleaseCreated,
            "release/0190b7a4-0000-7000-8000-000000000001".to_owned(),
            Some("req-1".to_owned()),
            Some("192.0.2.7".to_owned()),
            serde_json::json!({ "service": "web<script>" }),
        )])
    });
    let mut deployments = MockDeploymentRepository::new();
    deployments.expect_list().returning(|_, _| Ok(Vec::new()));
    deployments
        .expect_placements()
        .returning(|_| Ok(Vec::new()));
    let services = ApiServices {
        releases: ReleaseService::new(Arc::new(MockReleaseRepository::new())),
        deployments: DeploymentService::new(
            Arc::new(MockReleaseRepository::new()),
            Arc::new(deployments),
            Arc::new(MockLeaseRepository::new()),
            Arc::new(LocalChanges::new()),
            Vec::new(),
        ),
        access: AccessService::new(Arc::new(repository), Arc::new(audit)),
        security: settings,
        metrics: crate::Metrics::new(),
    };
    let secrets = Secrets {
        viewer: viewer_secret.expose().to_owned(),
        admin: admin_secret.expose().to_owned(),
    };
    (services, secrets)
}

macro_rules! app {
    () => {{
        let (services, secrets) = services(settings());
        let app = test::init_service(App::new().configure(configure(services))).await;
        (app, secrets)
    }};
}

async fn text(response: ServiceResponse) -> String {
    let bytes = to_bytes(response.into_body()).await.expect("body");
    String::from_utf8(bytes.to_vec()).expect("utf-8")
}

fn location(response: &ServiceResponse) -> &str {
    response
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

fn sign_in_form(token: &str, next: &str) -> test::TestRequest {
    test::TestRequest::post()
        .uri("/sign-in")
        .insert_header((header::HOST, "localhost:8080"))
        .set_form([("token", token), ("next", next)])
}

/// Signs in with `secret` and returns the session cookie as the browser keeps it.
macro_rules! sign_in {
    ($app:expr, $secret:expr) => {{
        let response = test::call_service(&$app, sign_in_form($secret, "/").to_request()).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let cookie = response
            .response()
            .cookies()
            .find(|c| c.name() == SESSION_COOKIE)
            .expect("a session cookie")
            .into_owned();
        Cookie::new(SESSION_COOKIE, cookie.value().to_owned())
    }};
}

/// The value of the hidden `csrf` field of a page.
fn csrf_of(html: &str) -> String {
    let start = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    html[start..]
        .split('"')
        .next()
        .expect("its value")
        .to_owned()
}

#[actix_web::test]
async fn pages_send_strangers_to_the_sign_in_form_with_where_they_were_going() {
    let (app, _) = app!();
    let response = test::call_service(
        &app,
        test::TestRequest::get()
            .uri("/deployments?status=failed")
            .to_request(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        location(&response),
        "/sign-in?next=/deployments%3Fstatus%3Dfailed"
    );
    let home = test::call_service(&app, test::TestRequest::get().uri("/").to_request()).await;
    assert_eq!(location(&home), "/sign-in");
    let tampered = test::call_service(
        &app,
        test::TestRequest::get()
            .uri("/clusters")
            .cookie(Cookie::new(SESSION_COOKIE, "not-encrypted-by-us"))
            .to_request(),
    )
    .await;
    assert_eq!(tampered.status(), StatusCode::SEE_OTHER);
    let stale_form = test::call_service(
        &app,
        test::TestRequest::post()
            .uri("/sign-out")
            .set_form([("csrf", "x")])
            .to_request(),
    )
    .await;
    assert_eq!(stale_form.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        location(&stale_form),
        "/sign-in",
        "a form is not gone back to"
    );
}

#[actix_web::test]
async fn the_sign_in_form_takes_a_token_and_goes_back_only_to_local_paths() {
    let (app, secrets) = app!();
    let form = test::call_service(
        &app,
        test::TestRequest::get()
            .uri("/sign-in?next=/clusters")
            .to_request(),
    )
    .await;
    assert_eq!(form.status(), StatusCode::OK);
    let html = text(form).await;
    assert!(html.contains("name=\"token\""));
    assert!(html.contains("value=\"/clusters\""));
    assert!(html.contains("OIDC"));
    assert!(!html.contains("<script>"));

    let response = test::call_service(
        &app,
        sign_in_form(&secrets.viewer, "/clusters").to_request(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/clusters");
    let cookie = response
        .response()
        .cookies()
        .find(|c| c.name() == SESSION_COOKIE)
        .expect("a session cookie")
        .into_owned();
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(cookie.same_site(), Some(SameSite::Strict));
    assert_eq!(cookie.secure(), Some(true));
    assert_eq!(cookie.path(), Some("/"));
    let max_age = cookie.max_age().expect("a max-age").whole_seconds();
    assert!((7000..=7200).contains(&max_age), "{max_age}");
    assert!(!cookie.value().contains(&secrets.viewer));

    for evil in [
        "//evil.example/",
        "https://evil.example/",
        "/\\evil.example",
    ] {
        let response =
            test::call_service(&app, sign_in_form(&secrets.viewer, evil).to_request()).await;
        assert_eq!(location(&response), "/", "{evil}");
    }
}

#[actix_web::test]
async fn a_bad_token_is_401_with_the_form_and_is_not_echoed() {
    let (app, _) = app!();
    let bad = "knt_definitely-not-a-token-we-issued";
    let response = test::call_service(&app, sign_in_form(bad, "/").to_request()).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(
        response
            .response()
            .cookies()
            .all(|c| c.name() != SESSION_COOKIE)
    );
    let html = text(response).await;
    assert!(html.contains("name=\"token\""));
    assert!(html.contains("role=\"alert\""));
    assert!(!html.contains(bad));
}

#[actix_web::test]
async fn a_signed_in_page_names_the_account_and_signs_out_with_its_csrf_token() {
    let (app, secrets) = app!();
    let cookie = sign_in!(app, &secrets.viewer);
    let page = test::call_service(
        &app,
        test::TestRequest::get()
            .uri("/clusters")
            .cookie(cookie.clone())
            .to_request(),
    )
    .await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = text(page).await;
    assert!(html.contains("viewer@example.com"));
    assert!(html.contains("action=\"/sign-out\""));
    assert!(
        !html.contains("href=\"/audit\""),
        "no audit link for viewers"
    );
    let csrf = csrf_of(&html);

    let sign_out = |csrf: &str, origin: Option<&str>| {
        let mut request = test::TestRequest::post()
            .uri("/sign-out")
            .insert_header((header::HOST, "localhost:8080"))
            .cookie(cookie.clone())
            .set_form([("csrf", csrf)]);
        if let Some(origin) = origin {
            request = request.insert_header((header::ORIGIN, origin));
        }
        request.to_request()
    };
    let forged = test::call_service(&app, sign_out("forged", None)).await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert!(text(forged).await.contains("<h1>Not allowed</h1>"));
    let missing = test::call_service(&app, sign_out("", None)).await;
    assert_eq!(missing.status(), StatusCode::FORBIDDEN);
    let cross_site = test::call_service(&app, sign_out(&csrf, Some("https://evil.example"))).await;
    assert_eq!(cross_site.status(), StatusCode::FORBIDDEN);

    let done = test::call_service(&app, sign_out(&csrf, Some("http://localhost:8080"))).await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    let removal = done
        .response()
        .cookies()
        .find(|c| c.name() == SESSION_COOKIE)
        .expect("a removal cookie")
        .into_owned();
    assert_eq!(removal.value(), "");
    assert_eq!(removal.max_age().map(|d| d.whole_seconds()), Some(0));
}

#[actix_web::test]
async fn the_audit_trail_is_for_admins_only() {
    let (app, secrets) = app!();
    let viewer = sign_in!(app, &secrets.viewer);
    let refused = test::call_service(
        &app,
        test::TestRequest::get()
            .uri("/audit")
            .cookie(viewer.clone())
            .to_request(),
    )
    .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(text(refused).await.contains("the admin role"));
    let bad_filter = test::call_service(
        &app,
        test::TestRequest::get()
            .uri("/audit?action=nonsense")
            .cookie(viewer)
            .to_request(),
    )
    .await;
    assert_eq!(bad_filter.status(), StatusCode::FORBIDDEN);

    let admin = sign_in!(app, &secrets.admin);
    let page = test::call_service(
        &app,
        test::TestRequest::get()
            .uri("/audit?action=release.created")
            .cookie(admin.clone())
            .to_request(),
    )
    .await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = text(page).await;
    assert!(html.contains("<h1>Audit trail</h1>"));
    assert!(html.contains("href=\"/audit\" aria-current=\"page\""));
    assert!(html.contains("release.created"));
    assert!(html.contains("href=\"/releases/0190b7a4-0000-7000-8000-000000000001\""));
    assert!(html.contains("192.0.2.7"));
    assert!(!html.contains("web<script>"), "details are escaped");

    // A filter the database could not take is shown as a filter error, not sent.
    for filter in ["actor=ad%00min", "target=release/%00"] {
        let page = test::call_service(
            &app,
            test::TestRequest::get()
                .uri(&format!("/audit?{filter}"))
                .cookie(admin.clone())
                .to_request(),
        )
        .await;
        assert_eq!(page.status(), StatusCode::OK, "{filter}");
        assert!(text(page).await.contains("U+0000"), "{filter}");
    }
}

#[actix_web::test]
async fn the_timeline_script_is_a_static_file() {
    let (app, _) = app!();
    let response = test::call_service(
        &app,
        test::TestRequest::get()
            .uri("/static/timeline.js")
            .to_request(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(text(response).await.contains("EventSource"));
}
