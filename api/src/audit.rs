//! `GET /api/audit`: the audit trail, newest first, in keyset pages (admin only).

use actix_web::HttpResponse;
use actix_web::web::{self, Data, ServiceConfig};
use kubernaut_domain::access_service::AccessService;
use kubernaut_domain::validation::storable_text;
use kubernaut_domain::{Actor, AuditAction, AuditEntry, AuditQuery, ValidationErrors};
use serde::{Deserialize, Serialize};

use crate::access::access_error;
use crate::auth::Authenticated;
use crate::params::{parse_page, parse_time};
use crate::problem::ApiError;

/// Registers the routes of this module.
pub fn configure(config: &mut ServiceConfig) {
    config.route("/api/audit", web::get().to(list));
}

/// The query string of `GET /api/audit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditParameters {
    actor: Option<String>,
    action: Option<String>,
    target: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<String>,
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
#[derive(Debug, Serialize)]
pub struct AuditPageBody {
    pub items: Vec<AuditEntry>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// `GET /api/audit?actor=&action=&target=&since=&until=&limit=&cursor=`
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
