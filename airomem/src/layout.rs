//! Snapshot file names, with or without the `snapshot` feature.
//!
//! `airomem-snapshot` owns the naming. A build without it still has to recognise snapshot
//! files (a point-in-time read, an inspection, an error message naming one) that another build
//! wrote, so it falls back to the same scheme: the sequence number in 20 digits.

use std::path::{Path, PathBuf};

use airomem_core::Seq;

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
