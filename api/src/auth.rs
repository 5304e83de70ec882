//! Who is asking: the bearer token or the session cookie, authenticated by the
//! [`AccessService`], turned into the domain's [`Caller`] with the request's id and
//! source address for the audit trail.
//!
//! Neither the `Authorization` header nor the cookie is ever logged: they are read
//! here and nowhere else, and the token's secret only lives in a
//! [`kubernaut_domain::token::TokenSecret`], whose `Debug` is redacted.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use actix_web::cookie::{Cookie, CookieJar, Key, SameSite};
use actix_web::dev::Payload;
use actix_web::http::{Method, header};
use actix_web::middleware::DefaultHeaders;
use actix_web::web::Data;
use actix_web::{FromRequest, HttpMessage as _, HttpRequest};
use chrono::{DateTime, Utc};
use kubernaut_domain::Caller;
use kubernaut_domain::access::AccountName;
use kubernaut_domain::access_service::{AccessService, AuthenticationError};
use kubernaut_domain::token::{TokenHash, TokenId};
use subtle::ConstantTimeEq as _;

use crate::problem::{ApiError, ProblemType};
use crate::rate_limit::{FailedAuthLimiter, MutationLimiter};

/// The name of the session cookie; its (encrypted) value is a token's secret.
pub const SESSION_COOKIE: &str = "kubernaut_session";

/// The one detail every failed authentication answers with: whether a token is
/// unknown, expired or revoked is not the client's business.
pub const INVALID_CREDENTIALS: &str =
    "the bearer token or session is missing, invalid, expired or revoked";

/// The HTTP edge's security settings.
#[derive(Clone)]
pub struct SecuritySettings {
    /// Encrypts and signs the session cookie: 64 bytes (more are allowed, fewer are
    /// not: with fewer, session cookies are refused and none can be issued).
    pub session_key: Vec<u8>,
    /// Marks the session cookie `Secure` and sends `Strict-Transport-Security`.
    pub secure_cookies: bool,
    /// Changes (`POST`, `DELETE`, ... under `/api`) one credential may make per minute,
    /// in bursts of as many; 0 turns the limit off.
    pub mutations_per_minute: u32,
    /// Take the client's address from `X-Forwarded-For`, and only it (only behind a
    /// proxy that sets them).
    pub trust_forwarded_headers: bool,
    /// Requests one token may hold open at once (`?wait=` long polls and event
    /// streams); 0: no limit.
    pub streams_per_credential: usize,
    /// Requests the whole process holds open at once; 0: no limit.
    pub streams_total: usize,
    /// Failed authentications one source address may make per minute, in bursts of as
    /// many; past that its requests get 429 before any lookup. 0: no limit.
    pub failed_authentications_per_minute: u32,
}

impl fmt::Debug for SecuritySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecuritySettings")
            .field("session_key", &"***")
            .field("secure_cookies", &self.secure_cookies)
            .field("mutations_per_minute", &self.mutations_per_minute)
            .field("trust_forwarded_headers", &self.trust_forwarded_headers)
            .field("streams_per_credential", &self.streams_per_credential)
            .field("streams_total", &self.streams_total)
            .field(
                "failed_authentications_per_minute",
                &self.failed_authentications_per_minute,
            )
            .finish()
    }
}

/// The session key is shorter than 64 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the session key must be at least 64 bytes")]
pub struct InvalidSessionKey;

impl SecuritySettings {
    fn key(&self) -> Result<Key, InvalidSessionKey> {
        Key::try_from(self.session_key.as_slice()).map_err(|_| InvalidSessionKey)
    }
}

/// What [`crate::configure`] keeps for the extractors: the settings and the key.
#[derive(Clone)]
pub(crate) struct AuthState {
    pub settings: SecuritySettings,
    pub key: Option<Key>,
}

impl fmt::Debug for AuthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthState")
            .field("settings", &self.settings)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl AuthState {
    pub fn new(settings: SecuritySettings) -> Self {
        let key = settings.key().ok();
        if key.is_none() {
            tracing::warn!("the session key is shorter than 64 bytes: session cookies are refused");
        }
        Self { settings, key }
    }
}

/// The session cookie carrying `secret`, encrypted and signed with the session key:
/// `HttpOnly`, `SameSite=Strict`, `Path=/`, and `Secure` when `secure_cookies`.
///
/// # Errors
/// [`InvalidSessionKey`] when the key is shorter than 64 bytes.
pub fn session_cookie(
    secret: &str,
    settings: &SecuritySettings,
) -> Result<Cookie<'static>, InvalidSessionKey> {
    let key = settings.key()?;
    let mut jar = CookieJar::new();
    jar.private_mut(&key).add(
        Cookie::build(SESSION_COOKIE, secret.to_owned())
            .http_only(true)
            .same_site(SameSite::Strict)
            .secure(settings.secure_cookies)
            .path("/")
            .finish(),
    );
    jar.get(SESSION_COOKIE).cloned().ok_or(InvalidSessionKey)
}

