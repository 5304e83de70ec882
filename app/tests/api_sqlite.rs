//! The black-box API tests of `api/`, run again on the embedded SQLite database: the
//! real server on port 0 over a fresh SQLite file (no database URL, a data directory of
//! its own), with the in-process change feed in place of PostgreSQL's LISTEN/NOTIFY.

/// The database these tests run on: `postgres` or `sqlite` (helpers.rs).
const BACKEND: &str = "sqlite";

#[path = "api/access.rs"]
mod access;
#[path = "api/cheap_refusals.rs"]
mod cheap_refusals;
#[path = "api/cluster.rs"]
mod cluster;
#[path = "api/deployments.rs"]
mod deployments;
#[path = "api/dora.rs"]
mod dora;
#[path = "api/helpers.rs"]
mod helpers;
#[path = "api/metrics.rs"]
mod metrics;
#[path = "api/notifications.rs"]
mod notifications;
#[path = "api/releases.rs"]
mod releases;
#[path = "api/releases_bad_input.rs"]
mod releases_bad_input;
#[path = "ui_support/session.rs"]
mod session;
