//! Kubernaut run as operators run it: several `kubernaut serve` processes on one
//! PostgreSQL server that the tests restart, stop and outlive, against the simulator.
//! Each test runs alone (see `World::start`): they measure how fast replicas react, and
//! a shared two-core machine would blur that.

mod chaos;
mod faults;
mod notifications;
mod restart;
mod secrets_in_logs;
mod support;
