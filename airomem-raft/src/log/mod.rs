//! The Raft log: a journal of its own, beside (not inside) `airomem-journal`.
//!
//! * [`frame`]: one entry on disk; [`segment`]: segment files and their header;
//!   [`meta`]: the vote, purge point and commit point; [`recover`]: opening;
//!   [`writer`]: the thread that owns the files.
//! * [`LogStore`] implements openraft's `RaftLogStorage`, [`LogReader`] its `RaftLogReader`.
//!
//! Every live entry (after the purge point) is also kept in memory: `append` makes entries
//! readable at once, as openraft requires, and readers (the replication tasks) never touch
//! the disk. The storage seam reads whole files only, and openraft purges the log behind each
//! snapshot, which bounds what is held.

mod frame;
mod meta;
mod recover;
pub(crate) mod segment;
mod writer;

use std::collections::VecDeque;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::thread::JoinHandle;

use airomem::storage::Storage;
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{RaftLogReader, StorageIOError};
use tokio::sync::oneshot;
use tracing::info;

use crate::Error;
use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};
use writer::{Request, Writer};

/// How the log lays out its files.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LogOptions {
    /// A new segment starts when the newest one has reached this many bytes.
    pub(crate) max_segment_bytes: u64,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions { max_segment_bytes: 64 * 1024 * 1024 }
    }
}

/// What readers and the store share: the live entries and the persisted pointers, as
/// openraft last set them (they reach the disk in the same order through the writer).
#[derive(Debug, Default)]
struct Shared {
    /// Contiguous; `entries[0]` follows the purge point.
    entries: VecDeque<Entry>,
    purged: Option<LogId>,
    vote: Option<Vote>,
    committed: Option<LogId>,
}

impl Shared {
    fn last_log_id(&self) -> Option<LogId> {
        self.entries.back().map(|e| e.log_id).or(self.purged)
    }

    fn range(&self, range: impl RangeBounds<u64>) -> Vec<Entry> {
        let Some(first) = self.entries.front().map(|e| e.log_id.index) else { return Vec::new() };
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => i.saturating_add(1),
            Bound::Excluded(&i) => i,
            Bound::Unbounded => u64::MAX,
        };
        let len = self.entries.len() as u64;
        let from = start.saturating_sub(first).min(len);
        let to = end.saturating_sub(first).min(len);
        if from >= to {
            return Vec::new();
        }
        self.entries.range(from as usize..to as usize).cloned().collect()
    }
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // The guarded code never panics half-way through a change, so a poisoned lock still
    // holds consistent data.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The writer thread's end of the log; dropping the last handle stops it and waits for it,
/// so that the directory lock is released when the log is gone (except on the writer thread
/// itself, which releases it as it returns).
struct WriterHandle {
    requests: Mutex<Option<Sender<Request>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Shared with the writer: set to stop it as a killed process would stop.
    halted: Arc<AtomicBool>,
}

impl WriterHandle {
    fn send(&self, request: Request) -> Result<(), Error> {
        let requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        requests.as_ref().ok_or(Error::WriterStopped)?.send(request).map_err(|_| Error::WriterStopped)
    }
}

impl Drop for WriterHandle {
    fn drop(&mut self) {
        drop(self.requests.get_mut().unwrap_or_else(PoisonError::into_inner).take());
        let Some(thread) = self.thread.get_mut().unwrap_or_else(PoisonError::into_inner).take() else { return };
        // On the writer thread itself (a callback it runs held the last clone), joining
        // would wait for this very drop: the thread ends on its own once its queue is empty
        // and the sender above is gone, and releases the directory as it returns.
        if thread.thread().id() == std::thread::current().id() {
            return;
        }
        if thread.join().is_err() {
            tracing::error!("the Raft log writer thread panicked");
        }
    }
}

/// The Raft log of one node: openraft's `RaftLogStorage` over airomem's storage seam.
#[derive(Clone)]
pub(crate) struct LogStore {
    shared: Arc<Mutex<Shared>>,
    writer: Arc<WriterHandle>,
    dir: PathBuf,
    /// The newest durable snapshot's last log id, when purges wait for it (see
    /// [`LogStore::gate_purges`]).
    snapshots: Option<tokio::sync::watch::Receiver<Option<LogId>>>,
}

