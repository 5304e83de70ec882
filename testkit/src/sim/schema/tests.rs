//! Unit tests of the schema check.
