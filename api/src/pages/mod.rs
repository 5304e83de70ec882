//! The server-rendered pages: what runs where, the releases, the deployments and why
//! one failed. HTML from askama templates in `api/templates`, one stylesheet of our
//! own, and a few lines of script that make a running deployment's timeline live.

mod audit;
mod charts;
mod clusters;
mod delivery;
mod deploy;
mod deployments;
mod home;
mod releases;
mod rollout;
mod services;
mod sign_in;
mod view;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, ContentType};
use actix_web::web::{self, ServiceConfig};
use actix_web::{HttpResponse, ResponseError};
use askama::Template;
use kubernaut_domain::access::AccessDenied;

use crate::session::SessionView;

/// The stylesheet every page links to, served from `/static/kubernaut.css`.
pub const STYLESHEET: &str = include_str!("../../static/kubernaut.css");

/// The script that follows a running deployment, served from `/static/timeline.js`
/// (a file, not inline, so that `Content-Security-Policy: default-src 'self'` allows it).
pub const TIMELINE_SCRIPT: &str = include_str!("../../static/timeline.js");

/// Registers the pages and their stylesheet. Use inside `configure(..)`.
pub fn configure(config: &mut ServiceConfig) {
    config
        .route("/", web::get().to(home::show))
        .route("/static/kubernaut.css", web::get().to(stylesheet))
        .route("/static/timeline.js", web::get().to(timeline_script))
        .route("/sign-in", web::get().to(sign_in::form))
        .route("/sign-in", web::post().to(sign_in::submit))
        .route("/sign-out", web::post().to(sign_in::sign_out))
        .route("/audit", web::get().to(audit::list))
        .route("/releases", web::get().to(releases::list))
        .route("/releases/{id}", web::get().to(releases::show))
        .route("/releases/{id}/deploy", web::get().to(deploy::preview))
        .route("/releases/{id}/deploy", web::post().to(deploy::submit))
        .route("/deployments", web::get().to(deployments::list))
        .route("/deployments/{id}", web::get().to(deployments::show))
        .route(
            "/deployments/{id}/rollout",
            web::get().to(rollout::fragment),
        )
        .route(
            "/deployments/{id}/cancel",
            web::post().to(deployments::cancel),
        )
        .route(
            "/deployments/{id}/rollback",
            web::post().to(deployments::rollback),
        )
        .route("/services/{name}", web::get().to(services::show))
        .route("/clusters", web::get().to(clusters::list));
}

async fn stylesheet() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/css; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .body(STYLESHEET)
}

async fn timeline_script() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/javascript; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .body(TIMELINE_SCRIPT)
}

/// Why a page could not be shown; answered with an HTML page in the common layout
/// (or, for a visitor who is not signed in, a redirect to the sign-in form).
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// Not signed in: `303 See Other` to this location (`/sign-in?next=...`).
    #[error("sign in first")]
    SignIn(String),
    /// Signed in, but not allowed; the text names what is missing.
    #[error("{0}")]
    Forbidden(String),
    /// The id or name in the path names nothing (or nothing any more).
    #[error("{0}")]
    NotFound(String),
    /// Something behind the page failed; the cause went to the log.
    #[error("the page could not be built; the cause is in Kubernaut's log")]
    Internal,
}

impl PageError {
    /// Logs `error` with its causes and hides them from the visitor.
    pub fn internal(error: &(dyn std::error::Error + 'static)) -> Self {
        let mut chain = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            chain.push_str(": ");
            chain.push_str(&cause.to_string());
            source = cause.source();
        }
        tracing::error!(error = %chain, "a page failed");
        Self::Internal
    }
}

impl From<AccessDenied> for PageError {
    fn from(denied: AccessDenied) -> Self {
        Self::Forbidden(format!("{denied}."))
    }
}

/// Renders `page`, or a plain-text `fallback` when the template fails.
pub(crate) fn html(status: StatusCode, page: &impl Template, fallback: &str) -> HttpResponse {
    match page.render() {
        Ok(html) => HttpResponse::build(status)
            .content_type(ContentType::html())
            .body(html),
        Err(error) => {
            tracing::error!(%error, "a page could not be rendered");
            HttpResponse::build(status)
                .content_type(ContentType::plaintext())
                .body(fallback.to_owned())
        }
    }
}

/// The page shown for a [`PageError`].
#[derive(Debug, Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    section: &'static str,
    session: Option<SessionView>,
    title: &'a str,
    detail: String,
}

impl ResponseError for PageError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::SignIn(_) => StatusCode::SEE_OTHER,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let title = match self {
            Self::SignIn(location) => {
                return HttpResponse::SeeOther()
                    .insert_header((header::LOCATION, location.as_str()))
                    .insert_header((header::CACHE_CONTROL, "no-store"))
                    .finish();
            }
            Self::Forbidden(_) => "Not allowed",
            Self::NotFound(_) => "Not found",
            Self::Internal => "Something went wrong",
        };
        let page = ErrorPage {
            section: "",
            session: None,
            title,
            detail: self.to_string(),
        };
        html(self.status_code(), &page, &self.to_string())
    }
}

#[cfg(test)]
mod tests;
