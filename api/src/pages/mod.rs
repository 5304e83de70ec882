//! The server-rendered pages: what runs where, the releases, the deployments and why
//! one failed. HTML from askama templates in `api/templates`, one stylesheet of our
//! own, and a few lines of script that make a running deployment's timeline live.

mod clusters;
mod deployments;
mod home;
mod releases;
mod services;
mod view;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, ContentType};
use actix_web::web::{self, ServiceConfig};
use actix_web::{HttpResponse, ResponseError};
use askama::Template;

/// The stylesheet every page links to, served from `/static/kubernaut.css`.
pub const STYLESHEET: &str = include_str!("../../static/kubernaut.css");

/// Registers the pages and their stylesheet. Use inside `configure(..)`.
pub fn configure(config: &mut ServiceConfig) {
    config
        .route("/", web::get().to(home::show))
        .route("/static/kubernaut.css", web::get().to(stylesheet))
        .route("/releases", web::get().to(releases::list))
        .route("/releases/{id}", web::get().to(releases::show))
        .route("/deployments", web::get().to(deployments::list))
        .route("/deployments/{id}", web::get().to(deployments::show))
        .route("/services/{name}", web::get().to(services::show))
        .route("/clusters", web::get().to(clusters::list));
}

async fn stylesheet() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/css; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .body(STYLESHEET)
}

/// Why a page could not be shown; answered with an HTML page in the common layout.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
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

/// The page shown for a [`PageError`].
#[derive(Debug, Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    section: &'static str,
    title: &'a str,
    detail: String,
}

impl ResponseError for PageError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let title = match self {
            Self::NotFound(_) => "Not found",
            Self::Internal => "Something went wrong",
        };
        let page = ErrorPage {
            section: "",
            title,
            detail: self.to_string(),
        };
        match page.render() {
            Ok(html) => HttpResponse::build(self.status_code())
                .content_type(ContentType::html())
                .body(html),
            Err(error) => {
                tracing::error!(%error, "the error page could not be rendered");
                HttpResponse::build(self.status_code())
                    .content_type(ContentType::plaintext())
                    .body(self.to_string())
            }
        }
    }
}