/// A reader of the log for openraft's replication tasks; it reads memory only.
#[derive(Clone)]
pub(crate) struct LogReader {
    shared: Arc<Mutex<Shared>>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl LogStore {
    /// Opens (or creates) the log in `dir`, recovering it; see `recover`.
    pub(crate) fn open(storage: Arc<dyn Storage>, dir: &Path, options: LogOptions) -> Result<LogStore, Error> {
        storage.create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
        let lock_path = dir.join("raft.lock");
        let lock = storage.lock(&lock_path).map_err(|e| Error::io("lock", &lock_path, e))?;
        let recovered = recover::recover(storage.as_ref(), dir)?;
        info!(
            dir = %dir.display(),
            entries = recovered.entries.len(),
            purged = ?recovered.meta.purged,
            committed = ?recovered.meta.committed,
            torn_tail_cut = recovered.torn_tail_cut,
            "Raft log opened"
        );
        let shared = Shared {
            entries: recovered.entries,
            purged: recovered.meta.purged,
            vote: recovered.meta.vote,
            committed: recovered.meta.committed,
        };
        let writer = Writer {
            storage,
            dir: dir.to_path_buf(),
            segments: recovered.segments,
            active: None,
            meta: recovered.meta,
            committed_dirty: false,
            meta_written: std::time::Instant::now(),
            poisoned: false,
            max_segment_bytes: options.max_segment_bytes,
            halted: Arc::new(AtomicBool::new(false)),
            _lock: lock,
        };
        let halted = Arc::clone(&writer.halted);
        let (requests, receiver) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("airomem-raft-log".into())
            .spawn(move || writer.run(receiver))
            .map_err(|e| Error::io("spawn the writer thread for", dir, e))?;
        Ok(LogStore {
            shared: Arc::new(Mutex::new(shared)),
            writer: Arc::new(WriterHandle {
                requests: Mutex::new(Some(requests)),
                thread: Mutex::new(Some(thread)),
                halted,
            }),
            dir: dir.to_path_buf(),
            snapshots: None,
        })
    }

    /// Makes every purge wait until a durable snapshot covers what it removes.
    ///
    /// openraft 0.9 purges a follower's log up to a snapshot it is installing in the same
    /// step as it hands the install to the state machine, without waiting for the install
    /// (`FollowingHandler::install_full_snapshot`). Purged first, a power cut before the
    /// snapshot reached the disk left a log starting past the newest snapshot: the entries
    /// between were nowhere, some of them possibly acknowledged, and openraft refused to
    /// start on such a node (it panicked on its state check). Waiting keeps the order
    /// durable snapshot, then purge; the wait holds up only the core's next log command.
    pub(crate) fn gate_purges(&mut self, snapshots: tokio::sync::watch::Receiver<Option<LogId>>) {
        self.snapshots = Some(snapshots);
    }

    /// A reader of this log (what `get_log_reader` returns, without a runtime).
    pub(crate) fn reader(&self) -> LogReader {
        LogReader { shared: Arc::clone(&self.shared) }
    }

    /// A switch that stops this log's writer as a killed process would stop. It holds no
    /// strong reference, so it never keeps the writer (and the directory lock) alive.
    pub(crate) fn halter(&self) -> LogHalter {
        LogHalter { writer: Arc::downgrade(&self.writer) }
    }

    async fn call(&self, request: impl FnOnce(oneshot::Sender<Result<(), Error>>) -> Request) -> Result<(), Error> {
        let (done, wait) = oneshot::channel();
        self.writer.send(request(done))?;
        wait.await.map_err(|_| Error::WriterStopped)?
    }
}

fn write_error(e: &Error) -> StorageError {
    StorageIOError::write_logs(e).into()
}

impl LogReader {
    /// The live entries in `range` (those not purged), read from memory.
    pub(crate) fn entries(&self, range: std::ops::Range<u64>) -> Vec<Entry> {
        lock(&self.shared).range(range)
    }

