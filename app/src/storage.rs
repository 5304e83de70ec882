//! Where Kubernaut keeps its state: PostgreSQL (`postgres://`, for replicas) or an
//! embedded SQLite file (no `database.url`, or `sqlite:PATH`, for one process), and the
//! change feed that goes with each.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use kubernaut_domain::changes::{ChangeFeed, LocalChanges};
use kubernaut_domain::ports::{
    AccessRepository, AuditRepository, DeploymentRepository, LeaseRepository, NotificationOutbox,
    ReleaseRepository,
};
use kubernaut_postgres::{PoolOptions, PostgresChanges};
use kubernaut_sqlite::SqliteDatabase;

use crate::settings::DatabaseSettings;

/// The file name of the embedded database in the data directory.
pub const SQLITE_FILE: &str = "kubernaut.db";

/// Which database the settings name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// A PostgreSQL server, by URL.
    Postgres,
    /// An SQLite file of this process's own.
    Sqlite(PathBuf),
}

impl DatabaseSettings {
    /// The database these settings name: `postgres://` (or `postgresql://`) URLs name a
    /// PostgreSQL server; no URL, or `sqlite:` alone, the file `kubernaut.db` in the data
    /// directory; `sqlite:PATH` (`sqlite:///abs/path`, `sqlite:relative/path`) that file.
    ///
    /// # Errors
    /// For any other URL.
    pub fn backend(&self) -> anyhow::Result<Backend> {
        let url = self.url.expose().trim();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Backend::Postgres);
        }
        if url.is_empty() {
            return Ok(Backend::Sqlite(self.data_dir().join(SQLITE_FILE)));
        }
        if let Some(rest) = url.strip_prefix("sqlite:") {
            // `sqlite:///abs` and `sqlite://rel` as URLs write them; `sqlite:path` too.
            let path = rest.strip_prefix("//").unwrap_or(rest);
            return Ok(Backend::Sqlite(if path.is_empty() {
                self.data_dir().join(SQLITE_FILE)
            } else {
                PathBuf::from(path)
            }));
        }
        anyhow::bail!(
            "database.url must be a postgres:// URL, sqlite:PATH, or empty for the embedded database in the data directory; got {}",
            self.url
        )
    }

    /// The data directory: `database.data_dir` (`--data-dir`), else
    /// `$XDG_DATA_HOME/kubernaut`, else `~/.local/share/kubernaut`, else
    /// `./kubernaut-data`.
    pub fn data_dir(&self) -> PathBuf {
        if let Some(dir) = self.data_dir.as_ref().filter(|d| !d.as_os_str().is_empty()) {
            return dir.clone();
        }
        let from = |variable: &str| std::env::var_os(variable).filter(|v| !v.is_empty());
        if let Some(data) = from("XDG_DATA_HOME") {
            return PathBuf::from(data).join("kubernaut");
        }
        if let Some(home) = from("HOME") {
            return PathBuf::from(home).join(".local/share/kubernaut");
        }
        PathBuf::from("kubernaut-data")
    }
}

/// An open database of either kind. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub enum Storage {
    Postgres(kubernaut_postgres::Database),
    Sqlite(SqliteDatabase),
}

/// The domain's repositories on one database.
#[derive(Clone)]
pub struct Repositories {
    pub releases: Arc<dyn ReleaseRepository>,
    pub deployments: Arc<dyn DeploymentRepository>,
    pub leases: Arc<dyn LeaseRepository>,
    pub access: Arc<dyn AccessRepository>,
    pub audit: Arc<dyn AuditRepository>,
}

impl std::fmt::Debug for Repositories {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repositories").finish_non_exhaustive()
    }
}

