//! Who owns a store's directory, and until when.
//!
//! The directory lock is owned by the **writer thread**, not by the `Store` handles: the
//! thread takes it over at open and drops it as the very last thing it does, after its last
//! batch, its closing sync and trim, and after the snapshot thread has finished (retention
//! included). Dropping the last handle therefore never unlocks a directory that a writer
//! still writes to, whichever thread drops it: that can be the writer thread itself, when a
//! `commit_with` closure owns the last handle or returns it to a caller who stopped waiting.
//!
//! Dropping the last handle only asks the writer to finish; it does not wait. So that a
//! program that drops a store and opens it again at once (in the same process) is not told
//! `Locked`, every writer thread of this process registers its directory here: an open of a
//! directory whose store is *closing* waits for that writer to finish; an open of a
//! directory whose store is still *open* fails with `Locked` as before.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use airomem_core::storage::{LockGuard, Storage};
use tracing::debug;

use crate::Error;
use crate::layout::LOCK_FILE;

/// How long an open waits for a closing store of the same directory before it gives up and
/// reports `Locked`: longer than any sane final batch and snapshot, short of a hang.
const CLOSING_PATIENCE: Duration = Duration::from_secs(60);

/// The running writer threads of this process, by directory.
static WRITERS: LazyLock<Mutex<HashMap<PathBuf, Arc<Life>>>> = LazyLock::new(Mutex::default);
/// Notified whenever a writer thread leaves `WRITERS`.
static FINISHED: Condvar = Condvar::new();

/// One writer thread's tenure of a directory.
#[derive(Debug, Default)]
pub(crate) struct Life {
    /// Set once the store was asked to close (last handle dropped, or `close`).
    closing: std::sync::atomic::AtomicBool,
}

impl Life {
    /// The store will take no more commits; the writer is finishing.
    pub(crate) fn closing(&self) {
        self.closing.store(true, std::sync::atomic::Ordering::Release);
    }
}

/// The registration of a running writer thread; dropping it (on that thread, after the lock)
/// tells waiting opens that the directory is free.
pub(crate) struct Tenure {
    key: PathBuf,
    life: Arc<Life>,
}

impl Tenure {
    pub(crate) fn life(&self) -> Arc<Life> {
        Arc::clone(&self.life)
    }
}

impl Drop for Tenure {
    fn drop(&mut self) {
        let mut writers = WRITERS.lock().unwrap_or_else(PoisonError::into_inner);
        if writers.get(&self.key).is_some_and(|life| Arc::ptr_eq(life, &self.life)) {
            writers.remove(&self.key);
        }
        FINISHED.notify_all();
    }
}

/// The key a directory is registered under: its canonical path when the real file system has
/// it, else the path as given (a simulated disk).
fn key(dir: &Path) -> PathBuf {
    std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// Waits until no closing store of this process holds `dir` (bounded), then registers the
/// writer that is about to take it. Returns `None` when an open store is registered under
/// the same path: the directory lock then decides (it reports `Locked`, unless the path names
/// a directory of another storage, such as a second simulated disk).
fn enter(dir: &Path) -> Option<Tenure> {
    let key = key(dir);
    let deadline = Instant::now() + CLOSING_PATIENCE;
    let mut writers = WRITERS.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        match writers.get(&key) {
            None => {
                let life = Arc::new(Life::default());
                writers.insert(key.clone(), Arc::clone(&life));
                return Some(Tenure { key, life });
            }
            Some(life) if life.closing.load(std::sync::atomic::Ordering::Acquire) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return None;
                }
                debug!(dir = %dir.display(), "waiting for the closing store of this directory to finish");
                writers = FINISHED.wait_timeout(writers, left).unwrap_or_else(PoisonError::into_inner).0;
            }
            Some(_) => return None,
        }
    }
}

/// Creates `dir` if it is missing and makes every directory this created durable before
/// anything is written in it: a directory's entry lives in its parent, so each parent is
/// synced, outermost first. For an existing store that is one fsync of its parent, which
/// is cheap. Used by every path that creates a store (an open, an import).
fn make_dir(storage: &dyn Storage, dir: &Path) -> Result<(), Error> {
    let mut missing: Vec<&Path> = Vec::new();
    for ancestor in dir.ancestors().filter(|a| !a.as_os_str().is_empty()) {
        match storage.list(ancestor) {
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => missing.push(ancestor),
            Err(e) => return Err(Error::io("list", ancestor)(e)),
        }
    }
    storage.create_dir_all(dir).map_err(Error::io("create directory", dir))?;
    let mut parents: Vec<&Path> = missing.iter().rev().filter_map(|d| d.parent()).collect();
    if missing.is_empty() {
        parents.extend(dir.parent());
    }
    for parent in parents.into_iter().filter(|p| !p.as_os_str().is_empty()) {
        storage.sync_dir(parent).map_err(Error::io("sync directory", parent))?;
    }
    Ok(())
}

/// Takes the directory lock of the store in `dir`: [`Error::Locked`] if another store (in
/// this process or another) holds it. The guard releases it when dropped; who holds the
/// guard, and so when that happens, is the caller's to say.
fn lock(storage: &dyn Storage, dir: &Path) -> Result<LockGuard, Error> {
    let lock_path = dir.join(LOCK_FILE);
    storage.lock(&lock_path).map_err(|e| match e.kind() {
        std::io::ErrorKind::WouldBlock => Error::Locked { dir: dir.to_path_buf() },
        _ => Error::io("lock", &lock_path)(e),
    })
}

/// A store directory claimed for writing: created and durable, registered as this process's
/// writer of it, and locked. Whoever holds the claim decides when the directory is free: the
/// writer thread drops the lock and then the tenure as the last thing it does; an import
/// drops both once its snapshot is written.
pub(crate) struct Claim {
    pub lock: LockGuard,
    pub tenure: Option<Tenure>,
}

/// The open sequence's first steps, shared by every path that writes a store (an open, an
/// import): create the directory and sync its parents ([`make_dir`]), wait for a closing
/// store of this process ([`enter`]), then take the lock ([`lock`]).
pub(crate) fn claim(storage: &dyn Storage, dir: &Path) -> Result<Claim, Error> {
    make_dir(storage, dir)?;
    let tenure = enter(dir);
    let lock = lock(storage, dir)?;
    Ok(Claim { lock, tenure })
}
