//! The crate's one error type.

use std::io;
use std::path::PathBuf;

/// What can go wrong in the Raft log or the replicated state machine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file operation failed. After a failed write or sync the log stops accepting writes
    /// ([`Error::Poisoned`]): reopen it to find out what reached the disk.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// The operation, e.g. "fdatasync".
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A log file holds damage that a crash cannot explain. Nothing was changed: restore the
    /// node from its peers (wipe it and let the leader send a snapshot) or from a backup.
    #[error("corrupt Raft log {} at offset {offset}: {reason}", file.display())]
    Corrupt {
        /// The damaged file.
        file: PathBuf,
        /// Where the damage starts.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A file was written by a newer (or unknown) format version: upgrade this binary.
    #[error("{} has format version {found}; this build reads {supported}", file.display())]
    UnsupportedVersion {
        /// The file.
        file: PathBuf,
        /// The version it declares.
        found: u16,
        /// The version this build reads and writes.
        supported: u16,
    },
    /// Entries were handed over out of order: a bug in the caller (the log never holds a hole).
    #[error("log entries must be contiguous: expected index {expected}, got {got}")]
    NotContiguous {
        /// The index that would continue the log.
        expected: u64,
        /// The index received.
        got: u64,
    },
    /// A write or sync failed earlier, so what is on disk is unknown; nothing more is written.
    /// Reopen the log.
    #[error("the Raft log stopped after an earlier write failure")]
    Poisoned,
    /// The log's writer thread is gone (it panicked, or the log is closing).
    #[error("the Raft log's writer thread has stopped")]
    WriterStopped,
    /// A command, entry or snapshot did not encode or decode.
    #[error(transparent)]
    Codec(#[from] airomem::CodecError),
    /// A snapshot could not be written or read.
    #[error(transparent)]
    Snapshot(#[from] airomem_snapshot::SnapshotError),
    /// A command panicked while being applied and the state, possibly half changed, could not
    /// be rebuilt without it: the state machine refuses to go on. Restart the node.
    #[error("the command at log index {index} panicked: {message}")]
    CommandPanicked {
        /// The entry's log index.
        index: u64,
        /// The panic's message.
        message: String,
    },
    /// The state could not be rebuilt from the newest snapshot and the log up to `index`.
    #[error("cannot rebuild the state before log index {index}: {reason}")]
    RebuildFailed {
        /// The entry the rebuild had to stop before.
        index: u64,
        /// Why.
        reason: String,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io { op, path: path.into(), source }
    }
}
