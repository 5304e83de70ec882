//! The database file: its lock, the connection pool, the pragmas and the migrations.

use std::fmt;
use std::fs::{DirBuilder, File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use diesel::connection::SimpleConnection as _;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool};
use diesel::sqlite::SqliteConnection;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness as _, embed_migrations};

use crate::access_repository::SqliteAccessRepository;
use crate::audit_repository::SqliteAuditRepository;
use crate::deployment_repository::SqliteDeploymentRepository;
use crate::error::SqliteError;
use crate::lease_repository::SqliteLeaseRepository;
use crate::release_repository::SqliteReleaseRepository;

/// This crate's own migrations (SQLite's dialect), compiled into the binary.
const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// How many connections the pool holds. In WAL mode readers run in parallel with each
/// other and with the one writer; writers take turns (`BEGIN IMMEDIATE`).
const POOL_SIZE: u32 = 8;

/// How long a connection waits for the write lock before its statement fails with
/// `SQLITE_BUSY` ("database is locked"), and a caller for a free pooled connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) type Connections = Pool<ConnectionManager<SqliteConnection>>;

/// What every clone of a [`SqliteDatabase`] shares: the pool, and the lock that keeps
/// other processes out for as long as any clone lives.
struct Shared {
    path: PathBuf,
    connections: Connections,
    /// Holds the exclusive lock of `<file>.lock`; released when the file is closed, as
    /// the last clone is dropped (or the process ends, however it ends). Declared last,
    /// so it is dropped after the pool has closed every connection.
    _lock: File,
}

/// How the connection pool is used right now (for `/metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUse {
    /// Connections open, busy or idle.
    pub connections: u32,
    /// Open connections no query uses.
    pub idle: u32,
    /// The most connections the pool opens.
    pub max: u32,
}

/// Kubernaut's SQLite database: one file, used by one process, and the repositories
/// on it. Cheap to clone (shared).
#[derive(Clone)]
pub struct SqliteDatabase {
    shared: Arc<Shared>,
}

impl fmt::Debug for SqliteDatabase {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("SqliteDatabase")
            .field("path", &self.shared.path)
            .field("connections", &self.shared.connections.state())
            .finish_non_exhaustive()
    }
}

/// The pragmas every pooled connection starts with.
#[derive(Debug)]
struct Pragmas;

impl CustomizeConnection<SqliteConnection, diesel::r2d2::Error> for Pragmas {
    fn on_acquire(&self, connection: &mut SqliteConnection) -> Result<(), diesel::r2d2::Error> {
        connection
            .batch_execute(&format!(
                // busy_timeout: a writer waits for the one before it rather than failing.
                // foreign_keys: SQLite checks the REFERENCES clauses only when asked, per
                // connection. synchronous = NORMAL: in WAL mode a commit is durable against
                // a crash of the process (every change is in the WAL before the commit
                // returns); only a power cut or OS crash may lose the last commits, never
                // corrupt the file. FULL would fsync the WAL at every commit, and a
                // deployment commits at each step of its state machine.
                "PRAGMA busy_timeout = {}; PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;",
                BUSY_TIMEOUT.as_millis()
            ))
            .map_err(diesel::r2d2::Error::QueryError)
    }
}

impl SqliteDatabase {
    /// Opens the database in `path`: creates the file's parent directory (mode 0700)
    /// and the file (mode 0600) when missing, takes an exclusive lock on `<file>.lock`
    /// (refusing a second process), switches the file to WAL and applies the pending
    /// migrations. Blocking.
    ///
    /// # Errors
    /// [`SqliteError::InUse`] when another process holds the lock; [`SqliteError::File`]
    /// when the directory, the file or the lock cannot be made; [`SqliteError::Connect`]
    /// when SQLite cannot open the file; [`SqliteError::Migration`] when a migration
    /// fails.
    pub fn open(path: &Path) -> Result<Self, SqliteError> {
        let file_error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SqliteError::File { path, source }
        };
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            private_dir_builder()
                .create(parent)
                .map_err(file_error(parent))?;
        }
        let lock_path = lock_path(path);
        let lock = private_file_options()
            .open(&lock_path)
            .map_err(file_error(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(SqliteError::InUse {
                    path: path.to_path_buf(),
                });
            }
            Err(TryLockError::Error(source)) => {
                return Err(SqliteError::File {
                    path: lock_path,
                    source,
                });
            }
        }
        // Created here with the mode we want, so SQLite never creates it with its own.
        private_file_options()
            .open(path)
            .map_err(file_error(path))?;
        let url = path.to_str().ok_or_else(|| SqliteError::Path {
            path: path.to_path_buf(),
        })?;
        let connect_error =
            |source: Box<dyn std::error::Error + Send + Sync>| SqliteError::Connect {
                path: path.to_path_buf(),
                source,
            };
        let connections = Pool::builder()
            .max_size(POOL_SIZE)
            .connection_timeout(BUSY_TIMEOUT)
            .connection_customizer(Box::new(Pragmas))
            .build(ConnectionManager::<SqliteConnection>::new(url))
            .map_err(|error| connect_error(error.into()))?;
        let mut connection = connections
            .get()
            .map_err(|error| connect_error(error.into()))?;
        // Persistent: the file stays in WAL mode. Readers no longer wait for the writer,
        // nor the writer for readers.
        connection
            .batch_execute("PRAGMA journal_mode = WAL;")
            .map_err(|error| connect_error(error.into()))?;
        connection
            .run_pending_migrations(MIGRATIONS)
            .map_err(SqliteError::Migration)?;
        drop(connection);
        Ok(Self {
            shared: Arc::new(Shared {
                path: path.to_path_buf(),
                connections,
                _lock: lock,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// How the pool is used right now.
    pub fn pool_use(&self) -> PoolUse {
        let state = self.shared.connections.state();
        PoolUse {
            connections: state.connections,
            idle: state.idle_connections,
            max: self.shared.connections.max_size(),
        }
    }

    pub(crate) fn connections(&self) -> &Connections {
        &self.shared.connections
    }

    /// The release repository on this database.
    pub fn release_repository(&self) -> SqliteReleaseRepository {
        SqliteReleaseRepository::new(self.clone())
    }

    /// The deployment repository on this database.
    pub fn deployment_repository(&self) -> SqliteDeploymentRepository {
        SqliteDeploymentRepository::new(self.clone())
    }

    /// The leases of active deployments on this database.
    pub fn lease_repository(&self) -> SqliteLeaseRepository {
        SqliteLeaseRepository::new(self.clone())
    }

    /// The outbox of notifications on this database.
    pub fn notification_outbox(&self) -> crate::SqliteNotificationOutbox {
        crate::SqliteNotificationOutbox::new(self.clone())
    }

    /// The repository of accounts, grants and API tokens on this database.
    pub fn access_repository(&self) -> SqliteAccessRepository {
        SqliteAccessRepository::new(self.clone())
    }

    /// The audit trail on this database (read side; the other repositories write it).
    pub fn audit_repository(&self) -> SqliteAuditRepository {
        SqliteAuditRepository::new(self.clone())
    }
}

/// `<file>.lock`, beside the database file.
fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

fn private_dir_builder() -> DirBuilder {
    let mut builder = DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder
}

fn private_file_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options
}
