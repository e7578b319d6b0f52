use std::fmt;
use std::io;
use std::path::PathBuf;

use airomem_core::{Seq, SerializerId};
use thiserror::Error;

/// Everything that can go wrong in the journal.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum JournalError {
    /// A file-system operation failed. Retrying may help if the cause was transient; the
    /// writer does not retry by itself and is poisoned afterwards. The operating system's
    /// error is the [`source`](std::error::Error::source).
    #[error("could not {op} {path}")]
    Io {
        /// The operation, e.g. "fdatasync".
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// The disk is full (`ENOSPC`, or a quota). Free space, then reopen the store: every
    /// acknowledged command is still there. The operating system's error is the
    /// [`source`](std::error::Error::source).
    #[error("no space left to {op} {path}")]
    StorageFull {
        /// The operation that ran out of space.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// Bytes in the middle of the journal do not verify. Nothing was repaired or deleted:
    /// restore the file from a backup, or cut the journal before `offset` by hand if losing
    /// the records from `seq` onwards is acceptable.
    #[error("journal corrupt in {file} at byte {offset} (expected record {seq}): {kind}")]
    Corrupt {
        /// The segment file.
        file: PathBuf,
        /// Byte offset of the first record that does not verify.
        offset: u64,
        /// The sequence number that record should have carried.
        seq: Seq,
        /// What is wrong with it.
        kind: Corruption,
    },
    /// A file named like a segment does not start with a valid segment header.
    #[error("{file} is not an airomem journal segment: {reason}")]
    BadHeader {
        /// The file.
        file: PathBuf,
        /// What is wrong with the header.
        reason: &'static str,
    },
    /// The segment was written by a newer (or unknown) version of airomem.
    #[error("{file} has journal format version {found}; this build reads version {supported}")]
    UnsupportedVersion {
        /// The file.
        file: PathBuf,
        /// Version in the file.
        found: u16,
        /// Version this build reads and writes.
        supported: u16,
    },
    /// The journal was written with another serializer than the store was opened with.
    #[error("{file} was written with serializer {found}, but the store was opened with {expected}")]
    SerializerMismatch {
        /// The file.
        file: PathBuf,
        /// Serializer recorded in the file.
        found: SerializerId,
        /// Serializer the store was opened with.
        expected: SerializerId,
    },
    /// A segment was written under a newer `State::SCHEMA_VERSION` than the one the store
    /// is opened with: by a newer build of the application. Going back to older types is
    /// not supported; run the newer build.
    #[error(
        "{file} was written with schema version {found}, newer than the state's schema version {current}: \
         it was written by a newer build of the application, and opening it with older types is not supported"
    )]
    SchemaNewer {
        /// The file.
        file: PathBuf,
        /// Schema version recorded in the file.
        found: u32,
        /// The state's schema version.
        current: u32,
    },
    /// A segment's schema version is lower than that of the segment before it. Each open
    /// writes only at its own version, after every older one, so this is not something the
    /// store writes: files from another store were mixed in.
    #[error(
        "{file} was written with schema version {found}, but the segment before it, {previous_file}, with \
         version {previous}: schema versions never decrease along a journal, so the files do not belong together"
    )]
    SchemaOrder {
        /// The segment whose version is lower.
        file: PathBuf,
        /// Its schema version.
        found: u32,
        /// The segment before it.
        previous_file: PathBuf,
        /// That segment's schema version.
        previous: u32,
    },
    /// Records are missing between two segments (or before the first one): a segment file was
    /// deleted or renamed. Restore it from a backup.
    #[error("journal records {expected} to {} are missing before {file}", Seq(found.0.saturating_sub(1)))]
    MissingRecords {
        /// The file that starts after the gap.
        file: PathBuf,
        /// The first missing sequence number.
        expected: Seq,
        /// The sequence number found instead.
        found: Seq,
    },
    /// The journal head names a segment newer than any present: the newest segment, and the
    /// acknowledged commands in it, were deleted. Restore it from a backup.
    #[error("the journal continues in {file}, which is missing")]
    SegmentMissing {
        /// The segment the journal head names.
        file: PathBuf,
    },
    /// A segment that was listed had gone when it was read. Beside a running store that is
    /// snapshot retention removing what a newer snapshot covers: a read started again, from
    /// that snapshot, does not need it. With no store running it was deleted by hand.
    #[error(
        "journal segment {file} was removed while it was being read (by snapshot retention, if the store is running)"
    )]
    SegmentVanished {
        /// The segment.
        file: PathBuf,
    },
    /// A single command encodes to more bytes than a record may hold.
    #[error("a record of {len} bytes exceeds the limit of {max} bytes")]
    RecordTooLarge {
        /// Encoded size.
        len: usize,
        /// The limit, [`MAX_PAYLOAD_LEN`](crate::MAX_PAYLOAD_LEN).
        max: usize,
    },
    /// An earlier write or fsync failed, so the writer no longer knows what is on disk and
    /// refuses to acknowledge anything more. Reopen the store to recover.
    #[error("the journal writer is poisoned by an earlier failure: {cause}")]
    Poisoned {
        /// The failure that poisoned the writer.
        cause: String,
    },
}

