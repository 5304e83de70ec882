#![doc = include_str!("../README.md")]

pub mod database;
pub mod registry;
pub mod sim;
