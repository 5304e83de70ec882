//! Errors as `application/problem+json` (RFC 9457).
//!
//! Every failure of a request becomes an [`ApiError`]; its response body names the
//! problem type, a title, the status, a detail and, for validation failures, each
//! offending field with the reason. Unexpected failures answer an opaque 500 and send
//! their cause chain to the log.

use std::fmt;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use kubernaut_domain::ports::RepositoryError;
use kubernaut_domain::{AccessDenied, FieldError, ValidationErrors};
use serde::Serialize;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// The problem types Kubernaut answers with; each has a stable URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemType {
    Validation,
    MalformedBody,
    Unauthorized,
    Forbidden,
    TooManyRequests,
    UnsupportedMediaType,
    PayloadTooLarge,
    NotFound,
    MethodNotAllowed,
    Conflict,
    Unavailable,
    Internal,
}

impl ProblemType {
    fn slug(self) -> &'static str {
        match self {
            Self::Validation => "validation",
            Self::MalformedBody => "malformed-body",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::TooManyRequests => "too-many-requests",
            Self::UnsupportedMediaType => "unsupported-media-type",
            Self::PayloadTooLarge => "payload-too-large",
            Self::NotFound => "not-found",
            Self::MethodNotAllowed => "method-not-allowed",
            Self::Conflict => "conflict",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }

    pub fn uri(self) -> String {
        format!("https://kubernaut.io/problems/{}", self.slug())
    }

    fn status(self) -> StatusCode {
        match self {
            Self::Validation => StatusCode::UNPROCESSABLE_ENTITY,
            Self::MalformedBody => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict => StatusCode::CONFLICT,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn title(self) -> &'static str {
        match self {
            Self::Validation => "The request has invalid fields",
            Self::MalformedBody => "The request could not be read",
            Self::Unauthorized => "Authentication is required",
            Self::Forbidden => "The caller lacks a permission",
            Self::TooManyRequests => "Too many requests",
            Self::UnsupportedMediaType => "The request's content type is not supported",
            Self::PayloadTooLarge => "The request body is too large",
            Self::NotFound => "Not found",
            Self::MethodNotAllowed => "The method is not allowed on this resource",
            Self::Conflict => "The request conflicts with the current state",
            Self::Unavailable => "A dependency is unavailable",
            Self::Internal => "Internal server error",
        }
    }
}

/// The JSON body of a problem response.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// `https://kubernaut.io/problems/<slug>`, one per kind of problem.
    #[serde(rename = "type")]
    #[schema(format = "uri")]
    pub problem_type: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    /// For validation problems: each offending field and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<crate::openapi::FieldError>)]
    pub errors: Vec<FieldError>,
    /// For conflicts: the id of the existing resource the request collides with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub existing_id: Option<String>,
}

/// The header a problem answers with besides its content type.
#[derive(Debug, Clone, Copy)]
enum ExtraHeader {
    Allow(&'static str),
    RetryAfter(u64),
    BearerChallenge,
}

/// Every way a request can fail.
#[derive(Debug)]
pub struct ApiError {
    kind: ProblemType,
    detail: String,
    errors: Vec<FieldError>,
    existing_id: Option<String>,
    header: Option<ExtraHeader>,
    cause: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl ApiError {
    pub fn new(kind: ProblemType, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            errors: Vec::new(),
            existing_id: None,
            header: None,
            cause: None,
        }
    }

    /// 422 with every field error.
    pub fn validation(errors: ValidationErrors) -> Self {
        let detail = errors.to_string();
        Self {
            errors: errors.fields().to_vec(),
            ..Self::new(ProblemType::Validation, detail)
        }
    }

    /// 400 for a request whose body or parameters cannot be read, naming the field
    /// when one is to blame.
    pub fn malformed(errors: ValidationErrors) -> Self {
        let detail = errors.to_string();
        Self {
            errors: errors.fields().to_vec(),
            ..Self::new(ProblemType::MalformedBody, detail)
        }
    }

