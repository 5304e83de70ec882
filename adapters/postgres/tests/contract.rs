//! The repository contract (`kubernaut_testkit::contract`) against a real PostgreSQL,
//! each test in a database of its own.

use std::sync::Arc;
use std::time::Duration;

use diesel::sql_types::BigInt;
use diesel::{Connection as _, PgConnection, RunQueryDsl as _};
use kubernaut_domain::ports::{
    AccessRepository, AuditRepository, DeploymentRepository, LeaseRepository, NotificationOutbox,
    ReleaseRepository,
};
use kubernaut_postgres::{Database, PoolOptions};
use kubernaut_testkit::contract::Backend;
use kubernaut_testkit::database::TestDatabase;

struct Postgres {
    database: Database,
    // Dropped last, after the pool, so the database is gone once the test ends.
    test_database: TestDatabase,
}

impl Postgres {
    /// A connection of the test's own, beside the repositories' pool.
    fn sql(&self) -> PgConnection {
        PgConnection::establish(self.test_database.url()).expect("a direct connection")
    }
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    count: i64,
}

impl Backend for Postgres {
    fn create(connections: u32) -> Self {
        let test_database = TestDatabase::create().expect("a fresh test database");
        let database = Database::connect(
            test_database.url(),
            PoolOptions {
                max_size: connections.max(2),
                connection_timeout: Duration::from_secs(5),
            },
        )
        .expect("a pool on the test database");
        database.run_migrations().expect("the migrations apply");
        Self {
            database,
            test_database,
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
        self.execute(
            "UPDATE deployments SET lease_expires_at = now() - interval '1 second' \
             WHERE lease_owner IS NOT NULL",
        );
    }
}

kubernaut_testkit::repository_contract_tests!(Postgres);
