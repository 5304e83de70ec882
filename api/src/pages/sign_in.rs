//! `/sign-in` and `/sign-out`: a session starts with an API token pasted into a form
//! (single sign-on is not configured) and ends with the sign-out button.

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;

use super::{PageError, html};
use crate::auth::SESSION_COOKIE;
use crate::session::{self, SessionView, SignedIn, local_path};

/// The query of `GET /sign-in`.
#[derive(Debug, Default, serde::Deserialize)]
pub struct SignInQuery {
    pub next: Option<String>,
}

/// The sign-in form as sent. The token is never echoed back nor logged.
#[derive(serde::Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    pub token: String,
    #[serde(default)]
    pub next: Option<String>,
}

impl std::fmt::Debug for SignInForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignInForm")
            .field("token", &"<redacted>")
            .field("next", &self.next)
            .finish()
    }
}

/// The sign-out form as sent.
#[derive(Debug, Default, serde::Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

#[derive(Debug, Template)]
#[template(path = "sign_in.html")]
struct SignInPage {
    section: &'static str,
    session: Option<SessionView>,
    /// Where to go once signed in: a local path.
    next: String,
    /// Why the last attempt failed.
    error: Option<&'static str>,
    signed_out: bool,
}

fn next_of(next: Option<&String>) -> String {
    next.and_then(|next| local_path(next.trim()))
        .unwrap_or("/")
        .to_owned()
}

fn page(status: StatusCode, page: &SignInPage) -> HttpResponse {
    let mut response = html(status, page, "Sign in to Kubernaut");
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}

/// `GET /sign-in?next=`
pub async fn form(query: web::Query<SignInQuery>, request: HttpRequest) -> HttpResponse {
    let signed_out = request.query_string().split('&').any(|p| p == "signed-out");
    page(
        StatusCode::OK,
        &SignInPage {
            section: "sign-in",
            session: None,
            next: next_of(query.next.as_ref()),
            error: None,
            signed_out,
        },
    )
}

/// `POST /sign-in` (`token`, `next`): sets the session cookie and goes to `next`.
///
/// # Errors
/// [`PageError`] when the form comes from another site or the storage fails.
pub async fn submit(
    request: HttpRequest,
    form: web::Form<SignInForm>,
) -> Result<HttpResponse, PageError> {
    session::check_origin(&request)?;
    let (access, settings) = session::services(&request)?;
    let form = form.into_inner();
    let next = next_of(form.next.as_ref());
    let token = form.token.trim();
    let authenticated = if token.is_empty() {
        None
    } else {
        session::authenticate(&access, token).await?
    };
    let Some(authenticated) = authenticated else {
        let error = if token.is_empty() {
            "Paste a token to sign in."
        } else {
            "That token is not valid: it may be mistyped, expired or revoked."
        };
        return Ok(page(
            StatusCode::UNAUTHORIZED,
            &SignInPage {
                section: "sign-in",
                session: None,
                next,
                error: Some(error),
                signed_out: false,
            },
        ));
    };
    let cookie = session::session_cookie(token, authenticated.expires_at, &settings)?;
    tracing::info!(account = %authenticated.account, token = %authenticated.token, "signed in to the web UI");
    Ok(HttpResponse::SeeOther()
        .cookie(cookie)
        .insert_header((header::LOCATION, next))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish())
}

/// `POST /sign-out` (`csrf`): removes the session cookie. The token stays valid for
/// the API; revoke it there to end it everywhere.
///
/// # Errors
/// [`PageError::Forbidden`] when the CSRF token or the origin is wrong.
pub async fn sign_out(
    request: HttpRequest,
    signed_in: SignedIn,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, PageError> {
    signed_in.check_form(&request, &form.csrf)?;
    let secure = session::services(&request)
        .map(|(_, settings)| settings.secure_cookies)
        .unwrap_or(true);
    let mut removal = actix_web::cookie::Cookie::build(SESSION_COOKIE, "")
        .http_only(true)
        .same_site(actix_web::cookie::SameSite::Strict)
        .secure(secure)
        .path("/")
        .finish();
    removal.make_removal();
    tracing::info!(account = %signed_in.account, "signed out of the web UI");
    Ok(HttpResponse::SeeOther()
        .cookie(removal)
        .insert_header((header::LOCATION, "/sign-in?signed-out"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish())
}