    /// 401 with a `WWW-Authenticate: Bearer` challenge. The detail must not say
    /// whether a token is unknown, expired or revoked.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self {
            header: Some(ExtraHeader::BearerChallenge),
            ..Self::new(ProblemType::Unauthorized, detail)
        }
    }

    /// 403 naming the permission the caller lacks.
    pub fn forbidden(denied: &AccessDenied) -> Self {
        Self::new(ProblemType::Forbidden, denied.to_string())
    }

    /// 429 with `Retry-After` in whole seconds (at least 1); the detail says which
    /// limit was reached (`why`) and when to retry.
    pub fn too_many_requests(retry_after: Duration, why: &str) -> Self {
        let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        let seconds = seconds.max(1);
        Self {
            header: Some(ExtraHeader::RetryAfter(seconds)),
            ..Self::new(
                ProblemType::TooManyRequests,
                format!("{why}; retry in {seconds} s"),
            )
        }
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::NotFound, detail)
    }

    pub fn conflict(detail: impl Into<String>, existing_id: impl fmt::Display) -> Self {
        Self {
            existing_id: Some(existing_id.to_string()),
            ..Self::new(ProblemType::Conflict, detail)
        }
    }

    pub fn method_not_allowed(allow: &'static str) -> Self {
        Self {
            header: Some(ExtraHeader::Allow(allow)),
            ..Self::new(
                ProblemType::MethodNotAllowed,
                format!("this resource allows {allow}"),
            )
        }
    }

    /// A 500 whose cause goes to the log, never to the client.
    pub fn internal(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self {
            cause: Some(cause.into()),
            ..Self::new(
                ProblemType::Internal,
                "the server failed to handle the request; the failure is logged",
            )
        }
    }

    /// A failure of the storage: 503 with `Retry-After` when it could not be reached
    /// (the request may well succeed shortly), else a 500. The cause goes to the log.
    pub fn repository(error: RepositoryError) -> Self {
        if error.is_unavailable() {
            Self {
                header: Some(ExtraHeader::RetryAfter(1)),
                ..Self::unavailable("the database does not answer; try again shortly", error)
            }
        } else {
            Self::internal(error)
        }
    }

    /// A 503 for a dependency that does not answer; the cause goes to the log.
    pub fn unavailable(
        detail: impl Into<String>,
        cause: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            cause: Some(cause.into()),
            ..Self::new(ProblemType::Unavailable, detail)
        }
    }

    /// This error with a `Retry-After` of `seconds`.
    #[must_use]
    pub fn with_retry_after(self, seconds: u64) -> Self {
        Self {
            header: Some(ExtraHeader::RetryAfter(seconds)),
            ..self
        }
    }

    pub fn kind(&self) -> ProblemType {
        self.kind
    }

    pub fn problem(&self) -> Problem {
        Problem {
            problem_type: self.kind.uri(),
            title: self.kind.title(),
            status: self.kind.status().as_u16(),
            detail: self.detail.clone(),
            errors: self.errors.clone(),
            existing_id: self.existing_id.clone(),
        }
    }
}

impl From<AccessDenied> for ApiError {
    fn from(denied: AccessDenied) -> Self {
        Self::forbidden(&denied)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.title(), self.detail)
    }
}

impl std::error::Error for ApiError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|cause| cause as &(dyn std::error::Error + 'static))
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.kind.status()
    }

    fn error_response(&self) -> HttpResponse {
        if let Some(cause) = &self.cause {
            let mut chain = cause.to_string();
            let mut source = cause.source();
            while let Some(next) = source {
                chain.push_str(": ");
                chain.push_str(&next.to_string());
                source = next.source();
            }
            tracing::error!(problem = self.kind.slug(), cause = %chain, "request failed");
        }
        let mut response = HttpResponse::build(self.status_code());
        response.insert_header((header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON)));
        match self.header {
            Some(ExtraHeader::Allow(allow)) => {
                response.insert_header((header::ALLOW, HeaderValue::from_static(allow)));
            }
            Some(ExtraHeader::RetryAfter(seconds)) => {
                response.insert_header((header::RETRY_AFTER, seconds.to_string()));
            }
            Some(ExtraHeader::BearerChallenge) => {
                response.insert_header((
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"kubernaut\""),
                ));
            }
            None => {}
        }
        response.json(self.problem())
    }
}

#[cfg(test)]
mod tests {
    use actix_web::body::to_bytes;

    use super::*;

    async fn body_of(error: &ApiError) -> (StatusCode, String, serde_json::Value) {
        let response = error.error_response();
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = to_bytes(response.into_body()).await.expect("body");
        (
            status,
            content_type,
            serde_json::from_slice(&bytes).expect("json"),
        )
    }

    #[tokio::test]
    async fn a_validation_problem_names_each_field_and_reason() {
        let mut errors = ValidationErrors::new();
        errors.push(FieldError::new("service", "must not be empty"));
        errors.push(FieldError::new("image", "is not an image reference"));
        let (status, content_type, body) = body_of(&ApiError::validation(errors)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(content_type, PROBLEM_JSON);
        assert_eq!(body["type"], "https://kubernaut.io/problems/validation");
        assert_eq!(body["status"], 422);
        assert_eq!(body["title"], "The request has invalid fields");
        assert_eq!(body["errors"][0]["field"], "service");
        assert_eq!(body["errors"][1]["reason"], "is not an image reference");
        assert!(
            body["detail"]
                .as_str()
                .is_some_and(|d| d.contains("service"))
        );
    }

    #[tokio::test]
    async fn an_internal_problem_hides_its_cause() {
        let error = ApiError::internal(std::io::Error::other("password=hunter2 leaked"));
        let (status, _, body) = body_of(&error).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!body.to_string().contains("hunter2"));
        assert!(body.get("errors").is_none());
    }

    #[tokio::test]
    async fn an_unreachable_database_is_a_503_to_retry_and_other_storage_failures_a_500() {
        let away = ApiError::repository(RepositoryError::unavailable(
            "no database connection is available",
            std::io::Error::other("connection refused"),
        ));
        let response = away.error_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()),
            Some("1")
        );
        let broken = ApiError::repository(RepositoryError::new("a query failed"));
        assert_eq!(
            broken.error_response().status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[tokio::test]
    async fn a_conflict_names_the_existing_resource() {
        let (status, _, body) = body_of(&ApiError::conflict("taken", "abc")).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(body["existing_id"], "abc");
    }

    #[tokio::test]
    async fn method_not_allowed_says_what_is() {
        let response = ApiError::method_not_allowed("GET, DELETE").error_response();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(
            response
                .headers()
                .get(header::ALLOW)
                .and_then(|v| v.to_str().ok()),
            Some("GET, DELETE")
        );
    }
}
