//! What every read without the lock goes through: a storage that refuses every write and
//! merges the archive into the store directory, and the rule for starting a read over when
//! the store's retention ran under it.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use airomem_core::Seq;
use airomem_core::storage::{LockGuard, Storage, StorageFile, StorageReadFile};
use airomem_journal::segment;
use tracing::debug;

use crate::Error;
use crate::layout::{ARCHIVE_DIR, snapshot_seq};

/// How many times a read starts over because the store's retention ran under it. A read
/// slower than the store's snapshot interval is hit again and again: `airomem verify` beside
/// a store that snapshots every 40 commits, on a loaded 2-core machine, ran out of 16
/// rereads in 1 to 11 of 1,000 runs (`read_only_commands_beside_rollovers_and_retention_
/// always_succeed` in airomem-cli's tests). Each attempt still follows a run of retention.
const REREADS: u32 = 64;

/// Runs `read` beside a store that may be running, and runs it again while its outcome is
/// not `good` and the store's retention ran meanwhile (its [`retention_mark`] changed): what
/// went wrong may then be a file retention took. Each retry follows a run of retention, so
/// the store's pace bounds the loop, and at most [`REREADS`] retries are made; damage alone
/// changes no mark, so its outcome is returned at once.
pub(crate) fn reread_while_retention_runs<T>(
    storage: &dyn Storage,
    dir: &Path,
    good: impl Fn(&Result<T, Error>) -> bool,
    mut read: impl FnMut() -> Result<T, Error>,
) -> Result<T, Error> {
    let mut attempts = 0;
    let mut before = retention_mark(storage, dir);
    loop {
        let outcome = read();
        if good(&outcome) || attempts >= REREADS {
            return outcome;
        }
        // The mark after one read is the mark before the next: one listing per attempt.
        let after = retention_mark(storage, dir);
        if after == before {
            return outcome;
        }
        before = after;
        attempts += 1;
        debug!(attempts, "the store's retention ran during a read; reading again");
    }
}

/// What a run of snapshot retention changes in a store directory: its snapshots (one is
/// published before each run, older ones go in it) and its oldest segment (the run removes
/// segments from the oldest on). A rollover changes neither. `None` if `dir` cannot be
/// listed.
///
/// A read without the lock compares the mark before and after: if it changed, what went
/// wrong may be a file retention took (listed and gone when read, or a gap between a
/// snapshot and the segments listed after it), and a read started again begins from the
/// newer snapshot. If it did not, the read's failure is the store's own.
pub(crate) fn retention_mark(storage: &dyn Storage, dir: &Path) -> Option<(Vec<Seq>, Option<Seq>)> {
    let names = storage.list(dir).ok()?;
    let mut snapshots: Vec<Seq> = names.iter().filter_map(|n| snapshot_seq(n)).collect();
    snapshots.sort_unstable();
    let oldest_segment = names.iter().filter_map(|n| segment::parse_file_name(n)).min();
    Some((snapshots, oldest_segment))
}

/// A read-only view of a store directory with its archive merged in.
///
/// Listing the store directory lists both; reading a file of it that is not there reads the
/// archive's copy (retention may move a file while a read is under way). Every write fails
/// with [`io::ErrorKind::PermissionDenied`]: nothing that reads through this view can change
/// a file, whatever its code path.
#[derive(Debug)]
pub(crate) struct HistoryView {
    inner: Arc<dyn Storage>,
    dir: PathBuf,
    archive: PathBuf,
}

impl HistoryView {
    pub(crate) fn new(inner: Arc<dyn Storage>, dir: &Path) -> HistoryView {
        HistoryView { inner, dir: dir.to_path_buf(), archive: dir.join(ARCHIVE_DIR) }
    }

    /// The store directory alone, read-only.
    pub(crate) fn without_archive(inner: Arc<dyn Storage>, dir: &Path) -> HistoryView {
        HistoryView { inner, dir: dir.to_path_buf(), archive: PathBuf::new() }
    }

    /// Where to read `path` from if it is not where it was listed.
    fn archived(&self, path: &Path) -> Option<PathBuf> {
        (!self.archive.as_os_str().is_empty() && path.parent() == Some(self.dir.as_path()))
            .then(|| self.archive.join(path.file_name().unwrap_or_default()))
    }

    fn with_fallback<T>(&self, path: &Path, read: impl Fn(&Path) -> io::Result<T>) -> io::Result<T> {
        match read(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => match self.archived(path) {
                Some(archived) => read(&archived).map_err(|_| e),
                None => Err(e),
            },
            other => other,
        }
    }
}

fn read_only() -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, "a point-in-time read never writes")
}

impl Storage for HistoryView {
    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        Err(read_only())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = self.inner.list(dir)?;
        if dir == self.dir && !self.archive.as_os_str().is_empty() {
            match self.inner.list(&self.archive) {
                Ok(archived) => {
                    names.extend(archived);
                    names.sort_unstable();
                    names.dedup();
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(names)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.with_fallback(path, |p| self.inner.read(p))
    }

    fn read_prefix(&self, path: &Path, len: usize) -> io::Result<Vec<u8>> {
        self.with_fallback(path, |p| self.inner.read_prefix(p, len))
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn StorageReadFile>> {
        // Forwarded, so that a follower reads only the tail of a segment, in place.
        self.with_fallback(path, |p| self.inner.open_read(p))
    }

    fn create(&self, _path: &Path) -> io::Result<Box<dyn StorageFile>> {
        Err(read_only())
    }

    fn open_write(&self, _path: &Path) -> io::Result<Box<dyn StorageFile>> {
        Err(read_only())
    }

    fn rename(&self, _from: &Path, _to: &Path) -> io::Result<()> {
        Err(read_only())
    }

    fn remove(&self, _path: &Path) -> io::Result<()> {
        Err(read_only())
    }

    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        Err(read_only())
    }

    fn lock(&self, _path: &Path) -> io::Result<LockGuard> {
        Err(read_only())
    }
}