impl JournalError {
    /// The message followed by those of the errors it stems from, for a log line or a
    /// stored cause: the operating system's error is a source, not part of the message.
    pub fn with_sources(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            text.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        text
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> JournalError {
        let path = path.into();
        if source.kind() == io::ErrorKind::StorageFull || source.kind() == io::ErrorKind::QuotaExceeded {
            JournalError::StorageFull { op, path, source }
        } else {
            JournalError::Io { op, path, source }
        }
    }
}

/// The ways a record can fail to verify.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Corruption {
    /// The file ends inside the record's header or payload.
    Truncated {
        /// Bytes the record needs.
        needed: u64,
        /// Bytes left in the file.
        available: u64,
    },
    /// The checksum over the record does not match.
    Checksum {
        /// The checksum stored in the record.
        stored: u32,
        /// The checksum computed over the bytes.
        computed: u32,
    },
    /// The record claims a payload longer than any record may be.
    LengthTooLarge {
        /// The claimed payload length.
        claimed: u64,
    },
    /// The record verifies, but carries another sequence number than the one due.
    SequenceOutOfOrder {
        /// The sequence number found.
        found: Seq,
    },
    /// The record verifies, but its kind byte is unknown to this build.
    UnknownKind(u8),
    /// An abort marker's payload is not a sequence number.
    BadAbortMarker,
    /// The records end inside an atomic unit: its last command is missing.
    UnfinishedUnit {
        /// The unit's first command.
        first: Seq,
    },
    /// The segment's records end here (the rest is zeros, or nothing), but the journal head
    /// records that records up to a later sequence number were synced.
    SyncedRecordsMissing {
        /// The last record the head records as synced.
        synced_through: Seq,
    },
}

impl Corruption {
    /// Whether the record's checksum verified, so that it was written whole and only a later
    /// check failed: a crash cannot leave such a record, so it is never a torn write.
    pub fn record_verified(&self) -> bool {
        matches!(self, Corruption::SequenceOutOfOrder { .. } | Corruption::UnknownKind(_) | Corruption::BadAbortMarker)
    }
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Corruption::Truncated { needed, available } => {
                write!(f, "record cut short ({available} of {needed} bytes present)")
            }
            Corruption::Checksum { stored, computed } => {
                write!(f, "checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")
            }
            Corruption::LengthTooLarge { claimed } => write!(f, "record claims {claimed} payload bytes"),
            Corruption::SequenceOutOfOrder { found } => write!(f, "found record {found} instead"),
            Corruption::UnknownKind(kind) => write!(f, "unknown record kind {kind:#04x}"),
            Corruption::BadAbortMarker => f.write_str("malformed abort marker"),
            Corruption::UnfinishedUnit { first } => {
                write!(f, "the records end inside the atomic unit that starts at {first}")
            }
            Corruption::SyncedRecordsMissing { synced_through } => {
                write!(
                    f,
                    "the records end here, but the journal head records records through {synced_through} as synced"
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    /// An error reporter prints the chain of `source()`s: a message that also printed its
    /// source would show the operating system's words twice.
    #[test]
    fn io_errors_are_exposed_as_the_source_and_not_printed_twice() {
        for e in [
            JournalError::io("fdatasync", "/s/1.journal", io::Error::other("disk on fire")),
            JournalError::io("write", "/s/1.journal", io::Error::from(io::ErrorKind::StorageFull)),
        ] {
            let source = e.source().expect("the I/O error is the source");
            assert!(source.downcast_ref::<io::Error>().is_some(), "{e:?}");
            let shown = e.to_string();
            assert!(!shown.contains(&source.to_string()), "{shown:?} repeats its source {source:?}");
            assert!(shown.contains("/s/1.journal"), "{shown:?} names the file");
            assert!(e.with_sources().ends_with(&source.to_string()), "a log line or stored cause keeps it");
        }
    }
}
