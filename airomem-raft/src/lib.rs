//! Replicated airomem: the Raft log and the replicated state machine that put an airomem
//! `State` behind [openraft](https://docs.rs/openraft) 0.9.
//!
//! Step A of the replication work (see `ARCHITECTURE.md`, *Replication: the Raft log*):
//!
//! * `log`: the Raft log, a segmented, checksummed journal of its own with a writer thread
//!   that merges appends into one write and one `fdatasync`, a persisted vote, purge point
//!   and commit point, and crash recovery;
//! * `state_machine`: the user's state, executing committed commands with a deterministic
//!   `CommitContext`, and airomem snapshots.
//!
//! Both implement openraft's storage traits and pass its storage test suite. No openraft
//! type is part of this crate's public API; the public store (`ReplicatedStore`) comes with
//! step B.

// Step A builds the storage layer only: its user, the replicated store, arrives in step B.
#![cfg_attr(not(test), allow(dead_code, reason = "the replicated store that uses these arrives in step B"))]

mod error;
mod log;
mod state_machine;
mod types;

#[cfg(test)]
mod tests;

pub use error::Error;
