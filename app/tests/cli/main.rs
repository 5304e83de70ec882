//! Black-box tests of the command-line client: the real `kubernaut` binary against a
//! real server on port 0, a fresh database and, for deploys, the simulated cluster.

mod ci;
mod deploys;
mod follow;
mod helpers;
mod releases;
mod status;
mod tokens;
mod usage;
