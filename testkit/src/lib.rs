#![doc = include_str!("../README.md")]

#[cfg(feature = "contract")]
pub mod contract;
#[cfg(feature = "control-plane")]
pub mod control_plane;
#[cfg(feature = "postgres")]
pub mod database;
#[cfg(feature = "postgres")]
pub mod postgres_server;
pub mod receiver;
pub mod registry;
pub mod sim;
