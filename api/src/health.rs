//! `/healthz` (the process answers) and `/readyz` (its dependencies answer too).

use actix_web::HttpResponse;
use actix_web::web::Data;
use kubernaut_domain::ReleaseService;
use serde_json::json;

use crate::problem::ApiError;

/// `GET /healthz`
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// `GET /readyz`: 503 while the database does not answer.
pub async fn readyz(releases: Data<ReleaseService>) -> Result<HttpResponse, ApiError> {
    releases
        .ready()
        .await
        .map_err(|e| ApiError::unavailable("the database does not answer", e))?;
    Ok(HttpResponse::Ok().json(json!({ "status": "ready", "database": "ok" })))
}
