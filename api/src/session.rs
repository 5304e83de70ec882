//! The web UI's sessions: who is signed in to the pages, and the checks every form
//! that changes something passes.
//!
//! A session is the `kubernaut_session` cookie, an actix-web private cookie (encrypted
//! and signed with the session key) holding an API token's secret, the same cookie the
//! REST API accepts (see [`crate::auth`]). Each request authenticates the secret again
//! with the [`AccessService`], so a revoked or expired token ends the session at once.
//!
//! Forms that `POST` carry a `csrf` field: HMAC-SHA256 of the token's secret under the
//! session key, base64url. It is checked in constant time, and a `POST` whose `Origin`
//! (when sent) is not this host is refused as well.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use actix_web::cookie::time::Duration as CookieDuration;
use actix_web::cookie::{Cookie, CookieJar, Key};
use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::web::Data;
use actix_web::{FromRequest, HttpMessage as _, HttpRequest};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit as _, Mac as _};
use kubernaut_domain::Caller;
use kubernaut_domain::access::Permission;
use kubernaut_domain::access_service::{AccessService, Authenticated, AuthenticationError};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

use crate::auth::{SESSION_COOKIE, SecuritySettings, request_id, source_of};
use crate::pages::PageError;

type HmacSha256 = Hmac<Sha256>;

/// The longest `next` path a sign-in redirects to.
const MAX_NEXT: usize = 2048;

/// The signed-in visitor of a page. Use as an extractor: a request without a valid
/// session is redirected (`303 See Other`) to `/sign-in?next=<its path>`.
#[derive(Clone)]
pub struct SignedIn {
    /// The caller, with the request's id and source address.
    pub caller: Caller,
    /// The account's name.
    pub account: String,
    /// The session's CSRF token, for the hidden `csrf` field of `POST` forms.
    pub csrf: String,
}

impl fmt::Debug for SignedIn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedIn")
            .field("caller", &self.caller)
            .field("account", &self.account)
            .field("csrf", &"<redacted>")
            .finish()
    }
}

impl SignedIn {
    /// What the layout shows of the session.
    pub fn view(&self) -> SessionView {
        SessionView {
            account: self.account.clone(),
            csrf: self.csrf.clone(),
            admin: self.caller.allows(&Permission::Administer),
        }
    }

    /// Checks a `POST` form: its `csrf` field must be this session's token, and its
    /// `Origin`, when sent, this host.
    ///
    /// # Errors
    /// [`PageError::Forbidden`] when either check fails.
    pub fn check_form(&self, request: &HttpRequest, csrf: &str) -> Result<(), PageError> {
        check_origin(request)?;
        let matches: bool = csrf.trim().as_bytes().ct_eq(self.csrf.as_bytes()).into();
        if matches { Ok(()) } else { Err(csrf_refused()) }
    }
}

/// What every page's layout needs of the session: who is signed in, the CSRF token of
/// the sign-out form, and whether to offer the admin pages.
#[derive(Debug, Clone)]
pub struct SessionView {
    pub account: String,
    pub csrf: String,
    pub admin: bool,
}

impl FromRequest for SignedIn {
    type Error = PageError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, PageError>>>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let request = request.clone();
        Box::pin(async move { signed_in(&request).await })
    }
}

async fn signed_in(request: &HttpRequest) -> Result<SignedIn, PageError> {
    if let Some(found) = request.extensions().get::<SignedIn>() {
        return Ok(found.clone());
    }
    let (access, settings) = services(request)?;
    let sign_in = || PageError::SignIn(sign_in_location(request));
    let secret = session_secret(request, &settings).ok_or_else(sign_in)?;
    let authenticated = match access.authenticate(&secret).await {
        Ok(authenticated) => authenticated,
        Err(AuthenticationError::Repository(error)) => return Err(PageError::internal(&error)),
        Err(
            AuthenticationError::Malformed(_)
            | AuthenticationError::Unknown
            | AuthenticationError::Expired
            | AuthenticationError::Revoked,
        ) => return Err(sign_in()),
    };
    let csrf = csrf_token(&settings.session_key, &secret)?;
    drop(secret);
    let found = SignedIn {
        caller: Caller::new(authenticated.principal)
            .with_request(Some(request_id(request)), source_of(request, &settings)),
        account: authenticated.account.to_string(),
        csrf,
    };
    request.extensions_mut().insert(found.clone());
    Ok(found)
}