/// The headers every response carries: `X-Content-Type-Options: nosniff`,
/// `X-Frame-Options: DENY`, `Referrer-Policy: same-origin` (no referrer to other
/// sites; `no-referrer` would make browsers send `Origin: null` on the UI's own form
/// posts, which the origin check refuses), `Cache-Control: no-store` (unless the
/// answer sets its own, as the static files do) and a
/// `Content-Security-Policy` allowing only Kubernaut's own scripts, styles and forms,
/// and no framing. Wrap the app in it (`App::new().wrap(security_headers())`).
pub fn security_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add(("X-Content-Type-Options", "nosniff"))
        .add(("X-Frame-Options", "DENY"))
        .add(("Referrer-Policy", "same-origin"))
        // What a signed-in person or a token reads must not stay in shared or browser
        // caches; answers that may be cached (the static files) say so themselves.
        .add(("Cache-Control", "no-store"))
        .add((
            "Content-Security-Policy",
            "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
        ))
}

/// [`security_headers`], with `Strict-Transport-Security` when `secure_cookies` (the
/// server is reached over HTTPS only).
pub fn security_headers_for(settings: &SecuritySettings) -> DefaultHeaders {
    let headers = security_headers();
    if settings.secure_cookies {
        headers.add(("Strict-Transport-Security", "max-age=31536000"))
    } else {
        headers
    }
}

/// A cookie that removes the session cookie (sign out).
pub fn clear_session_cookie(settings: &SecuritySettings) -> Cookie<'static> {
    let mut cookie = Cookie::build(SESSION_COOKIE, "")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(settings.secure_cookies)
        .path("/")
        .finish();
    cookie.make_removal();
    cookie
}

/// How the caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    Bearer,
    SessionCookie,
}

/// Everything known of an authenticated request.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The caller, with the request's id and source address.
    pub caller: Caller,
    pub account: AccountName,
    pub token: TokenId,
    /// The token's hash, to check the credential again during a long request.
    pub token_hash: TokenHash,
    pub expires_at: DateTime<Utc>,
    pub credential: Credential,
}

/// The authenticated caller of a request. Use as an extractor; a request without a
/// valid bearer token or session cookie is answered 401 with `WWW-Authenticate`.
/// Changes under `/api` are rate limited per token (per account for the cookie).
#[derive(Debug, Clone)]
pub struct Authenticated(pub Caller);

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let request = request.clone();
        Box::pin(async move { Ok(Self(identify(&request).await?.caller)) })
    }
}

impl FromRequest for Identity {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let request = request.clone();
        Box::pin(async move { identify(&request).await })
    }
}

/// Authenticates the request once (the result is kept in its extensions) and applies
/// the rate limit to changes under `/api`.
async fn identify(request: &HttpRequest) -> Result<Identity, ApiError> {
    if let Some(identity) = request.extensions().get::<Identity>() {
        return Ok(identity.clone());
    }
    let (Some(access), Some(state)) = (
        request.app_data::<Data<AccessService>>(),
        request.app_data::<Data<AuthState>>(),
    ) else {
        return Err(ApiError::internal(std::io::Error::other(
            "the access service is not configured",
        )));
    };
    let failures = request.app_data::<Data<FailedAuthLimiter>>();
    let source = source_of(request, &state.settings);
    let source_key = source.as_deref().unwrap_or("unknown");
    if let Some(failures) = failures {
        failures.check(source_key)?;
    }
    let failed = || {
        if let Some(failures) = failures {
            failures.failed(source_key);
        }
        ApiError::unauthorized(INVALID_CREDENTIALS)
    };
    let (presented, credential) = match presented_secret(request, state) {
        Ok(presented) => presented,
        Err(Presented::Missing(error)) => return Err(error),
        Err(Presented::Invalid) => return Err(failed()),
    };
    let authenticated = access
        .authenticate(&presented)
        .await
        .map_err(|error| match error {
            AuthenticationError::Repository(error) => ApiError::repository(error),
            AuthenticationError::Malformed(_)
            | AuthenticationError::Unknown
            | AuthenticationError::Expired
            | AuthenticationError::Revoked => failed(),
        })?;
    if credential == Credential::SessionCookie && is_mutation(request) {
        proof_of_origin(request, &state.settings, &presented)?;
    }
    drop(presented);
    let caller =
        Caller::new(authenticated.principal).with_request(Some(request_id(request)), source);
    let identity = Identity {
        caller,
        account: authenticated.account,
        token: authenticated.token,
        token_hash: authenticated.hash,
        expires_at: authenticated.expires_at,
        credential,
    };
    if is_mutation(request)
        && let Some(limiter) = request.app_data::<Data<MutationLimiter>>()
    {
        let key = match credential {
            Credential::Bearer => format!("token:{}", identity.token),
            Credential::SessionCookie => format!("account:{}", identity.account),
        };
        limiter.check(key)?;
    }
    request.extensions_mut().insert(identity.clone());
    Ok(identity)
}

