#![doc = include_str!("../README.md")]

mod access_repository;
mod audit_repository;
mod blocking;
mod changes;
mod database;
mod deployment_repository;
mod deployment_row;
mod deployment_transition;
mod error;
mod explain;
mod keyset;
mod lease_repository;
mod notification_outbox;
mod provision;
mod release_repository;
mod release_row;
mod schema;
mod snapshot;

pub use access_repository::PostgresAccessRepository;
pub use audit_repository::PostgresAuditRepository;
pub use changes::PostgresChanges;
pub use database::{Database, PgConnectionManager, PgPool, PoolOptions, PoolUse};
pub use deployment_repository::PostgresDeploymentRepository;
pub use error::DatabaseError;
pub use lease_repository::PostgresLeaseRepository;
pub use notification_outbox::PostgresNotificationOutbox;
pub use provision::{ProvisionError, create_database_if_missing};
pub use release_repository::PostgresReleaseRepository;
