//! The crate's one error type.

use std::path::PathBuf;
use std::{fmt, io};

/// What can go wrong in a replicated store: its Raft log, its state machine, or the group.
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
    /// A snapshot could not be written, read or verified: the message says which file and
    /// why. A damaged received snapshot changed nothing (the leader sends it again).
    #[error(transparent)]
    Snapshot(SnapshotError),
    /// The command panicked in `State::execute`. Every replica panicked on it the same way
    /// and rolled it back: the state is as if it had never been sent, and it took no
    /// sequence number. Fix the command (or `execute`); retrying it panics again.
    #[error("the command at log index {index} panicked and was rolled back on every replica: {message}")]
    CommandPanicked {
        /// The entry's log index.
        index: u64,
        /// The panic's message.
        message: String,
    },
    /// A command panicked while being applied and the state, possibly half changed, could not
    /// be rebuilt without it: this node's state machine refuses to go on. Restart the node.
    #[error("the state machine stopped: the command at log index {index} panicked: {message}")]
    StateMachineStopped {
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
    /// No leader could be reached before `commit_timeout` ran out, and the command was never
    /// handed to any node: it was **not** applied. Retry later (after a partition heals or a
    /// leader is elected).
    #[error("no leader reachable: {reason}")]
    Unavailable {
        /// What the last attempt ran into.
        reason: String,
    },
    /// The command was handed to a node but no outcome came back before `commit_timeout`
    /// ran out (leader unreachable, answer lost, leader changed): it **may or may not** have
    /// been applied, and may still be applied later. Read the state to find out; committing
    /// it again from this handle is a new command, not a retry.
    #[error("the outcome of the command is unknown: {reason}")]
    Indeterminate {
        /// What the last attempt ran into.
        reason: String,
    },
    /// The command is committed and applied by the leader as the `seq`-th command (it will
    /// not be lost and will not run again), but this node had not applied it yet when
    /// `commit_timeout` ran out or the node was closed or halted, so
    /// [`crate::ReplicatedStore::query`] here does not show it yet. Do not commit it again.
    #[error("committed as command {seq} at log index {index}, but not yet applied on this node")]
    Lagging {
        /// The command's sequence number.
        seq: u64,
        /// Its log index.
        index: u64,
    },
    /// The node was closed or halted, or its Raft core stopped (after a storage failure: see
    /// the log). Reopen it.
    #[error("the node is stopped: {reason}")]
    Stopped {
        /// Why, as far as known.
        reason: String,
    },
    /// The store was closed (or halted) while this call was running. From a commit, it means
    /// the command was never handed to any node: **not** applied. A command already handed
    /// over answers [`Error::Indeterminate`] or [`Error::Lagging`] instead.
    #[error("the replicated store is closed")]
    Closed,
    /// The encoded command is larger than one log entry may be on this node's transport
    /// (half a TCP frame): it was not sent.
    #[error("the command is {size} bytes encoded, above the limit of {limit}")]
    CommandTooLarge {
        /// Its encoded size.
        size: usize,
        /// The largest command this node sends.
        limit: usize,
    },
    /// The node refused the connection: the two sides hold no common cluster secret, or
    /// speak different protocol versions. Nothing was sent.
    #[error("the node refused the connection: {reason}")]
    Denied {
        /// What the handshake found.
        reason: String,
    },
    /// A membership change was refused and not made: it would leave fewer voters than the
    /// node's minimum (force it to proceed), or names no such learner or member.
    #[error("refused: {reason}")]
    Refused {
        /// Why.
        reason: String,
    },
    /// A read with a bound on staleness could not be served here within it: this node has
    /// not heard from a leader recently enough, or has not applied what it knows committed.
    #[error("this node may be stale: {reason}")]
    TooStale {
        /// What is behind, and by how much.
        reason: String,
    },
    /// A read that must run on the leader was sent to a node that does not lead.
    #[error("this node does not lead (the leader it knows of: {leader:?})")]
    NotLeader {
        /// The leader this node knows of.
        leader: Option<u64>,
    },
    /// The configuration (or the members given to bootstrap) is not usable.
    #[error("invalid configuration: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: String,
    },
}

/// Why a snapshot could not be written, read or verified. Its message names the file and the
/// failure, and [`std::error::Error::source`] leads on to the cause (the OS error, the
/// mismatching checksum); the snapshot crate's own error type stays out of this crate's API.
#[derive(Debug)]
pub struct SnapshotError(airomem_snapshot::SnapshotError);

impl SnapshotError {
    /// Whether the disk (or a quota) was full: free space, and the next snapshot can succeed.
    pub fn is_storage_full(&self) -> bool {
        self.0.is_storage_full()
    }
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for SnapshotError {
    // The wrapped error's message is this one's, so the chain goes on from its source.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl Error {
    pub(crate) fn snapshot(e: airomem_snapshot::SnapshotError) -> Error {
        Error::Snapshot(SnapshotError(e))
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io { op, path: path.into(), source }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use airomem::storage::StdStorage;

    use super::Error;

    fn chain(e: &(dyn std::error::Error + 'static)) -> Vec<String> {
        std::iter::successors(Some(e), |&e| e.source()).map(ToString::to_string).collect()
    }

    /// The wrapper adds nothing and hides nothing: the same message, the same causes.
    #[test]
    fn a_snapshot_error_keeps_its_message_and_its_causes() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let file = dir.path().join("not-a-directory");
        std::fs::write(&file, b"x").expect("writes");
        let inner = airomem_snapshot::list(&StdStorage::default(), &file).expect_err("a file is not a directory");
        let expected = chain(&inner);
        assert!(expected.len() >= 2, "the OS error is a cause: {expected:?}");

        let wrapped = Error::snapshot(inner);
        assert!(matches!(&wrapped, Error::Snapshot(e) if !e.is_storage_full()));
        assert_eq!(chain(&wrapped), expected);
        let Error::Snapshot(snapshot) = &wrapped else { unreachable!("matched above") };
        assert_eq!(snapshot.source().map(ToString::to_string), expected.get(1).cloned());
    }
}
