//! Hot backup, verification and restore of a store directory, without the application's
//! types.
//!
//! A backup is a directory holding a consistent cut of a store: the newest valid snapshot
//! (number S), the journal segments that hold the records after it up to a batch boundary
//! (number E ≥ S), and [`MANIFEST_FILE`], which lists every file with its length and crc32c
//! and is written last (temporary file, sync, rename, directory sync). A backup without a
//! manifest is unfinished and is refused. Sealed segments and snapshots are hard-linked
//! (they never change once published); the segment the writer appends to is copied up to the
//! end of the cut batch, because a crash repair may truncate it in place.
//!
//! Backups work on the real file system (`std::fs`), not through the store's `Storage`:
//! hard links are not part of that seam.

mod check;
mod manifest;
mod restore;
mod take;

use std::path::PathBuf;
use std::time::Duration;

use airomem_core::Seq;

pub use check::verify;
pub use manifest::{MANIFEST_FILE, MANIFEST_FORMAT, Manifest, ManifestFile};
pub use restore::restore;
pub(crate) use take::take;
pub use take::take_beside;

/// What a finished backup holds, and what taking it cost.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BackupReport {
    /// The backup's directory.
    pub dest: PathBuf,
    /// The cut: a restored store holds exactly the commands up to this one.
    pub seq: Seq,
    /// The snapshot it starts from (`None`: the journal from record 1).
    pub snapshot: Option<Seq>,
    /// The files, snapshot first, then the segments in order (not the manifest).
    pub files: Vec<ManifestFile>,
    /// Their total length in bytes.
    pub bytes: u64,
    /// Of those, the files hard-linked rather than copied.
    pub linked: usize,
    /// From the call to the synced manifest (for `Store::backup`, including its snapshot).
    pub duration: Duration,
}
