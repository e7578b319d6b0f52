//! The write path: the writer thread, which turns queued commits into batches of one write
//! and one sync, and the lone commit a caller makes in its own thread. It owns the journal
//! and the directory lock while the store is open; it never opens or recovers a store.

pub(crate) mod committer;
pub(crate) mod health;
pub(crate) mod request;
pub(crate) mod shared;
pub(crate) mod tenure;
pub(crate) mod writer;
