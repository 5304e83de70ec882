#![doc = include_str!("../README.md")]

pub mod contract;
pub mod database;
pub mod postgres_server;
pub mod registry;
pub mod sim;
