//! Running diesel's blocking calls off the async executor, with one way of reporting
//! their failures.

use diesel::PgConnection;
use kubernaut_domain::ports::RepositoryError;

use crate::database::PgPool;

/// Runs `work` with a connection from `pool` on tokio's blocking pool.
pub(crate) async fn with_connection<T, E, F>(pool: &PgPool, work: F) -> Result<T, E>
where
    F: FnOnce(&mut PgConnection) -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: From<RepositoryError> + Send + 'static,
{
    let pool = pool.clone();
    tokio::task::spawn_blocking(move || {
        let mut connection = pool.get().map_err(|error| {
            RepositoryError::caused_by("no database connection is available", error)
        })?;
        work(&mut connection)
    })
    .await
    .map_err(|error| RepositoryError::caused_by("the database task did not finish", error))?
}

/// Turns a diesel error into a [`RepositoryError`] saying what failed.
pub(crate) fn query_failed(
    what: &'static str,
) -> impl FnOnce(diesel::result::Error) -> RepositoryError {
    move |error| RepositoryError::caused_by(format!("{what} failed"), error)
}
