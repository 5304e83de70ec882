//! What can go wrong while opening the database, before any repository runs.

use std::path::PathBuf;

/// A failure to open the database file or to bring its schema up to date.
#[derive(Debug, thiserror::Error)]
pub enum SqliteError {
    /// Another process holds the database's lock: SQLite serves one Kubernaut process.
    #[error(
        "another Kubernaut process uses the database {}; SQLite serves one process only, several replicas need PostgreSQL",
        path.display()
    )]
    InUse { path: PathBuf },
    /// The file, its directory or its lock file could not be created or opened.
    #[error("could not open {}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The path is not valid UTF-8, which SQLite's file names must be.
    #[error("the database path {} is not valid UTF-8", path.display())]
    Path { path: PathBuf },
    /// SQLite refused to open the file or to set it up (not a database, read-only).
    #[error("could not open the SQLite database {}", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A migration failed to apply; the failed one was rolled back.
    #[error("the database migrations failed")]
    Migration(#[source] Box<dyn std::error::Error + Send + Sync>),
}
