//! The error type every part of `http-bench` returns.

/// The error type of the measurement: any error, sendable between threads.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
