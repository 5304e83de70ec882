//! `/audit`: the audit trail, newest first, for admins.

use actix_web::web::{self, Data};
use askama::Template;
use askama_web::WebTemplate;
use kubernaut_domain::access_service::{AccessError, AccessService};
use kubernaut_domain::validation::storable_text;
use kubernaut_domain::{Actor, AuditAction, AuditEntry, AuditQuery};

use super::PageError;
use super::view::{FilterError, When, filled, parse_cursor, parse_filter};
use crate::session::{SessionView, SignedIn};

/// The filters of the audit trail, as the form sends them.
#[derive(Debug, Default, serde::Deserialize)]
pub struct AuditFilters {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub target: Option<String>,
    pub cursor: Option<String>,
}

/// A choice of the action filter.
#[derive(Debug)]
pub struct ActionChoice {
    pub value: &'static str,
    pub selected: bool,
}

/// One record of the trail.
#[derive(Debug)]
pub struct AuditRow {
    pub at: When,
    pub actor: String,
    pub action: String,
    pub target: String,
    /// The page of the object changed, when it has one.
    pub target_link: Option<String>,
    pub request_id: String,
    pub source: String,
    /// The details as compact JSON; empty when there are none.
    pub details: String,
}

impl From<&AuditEntry> for AuditRow {
    fn from(entry: &AuditEntry) -> Self {
        let target_link = entry.target.split_once('/').and_then(|(kind, id)| {
            let page = match kind {
                "release" => "releases",
                "deployment" => "deployments",
                _ => return None,
            };
            let safe = !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
            safe.then(|| format!("/{page}/{id}"))
        });
        Self {
            at: entry.at.into(),
            actor: entry.actor.to_string(),
            action: entry.action.as_str().to_owned(),
            target: entry.target.clone(),
            target_link,
            request_id: entry.request_id.clone().unwrap_or_default(),
            source: entry.source.clone().unwrap_or_default(),
            details: if entry.details.is_null() {
                String::new()
            } else {
                entry.details.to_string()
            },
        }
    }
}

#[derive(Debug, Template, WebTemplate)]
#[template(path = "audit.html")]
pub struct AuditPage {
    section: &'static str,
    session: Option<SessionView>,
    actor: String,
    action: String,
    target: String,
    actions: Vec<ActionChoice>,
    errors: Vec<FilterError>,
    entries: Vec<AuditRow>,
    next_cursor: Option<String>,
    paged: bool,
}

/// `GET /audit?actor=&action=&target=&cursor=` (admins only)
///
/// # Errors
/// [`PageError::Forbidden`] for anyone but admins.
pub async fn list(
    signed_in: SignedIn,
    access: Data<AccessService>,
    filters: web::Query<AuditFilters>,
) -> Result<AuditPage, PageError> {
    let filters = filters.into_inner();
    let mut errors = Vec::new();
    let query = AuditQuery {
        actor: parse_filter(&mut errors, "actor", filters.actor.as_ref(), Actor::parse),
        action: parse_filter(&mut errors, "action", filters.action.as_ref(), |text| {
            AuditAction::parse(text).ok_or("is not an action of the audit trail")
        }),
        target: parse_filter(&mut errors, "target", filters.target.as_ref(), |text| {
            storable_text(text).map(str::to_owned)
        }),
        after: parse_cursor(&mut errors, filters.cursor.as_ref()),
        ..AuditQuery::default()
    };
    let (entries, next_cursor) = if errors.is_empty() {
        let page = access
            .audit_trail(&query, &signed_in.caller)
            .await
            .map_err(|error| match error {
                AccessError::Forbidden(denied) => PageError::from(denied),
                other => PageError::internal(&other),
            })?;
        (
            page.items.iter().map(AuditRow::from).collect(),
            page.next_cursor.map(|c| c.encode()),
        )
    } else {
        // Even a bad filter must not show the page's shape to non-admins.
        signed_in
            .caller
            .require(kubernaut_domain::Permission::Administer)?;
        (Vec::new(), None)
    };
    let text = |value: Option<&String>| filled(value).unwrap_or_default().to_owned();
    let action = text(filters.action.as_ref());
    Ok(AuditPage {
        section: "audit",
        session: Some(signed_in.view()),
        actor: text(filters.actor.as_ref()),
        target: text(filters.target.as_ref()),
        actions: AuditAction::ALL
            .into_iter()
            .map(|a| ActionChoice {
                value: a.as_str(),
                selected: a.as_str() == action,
            })
            .collect(),
        action,
        errors,
        entries,
        next_cursor,
        paged: query.after.is_some(),
    })
}