/// The access service and the security settings, as [`crate::configure`] registers them.
///
/// # Errors
/// [`PageError::Internal`] when either is missing.
pub fn services(
    request: &HttpRequest,
) -> Result<(Data<AccessService>, Data<SecuritySettings>), PageError> {
    match (
        request.app_data::<Data<AccessService>>(),
        request.app_data::<Data<SecuritySettings>>(),
    ) {
        (Some(access), Some(settings)) => Ok((access.clone(), settings.clone())),
        _ => Err(PageError::internal(&std::io::Error::other(
            "the access service or the security settings are not configured",
        ))),
    }
}

/// The session key as the cookie jar wants it; `None` when it is too short.
fn cookie_key(settings: &SecuritySettings) -> Option<Key> {
    Key::try_from(settings.session_key.as_slice()).ok()
}

/// The token's secret from the session cookie; `None` when the cookie is missing,
/// tampered with, or encrypted under another key.
fn session_secret(request: &HttpRequest, settings: &SecuritySettings) -> Option<String> {
    let raw = request.cookie(SESSION_COOKIE)?;
    let key = cookie_key(settings)?;
    let mut jar = CookieJar::new();
    jar.add_original(raw);
    let cookie = jar.private(&key).get(SESSION_COOKIE)?;
    Some(cookie.value().to_owned())
}

/// The session cookie for `secret`: private, `HttpOnly`, `SameSite=Strict`, `Path=/`,
/// `Secure` when `secure_cookies`, living until the token expires.
///
/// # Errors
/// [`PageError::Internal`] when the session key is shorter than 64 bytes.
pub fn session_cookie(
    secret: &str,
    expires_at: DateTime<Utc>,
    settings: &SecuritySettings,
) -> Result<Cookie<'static>, PageError> {
    let mut cookie = crate::auth::session_cookie(secret, settings)
        .map_err(|error| PageError::internal(&error))?;
    let seconds = (expires_at - Utc::now()).num_seconds().max(0);
    cookie.set_max_age(CookieDuration::seconds(seconds));
    Ok(cookie)
}