/// The header a script of Kubernaut's own sends a session's CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// A change made with the session cookie must show it comes from Kubernaut's own
/// pages: an `Origin` of this host, `Sec-Fetch-Site: same-origin` (set by browsers,
/// beyond a page's reach), or the session's CSRF token in `X-CSRF-Token`. `SameSite`
/// alone does not stop a sibling subdomain. Bearer-token clients need none of this:
/// browsers never attach `Authorization` on their own.
fn proof_of_origin(
    request: &HttpRequest,
    settings: &SecuritySettings,
    secret: &str,
) -> Result<(), ApiError> {
    let header_text = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    if crate::session::same_origin(request) == Some(true)
        || header_text("sec-fetch-site").as_deref() == Some("same-origin")
    {
        return Ok(());
    }
    if let Some(presented) = header_text(CSRF_HEADER)
        && let Ok(expected) = crate::session::csrf_token(&settings.session_key, secret)
        && bool::from(presented.as_bytes().ct_eq(expected.as_bytes()))
    {
        return Ok(());
    }
    Err(ApiError::new(
        ProblemType::Forbidden,
        "a change made with the session cookie needs proof that it comes from Kubernaut's own pages: the same origin, or the session's CSRF token in X-CSRF-Token; scripts and CI should send a bearer token instead",
    ))
}

fn is_mutation(request: &HttpRequest) -> bool {
    let reads = [Method::GET, Method::HEAD, Method::OPTIONS];
    request.path().starts_with("/api/") && !reads.contains(request.method())
}

/// The token's secret from `Authorization: Bearer`, or else from the session cookie.
/// Why no credential could be taken from a request.
enum Presented {
    /// None was sent: a 401 saying how to send one; not a failed attempt.
    Missing(ApiError),
    /// One was sent and cannot be read: a failed attempt.
    Invalid,
}

fn presented_secret(
    request: &HttpRequest,
    state: &AuthState,
) -> Result<(String, Credential), Presented> {
    if let Some(value) = request.headers().get(header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| Presented::Invalid)?;
        let (scheme, token) = value.trim().split_once(' ').unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(Presented::Invalid);
        }
        return Ok((token.trim().to_owned(), Credential::Bearer));
    }
    let Some(raw) = request.cookie(SESSION_COOKIE) else {
        return Err(Presented::Missing(ApiError::unauthorized(
            "send a token as Authorization: Bearer <token>, or sign in",
        )));
    };
    // Without a usable session key no cookie can be read: not the client's fault.
    let key = state
        .key
        .as_ref()
        .ok_or_else(|| Presented::Missing(ApiError::unauthorized(INVALID_CREDENTIALS)))?;
    let mut jar = CookieJar::new();
    jar.add_original(raw);
    let cookie = jar
        .private(key)
        .get(SESSION_COOKIE)
        .ok_or(Presented::Invalid)?;
    Ok((cookie.value().to_owned(), Credential::SessionCookie))
}

/// The longest `X-Request-Id` taken from a client.
const MAX_REQUEST_ID: usize = 128;

/// The client's `X-Request-Id` when sane (1 to 128 printable ASCII characters), else
/// the id tracing-actix-web gave the request.
pub fn request_id(request: &HttpRequest) -> String {
    let sent = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|id| {
            !id.is_empty()
                && id.len() <= MAX_REQUEST_ID
                && id.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
        });
    match sent {
        Some(id) => id.to_owned(),
        None => request
            .extensions()
            .get::<tracing_actix_web::RequestId>()
            .map(ToString::to_string)
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
    }
}

/// The peer's address, or, when forwarding headers are trusted, the client's from
/// `X-Forwarded-For` alone: the one header the docs tell the proxy to set (overwriting
/// what the client sent). A `Forwarded` header, which proxies pass through untouched,
/// would let a client pick the address the audit trail records. Of several addresses
/// the last is taken: the one the nearest proxy saw.
pub fn source_of(request: &HttpRequest, settings: &SecuritySettings) -> Option<String> {
    if settings.trust_forwarded_headers
        && let Some(forwarded) = request
            .headers()
            .get("x-forwarded-for")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.rsplit(',').next())
            .map(|address| strip_port(address.trim()))
            .and_then(|address| address.parse::<std::net::IpAddr>().ok())
    {
        return Some(forwarded.to_string());
    }
    request.peer_addr().map(|peer| peer.ip().to_string())
}

