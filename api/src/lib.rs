#![doc = include_str!("../README.md")]

pub mod access;
pub mod audit;
pub mod auth;
pub mod body;
pub mod clusters;
pub mod deployments;
pub mod dora;
pub mod health;
pub mod metrics;
pub mod notifications;
pub mod openapi;
pub mod pages;
mod params;
pub mod problem;
pub mod rate_limit;
pub mod releases;
pub mod session;

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::web::{self, Data, ServiceConfig};
use actix_web::{HttpRequest, HttpResponse, Resource};
use kubernaut_domain::access_service::AccessService;
use kubernaut_domain::deployment_service::DeploymentService;
use kubernaut_domain::{ReleaseService, ValidationErrors};
use utoipa_swagger_ui::SwaggerUi;

use crate::auth::AuthState;
pub use crate::auth::{Authenticated, SecuritySettings, security_headers, security_headers_for};
pub use crate::metrics::Metrics;
use crate::problem::ApiError;
use crate::rate_limit::{FailedAuthLimiter, MutationLimiter, StreamLimiter};

/// The domain services the HTTP edge serves.
#[derive(Debug, Clone)]
pub struct ApiServices {
    pub releases: ReleaseService,
    pub deployments: DeploymentService,
    pub access: AccessService,
    pub security: SecuritySettings,
    /// This replica's figures, served at `/metrics` (to a token that may read them).
    pub metrics: Metrics,
}

/// Registers every route, the services and the error handlers that turn extractor
/// failures into problem+json. Use inside `App::new().configure(..)`.
pub fn configure(services: ApiServices) -> impl FnOnce(&mut ServiceConfig) {
    move |config: &mut ServiceConfig| {
        let limiter = MutationLimiter::shared(&services.security);
        let streams = StreamLimiter::shared(&services.security);
        let failures = FailedAuthLimiter::shared(&services.security);
        config
            .app_data(Data::new(AuthState::new(services.security.clone())))
            .app_data(Data::new(services.security))
            .app_data(Data::new(limiter))
            .app_data(Data::new(streams))
            .app_data(Data::new(failures))
            .app_data(Data::new(services.access))
            .app_data(Data::new(services.releases))
            .app_data(Data::new(services.deployments))
            .app_data(Data::new(services.metrics))
            .app_data(web::QueryConfig::default().error_handler(query_error))
            .app_data(web::PathConfig::default().error_handler(path_error))
            .app_data(web::JsonConfig::default().error_handler(json_error))
            .route("/healthz", web::get().to(health::healthz))
            .route("/readyz", web::get().to(health::readyz))
            .route("/metrics", web::get().to(metrics::scrape))
            .service(
                api_resource("/api/releases", "GET, POST")
                    .route(web::get().to(releases::list))
                    .route(web::post().to(releases::create)),
            )
            .service(
                api_resource("/api/releases/{id}", "GET, DELETE")
                    .route(web::get().to(releases::get))
                    .route(web::delete().to(releases::delete)),
            )
            .service(
                api_resource("/api/releases/{id}/manifest", "GET")
                    .route(web::get().to(clusters::preview)),
            )
            .service(
                api_resource("/api/releases/{id}/diff", "GET").route(web::get().to(clusters::diff)),
            )
            .service(
                api_resource("/api/deployments", "GET, POST")
                    .route(web::get().to(deployments::list))
                    .route(web::post().to(deployments::create)),
            )
            .service(
                api_resource("/api/deployments/{id}", "GET").route(web::get().to(deployments::get)),
            )
            .service(
                api_resource("/api/deployments/{id}/events", "GET")
                    .route(web::get().to(deployments::events)),
            )
            .service(
                api_resource("/api/deployments/{id}/notifications", "GET")
                    .route(web::get().to(notifications::list)),
            )
            .service(
                api_resource("/api/deployments/{id}/cancel", "POST")
                    .route(web::post().to(deployments::cancel)),
            )
            .service(
                api_resource("/api/deployments/{id}/rollback", "POST")
                    .route(web::post().to(deployments::rollback)),
            )
            .service(
                api_resource("/api/placements", "GET")
                    .route(web::get().to(deployments::placements)),
            )
            .service(api_resource("/api/dora", "GET").route(web::get().to(dora::figures)))
            .service(api_resource("/api/clusters", "GET").route(web::get().to(clusters::list)))
            .service(
                api_resource("/api/openapi.json", "GET")
                    .route(web::get().to(openapi::openapi_document)),
            )
            .service(web::redirect(
                openapi::UI_PATH,
                format!("{}/", openapi::UI_PATH),
            ))
            .service(
                SwaggerUi::new(format!("{}/{{_:.*}}", openapi::UI_PATH))
                    .config(utoipa_swagger_ui::Config::from(openapi::DOCUMENT_PATH)),
            )
            .configure(access::configure)
            .configure(audit::configure)
            .configure(pages::configure)
            .default_service(web::to(not_found));
    }
}

/// The resource at `path` under `/api`: any method but those in `allow` (its routes')
/// is answered 405 with `Allow`.
pub(crate) fn api_resource(path: &str, allow: &'static str) -> Resource {
    web::resource(path).default_service(web::to(move || async move {
        Err::<HttpResponse, _>(ApiError::method_not_allowed(allow))
    }))
}

async fn not_found(request: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found(format!(
        "nothing is served at {}",
        request.path()
    )))
}

fn query_error(error: QueryPayloadError, _: &HttpRequest) -> actix_web::Error {
    let reason = match &error {
        QueryPayloadError::Deserialize(e) => e.to_string(),
        other => other.to_string(),
    };
    ApiError::malformed(ValidationErrors::single("query", reason)).into()
}

fn path_error(error: PathError, _: &HttpRequest) -> actix_web::Error {
    ApiError::not_found(error.to_string()).into()
}

fn json_error(error: JsonPayloadError, _: &HttpRequest) -> actix_web::Error {
    ApiError::malformed(ValidationErrors::single("body", error.to_string())).into()
}
