//! How values are written to and read from SQLite's columns, and raw statements with
//! binds of those types.

use chrono::{DateTime, SubsecRound as _, Utc};
use diesel::query_builder::{BoxedSqlQuery, SqlQuery};
use diesel::sql_types::{BigInt, Binary, Nullable, Text};
use diesel::sqlite::Sqlite;
use kubernaut_domain::ports::RepositoryError;
use uuid::Uuid;

/// A timestamp as the tables store it: UTC, microseconds (as PostgreSQL's timestamptz
/// keeps them, rounded), one fixed shape so that the text sorts as the time does.
pub(crate) fn time_text(at: DateTime<Utc>) -> String {
    at.round_subsecs(6)
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

pub(crate) fn optional_time_text(at: Option<DateTime<Utc>>) -> Option<String> {
    at.map(time_text)
}

/// A stored timestamp.
///
/// # Errors
/// When the text is not one (the table was changed behind Kubernaut's back).
pub(crate) fn parse_time(text: &str) -> Result<DateTime<Utc>, RepositoryError> {
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|error| {
            RepositoryError::caused_by(format!("the stored time {text:?} is not valid"), error)
        })
}

pub(crate) fn parse_optional_time(
    text: Option<&str>,
) -> Result<Option<DateTime<Utc>>, RepositoryError> {
    text.map(parse_time).transpose()
}

/// A uuid as the tables store it: lowercase and hyphenated, whose text order is the
/// byte order PostgreSQL sorts uuids by.
pub(crate) fn uuid_text(id: Uuid) -> String {
    id.as_hyphenated().to_string()
}

/// A stored uuid.
///
/// # Errors
/// When the text is not one.
pub(crate) fn parse_uuid(text: &str) -> Result<Uuid, RepositoryError> {
    Uuid::parse_str(text).map_err(|error| {
        RepositoryError::caused_by(format!("the stored id {text:?} is not a uuid"), error)
    })
}

/// A value bound to a `?` of a raw statement.
#[derive(Debug, Clone)]
pub(crate) enum Bind {
    Text(String),
    NullableText(Option<String>),
    Integer(i64),
    NullableInteger(Option<i64>),
    Blob(Vec<u8>),
}

impl From<Option<i64>> for Bind {
    fn from(number: Option<i64>) -> Self {
        Self::NullableInteger(number)
    }
}

impl From<String> for Bind {
    fn from(text: String) -> Self {
        Self::Text(text)
    }
}

impl From<&str> for Bind {
    fn from(text: &str) -> Self {
        Self::Text(text.to_owned())
    }
}

impl From<Option<String>> for Bind {
    fn from(text: Option<String>) -> Self {
        Self::NullableText(text)
    }
}

impl From<i64> for Bind {
    fn from(number: i64) -> Self {
        Self::Integer(number)
    }
}

impl From<bool> for Bind {
    fn from(flag: bool) -> Self {
        Self::Integer(i64::from(flag))
    }
}

impl From<Vec<u8>> for Bind {
    fn from(bytes: Vec<u8>) -> Self {
        Self::Blob(bytes)
    }
}

pub(crate) type Statement = BoxedSqlQuery<'static, Sqlite, SqlQuery>;

/// `sql` with `binds` bound to its `?`s, in order.
pub(crate) fn statement(sql: impl Into<String>, binds: Vec<Bind>) -> Statement {
    let mut query = diesel::sql_query(sql.into()).into_boxed::<Sqlite>();
    for bind in binds {
        query = match bind {
            Bind::Text(text) => query.bind::<Text, _>(text),
            Bind::NullableText(text) => query.bind::<Nullable<Text>, _>(text),
            Bind::Integer(number) => query.bind::<BigInt, _>(number),
            Bind::NullableInteger(number) => query.bind::<Nullable<BigInt>, _>(number),
            Bind::Blob(bytes) => query.bind::<Binary, _>(bytes),
        };
    }
    query
}

/// A JSON array of `items`, for `IN (SELECT value FROM json_each(?))`: one bind
/// however many items (SQLite has no arrays).
pub(crate) fn json_list<I, S>(items: I) -> String
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    serde_json::Value::Array(
        items
            .into_iter()
            .map(|item| serde_json::Value::String(item.into()))
            .collect(),
    )
    .to_string()
}

/// The statuses of active deployments as an SQL list, for `status IN (...)`.
pub(crate) const ACTIVE_STATUSES: &str = "('queued', 'applying', 'rolling_out')";

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    #[test]
    fn times_are_stored_to_the_microsecond_and_read_back() {
        let at = DateTime::from_timestamp(1_800_000_000, 123_456_700).expect("a time");
        assert_eq!(time_text(at), "2027-01-15T08:00:00.123457Z");
        assert_eq!(
            parse_time(&time_text(at)).expect("a stored time"),
            at.round_subsecs(6)
        );
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn the_text_of_times_and_uuids_sorts_as_they_do() {
        let base = DateTime::from_timestamp(1_800_000_000, 0).expect("a time");
        let mut times: Vec<DateTime<Utc>> = [0, 1, 999_999, 1_000_000, 86_400_000_000, 9]
            .into_iter()
            .map(|micros| base + TimeDelta::microseconds(micros))
            .collect();
        let mut texts: Vec<String> = times.iter().copied().map(time_text).collect();
        times.sort();
        texts.sort();
        assert_eq!(texts, times.into_iter().map(time_text).collect::<Vec<_>>());

        let mut ids: Vec<Uuid> = (0..50).map(|_| Uuid::new_v4()).collect();
        let mut texts: Vec<String> = ids.iter().copied().map(uuid_text).collect();
        ids.sort();
        texts.sort();
        assert_eq!(texts, ids.into_iter().map(uuid_text).collect::<Vec<_>>());
    }
}