/// The CSRF token of the session whose token's secret is `secret`.
pub(crate) fn csrf_token(session_key: &[u8], secret: &str) -> Result<String, PageError> {
    let mut mac =
        HmacSha256::new_from_slice(session_key).map_err(|error| PageError::internal(&error))?;
    mac.update(secret.as_bytes());
    Ok(URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

fn csrf_refused() -> PageError {
    PageError::Forbidden(
        "This form is stale or did not come from Kubernaut: reload the page and try again."
            .to_owned(),
    )
}

/// Refuses a `POST` whose `Origin` header, when sent, is not this host.
///
/// # Errors
/// [`PageError::Forbidden`] for another origin (or `null`).
pub fn check_origin(request: &HttpRequest) -> Result<(), PageError> {
    match same_origin(request) {
        None | Some(true) => Ok(()),
        Some(false) => Err(PageError::Forbidden(
            "This form was sent from another site; Kubernaut only accepts its own.".to_owned(),
        )),
    }
}

/// Whether the request's `Origin` is this host: `None` without an `Origin` header,
/// `Some(false)` for another origin, `null` or anything unreadable.
pub(crate) fn same_origin(request: &HttpRequest) -> Option<bool> {
    let origin = request.headers().get(header::ORIGIN)?;
    let Some(authority) = origin.to_str().ok().and_then(|origin| {
        origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"))
    }) else {
        return Some(false);
    };
    let trusts_forwarded = request
        .app_data::<Data<SecuritySettings>>()
        .is_some_and(|settings| settings.trust_forwarded_headers);
    let host = if trusts_forwarded {
        Some(request.connection_info().host().to_owned())
    } else {
        request
            .headers()
            .get(header::HOST)
            .and_then(|host| host.to_str().ok())
            .map(str::to_owned)
            .or_else(|| request.uri().authority().map(ToString::to_string))
    };
    Some(host.is_some_and(|host| authority.eq_ignore_ascii_case(&host)))
}

/// `/sign-in?next=<the request's path and query>`, or `/sign-in` when that is `/` or
/// the request is not a `GET`.
fn sign_in_location(request: &HttpRequest) -> String {
    // Only a page can be gone back to: a form's target answers POST alone.
    if request.method() != actix_web::http::Method::GET {
        return "/sign-in".to_owned();
    }
    let next = request
        .uri()
        .path_and_query()
        .map_or("/", |path| path.as_str());
    match local_path(next) {
        Some(next) if next != "/" => format!("/sign-in?next={}", encode_query_value(next)),
        _ => "/sign-in".to_owned(),
    }
}

/// `next` when it is a path on this server (`/deployments?status=failed`), not a
/// scheme-relative URL (`//evil.example`), another scheme, or something odd.
pub fn local_path(next: &str) -> Option<&str> {
    let bytes = next.as_bytes();
    let local = next.len() <= MAX_NEXT
        && bytes.first() == Some(&b'/')
        && !matches!(bytes.get(1), Some(b'/' | b'\\'))
        && next.bytes().all(|b| b.is_ascii_graphic() && b != b'\\');
    local.then_some(next)
}

/// Percent-encodes `value` for a query string.
fn encode_query_value(value: &str) -> String {
    let mut encoded = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// Who a pasted token belongs to, for the sign-in form.
///
/// # Errors
/// `Ok(None)` when the token is not valid; [`PageError::Internal`] when the storage fails.
pub async fn authenticate(
    access: &AccessService,
    secret: &str,
) -> Result<Option<Authenticated>, PageError> {
    match access.authenticate(secret).await {
        Ok(authenticated) => Ok(Some(authenticated)),
        Err(AuthenticationError::Repository(error)) => Err(PageError::internal(&error)),
        Err(
            AuthenticationError::Malformed(_)
            | AuthenticationError::Unknown
            | AuthenticationError::Expired
            | AuthenticationError::Revoked,
        ) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_next() {
        for good in ["/", "/deployments?status=failed", "/releases/abc#x"] {
            assert_eq!(local_path(good), Some(good));
        }
        for bad in [
            "",
            "//evil.example",
            "/\\evil.example",
            "https://evil.example/",
            "javascript:alert(1)",
            "/a b",
            "/a\nb",
            "deployments",
        ] {
            assert_eq!(local_path(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_next_path_is_encoded() {
        assert_eq!(
            encode_query_value("/deployments?status=failed&x=1"),
            "/deployments%3Fstatus%3Dfailed%26x%3D1"
        );
    }

    #[test]
    fn csrf_tokens_depend_on_key_and_secret() {
        let key = [7_u8; 64];
        let a = csrf_token(&key, "secret-a").expect("token");
        assert_eq!(a, csrf_token(&key, "secret-a").expect("token"));
        assert_ne!(a, csrf_token(&key, "secret-b").expect("token"));
        assert_ne!(a, csrf_token(&[8_u8; 64], "secret-a").expect("token"));
    }

    fn session(csrf: String) -> SignedIn {
        SignedIn {
            caller: Caller::system("tester"),
            account: "tester".to_owned(),
            csrf,
        }
    }

    #[test]
    fn forms_need_the_session_token_and_this_origin() {
        use actix_web::test::TestRequest;
        let csrf = csrf_token(&[7_u8; 64], "secret").expect("token");
        let signed_in = session(csrf.clone());
        let same = TestRequest::post()
            .insert_header((header::HOST, "kubernaut.example"))
            .insert_header((header::ORIGIN, "https://kubernaut.example"))
            .to_http_request();
        assert!(signed_in.check_form(&same, &csrf).is_ok());
        let no_origin = TestRequest::post()
            .insert_header((header::HOST, "kubernaut.example"))
            .to_http_request();
        assert!(signed_in.check_form(&no_origin, &csrf).is_ok());
        assert!(signed_in.check_form(&same, "").is_err());
        assert!(signed_in.check_form(&same, "not-it").is_err());
        let other = csrf_token(&[7_u8; 64], "other").expect("token");
        assert!(signed_in.check_form(&same, &other).is_err());
        for origin in ["https://evil.example", "null", "kubernaut.example"] {
            let cross = TestRequest::post()
                .insert_header((header::HOST, "kubernaut.example"))
                .insert_header((header::ORIGIN, origin))
                .to_http_request();
            assert!(signed_in.check_form(&cross, &csrf).is_err(), "{origin}");
        }
    }
}
