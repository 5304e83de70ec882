//! Black-box tests of the HTTP API: the real server on port 0 over a fresh PostgreSQL
//! database. `api_sqlite.rs` runs the same tests on the embedded SQLite database.

/// The database these tests run on: `postgres` or `sqlite` (helpers.rs).
const BACKEND: &str = "postgres";

mod access;
mod cheap_refusals;
mod cluster;
mod deployments;
mod dora;
mod helpers;
mod metrics;
mod notifications;
mod openapi;
mod real_cluster;
mod releases;
mod releases_bad_input;
mod self_deploy;
// Signing in to the pages, for the deployment page's notifications.
#[path = "../ui_support/session.rs"]
mod session;
