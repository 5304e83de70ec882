#![doc = include_str!("../README.md")]

mod access_repository;
mod audit_repository;
mod blocking;
mod database;
mod deployment_repository;
mod deployment_row;
mod error;
mod lease_repository;
mod notification_outbox;
mod release_repository;
mod snapshot;
mod sql;

pub use access_repository::SqliteAccessRepository;
pub use audit_repository::SqliteAuditRepository;
pub use database::{PoolUse, SqliteDatabase};
pub use deployment_repository::SqliteDeploymentRepository;
pub use error::SqliteError;
pub use lease_repository::SqliteLeaseRepository;
pub use notification_outbox::SqliteNotificationOutbox;
pub use release_repository::SqliteReleaseRepository;