impl Storage {
    /// Opens the database `settings` name. PostgreSQL: creates the database when
    /// missing and allowed, builds the pool, and applies pending migrations when
    /// `migrate` is set. SQLite: creates the file (and its directory, private) when
    /// missing, takes its lock (a second process is refused) and always migrates.
    ///
    /// # Errors
    /// When the database cannot be reached, created, locked or migrated.
    pub async fn open(settings: &DatabaseSettings, migrate: bool) -> anyhow::Result<Self> {
        let database = settings.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<Self> {
            match database.backend()? {
                Backend::Postgres => open_postgres(&database, migrate).map(Self::Postgres),
                Backend::Sqlite(path) => {
                    let opened = SqliteDatabase::open(&path)
                        .with_context(|| format!("could not open {}", path.display()))?;
                    tracing::info!(path = %path.display(), "using the embedded SQLite database");
                    Ok(Self::Sqlite(opened))
                }
            }
        })
        .await
        .context("the database task failed")?
    }

    /// The repositories on this database.
    pub fn repositories(&self) -> Repositories {
        match self {
            Self::Postgres(database) => Repositories {
                releases: Arc::new(database.release_repository()),
                deployments: Arc::new(database.deployment_repository()),
                leases: Arc::new(database.lease_repository()),
                access: Arc::new(database.access_repository()),
                audit: Arc::new(database.audit_repository()),
            },
            Self::Sqlite(database) => Repositories {
                releases: Arc::new(database.release_repository()),
                deployments: Arc::new(database.deployment_repository()),
                leases: Arc::new(database.lease_repository()),
                access: Arc::new(database.access_repository()),
                audit: Arc::new(database.audit_repository()),
            },
        }
    }

    /// The outbox of notifications on this database.
    pub fn notification_outbox(&self) -> Arc<dyn NotificationOutbox> {
        match self {
            Self::Postgres(database) => Arc::new(database.notification_outbox()),
            Self::Sqlite(database) => Arc::new(database.notification_outbox()),
        }
    }

    /// How this process hears of changes: PostgreSQL's `LISTEN/NOTIFY` (changes made by
    /// every replica), or, on SQLite, which one process owns, what this process publishes.
    ///
    /// # Errors
    /// When the listening connection cannot be set up.
    pub fn changes(&self, settings: &DatabaseSettings) -> anyhow::Result<Arc<dyn ChangeFeed>> {
        Ok(match self {
            Self::Postgres(_) => Arc::new(
                PostgresChanges::listen(settings.url.expose())
                    .context("could not start listening for changes")?,
            ),
            Self::Sqlite(_) => Arc::new(LocalChanges::new()),
        })
    }

    /// Which pool (`postgres` or `sqlite`) and how it is used right now: connections
    /// open, idle, and the most it opens.
    pub fn pool_use(&self) -> (&'static str, u32, u32, u32) {
        match self {
            Self::Postgres(database) => {
                let pool = database.pool_use();
                ("postgres", pool.connections, pool.idle, pool.max)
            }
            Self::Sqlite(database) => {
                let pool = database.pool_use();
                ("sqlite", pool.connections, pool.idle, pool.max)
            }
        }
    }

    /// The SQLite file, when this is one.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            Self::Postgres(_) => None,
            Self::Sqlite(database) => Some(database.path()),
        }
    }
}

fn open_postgres(
    database: &DatabaseSettings,
    migrate: bool,
) -> anyhow::Result<kubernaut_postgres::Database> {
    let url = database.url.expose();
    if database.create_if_missing {
        kubernaut_postgres::create_database_if_missing(url)
            .with_context(|| format!("could not create the database {}", database.url))?;
    }
    let pool = kubernaut_postgres::Database::connect(
        url,
        PoolOptions {
            max_size: database.pool_size,
            connection_timeout: Duration::from_secs(database.connect_timeout_seconds),
        },
    )
    .with_context(|| format!("could not connect to {}", database.url))?;
    if migrate {
        let applied = pool
            .run_migrations()
            .context("could not apply the migrations")?;
        for version in applied {
            tracing::info!(%version, "applied migration");
        }
    }
    Ok(pool)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::DatabaseUrl;

    fn settings(url: &str, data_dir: Option<&str>) -> DatabaseSettings {
        DatabaseSettings {
            url: DatabaseUrl::new(url),
            data_dir: data_dir.map(PathBuf::from),
            pool_size: 1,
            connect_timeout_seconds: 1,
            migrate_on_start: true,
            create_if_missing: false,
        }
    }

    #[test]
    fn the_url_names_the_backend() {
        let data = Some("/srv/kn");
        assert_eq!(
            settings("postgres://u@h/db", data).backend().expect("pg"),
            Backend::Postgres
        );
        assert_eq!(
            settings("postgresql://u@h/db", data).backend().expect("pg"),
            Backend::Postgres
        );
        let embedded = Backend::Sqlite(PathBuf::from("/srv/kn/kubernaut.db"));
        assert_eq!(settings("", data).backend().expect("empty"), embedded);
        assert_eq!(settings("sqlite:", data).backend().expect("bare"), embedded);
        assert_eq!(
            settings("sqlite:///var/lib/k.db", data)
                .backend()
                .expect("abs"),
            Backend::Sqlite(PathBuf::from("/var/lib/k.db"))
        );
        assert_eq!(
            settings("sqlite:state/k.db", data).backend().expect("rel"),
            Backend::Sqlite(PathBuf::from("state/k.db"))
        );
        let refused = settings("mysql://h/db", data)
            .backend()
            .expect_err("unknown");
        assert!(refused.to_string().contains("postgres://"), "{refused}");
    }
}
