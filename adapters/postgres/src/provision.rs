//! Creating Kubernaut's database on a fresh server, as `kubernaut serve` and
//! `kubernaut migrate` do when `database.create_if_missing` is set.

use diesel::prelude::*;
use diesel::sql_types::{Bool, Text};
use diesel::{ConnectionError, PgConnection, QueryableByName};

/// Why the database could not be provisioned.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("the database URL names no database")]
    NoDatabaseName,
    #[error("could not connect to the server's maintenance database")]
    Connect(#[source] ConnectionError),
    #[error("could not create the database")]
    Create(#[source] diesel::result::Error),
}

#[derive(QueryableByName)]
struct Exists {
    #[diesel(sql_type = Bool)]
    exists: bool,
}

/// Splits `postgres://user@host:port/name?params` into the URL of the server's
/// `postgres` database and `name`.
fn maintenance_url(url: &str) -> Option<(String, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let (location, query) = match rest.split_once('?') {
        Some((location, query)) => (location, Some(query)),
        None => (rest, None),
    };
    let (server, name) = location.rsplit_once('/')?;
    if name.is_empty() {
        return None;
    }
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    Some((
        format!("{scheme}://{server}/postgres{query}"),
        name.to_owned(),
    ))
}

/// Creates the database `url` names unless it exists, connecting to the server's
/// `postgres` database to do so. Blocking.
///
/// # Errors
/// [`ProvisionError`] when the server cannot be reached or refuses the creation.
pub fn create_database_if_missing(url: &str) -> Result<bool, ProvisionError> {
    if PgConnection::establish(url).is_ok() {
        return Ok(false);
    }
    let (maintenance, name) = maintenance_url(url).ok_or(ProvisionError::NoDatabaseName)?;
    let mut connection = PgConnection::establish(&maintenance).map_err(ProvisionError::Connect)?;
    let found =
        diesel::sql_query("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS exists")
            .bind::<Text, _>(&name)
            .get_result::<Exists>(&mut connection)
            .map_err(ProvisionError::Create)?;
    if found.exists {
        return Ok(false);
    }
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    diesel::sql_query(format!("CREATE DATABASE {quoted}"))
        .execute(&mut connection)
        .map_err(ProvisionError::Create)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_maintenance_url_keeps_credentials_host_and_parameters() {
        assert_eq!(
            maintenance_url("postgres://u:p@db:5432/kubernaut?sslmode=require"),
            Some((
                "postgres://u:p@db:5432/postgres?sslmode=require".to_owned(),
                "kubernaut".to_owned()
            ))
        );
        assert_eq!(maintenance_url("postgres://db:5432/"), None);
    }
}
