//! Shared by the cluster tests.

pub mod history;
