//! What is particular to SQLite: the file, its lock, its pragmas.

use std::os::unix::fs::PermissionsExt as _;

use diesel::connection::SimpleConnection as _;
use diesel::sql_types::{BigInt, Text};
use diesel::{Connection as _, RunQueryDsl as _, SqliteConnection};
use kubernaut_domain::actor::Actor;
use kubernaut_domain::audit::{AuditAction, AuditEntry};
use kubernaut_domain::ports::ReleaseRepository as _;
use kubernaut_domain::release::{NewRelease, Release, UnvalidatedRelease};
use kubernaut_sqlite::{SqliteDatabase, SqliteError};

fn release() -> Release {
    Release::register(
        NewRelease::parse(&UnvalidatedRelease {
            service: "payments".to_owned(),
            version: "1.0.0".to_owned(),
            image: "registry.example.com/payments:1.0.0".to_owned(),
            template: "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ service }}\n"
                .to_owned(),
            attributes: Default::default(),
            comment: None,
        })
        .expect("a valid release"),
        Actor::named("jenkins"),
    )
}

fn audit_of(release: &Release) -> AuditEntry {
    AuditEntry::new(
        Actor::named("jenkins"),
        AuditAction::ReleaseCreated,
        format!("release/{}", release.id),
        None,
        None,
        serde_json::json!({}),
    )
}

#[test]
fn a_second_open_of_a_file_in_use_is_refused_until_the_last_clone_is_dropped() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let path = directory.path().join("kubernaut.db");
    let database = SqliteDatabase::open(&path).expect("the first open");
    let clone = database.clone();

    let refused = SqliteDatabase::open(&path).expect_err("the file is in use");
    assert!(matches!(&refused, SqliteError::InUse { path: used } if *used == path));
    let message = refused.to_string();
    assert!(message.contains("another Kubernaut process"), "{message}");
    assert!(message.contains("PostgreSQL"), "{message}");

    drop(database);
    assert!(
        matches!(SqliteDatabase::open(&path), Err(SqliteError::InUse { .. })),
        "a clone still holds the lock"
    );
    drop(clone);
    SqliteDatabase::open(&path).expect("free once every clone is gone");
}

#[test]
fn the_directory_and_the_file_are_created_private() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let path = directory
        .path()
        .join("state")
        .join("deeper")
        .join("kubernaut.db");
    let database = SqliteDatabase::open(&path).expect("the database opens");
    assert_eq!(database.path(), path);

    let mode = |path: &std::path::Path| {
        std::fs::metadata(path)
            .expect("it exists")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(path.parent().expect("a parent")), 0o700);
    assert_eq!(mode(&path), 0o600);
    let lock = directory.path().join("state/deeper/kubernaut.db.lock");
    assert_eq!(mode(&lock), 0o600);
}

#[derive(diesel::QueryableByName)]
struct JournalMode {
    #[diesel(sql_type = Text)]
    journal_mode: String,
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    count: i64,
}

#[tokio::test]
async fn the_file_is_in_wal_mode_and_keeps_its_data_across_opens() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let path = directory.path().join("kubernaut.db");
    let stored = release();
    {
        let database = SqliteDatabase::open(&path).expect("the database opens");
        database
            .release_repository()
            .insert(&stored, &audit_of(&stored))
            .await
            .expect("the release is stored");
    }
    let database = SqliteDatabase::open(&path).expect("the database opens again");
    let found = database
        .release_repository()
        .find_active(stored.id)
        .await
        .expect("the lookup succeeds");
    assert_eq!(
        found,
        Some(stored),
        "the migrations ran once; the data stayed"
    );

    let mut connection =
        SqliteConnection::establish(path.to_str().expect("UTF-8")).expect("a connection");
    let mode = diesel::sql_query("PRAGMA journal_mode")
        .get_result::<JournalMode>(&mut connection)
        .expect("the journal mode");
    assert_eq!(mode.journal_mode, "wal");
}

#[tokio::test]
async fn foreign_keys_are_enforced() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let path = directory.path().join("kubernaut.db");
    let database = SqliteDatabase::open(&path).expect("the database opens");
    let stored = release();
    database
        .release_repository()
        .insert(&stored, &audit_of(&stored))
        .await
        .expect("the release is stored");
    // The repositories' connections check references: a timeline line of an unknown
    // deployment is refused (and reported as not appended).
    let appended = kubernaut_domain::ports::DeploymentRepository::append_timeline(
        &database.deployment_repository(),
        kubernaut_domain::deployment::DeploymentId::generate(),
        None,
        &kubernaut_domain::deployment::TimelineEntry {
            at: chrono::Utc::now(),
            phase: kubernaut_domain::deployment::DeploymentStatus::Queued,
            message: "about nothing".to_owned(),
            resource: None,
        },
    )
    .await
    .expect("the append runs");
    assert!(!appended);
    let mut connection =
        SqliteConnection::establish(path.to_str().expect("UTF-8")).expect("a connection");
    connection
        .batch_execute("PRAGMA busy_timeout = 5000")
        .expect("the pragma is set");
    let lines = diesel::sql_query("SELECT count(*) AS count FROM deployment_timeline")
        .get_result::<Count>(&mut connection)
        .expect("the count");
    assert_eq!(lines.count, 0);
}
