//! `GET /api/audit`: the audit trail, newest first, in keyset pages (admin only).

use actix_web::HttpResponse;
use actix_web::web::{self, Data, ServiceConfig};
use kubernaut_domain::access_service::AccessService;
use kubernaut_domain::validation::storable_text;
use kubernaut_domain::{Actor, AuditAction, AuditEntry, AuditQuery, ValidationErrors};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::access::access_error;
use crate::api_resource;
use crate::auth::Authenticated;
use crate::params::{parse_page, parse_time};
use crate::problem::ApiError;

/// Registers the routes of this module.
pub fn configure(config: &mut ServiceConfig) {
    config.service(api_resource("/api/audit", "GET").route(web::get().to(list)));
}

/// The query string of `GET /api/audit`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditParameters {
    /// Only this actor's changes.
    actor: Option<String>,
    /// Only this kind of change.
    #[param(value_type = Option<crate::openapi::AuditAction>)]
    action: Option<String>,
    /// Only changes of this object (`release/<id>`, `account/<name>`, ...; 1 to 300 characters).
    target: Option<String>,
    /// Only changes at or after this time.
    #[param(value_type = Option<chrono::DateTime<chrono::Utc>>)]
    since: Option<String>,
    /// Only changes before this time.
    #[param(value_type = Option<chrono::DateTime<chrono::Utc>>)]
    until: Option<String>,
    /// The page's size: 1 to 500 (50 when left out).
    #[param(value_type = Option<u16>, minimum = 1, maximum = 500)]
    limit: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// The longest `target` filter.
const MAX_TARGET: usize = 300;

impl AuditParameters {
    fn into_query(self) -> Result<AuditQuery, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        let actor = self
            .actor
            .and_then(|name| errors.check("actor", Actor::parse(&name)));
        let action = self.action.and_then(|text| {
            errors.check(
                "action",
                AuditAction::parse(&text).ok_or_else(|| {
                    format!(
                        "must be one of {}",
                        AuditAction::ALL.map(AuditAction::as_str).join(", ")
                    )
                }),
            )
        });
        let target = self.target.and_then(|text| {
            errors.check(
                "target",
                if text.is_empty() || text.len() > MAX_TARGET {
                    Err("must be 1 to 300 characters".to_owned())
                } else {
                    storable_text(&text)
                        .map(str::to_owned)
                        .map_err(|nul| nul.to_string())
                },
            )
        });
        let since = self
            .since
            .and_then(|t| errors.check("since", parse_time(&t)));
        let until = self
            .until
            .and_then(|t| errors.check("until", parse_time(&t)));
        let (limit, after) = parse_page(&mut errors, self.limit, self.cursor);
        errors.into_result(|| AuditQuery {
            actor,
            action,
            target,
            since,
            until,
            after,
            limit,
        })
    }
}

/// A page of the audit trail.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AuditPage)]
pub struct AuditPageBody {
    #[schema(value_type = Vec<crate::openapi::AuditEntry>)]
    pub items: Vec<AuditEntry>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// `GET /api/audit?actor=&action=&target=&since=&until=&limit=&cursor=`
#[utoipa::path(
    get,
    path = "/api/audit",
    operation_id = "listAudit",
    summary = "Read the audit trail",
    tag = "audit",
    params(AuditParameters),
    responses(
        (status = 200, description = "A page of the audit trail, newest first (admin only)", body = AuditPageBody),
        (status = 400, description = "A bad query parameter (`errors` names it)"),
    ),
)]
pub async fn list(
    Authenticated(caller): Authenticated,
    access: Data<AccessService>,
    parameters: web::Query<AuditParameters>,
) -> Result<HttpResponse, ApiError> {
    let query = parameters
        .into_inner()
        .into_query()
        .map_err(ApiError::malformed)?;
    let page = access
        .audit_trail(&query, &caller)
        .await
        .map_err(access_error)?;
    Ok(HttpResponse::Ok().json(AuditPageBody {
        items: page.items,
        next_cursor: page.next_cursor.map(|c| c.encode()),
    }))
}
