//! Every name the facade gives a file or folder in a store directory.
//!
//! The journal's segment and head names belong to `airomem-journal`, snapshot names to
//! `airomem-snapshot`. A build without the `snapshot` feature still has to recognise snapshot
//! files that another build wrote (a point-in-time read, an inspection, an error message
//! naming one), so it falls back to the same scheme: the sequence number in 20 digits.

use std::path::{Path, PathBuf};

use airomem_core::Seq;

/// The directory lock's file name in a store directory.
pub(crate) const LOCK_FILE: &str = "airomem.lock";

/// The subdirectory of a store that keeps the files retention took away, when the store
/// keeps history.
pub const ARCHIVE_DIR: &str = "archive";

/// The subdirectory of a store where an open keeps a copy of a journal segment whose history
/// it found damaged under the snapshot it loaded. Retention never looks into it; the files
/// stay until a person removes them.
pub const DAMAGED_DIR: &str = "damaged";

/// The sequence number a snapshot file's name carries, if `name` is one.
pub(crate) fn snapshot_seq(name: &str) -> Option<Seq> {
    #[cfg(feature = "snapshot")]
    {
        airomem_snapshot::parse_file_name(name)
    }
    #[cfg(not(feature = "snapshot"))]
    {
        name.strip_suffix(".snapshot").and_then(|digits| digits.parse().ok()).map(Seq)
    }
}

/// Where the snapshot that includes records up to `seq` lives in `dir`.
pub(crate) fn snapshot_path(dir: &Path, seq: Seq) -> PathBuf {
    #[cfg(feature = "snapshot")]
    {
        airomem_snapshot::path(dir, seq)
    }
    #[cfg(not(feature = "snapshot"))]
    {
        dir.join(format!("{:020}.snapshot", seq.0))
    }
}
