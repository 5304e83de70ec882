//! The pool after PostgreSQL restarts or stops, on a server of each test's own (the
//! shared test server must not go down under the other tests).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kubernaut_domain::access::Caller;
use kubernaut_domain::actor::Actor;
use kubernaut_domain::audit::AuditAction;
use kubernaut_domain::ports::{ReleaseRepository as _, RepositoryError};
use kubernaut_domain::release::{NewRelease, Release, ReleaseId, UnvalidatedRelease};
use kubernaut_postgres::{Database, PoolOptions, PostgresReleaseRepository};
use kubernaut_testkit::postgres_server::PostgresServer;

const TEMPLATE: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ service }}
  namespace: {{ namespace }}
spec:
  template:
    spec:
      containers:
        - name: app
          image: {{ image }}
";

/// As many connections as the calls of a round, so each round tries every one.
const POOL_SIZE: u32 = 4;

/// Calls in a row that must all succeed once the first one has.
const ROUNDS_AFTER_RECOVERY: usize = 20;

struct Harness {
    repository: PostgresReleaseRepository,
    release: ReleaseId,
    // Dropped after the pool, so the pool's connections close on a running server.
    _database: Database,
    server: PostgresServer,
}

impl Harness {
    /// A migrated database on a server of its own holding one release, or `None`
    /// (said on stderr) without PostgreSQL's programs.
    async fn start() -> Option<Self> {
        let server = match PostgresServer::start() {
            Ok(server) => server,
            Err(error) if error.is_unavailable() && std::env::var_os("CI").is_none() => {
                eprintln!("skipped: {error}");
                return None;
            }
            Err(error) => panic!("the test server starts: {error}"),
        };
        let url = server
            .create_database("kubernaut")
            .expect("the database is created");
        let database = Database::connect(
            &url,
            PoolOptions {
                max_size: POOL_SIZE,
                connection_timeout: Duration::from_secs(1),
            },
        )
        .expect("a pool on the test server");
        database.run_migrations().expect("the migrations apply");
        let repository = database.release_repository();
        let release = release();
        repository
            .insert(&release, &audit_of(&release))
            .await
            .expect("the release is stored");
        let harness = Self {
            repository,
            release: release.id,
            _database: database,
            server,
        };
        harness
            .round()
            .await
            .expect("every connection answers before the fault");
        Some(harness)
    }

    /// [`POOL_SIZE`] lookups at once, so each database thread checks out a connection
    /// and none is left idle: a broken connection anywhere in the pool shows.
    async fn round(&self) -> Result<(), RepositoryError> {
        let find = || async {
            let found = self.repository.find_active(self.release).await?;
            assert!(found.is_some(), "the release is still there");
            Ok::<_, RepositoryError>(())
        };
        let (a, b, c, d) = tokio::join!(find(), find(), find(), find());
        a.and(b).and(c).and(d)
    }

    /// Rounds until one succeeds (within `limit`), then [`ROUNDS_AFTER_RECOVERY`]
    /// more, which must all succeed. Returns the errors of the rounds that failed
    /// before.
    async fn recovers_within(&self, limit: Duration) -> Vec<String> {
        let started = Instant::now();
        let mut errors = Vec::new();
        while started.elapsed() < limit {
            match self.round().await {
                Ok(()) => {
                    let recovered_after = started.elapsed();
                    for round in 1..=ROUNDS_AFTER_RECOVERY {
                        if let Err(error) = self.round().await {
                            panic!(
                                "round {round} after the recovery failed: {:?}",
                                with_causes(&error)
                            );
                        }
                    }
                    eprintln!("recovered after {recovered_after:?}");
                    return errors;
                }
                Err(error) => errors.push(with_causes(&error)),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no round succeeded within {limit:?}; the errors: {errors:#?}");
    }
}

/// The error and its causes, for a failure message.
fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut chain = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    chain
}

fn release() -> Release {
    let new = NewRelease::parse(&UnvalidatedRelease {
        service: "billing".to_owned(),
        version: "1.0.0".to_owned(),
        image: "registry.example.com/billing:1.0.0".to_owned(),
        template: TEMPLATE.to_owned(),
        attributes: BTreeMap::new(),
        comment: None,
    })
    .expect("a valid release");
    Release::register(new, Actor::named("jenkins"))
}

fn audit_of(release: &Release) -> kubernaut_domain::audit::AuditEntry {
    Caller::system("jenkins").audit(
        AuditAction::ReleaseCreated,
        format!("release/{}", release.id),
        serde_json::json!({ "service": release.service.as_str() }),
    )
}

#[tokio::test]
async fn after_a_restart_the_pool_answers_again_and_keeps_answering() {
    let Some(harness) = Harness::start().await else {
        return;
    };

    harness.server.restart().expect("the server restarts");

    let errors = harness.recovers_within(Duration::from_secs(10)).await;
    // The pool hands out no connection the restart closed, so not even the first
    // lookup after it fails.
    assert_eq!(
        errors,
        Vec::<String>::new(),
        "rounds failed after the restart"
    );
}

#[tokio::test]
async fn while_the_server_is_stopped_calls_fail_and_after_it_starts_they_succeed() {
    let Some(harness) = Harness::start().await else {
        return;
    };

    harness.server.stop().expect("the server stops");
    for _ in 0..2 {
        let error = harness
            .round()
            .await
            .expect_err("no lookup succeeds without a server");
        eprintln!("while stopped: {}", with_causes(&error));
    }

    harness
        .server
        .start_again()
        .expect("the server starts again");
    let errors = harness.recovers_within(Duration::from_secs(10)).await;
    eprintln!("rounds that failed after the start: {errors:#?}");
}
