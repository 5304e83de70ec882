//! Query parameters shared by the listings: the time window and the keyset page.

use chrono::{DateTime, Utc};
use kubernaut_domain::pagination::InvalidPageLimit;
use kubernaut_domain::{Cursor, PageLimit, ValidationErrors};

/// The parsed `created_after`, `created_before`, `limit` and `cursor` of a listing.
#[derive(Debug, Default)]
pub(crate) struct Window {
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    pub limit: PageLimit,
    pub after: Option<Cursor>,
}

impl Window {
    /// Parses the raw parameters, recording each bad one in `errors` under its name.
    pub fn parse(
        errors: &mut ValidationErrors,
        created_after: Option<String>,
        created_before: Option<String>,
        limit: Option<String>,
        cursor: Option<String>,
    ) -> Self {
        let created_after =
            created_after.and_then(|t| errors.check("created_after", parse_time(&t)));
        let created_before =
            created_before.and_then(|t| errors.check("created_before", parse_time(&t)));
        let (limit, after) = parse_page(errors, limit, cursor);
        Self {
            created_after,
            created_before,
            limit,
            after,
        }
    }
}

/// Parses `limit` and `cursor`, recording each bad one in `errors` under its name.
pub(crate) fn parse_page(
    errors: &mut ValidationErrors,
    limit: Option<String>,
    cursor: Option<String>,
) -> (PageLimit, Option<Cursor>) {
    let limit = limit
        .and_then(|text| {
            errors.check(
                "limit",
                text.parse::<i64>()
                    .map_err(|_| InvalidPageLimit)
                    .and_then(PageLimit::new),
            )
        })
        .unwrap_or_default();
    let after = cursor.and_then(|c| errors.check("cursor", Cursor::decode(&c)));
    (limit, after)
}

pub(crate) fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| "must be an RFC 3339 time such as 2026-11-24T12:00:00Z".to_owned())
}
