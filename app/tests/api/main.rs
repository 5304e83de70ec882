//! Black-box tests of the HTTP API: the real server on port 0 over a fresh database.

mod access;
mod cheap_refusals;
mod cluster;
mod deployments;
mod helpers;
mod openapi;
mod real_cluster;
mod releases;
mod releases_bad_input;