    /// The index of the last entry openraft reported committed.
    pub(crate) fn committed(&self) -> Option<u64> {
        lock(&self.shared).committed.map(|id| id.index)
    }
}

/// Stops a log's writer thread at once: see [`LogStore::halter`].
pub(crate) struct LogHalter {
    writer: Weak<WriterHandle>,
}

impl LogHalter {
    /// The writer finishes the write or sync it is in (as a kill can land after it) and then
    /// writes nothing more; later requests fail with [`Error::WriterStopped`]. The directory
    /// lock is released once the writer thread has returned.
    pub(crate) fn halt(&self) {
        // Upgrading can make this the last strong handle for a moment; its drop then joins
        // the writer, which stops at its next request since the flag is set before the
        // wake-up, but first finishes the write or sync it is in: this can block for that
        // long (see `ReplicatedStore::halt`).
        if let Some(writer) = self.writer.upgrade() {
            writer.halted.store(true, Ordering::Release);
            drop(writer.send(Request::Halt));
        }
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(lock(&self.shared).range(range))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(lock(&self.shared).range(range))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let shared = lock(&self.shared);
        Ok(LogState { last_purged_log_id: shared.purged, last_log_id: shared.last_log_id() })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader { shared: Arc::clone(&self.shared) }
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        lock(&self.shared).vote = Some(*vote);
        let vote = *vote;
        self.call(|done| Request::Vote { vote, done }).await.map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(lock(&self.shared).vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        lock(&self.shared).committed = committed;
        self.writer.send(Request::Committed(committed)).map_err(|e| write_error(&e))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(lock(&self.shared).committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let Some(first) = entries.first().map(|e| e.log_id.index) else {
            callback.log_io_completed(Ok(()));
            return Ok(());
        };
        let mut frames = Vec::new();
        let mut lens = Vec::with_capacity(entries.len());
        {
            let mut shared = lock(&self.shared);
            // The log never holds a hole: an append continues the last entry; an empty log
            // takes any start up to the purge point + 1 (openraft's suite appends entries a
            // purge already covers, and openraft purges them again at startup).
            let expected = match (shared.entries.back(), shared.purged) {
                (Some(last), _) => Some(last.log_id.index + 1),
                (None, Some(purged)) if first > purged.index + 1 => {
                    return Err(write_error(&Error::NotContiguous { expected: purged.index + 1, got: first }));
                }
                (None, _) => None,
            };
            for (i, entry) in entries.iter().enumerate() {
                let want = expected.map_or(first, |e| e) + i as u64;
                if entry.log_id.index != want {
                    return Err(write_error(&Error::NotContiguous { expected: want, got: entry.log_id.index }));
                }
                let before = frames.len();
                frame::encode(entry, false, &mut frames).map_err(|e| write_error(&e))?;
                lens.push(u32::try_from(frames.len() - before).expect("a frame is at most MAX_PAYLOAD_LEN + header"));
            }
            shared.entries.extend(entries);
        }
        self.writer.send(Request::Append { frames, lens, first, callback }).map_err(|e| write_error(&e))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        {
            let mut shared = lock(&self.shared);
            if let Some(first) = shared.entries.front().map(|e| e.log_id.index) {
                let keep = log_id.index.saturating_sub(first).min(shared.entries.len() as u64);
                shared.entries.truncate(keep as usize);
            }
        }
        let index = log_id.index;
        self.call(|done| Request::Truncate { index, done }).await.map_err(|e| write_error(&e))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        if let Some(snapshots) = self.snapshots.as_mut() {
            // Wait for the snapshot that covers what goes: openraft purges behind a snapshot
            // it is still installing (see `gate_purges`). A node stopping drops this wait
            // with the core.
            if snapshots.wait_for(|durable| *durable >= Some(log_id)).await.is_err() {
                return Err(write_error(&Error::WriterStopped));
            }
        }
        {
            let mut shared = lock(&self.shared);
            while shared.entries.front().is_some_and(|e| e.log_id.index <= log_id.index) {
                shared.entries.pop_front();
            }
            if shared.purged < Some(log_id) {
                shared.purged = Some(log_id);
            }
        }
        self.call(|done| Request::Purge { upto: log_id, done }).await.map_err(|e| write_error(&e))
    }
}

/// The frame of `entry`, for tests that lay out damaged files.
#[cfg(test)]
pub(crate) fn encode_for_test(entry: &Entry, out: &mut Vec<u8>) {
    frame::encode(entry, true, out).expect("encodes");
}

#[cfg(test)]
mod handle_tests {
    use super::*;

    /// The last handle can be dropped on the writer thread itself (a callback it runs may
    /// hold the final clone): that drop must not try to join the thread it runs on.
    #[test]
    fn the_last_handle_dropped_on_the_writer_thread_does_not_join_itself() {
        let (requests, _unused) = mpsc::channel::<Request>();
        let (give, take) = mpsc::channel::<Arc<WriterHandle>>();
        let (done_tx, done_rx) = mpsc::channel::<bool>();
        let thread = std::thread::spawn(move || {
            let handle = take.recv().expect("the handle arrives");
            let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(handle)));
            done_tx.send(dropped.is_ok()).expect("report");
        });
        let handle = Arc::new(WriterHandle {
            requests: Mutex::new(Some(requests)),
            thread: Mutex::new(Some(thread)),
            halted: Arc::new(AtomicBool::new(false)),
        });
        give.send(handle).expect("hand over the last handle");
        assert!(done_rx.recv().expect("the thread reports"), "dropping the last handle on its own thread panicked");
    }
}
