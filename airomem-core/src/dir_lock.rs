//! The exclusive lock a store holds on its directory.
//!
//! Two layers, because an OS advisory lock alone is not exact:
//! * Within the process, a registry of held lock paths answers at once and exactly: a second
//!   open fails, and a reopen after the holder is dropped succeeds.
//! * Across processes, `flock` (std's `File::try_lock`). Its lock belongs to the open file
//!   description, which a child process shares between its `fork` and its `exec` (the fd is
//!   close-on-exec, not close-on-fork). A process that starts children can therefore see its
//!   own, already released, lock as held for that instant; so a refused `flock` is retried
//!   for a bounded time before it counts as held by someone else.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long a refused `flock` is retried: far longer than a fork-to-exec gap, short enough
/// for an error path.
const FLOCK_PATIENCE: Duration = Duration::from_millis(1000);

static HELD: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

/// A held directory lock; dropping it releases both layers.
pub(crate) struct DirLock {
    key: PathBuf,
    _file: File,
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let mut held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(held) = held.as_mut() {
            held.remove(&self.key);
        }
    }
}

/// Takes the lock at `path`, creating the file with `options` if needed.
pub(crate) fn lock(path: &Path, options: &OpenOptions) -> io::Result<DirLock> {
    let file = options.clone().read(true).write(true).create(true).truncate(false).open(path)?;
    let key = fs::canonicalize(path)?;
    {
        let mut held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
        if !held.get_or_insert_with(HashSet::new).insert(key.clone()) {
            return Err(would_block("the lock is held by another store in this process"));
        }
    }
    // From here on the registry entry is ours; the guard removes it on every exit path.
    let guard = DirLock { key, _file: file };
    let deadline = Instant::now() + FLOCK_PATIENCE;
    let mut pause = Duration::from_micros(200);
    loop {
        match guard._file.try_lock() {
            Ok(()) => return Ok(guard),
            Err(fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(fs::TryLockError::WouldBlock) => {
                return Err(would_block("the lock is held by another process"));
            }
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
    }
}

fn would_block(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::WouldBlock, message.to_string())
}
