//! A fresh PostgreSQL database per test, so tests never share rows and can run in
//! parallel.
//!
//! The server is the one in `KUBERNAUT_TEST_DATABASE_URL`, by default
//! `postgres://postgres@127.0.0.1:5432/postgres`; that URL's user must be allowed to
//! create databases. The new database is empty: callers run the migrations themselves
//! (this crate cannot depend on the PostgreSQL adapter, whose tests depend on it).

use diesel::{Connection as _, PgConnection, RunQueryDsl as _};
use uuid::Uuid;

/// The variable naming the PostgreSQL server tests may create databases on.
pub const DATABASE_URL_VARIABLE: &str = "KUBERNAUT_TEST_DATABASE_URL";

/// The server used when [`DATABASE_URL_VARIABLE`] is not set.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Why no test database could be made.
#[derive(Debug, thiserror::Error)]
pub enum TestDatabaseError {
    /// The server in [`DATABASE_URL_VARIABLE`] (or the default one) did not answer.
    #[error("cannot connect to the test database server at {url}")]
    Connect {
        url: String,
        #[source]
        source: diesel::ConnectionError,
    },
    /// The server refused to create the database.
    #[error("cannot create the test database {name}")]
    Create {
        name: String,
        #[source]
        source: diesel::result::Error,
    },
}

/// A database that exists for one test and is dropped with this value.
#[derive(Debug)]
pub struct TestDatabase {
    server_url: String,
    url: String,
    name: String,
}

impl TestDatabase {
    /// Creates `kubernaut_test_<uuid>` on the test server. Blocking.
    ///
    /// # Errors
    /// [`TestDatabaseError`] when the server cannot be reached or refuses.
    pub fn create() -> Result<Self, TestDatabaseError> {
        let server_url = without_gss_encryption(
            &std::env::var(DATABASE_URL_VARIABLE)
                .unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned()),
        );
        let name = format!("kubernaut_test_{}", Uuid::new_v4().simple());
        let mut connection =
            PgConnection::establish(&server_url).map_err(|source| TestDatabaseError::Connect {
                url: server_url.clone(),
                source,
            })?;
        // The name is ours (letters, digits and underscores), so it is safe to splice.
        diesel::sql_query(format!("CREATE DATABASE {name}"))
            .execute(&mut connection)
            .map_err(|source| TestDatabaseError::Create {
                name: name.clone(),
                source,
            })?;
        Ok(Self {
            url: with_database(&server_url, &name),
            server_url,
            name,
        })
    }

    /// The URL of the new database, the server's URL with its database replaced.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Best effort: a database left behind costs disk, not correctness.
        let dropped = PgConnection::establish(&self.server_url)
            .map_err(|error| error.to_string())
            .and_then(|mut connection| {
                diesel::sql_query(format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ))
                .execute(&mut connection)
                .map_err(|error| error.to_string())
            });
        if let Err(error) = dropped {
            eprintln!("could not drop the test database {}: {error}", self.name);
        }
    }
}

/// `url` asking libpq not to try GSSAPI encryption, unless it says otherwise.
///
/// With libpq's default (`gssencmode=prefer`) every connection attempt first looks for
/// Kerberos credentials through the krb5 library. A test binary exits while background
/// threads may still be connecting or closing (a pool refilling, a server's runtime
/// shutting down), and krb5's library destructor then destroys a mutex another thread
/// locks: the binary aborts after its tests passed (`k5_mutex_lock: Assertion`). The
/// test servers are local and trust their clients; no test needs GSSAPI.
#[must_use]
pub fn without_gss_encryption(url: &str) -> String {
    if url.contains("gssencmode=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&gssencmode=disable")
    } else {
        format!("{url}?gssencmode=disable")
    }
}

/// `url` with its database (the path after the host) replaced by `database`, keeping
/// any `?parameters`.
fn with_database(url: &str, database: &str) -> String {
    let (base, parameters) = match url.split_once('?') {
        Some((base, parameters)) => (base, Some(parameters)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |index| index + 3);
    let server = match base[authority_start..].find('/') {
        Some(path_start) => &base[..authority_start + path_start],
        None => base,
    };
    match parameters {
        Some(parameters) => format!("{server}/{database}?{parameters}"),
        None => format!("{server}/{database}"),
    }
}

#[cfg(test)]
mod tests {
    use super::{with_database, without_gss_encryption};

    #[test]
    fn test_urls_turn_gss_encryption_off_unless_they_choose() {
        assert_eq!(
            without_gss_encryption("postgres://postgres@127.0.0.1:5432/postgres"),
            "postgres://postgres@127.0.0.1:5432/postgres?gssencmode=disable"
        );
        assert_eq!(
            without_gss_encryption("postgres://u@db/x?sslmode=disable"),
            "postgres://u@db/x?sslmode=disable&gssencmode=disable"
        );
        assert_eq!(
            without_gss_encryption("postgres://u@db/x?gssencmode=require"),
            "postgres://u@db/x?gssencmode=require"
        );
    }

    #[test]
    fn the_database_of_a_url_is_replaced_and_its_parameters_kept() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            with_database("postgres://u:p@db/x?sslmode=disable", "t1"),
            "postgres://u:p@db/t1?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://db:5432", "t1"),
            "postgres://db:5432/t1"
        );
    }
}
