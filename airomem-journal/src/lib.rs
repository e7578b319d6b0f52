//! airomem's journal: a segmented, append-only log of checksummed records.
//!
//! * [`frame`]: the byte layout of one record, and its verification.
//! * [`segment`]: segment file names and headers.
//! * [`scan`]: reading a whole segment from memory.
//! * [`replay`](mod@replay): replaying a directory of segments, repairing a torn tail.
//! * [`head`]: the newest segment's name and how far the journal is known to be synced.
//! * [`writer`]: batches, one write and one sync each, and rollover.
//!
//! The journal knows bytes and sequence numbers, not the user's types; the `airomem` facade
//! puts commands in and takes them out. Every file operation goes through the
//! [`airomem_core::storage::Storage`] seam.
//!
//! This crate has no cargo features.

mod config;
mod error;
pub mod frame;
pub mod head;
pub mod replay;
pub mod scan;
pub mod segment;
pub mod writer;

pub use config::{JournalConfig, SyncMode};
pub use error::{Corruption, JournalError};
pub use frame::MAX_PAYLOAD_LEN;
pub use replay::{PassedDamage, Record, Repair, ReplayError, ReplayOutcome, ReplayRange, TornTail, replay};
pub use writer::{JournalWriter, WriterCounters};