/// `1.2.3.4:5678` -> `1.2.3.4`, `[::1]:80` -> `::1`; anything else unchanged.
fn strip_port(address: &str) -> &str {
    if let Ok(socket) = address.parse::<std::net::SocketAddr>() {
        return match socket {
            std::net::SocketAddr::V4(_) => address.rsplit_once(':').map_or(address, |(ip, _)| ip),
            std::net::SocketAddr::V6(_) => address
                .strip_prefix('[')
                .and_then(|rest| rest.split_once(']'))
                .map_or(address, |(ip, _)| ip),
        };
    }
    address
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use actix_web::body::to_bytes;
    use actix_web::dev::ServiceResponse;
    use actix_web::http::StatusCode;
    use actix_web::{App, test};
    use kubernaut_domain::access::{Account, AccountKind, Grant, Role};
    use kubernaut_domain::changes::LocalChanges;
    use kubernaut_domain::deployment_service::DeploymentService;
    use kubernaut_domain::ports::{
        MockAccessRepository, MockAuditRepository, MockDeploymentRepository, MockLeaseRepository,
        MockReleaseRepository,
    };
    use kubernaut_domain::token::{ApiToken, TokenHash, TokenSecret};
    use kubernaut_domain::{Actor, ReleaseService};

    use super::*;
    use crate::{ApiServices, configure, security_headers_for};

    struct Fixture {
        viewer: String,
        admin: String,
        expired: String,
        revoked: String,
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

    fn token(
        secret: &TokenSecret,
        account: &Account,
        expires_in: chrono::Duration,
        revoked: bool,
    ) -> ApiToken {
        let now = Utc::now();
        ApiToken {
            id: TokenId::generate(),
            account: account.name.clone(),
            name: "test".to_owned(),
            hint: secret.hint(),
            hash: secret.hash(),
            created_at: now,
            created_by: Actor::named("test"),
            expires_at: now + expires_in,
            last_used_at: Some(now),
            revoked_at: revoked.then_some(now),
            revoked_by: revoked.then(|| Actor::named("test")),
        }
    }

    fn settings(mutations_per_minute: u32) -> SecuritySettings {
        let mut session_key = vec![0_u8; 64];
        getrandom_key(&mut session_key);
        SecuritySettings {
            session_key,
            secure_cookies: true,
            mutations_per_minute,
            trust_forwarded_headers: false,
            streams_per_credential: 16,
            streams_total: 1000,
            failed_authentications_per_minute: 0,
        }
    }

    /// A key unique to the test (the limiters are shared per key).
    fn getrandom_key(key: &mut [u8]) {
        let id = uuid::Uuid::new_v4();
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = id.as_bytes()[i % 16] ^ u8::try_from(i).unwrap_or(0);
        }
    }

    fn services(settings: SecuritySettings) -> (ApiServices, Fixture) {
        let day = chrono::Duration::days(1);
        let viewer = account("viewer@example.com", Role::Viewer);
        let admin = account("admin", Role::Admin);
        let secrets: Vec<TokenSecret> = (0..4).map(|_| TokenSecret::generate()).collect();
        let records = [
            (token(&secrets[0], &viewer, day, false), viewer.clone()),
            (token(&secrets[1], &admin, day, false), admin.clone()),
            (token(&secrets[2], &viewer, -day, false), viewer.clone()),
            (token(&secrets[3], &viewer, day, true), viewer.clone()),
        ];
        let tokens: HashMap<TokenHash, (ApiToken, Account)> = records
            .into_iter()
            .map(|(token, account)| (token.hash, (token, account)))
            .collect();
        let mut repository = MockAccessRepository::new();
        repository
            .expect_find_token()
            .returning(move |hash| Ok(tokens.get(hash).cloned()));
        repository.expect_touch_token().returning(|_, _| Ok(()));
        repository.expect_insert_token().returning(|_, _| Ok(()));
        let access = AccessService::new(Arc::new(repository), Arc::new(MockAuditRepository::new()));
        let services = ApiServices {
            releases: ReleaseService::new(Arc::new(MockReleaseRepository::new())),
            deployments: DeploymentService::new(
                Arc::new(MockReleaseRepository::new()),
                Arc::new(MockDeploymentRepository::new()),
                Arc::new(MockLeaseRepository::new()),
                Arc::new(LocalChanges::new()),
                Vec::new(),
            ),
            access,
            security: settings,
            metrics: crate::Metrics::new(),
        };
        let expose = |i: usize| secrets[i].expose().to_owned();
        let fixture = Fixture {
            viewer: expose(0),
            admin: expose(1),
            expired: expose(2),
            revoked: expose(3),
        };
        (services, fixture)
    }

    /// The whole API (`configure`) wrapped in the security headers, and its tokens.
    macro_rules! app {
        ($settings:expr) => {{
            let settings = $settings;
            let (services, fixture) = services(settings.clone());
            let app = test::init_service(
                App::new()
                    .wrap(security_headers_for(&settings))
                    .configure(configure(services)),
            )
            .await;
            (app, fixture)
        }};
    }

    async fn body(response: ServiceResponse) -> serde_json::Value {
        let bytes = to_bytes(response.into_body()).await.expect("body");
        serde_json::from_slice(&bytes).expect("json")
    }

    fn bearer(secret: &str) -> (header::HeaderName, String) {
        (header::AUTHORIZATION, format!("Bearer {secret}"))
    }

    #[actix_web::test]
    async fn missing_garbage_unknown_expired_and_revoked_tokens_are_401_alike() {
        let (app, fixture) = app!(settings(60));
        let missing = test::call_service(
            &app,
            test::TestRequest::get().uri("/api/releases").to_request(),
        )
        .await;
        assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
        assert!(missing.headers().get(header::WWW_AUTHENTICATE).is_some());
        assert_eq!(
            missing
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some(crate::problem::PROBLEM_JSON)
        );
        let unknown = TokenSecret::generate().expose().to_owned();
        let mut details = Vec::new();
        for presented in [
            "garbage",
            unknown.as_str(),
            fixture.expired.as_str(),
            fixture.revoked.as_str(),
        ] {
            let response = test::call_service(
                &app,
                test::TestRequest::get()
                    .uri("/api/releases")
                    .insert_header(bearer(presented))
                    .to_request(),
            )
            .await;
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{presented}");
            let challenge = response
                .headers()
                .get(header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            assert!(challenge.starts_with("Bearer"), "{challenge}");
            details.push(body(response).await["detail"].clone());
        }
        assert!(details.iter().all(|d| *d == details[0]), "{details:?}");
        assert_eq!(details[0], INVALID_CREDENTIALS);
        let basic = test::call_service(
            &app,
            test::TestRequest::get()
                .uri("/api/whoami")
                .insert_header((header::AUTHORIZATION, format!("Basic {}", fixture.viewer)))
                .to_request(),
        )
        .await;
        assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);
    }

    #[actix_web::test]
    async fn health_stays_open_and_every_response_has_the_security_headers() {
        let (app, _) = app!(settings(60));
        let response =
            test::call_service(&app, test::TestRequest::get().uri("/healthz").to_request()).await;
        assert_eq!(response.status(), StatusCode::OK);
        for name in [
            "x-content-type-options",
            "x-frame-options",
            "referrer-policy",
            "content-security-policy",
            "strict-transport-security",
        ] {
            assert!(response.headers().get(name).is_some(), "{name}");
        }
        assert_eq!(
            response
                .headers()
                .get("cache-control")
                .and_then(|v| v.to_str().ok()),
            Some("no-store")
        );
    }

    #[actix_web::test]
    async fn a_missing_permission_is_403_naming_it() {
        let (app, fixture) = app!(settings(60));
        let response = test::call_service(
            &app,
            test::TestRequest::delete()
                .uri(&format!("/api/releases/{}", uuid::Uuid::now_v7()))
                .insert_header(bearer(&fixture.viewer))
                .to_request(),
        )
        .await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let problem = body(response).await;
        assert_eq!(problem["type"], "https://kubernaut.io/problems/forbidden");
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("manage releases"), "{detail}");
        assert!(detail.contains("viewer@example.com"), "{detail}");

        let audit = test::call_service(
            &app,
            test::TestRequest::get()
                .uri("/api/audit")
                .insert_header(bearer(&fixture.viewer))
                .to_request(),
        )
        .await;
        assert_eq!(audit.status(), StatusCode::FORBIDDEN);
        let detail = body(audit).await["detail"].clone();
        assert!(
            detail.as_str().is_some_and(|d| d.contains("administer")),
            "{detail}"
        );
    }

    #[actix_web::test]
    async fn changes_beyond_the_quota_are_429_with_retry_after_per_token() {
        let (app, fixture) = app!(settings(2));
        let delete = |secret: &str| {
            test::TestRequest::delete()
                .uri(&format!("/api/releases/{}", uuid::Uuid::now_v7()))
                .insert_header(bearer(secret))
                .to_request()
        };
        for _ in 0..2 {
            let response = test::call_service(&app, delete(&fixture.viewer)).await;
            assert_eq!(response.status(), StatusCode::FORBIDDEN);
        }
        let limited = test::call_service(&app, delete(&fixture.viewer)).await;
        assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
        let retry_after: u64 = limited
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .expect("Retry-After in seconds");
        assert!((1..=60).contains(&retry_after), "{retry_after}");
        assert_eq!(body(limited).await["status"], 429);
        // Reads are not limited; another token has its own quota.
        let read = test::call_service(
            &app,
            test::TestRequest::get()
                .uri("/api/whoami")
                .insert_header(bearer(&fixture.viewer))
                .to_request(),
        )
        .await;
        assert_eq!(read.status(), StatusCode::OK);
        let other = test::call_service(
            &app,
            test::TestRequest::post()
                .uri("/api/tokens")
                .insert_header(bearer(&fixture.admin))
                .to_request(),
        )
        .await;
        assert_eq!(other.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }

    #[actix_web::test]
    async fn a_change_made_with_the_session_cookie_needs_proof_of_origin() {
        let settings = settings(60);
        let (app, fixture) = app!(settings.clone());
        let cookie = session_cookie(&fixture.admin, &settings).expect("cookie");
        let post = || {
            test::TestRequest::post()
                .uri("/api/tokens")
                .insert_header((header::HOST, "kubernaut.example.com"))
                .set_json(serde_json::json!({"name": "laptop"}))
        };
        // Cookie alone, or from a sibling subdomain, or a same-site fetch: refused.
        for request in [
            post().cookie(cookie.clone()),
            post()
                .cookie(cookie.clone())
                .insert_header((header::ORIGIN, "https://evil.example.com")),
            post()
                .cookie(cookie.clone())
                .insert_header(("sec-fetch-site", "same-site")),
            post()
                .cookie(cookie.clone())
                .insert_header((CSRF_HEADER, "forged")),
        ] {
            let response = test::call_service(&app, request.to_request()).await;
            assert_eq!(response.status(), StatusCode::FORBIDDEN);
            let problem = body(response).await;
            assert!(
                problem["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("X-CSRF-Token")),
                "{problem}"
            );
        }
        // The same origin, a same-origin fetch, or the session's CSRF token: allowed.
        let csrf =
            crate::session::csrf_token(&settings.session_key, &fixture.admin).expect("a token");
        for request in [
            post()
                .cookie(cookie.clone())
                .insert_header((header::ORIGIN, "https://kubernaut.example.com")),
            post()
                .cookie(cookie.clone())
                .insert_header(("sec-fetch-site", "same-origin")),
            post()
                .cookie(cookie.clone())
                .insert_header((CSRF_HEADER, csrf.as_str())),
            // A bearer token needs no proof: browsers never send one on their own.
            post().insert_header((header::AUTHORIZATION, format!("Bearer {}", fixture.admin))),
        ] {
            let response = test::call_service(&app, request.to_request()).await;
            assert_ne!(response.status(), StatusCode::FORBIDDEN);
            assert!(response.status().is_success(), "{}", response.status());
        }
        // Reads need no proof.
        let read = test::call_service(
            &app,
            test::TestRequest::get()
                .uri("/api/whoami")
                .cookie(cookie)
                .to_request(),
        )
        .await;
        assert_eq!(read.status(), StatusCode::OK);
    }

    #[actix_web::test]
    async fn the_session_cookie_authenticates_and_a_tampered_one_is_401() {
        let settings = settings(60);
        let (app, fixture) = app!(settings.clone());
        let cookie = session_cookie(&fixture.viewer, &settings).expect("cookie");
        assert!(cookie.http_only().unwrap_or(false));
        assert_eq!(cookie.same_site(), Some(SameSite::Strict));
        assert_eq!(cookie.secure(), Some(true));
        assert_eq!(cookie.path(), Some("/"));
        assert!(!cookie.value().contains(&fixture.viewer));

        let whoami = test::call_service(
            &app,
            test::TestRequest::get()
                .uri("/api/whoami")
                .cookie(cookie.clone())
                .to_request(),
        )
        .await;
        assert_eq!(whoami.status(), StatusCode::OK);
        let me = body(whoami).await;
        assert_eq!(me["account"], "viewer@example.com");
        assert_eq!(me["authenticated_by"], "session_cookie");
        assert_eq!(me["grants"][0]["role"], "viewer");

        let mut value = cookie.value().to_owned();
        let last = value.pop().unwrap_or('A');
        value.push(if last == 'A' { 'B' } else { 'A' });
        for tampered in [
            Cookie::new(SESSION_COOKIE, value),
            Cookie::new(SESSION_COOKIE, fixture.viewer.clone()),
        ] {
            let response = test::call_service(
                &app,
                test::TestRequest::get()
                    .uri("/api/whoami")
                    .cookie(tampered)
                    .to_request(),
            )
            .await;
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
            assert!(response.headers().get(header::WWW_AUTHENTICATE).is_some());
        }

        let cleared = clear_session_cookie(&settings);
        assert_eq!(cleared.value(), "");
        assert!(cleared.max_age().is_some_and(|age| age.is_zero()));
    }

    #[actix_web::test]
    async fn the_caller_carries_the_request_id_and_source() {
        let (services, fixture) = services(settings(60));
        let app = test::init_service(App::new().configure(configure(services)).route(
            "/probe",
            actix_web::web::get().to(|Authenticated(caller): Authenticated| async move {
                actix_web::HttpResponse::Ok().json(serde_json::json!({
                    "request_id": caller.request_id,
                    "source": caller.source,
                }))
            }),
        ))
        .await;
        let peer: std::net::SocketAddr = "10.1.2.3:4567".parse().expect("address");
        let response = test::call_service(
            &app,
            test::TestRequest::get()
                .uri("/probe")
                .peer_addr(peer)
                .insert_header(bearer(&fixture.viewer))
                .insert_header(("X-Request-Id", "ci-run-42"))
                .insert_header(("X-Forwarded-For", "203.0.113.9"))
                .to_request(),
        )
        .await;
        let seen = body(response).await;
        assert_eq!(seen["request_id"], "ci-run-42");
        assert_eq!(seen["source"], "10.1.2.3");
    }

    #[actix_web::test]
    async fn an_address_that_keeps_failing_to_authenticate_is_refused_before_any_lookup() {
        let (services, fixture) = services(SecuritySettings {
            failed_authentications_per_minute: 5,
            ..settings(0)
        });
        let app = test::init_service(App::new().configure(configure(services)).route(
            "/probe",
            actix_web::web::get().to(|Authenticated(_): Authenticated| async {
                actix_web::HttpResponse::Ok().finish()
            }),
        ))
        .await;
        let from = |peer: &str, secret: &str| {
            let peer: std::net::SocketAddr = peer.parse().expect("address");
            test::TestRequest::get()
                .uri("/probe")
                .peer_addr(peer)
                .insert_header(bearer(secret))
                .to_request()
        };
        let guess = TokenSecret::generate();
        let mut statuses = Vec::new();
        for _ in 0..8 {
            let response = test::call_service(&app, from("10.9.9.9:1000", guess.expose())).await;
            statuses.push(response.status().as_u16());
        }
        // Five failures allowed, the sixth uses up the quota, then 429s.
        assert_eq!(statuses, [401, 401, 401, 401, 401, 401, 429, 429]);
        // Garbage counts as a failure too, and a blocked address is refused even with a
        // good token (nothing is looked up); other addresses are unaffected.
        let blocked = test::call_service(&app, from("10.9.9.9:1001", &fixture.viewer)).await;
        assert_eq!(blocked.status(), 429);
        assert!(blocked.headers().contains_key(header::RETRY_AFTER));
        let elsewhere = test::call_service(&app, from("10.8.8.8:1000", &fixture.viewer)).await;
        assert_eq!(elsewhere.status(), 200);
        for _ in 0..7 {
            test::call_service(&app, from("10.7.7.7:1000", "knt_garbage")).await;
        }
        let garbage = test::call_service(&app, from("10.7.7.7:1000", &fixture.viewer)).await;
        assert_eq!(garbage.status(), 429);
        // No credential at all is not a failed attempt.
        for _ in 0..10 {
            let peer: std::net::SocketAddr = "10.6.6.6:1".parse().expect("address");
            let anonymous = test::call_service(
                &app,
                test::TestRequest::get()
                    .uri("/probe")
                    .peer_addr(peer)
                    .to_request(),
            )
            .await;
            assert_eq!(anonymous.status(), 401);
        }
        let after = test::call_service(&app, from("10.6.6.6:2", &fixture.viewer)).await;
        assert_eq!(after.status(), 200);
    }

    #[actix_web::test]
    async fn behind_a_trusted_proxy_the_source_is_x_forwarded_for_alone() {
        let peer: std::net::SocketAddr = "10.1.2.3:4567".parse().expect("address");
        let trusting = SecuritySettings {
            trust_forwarded_headers: true,
            ..settings(0)
        };
        let source = |headers: &[(&str, &str)], settings: &SecuritySettings| {
            let mut request = test::TestRequest::get().peer_addr(peer);
            for header in headers {
                request = request.insert_header(*header);
            }
            source_of(&request.to_http_request(), settings)
        };
        assert_eq!(
            source(&[("X-Forwarded-For", "203.0.113.9")], &trusting).as_deref(),
            Some("203.0.113.9")
        );
        // The client's own Forwarded header, passed through by the proxy, is ignored.
        assert_eq!(
            source(
                &[
                    ("Forwarded", "for=6.6.6.6"),
                    ("X-Forwarded-For", "203.0.113.9")
                ],
                &trusting
            )
            .as_deref(),
            Some("203.0.113.9")
        );
        assert_eq!(
            source(&[("Forwarded", "for=6.6.6.6")], &trusting).as_deref(),
            Some("10.1.2.3")
        );
        // Appended to by a proxy: the address the nearest proxy saw.
        assert_eq!(
            source(&[("X-Forwarded-For", "6.6.6.6, 198.51.100.4")], &trusting).as_deref(),
            Some("198.51.100.4")
        );
        assert_eq!(
            source(&[("X-Forwarded-For", "not an address")], &trusting).as_deref(),
            Some("10.1.2.3")
        );
        // Not trusted: the peer, whatever the headers say.
        assert_eq!(
            source(&[("X-Forwarded-For", "203.0.113.9")], &settings(0)).as_deref(),
            Some("10.1.2.3")
        );
    }

    #[actix_web::test]
    async fn a_new_token_shows_its_secret_once_and_is_not_cached() {
        let (app, fixture) = app!(settings(60));
        let response = test::call_service(
            &app,
            test::TestRequest::post()
                .uri("/api/tokens")
                .insert_header(bearer(&fixture.admin))
                .set_json(serde_json::json!({"name": "ci", "account": "viewer@example.com", "expires_in": "30d"}))
                .to_request(),
        )
        .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        assert_eq!(
            response
                .headers()
                .get(header::CACHE_CONTROL)
                .and_then(|v| v.to_str().ok()),
            Some("no-store")
        );
        let issued = body(response).await;
        assert!(
            issued["secret"]
                .as_str()
                .is_some_and(|s| s.starts_with("knt_")),
            "{issued}"
        );
        assert_eq!(issued["token"]["account"], "viewer@example.com");
        assert!(issued["token"].get("hash").is_none(), "{issued}");
    }

    #[actix_web::test]
    async fn invalid_access_requests_are_problems_naming_the_field() {
        let (app, fixture) = app!(settings(60));
        let cases = [
            (
                "/api/accounts",
                serde_json::json!({"name": "bot", "grants": [{"role": "god"}]}),
                "grants[0].role",
            ),
            (
                "/api/accounts",
                serde_json::json!({"name": "bot", "grants": [{"role": "viewer", "scope": "prod/*"}]}),
                "grants[0].scope",
            ),
            (
                "/api/tokens",
                serde_json::json!({"name": "ci", "expires_in": "soon"}),
                "expires_in",
            ),
            (
                "/api/tokens",
                serde_json::json!({"name": "ci", "colour": "red"}),
                "colour",
            ),
            (
                "/api/accounts/bot/grants",
                serde_json::json!({"role": "deployer", "scope": "Prod"}),
                "scope",
            ),
        ];
        for (uri, json, field) in cases {
            let response = test::call_service(
                &app,
                test::TestRequest::post()
                    .uri(uri)
                    .insert_header(bearer(&fixture.admin))
                    .set_json(&json)
                    .to_request(),
            )
            .await;
            let status = response.status();
            assert!(
                status == StatusCode::UNPROCESSABLE_ENTITY || status == StatusCode::BAD_REQUEST,
                "{uri} {json}: {status}"
            );
            let problem = body(response).await;
            let named = problem["errors"]
                .as_array()
                .is_some_and(|errors| errors.iter().any(|e| e["field"] == field));
            assert!(named, "{uri} {json}: {problem}");
        }
        let audit = test::call_service(
            &app,
            test::TestRequest::get()
                .uri("/api/audit?since=yesterday&action=release.exploded")
                .insert_header(bearer(&fixture.admin))
                .to_request(),
        )
        .await;
        assert_eq!(audit.status(), StatusCode::BAD_REQUEST);
        let problem = body(audit).await;
        assert_eq!(problem["errors"][0]["field"], "action");
        assert_eq!(problem["errors"][1]["field"], "since");
    }

    #[::core::prelude::v1::test]
    fn the_session_key_never_debug_prints_and_short_keys_issue_no_cookie() {
        let mut settings = settings(1);
        settings.session_key = vec![7; 64];
        assert!(!format!("{settings:?}").contains("7, 7"));
        settings.session_key = vec![7; 10];
        assert_eq!(session_cookie("x", &settings), Err(InvalidSessionKey));
        assert_eq!(strip_port("1.2.3.4:80"), "1.2.3.4");
        assert_eq!(strip_port("[::1]:80"), "::1");
        assert_eq!(strip_port("203.0.113.9"), "203.0.113.9");
    }
}
