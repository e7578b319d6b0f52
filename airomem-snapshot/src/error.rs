use std::io;
use std::path::PathBuf;

use airomem_core::SerializerId;
use thiserror::Error;

/// Everything that can go wrong with a snapshot.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// A file-system operation failed.
    #[error("{op} {path} failed")]
    Io {
        /// The operation.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// The file does not verify: truncated, damaged, or not a snapshot. Recovery falls back
    /// to an older snapshot and a longer journal tail.
    #[error("snapshot {file} is damaged: {reason}")]
    Damaged {
        /// The file.
        file: PathBuf,
        /// What does not verify.
        reason: String,
    },
    /// The image to write could not be produced: the serializer feeding
    /// [`write_streamed`](crate::write_streamed) failed. Nothing was published.
    #[error("the snapshot's image could not be produced: {reason}")]
    Source {
        /// What the serializer reported.
        #[source]
        reason: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The snapshot was written by a newer (or unknown) version of airomem.
    #[error("{file} has snapshot format version {found}; this build reads versions up to {supported}")]
    UnsupportedVersion {
        /// The file.
        file: PathBuf,
        /// Version in the file.
        found: u16,
        /// The newest version this build reads (and the one it writes).
        supported: u16,
    },
    /// The snapshot was written with another serializer than the store was opened with.
    #[error("{file} was written with serializer {found}, but the store was opened with {expected}")]
    SerializerMismatch {
        /// The file.
        file: PathBuf,
        /// Serializer recorded in the file.
        found: SerializerId,
        /// Serializer the store was opened with.
        expected: SerializerId,
    },
}

impl SnapshotError {
    /// The error for a failed file-system call `op` on `path`; the store's retention, which
    /// removes and archives snapshot files, reports its failures with it too.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> SnapshotError {
        SnapshotError::Io { op, path: path.into(), source }
    }

    /// Whether the failure was the disk running out of space.
    pub fn is_storage_full(&self) -> bool {
        matches!(self, SnapshotError::Io { source, .. }
            if matches!(source.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded))
    }
}
