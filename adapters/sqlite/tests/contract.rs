//! The repository contract (`kubernaut_testkit::contract`) against SQLite, each test in
//! a database file of its own, in a temporary directory.

use std::sync::Arc;

use diesel::connection::SimpleConnection as _;
use diesel::sql_types::BigInt;
use diesel::{Connection as _, RunQueryDsl as _, SqliteConnection};
use kubernaut_domain::ports::{
    AccessRepository, AuditRepository, DeploymentRepository, LeaseRepository, NotificationOutbox,
    ReleaseRepository,
};
use kubernaut_sqlite::SqliteDatabase;
use kubernaut_testkit::contract::Backend;

struct Sqlite {
    database: SqliteDatabase,
    // Deleted last, after the database is closed.
    _directory: tempfile::TempDir,
}

impl Sqlite {
    /// A connection of the test's own, beside the repositories' pool.
    fn sql(&self) -> SqliteConnection {
        let path = self.database.path().to_str().expect("a UTF-8 path");
        let mut connection = SqliteConnection::establish(path).expect("a direct connection");
        connection
            .batch_execute("PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;")
            .expect("the pragmas are set");
        connection
    }
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    count: i64,
}

impl Backend for Sqlite {
    fn create(_connections: u32) -> Self {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let database = SqliteDatabase::open(&directory.path().join("kubernaut.db"))
            .expect("the database opens");
        Self {
            database,
            _directory: directory,
        }
    }

    fn releases(&self) -> Arc<dyn ReleaseRepository> {
        Arc::new(self.database.release_repository())
    }

    fn deployments(&self) -> Arc<dyn DeploymentRepository> {
        Arc::new(self.database.deployment_repository())
    }

    fn leases(&self) -> Arc<dyn LeaseRepository> {
        Arc::new(self.database.lease_repository())
    }

    fn access(&self) -> Arc<dyn AccessRepository> {
        Arc::new(self.database.access_repository())
    }

    fn audit(&self) -> Arc<dyn AuditRepository> {
        Arc::new(self.database.audit_repository())
    }

    fn notifications(&self) -> Arc<dyn NotificationOutbox> {
        Arc::new(self.database.notification_outbox())
    }

    fn execute(&self, sql: &str) -> usize {
        diesel::sql_query(sql)
            .execute(&mut self.sql())
            .expect("the statement runs")
    }

    fn count(&self, sql: &str) -> i64 {
        diesel::sql_query(sql)
            .get_result::<Count>(&mut self.sql())
            .expect("the count runs")
            .count
    }

    fn expire_leases(&self) {
        // Times are stored as text of one fixed shape (see the migration): one second ago.
        let past = chrono::Utc::now() - chrono::TimeDelta::seconds(1);
        diesel::sql_query(
            "UPDATE deployments SET lease_expires_at = ? WHERE lease_owner IS NOT NULL",
        )
        .bind::<diesel::sql_types::Text, _>(past.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
        .execute(&mut self.sql())
        .expect("leases expire");
    }
}

kubernaut_testkit::repository_contract_tests!(Sqlite);
