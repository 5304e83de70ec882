//! The connection pool and the migrations embedded in the binary.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use diesel::PgConnection;
use diesel::r2d2::{ConnectionManager, Pool, PooledConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness as _, embed_migrations};

use crate::access_repository::PostgresAccessRepository;
use crate::audit_repository::PostgresAuditRepository;
use crate::blocking::Queue;
use crate::deployment_repository::PostgresDeploymentRepository;
use crate::error::DatabaseError;
use crate::lease_repository::PostgresLeaseRepository;
use crate::release_repository::PostgresReleaseRepository;

/// The migrations of the repository's `migrations/` folder, compiled into the binary so
/// that `kubernaut migrate` needs no files next to it.
const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations");

/// An r2d2 pool of diesel PostgreSQL connections, with one thread per connection that
/// runs the repositories' queries (see `blocking.rs`). Cheap to clone (shared).
#[derive(Clone)]
pub struct PgPool {
    /// Held strongly only here: the database threads hold it weakly, so the pool and
    /// its connections close where the last `PgPool` is dropped (before the process
    /// exits), never on a database thread racing the exit.
    connections: Arc<Pool<ConnectionManager<PgConnection>>>,
    queue: Queue,
}

impl PgPool {
    /// Checks a connection out of the pool on the calling thread, blocking up to the
    /// pool's connection timeout. For blocking callers (migrations, tests); the
    /// repositories go through the database threads.
    ///
    /// # Errors
    /// When no connection becomes free in time or a new one cannot be opened.
    pub fn get(&self) -> Result<PooledConnection<ConnectionManager<PgConnection>>, r2d2::Error> {
        self.connections.get()
    }

    pub(crate) fn queue(&self) -> &Queue {
        &self.queue
    }
}

impl fmt::Debug for PgPool {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("PgPool")
            .field("connections", &self.connections.state())
            .field("max_size", &self.connections.max_size())
            .finish_non_exhaustive()
    }
}

/// How the pool is sized and how long a caller waits for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolOptions {
    /// The most connections the pool holds open at once.
    pub max_size: u32,
    /// How long building the pool, or checking a connection out of it, may wait
    /// before giving up.
    pub connection_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            max_size: 10,
            connection_timeout: Duration::from_secs(5),
        }
    }
}

/// Kubernaut's PostgreSQL database: a connection pool, the migrations and the
/// repositories built on them. Cheap to clone (the pool is shared).
#[derive(Debug, Clone)]
pub struct Database {
    pool: PgPool,
}

impl Database {
    /// Opens a pool of connections to `url` (blocking until the first connections are
    /// open, at most `options.connection_timeout`).
    ///
    /// # Errors
    /// [`DatabaseError::Connect`] when the URL is malformed or the server cannot be
    /// reached in time.
    pub fn connect(url: &str, options: PoolOptions) -> Result<Self, DatabaseError> {
        let connections = Pool::builder()
            .max_size(options.max_size)
            .connection_timeout(options.connection_timeout)
            // A broken connection fails its query and is then discarded by diesel's
            // `has_broken`; testing every checkout would add a round trip per request.
            .test_on_check_out(false)
            .build(ConnectionManager::new(url))
            .map_err(DatabaseError::Connect)?;
        let connections = Arc::new(connections);
        let queue = Queue::start(&connections, options.connection_timeout)
            .map_err(DatabaseError::Threads)?;
        Ok(Self {
            pool: PgPool { connections, queue },
        })
    }

    /// The pool, for repositories that live in other modules.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The release repository on this database.
    pub fn release_repository(&self) -> PostgresReleaseRepository {
        PostgresReleaseRepository::new(self.pool.clone())
    }

    /// The deployment repository on this database.
    pub fn deployment_repository(&self) -> PostgresDeploymentRepository {
        PostgresDeploymentRepository::new(self.pool.clone())
    }

    /// The leases of active deployments on this database.
    pub fn lease_repository(&self) -> PostgresLeaseRepository {
        PostgresLeaseRepository::new(self.pool.clone())
    }

    /// The repository of accounts, grants and API tokens on this database.
    pub fn access_repository(&self) -> PostgresAccessRepository {
        PostgresAccessRepository::new(self.pool.clone())
    }

    /// The audit trail on this database (read side; the other repositories write it).
    pub fn audit_repository(&self) -> PostgresAuditRepository {
        PostgresAuditRepository::new(self.pool.clone())
    }

    /// Applies every embedded migration the database has not seen yet, each in its own
    /// transaction, and returns the versions it applied (oldest first). Blocking.
    ///
    /// # Errors
    /// [`DatabaseError::Checkout`] without a connection; [`DatabaseError::Migration`]
    /// when a migration fails.
    pub fn run_migrations(&self) -> Result<Vec<String>, DatabaseError> {
        let mut connection = self.connection()?;
        let applied = connection
            .run_pending_migrations(MIGRATIONS)
            .map_err(DatabaseError::Migration)?;
        Ok(applied.iter().map(ToString::to_string).collect())
    }

    /// Reverts every applied migration, newest first, and returns the versions it
    /// reverted. Exists to prove each `down.sql` undoes its `up.sql`; it drops all of
    /// Kubernaut's data. Blocking.
    ///
    /// # Errors
    /// [`DatabaseError::Checkout`] without a connection; [`DatabaseError::Migration`]
    /// when a migration fails to revert.
    pub fn revert_all_migrations(&self) -> Result<Vec<String>, DatabaseError> {
        let mut connection = self.connection()?;
        let reverted = connection
            .revert_all_migrations(MIGRATIONS)
            .map_err(DatabaseError::Migration)?;
        Ok(reverted.iter().map(ToString::to_string).collect())
    }

    /// Whether some embedded migration has not been applied yet. Blocking.
    ///
    /// # Errors
    /// [`DatabaseError::Checkout`] without a connection; [`DatabaseError::Migration`]
    /// when the applied migrations cannot be read.
    pub fn has_pending_migrations(&self) -> Result<bool, DatabaseError> {
        let mut connection = self.connection()?;
        connection
            .has_pending_migration(MIGRATIONS)
            .map_err(DatabaseError::Migration)
    }

    fn connection(
        &self,
    ) -> Result<PooledConnection<ConnectionManager<PgConnection>>, DatabaseError> {
        self.pool.get().map_err(DatabaseError::Checkout)
    }
}
