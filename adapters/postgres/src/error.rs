//! What can go wrong while setting up the database, before any repository runs.

/// A failure to reach the database or to bring its schema up to date.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    /// The pool could not be built: the URL is malformed, or no connection could be
    /// opened before the connection timeout.
    #[error("could not connect to the database")]
    Connect(#[source] r2d2::Error),
    /// No pooled connection became free, and none could be opened, before the
    /// connection timeout.
    #[error("no database connection is available")]
    Checkout(#[source] r2d2::Error),
    /// The threads that run the queries could not be started.
    #[error("could not start the database threads")]
    Threads(#[source] std::io::Error),
    /// A migration failed to apply or to revert; the failed one was rolled back.
    #[error("the database migrations failed")]
    Migration(#[source] Box<dyn std::error::Error + Send + Sync>),
}
