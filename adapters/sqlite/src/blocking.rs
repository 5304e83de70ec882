//! Running diesel's blocking calls off the async executor, and one way of reporting
//! their failures.
//!
//! Each call runs on tokio's blocking pool with a connection from the r2d2 pool.
//! SQLite answers from the process itself (no network round trip), so a query costs
//! microseconds and the thread hand-off is the larger part; the PostgreSQL adapter's
//! own database threads would save a wake-up per query, which matters little for the
//! one-process installations SQLite serves.

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sqlite::SqliteConnection;
use kubernaut_domain::ports::RepositoryError;

use crate::database::SqliteDatabase;

/// Runs `work` with a pooled connection on tokio's blocking pool.
pub(crate) async fn with_connection<T, E, F>(database: &SqliteDatabase, work: F) -> Result<T, E>
where
    F: FnOnce(&mut SqliteConnection) -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: From<RepositoryError> + Send + 'static,
{
    let database = database.clone();
    tokio::task::spawn_blocking(move || {
        let mut connection = database.connections().get().map_err(|error| {
            RepositoryError::unavailable("no database connection is available", error)
        })?;
        work(&mut connection)
    })
    .await
    .map_err(|error| RepositoryError::caused_by("the database task did not finish", error))?
}

/// Turns a diesel error into a [`RepositoryError`] saying what failed.
pub(crate) fn query_failed(what: &'static str) -> impl FnOnce(DieselError) -> RepositoryError {
    move |error| {
        if is_busy(&error) {
            // Another writer held the file longer than the busy timeout: the same
            // request may well succeed shortly.
            RepositoryError::unavailable(format!("{what} failed"), error)
        } else {
            RepositoryError::caused_by(format!("{what} failed"), error)
        }
    }
}

/// Whether SQLite gave up waiting for a lock (`SQLITE_BUSY`, `SQLITE_LOCKED`).
fn is_busy(error: &DieselError) -> bool {
    match error {
        DieselError::DatabaseError(DatabaseErrorKind::Unknown, info) => {
            let message = info.message();
            message.contains("database is locked") || message.contains("database table is locked")
        }
        _ => false,
    }
}
