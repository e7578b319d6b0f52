//! Reads without the lock, beside a running store or of one at rest: point-in-time reads and
//! the inspection tools. Nothing on this path writes a file or takes the directory lock.

pub(crate) mod follower;
pub mod inspect;
pub(crate) mod past;
pub(crate) mod tail;
pub(crate) mod view;
