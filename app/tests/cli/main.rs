//! Black-box tests of the command-line client: the real `kubernaut` binary against a
//! real server on port 0, a fresh database and, for deploys, the simulated cluster.

mod ci;
mod config;
mod deploys;
mod exit_codes;
mod follow;
mod helpers;
mod kubectl;
mod releases;
mod restart;
mod status;
mod stream;
mod tokens;
mod usage;
