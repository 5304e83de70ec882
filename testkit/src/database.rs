//! A fresh PostgreSQL database per test.
