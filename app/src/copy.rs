//! `kubernaut db copy --to postgres://...`: moving a single-box install (the embedded
//! database) to PostgreSQL, so that it can run replicas. Everything is copied with its
//! ids and times: releases, deployments with their timelines, accounts and grants,
//! tokens (their hashes: every token keeps working) and the audit trail. The target must
//! be empty; it is written in one transaction, so a failed copy leaves it empty.

use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context as _;
use kubernaut_domain::ports::RepositoryError;
use kubernaut_domain::snapshot::{SnapshotBatch, SnapshotCounts};
use kubernaut_postgres::PoolOptions;

use crate::settings::Settings;
use crate::storage::{Backend, Storage};

/// Records per batch: bounds the memory a copy takes (a few batches are in flight).
const BATCH: usize = 500;

/// Copies the embedded database `settings` name into the PostgreSQL database at `to`
/// (created when missing, migrated), returning what was copied.
///
/// # Errors
/// When the source is not the embedded database or is in use, the target cannot be
/// reached or is not empty, or either fails; then the target is left as it was.
pub async fn copy_to_postgres(settings: &Settings, to: &str) -> anyhow::Result<SnapshotCounts> {
    if !(to.starts_with("postgres://") || to.starts_with("postgresql://")) {
        anyhow::bail!("--to must be a postgres:// URL");
    }
    match settings.database.backend()? {
        Backend::Sqlite(_) => {}
        Backend::Postgres => anyhow::bail!(
            "db copy copies the embedded database to PostgreSQL, and database.url already names PostgreSQL"
        ),
    }
    let source = match Storage::open(&settings.database, true).await? {
        Storage::Sqlite(database) => database,
        Storage::Postgres(_) => unreachable!("the backend was checked to be SQLite"),
    };
    let to = to.to_owned();
    let database = settings.database.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<SnapshotCounts> {
        if database.create_if_missing {
            kubernaut_postgres::create_database_if_missing(&to)
                .context("could not create the target database")?;
        }
        let target = kubernaut_postgres::Database::connect(
            &to,
            PoolOptions {
                max_size: 2,
                connection_timeout: Duration::from_secs(database.connect_timeout_seconds),
            },
        )
        .context("could not connect to the target database")?;
        target
            .run_migrations()
            .context("could not apply the migrations to the target database")?;
        if let Some(table) = target
            .first_non_empty_table()
            .context("could not read the target database")?
        {
            anyhow::bail!(
                "the target database is not empty (its {table} table has rows): copy into a new, empty database"
            );
        }
        let (batches, received) = mpsc::sync_channel::<Result<SnapshotBatch, String>>(2);
        let reader = std::thread::spawn(move || {
            let read = source.export(BATCH, &mut |batch| {
                batches
                    .send(Ok(batch))
                    .map_err(|_| RepositoryError::new("the target stopped taking records"))
            });
            if let Err(error) = &read {
                let _ = batches.send(Err(error.to_string()));
            }
            read
        });
        let written = target.import(&mut received.into_iter());
        let read = reader
            .join()
            .map_err(|_| anyhow::anyhow!("reading the embedded database panicked"))?;
        let written = written.context("nothing was copied")?;
        let read = read.context("reading the embedded database failed")?;
        anyhow::ensure!(
            read == written,
            "read {read} but wrote {written}: the copy was rolled back"
        );
        Ok(written)
    })
    .await
    .context("the copy task failed")?
}
