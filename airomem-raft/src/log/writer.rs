//! The writer thread: the only code that changes log files once the log is open.
//!
//! Requests arrive in the order openraft issued them over one channel. The thread takes
//! every request already queued (up to [`MAX_BATCH`]) and handles them in order: adjacent
//! appends are merged into **one write and one `fdatasync`** (group commit), after which
//! their callbacks fire in order; a truncate, purge or vote first flushes the appends queued
//! before it, then does its own durable I/O before anything queued after it is written. A
//! failed write or sync poisons the log: nothing more is written, every later request gets
//! an error.

use std::io;
use std::mem;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use airomem::storage::{LockGuard, Storage, StorageFile};
use openraft::storage::LogFlushed;
use tokio::sync::oneshot;
use tracing::{debug, error};

use super::frame;
use super::meta::{self, Meta};
use super::recover::SegmentInfo;
use super::segment;
use crate::Error;
use crate::types::{LogId, TypeConfig, Vote};

/// At most this many requests are taken from the queue at once.
pub(crate) const MAX_BATCH: usize = 1024;

/// How often, at most, the commit point is written. It is advisory (a stale one only makes a
/// restarted node re-apply less before its leader tells it the rest), and each write replaces
/// the meta file: a write, two syncs and a rename. Written after every idle batch, it cost
/// three nodes on one disk more than the log itself.
const COMMIT_POINT_INTERVAL: Duration = Duration::from_millis(100);

/// How much zeroed space the newest segment keeps prepared past its entries (never past
/// `max_segment_bytes`, as the journal's `StoreOptions::preallocate` never passes the
/// segment size).
///
/// An append that stays within space the file already has changes no file size, so its
/// `fdatasync` is one device write. An append that grows the file must also make the new
/// size durable: on ext4 without a journal that is a synchronous inode write after the data,
/// on journaling file systems a journal commit. Measured with three nodes on one disk
/// (`--replication --quick`, 64 writers): 71–77k commits/s appending, 110–112k with
/// prepared space.
const PREPARE_CHUNK: u64 = 1024 * 1024;

/// What the writer is asked to do.
pub(crate) enum Request {
    /// Write encoded frames (`lens[i]` bytes each, for entries `first..`), then fire `callback`.
    Append { frames: Vec<u8>, lens: Vec<u32>, first: u64, callback: LogFlushed<TypeConfig> },
    /// Remove entries from `index` on, durably.
    Truncate { index: u64, done: oneshot::Sender<Result<(), Error>> },
    /// Record the purge point durably, then remove the segments it covers.
    Purge { upto: LogId, done: oneshot::Sender<Result<(), Error>> },
    /// Record the vote durably.
    Vote { vote: Vote, done: oneshot::Sender<Result<(), Error>> },
    /// Remember the committed log id; written with the next meta write or when idle.
    Committed(Option<LogId>),
    /// Wakes the writer after the halt flag was set, so that it stops at once.
    Halt,
}

pub(crate) struct Writer {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) dir: PathBuf,
    pub(crate) segments: Vec<SegmentInfo>,
    /// The newest segment, open for appending (opened lazily).
    pub(crate) active: Option<Box<dyn StorageFile>>,
    /// The meta file's content as last written.
    pub(crate) meta: Meta,
    /// `meta.committed` changed since the last meta write.
    pub(crate) committed_dirty: bool,
    /// When the meta file was last written (see [`COMMIT_POINT_INTERVAL`]).
    pub(crate) meta_written: Instant,
    pub(crate) poisoned: bool,
    pub(crate) max_segment_bytes: u64,
    /// Set by `LogHalter::halt` (a simulated kill): the writer stops before its next batch,
    /// writing nothing more, not even a pending commit point.
    pub(crate) halted: Arc<AtomicBool>,
    /// Held while the writer lives: one open log per directory.
    pub(crate) _lock: LockGuard,
}

struct PendingAppend {
    frames: Vec<u8>,
    lens: Vec<u32>,
    first: u64,
    callback: LogFlushed<TypeConfig>,
}

impl Writer {
    pub(crate) fn run(mut self, requests: Receiver<Request>) {
        let mut carried = None;
        loop {
            let request = match carried.take() {
                Some(request) => request,
                // A pending commit point is written once the interval is over, even if no
                // request comes.
                None if self.committed_dirty && !self.halted.load(Ordering::Acquire) => {
                    let wait = COMMIT_POINT_INTERVAL.saturating_sub(self.meta_written.elapsed());
                    match requests.recv_timeout(wait) {
                        Ok(request) => request,
                        Err(RecvTimeoutError::Timeout) => {
                            self.persist_meta_logged();
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                None => match requests.recv() {
                    Ok(request) => request,
                    Err(_) => break,
                },
            };
            if self.halted.load(Ordering::Acquire) {
                // Queued callbacks are dropped unfired: openraft sees the log gone.
                debug!(dir = %self.dir.display(), "Raft log writer halted");
                return;
            }
            let mut batch = vec![request];
            while batch.len() < MAX_BATCH {
                match requests.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            self.process(batch);
            // The commit point is advisory, so it is written only when nothing else waits,
            // and at most once per interval.
            match requests.try_recv() {
                Ok(request) => carried = Some(request),
                Err(TryRecvError::Empty)
                    if self.committed_dirty && self.meta_written.elapsed() >= COMMIT_POINT_INTERVAL =>
                {
                    self.persist_meta_logged();
                }
                Err(_) => {}
            }
        }
        if self.committed_dirty && !self.halted.load(Ordering::Acquire) {
            self.persist_meta_logged();
        }
        debug!(dir = %self.dir.display(), "Raft log writer stopped");
    }

    fn persist_meta_logged(&mut self) {
        if self.poisoned {
            // Nothing more is written. Forgetting the point keeps the idle wait for it from
            // spinning (a zero timeout, forever) on a poisoned log.
            self.committed_dirty = false;
        } else {
            // `guarded` logs and poisons on failure; nobody waits for this write.
            drop(self.guarded(Writer::persist_meta));
        }
    }

    fn process(&mut self, batch: Vec<Request>) {
        let mut appends = Vec::new();
        for request in batch {
            match request {
                Request::Append { frames, lens, first, callback } => {
                    appends.push(PendingAppend { frames, lens, first, callback });
                }
                Request::Halt => {}
                Request::Committed(committed) => {
                    self.meta.committed = committed;
                    self.committed_dirty = true;
                }
                Request::Truncate { index, done } => {
                    self.flush(mem::take(&mut appends));
                    drop(done.send(self.guarded(|w| w.truncate(index))));
                }
                Request::Purge { upto, done } => {
                    self.flush(mem::take(&mut appends));
                    drop(done.send(self.guarded(|w| w.purge(upto))));
                }
                Request::Vote { vote, done } => {
                    self.flush(mem::take(&mut appends));
                    drop(done.send(self.guarded(|w| {
                        w.meta.vote = Some(vote);
                        w.persist_meta()
                    })));
                }
            }
        }
        self.flush(appends);
    }

    /// Runs `op` unless the log is poisoned, and poisons it if `op` fails.
    fn guarded(&mut self, op: impl FnOnce(&mut Writer) -> Result<(), Error>) -> Result<(), Error> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        let result = op(self);
        if let Err(e) = &result {
            error!(error = %e, "Raft log write failed; the log accepts no more writes");
            self.poisoned = true;
        }
        result
    }

    fn persist_meta(&mut self) -> Result<(), Error> {
        meta::write(self.storage.as_ref(), &self.dir, &self.meta)?;
        self.committed_dirty = false;
        self.meta_written = Instant::now();
        Ok(())
    }

    /// Writes the merged appends with one write and one fdatasync, then fires their callbacks.
    fn flush(&mut self, appends: Vec<PendingAppend>) {
        if appends.is_empty() {
            return;
        }
        let result = self.guarded(|w| w.write_appends(&appends));
        for append in appends {
            let outcome = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::other(e.to_string())),
            };
            append.callback.log_io_completed(outcome);
        }
    }

    fn write_appends(&mut self, appends: &[PendingAppend]) -> Result<(), Error> {
        let first = appends[0].first;
        let expected = self.segments.last().map(SegmentInfo::end);
        if let Some(expected) = expected
            && expected != first
        {
            return Err(Error::NotContiguous { expected, got: first });
        }
        let roll = self.segments.last().is_none_or(|s| s.len >= self.max_segment_bytes);
        let mut buf = Vec::with_capacity(appends.iter().map(|a| a.frames.len()).sum::<usize>() + segment::HEADER_LEN);
        if roll {
            buf.extend_from_slice(&segment::header(first));
        }
        let frames_start = buf.len();
        let mut lens = Vec::new();
        let mut next = first;
        for append in appends {
            if append.first != next {
                return Err(Error::NotContiguous { expected: next, got: append.first });
            }
            next += append.lens.len() as u64;
            buf.extend_from_slice(&append.frames);
            lens.extend_from_slice(&append.lens);
        }
        frame::mark_first_of_write(&mut buf[frames_start..]);

        if roll {
            self.give_back_prepared_space()?;
            let file = segment::path(&self.dir, first);
            let handle = self.storage.create(&file).map_err(|e| Error::io("create", &file, e))?;
            self.active = Some(handle);
            self.segments.push(SegmentInfo { first, offsets: Vec::new(), len: 0, file_len: 0 });
        }
        let file = segment::path(&self.dir, self.segments.last().expect("a segment exists or was just created").first);
        let (at, file_len) = {
            let segment = self.segments.last().expect("a segment exists or was just created");
            (segment.len, segment.file_len)
        };
        let end = at + buf.len() as u64;
        let limit = self.max_segment_bytes;
        let handle = self.active_file()?;
        handle.write_at(at, &buf).map_err(|e| Error::io("write", &file, e))?;
        let prepared = if end > file_len {
            // Growing the file anyway: prepare the space the next appends need, under this sync.
            let prepared = (end + PREPARE_CHUNK).min(limit).max(end);
            handle.write_zeros(end, prepared).map_err(|e| Error::io("write", &file, e))?;
            prepared
        } else {
            file_len
        };
        handle.sync_data().map_err(|e| Error::io("fdatasync", &file, e))?;
        if roll {
            // The new file's name must be durable before its entries are acknowledged.
            self.storage.sync_dir(&self.dir).map_err(|e| Error::io("sync directory", &self.dir, e))?;
        }
        let segment = self.segments.last_mut().expect("the segment just written");
        let mut offset = segment.len + frames_start as u64;
        for len in lens {
            segment.offsets.push(offset);
            offset += u64::from(len);
        }
        segment.len += buf.len() as u64;
        segment.file_len = prepared;
        Ok(())
    }

    /// Cuts the newest segment's prepared space, durably, before a newer segment is created:
    /// recovery accepts zeros past the entries only in the newest segment. (The journal's
    /// `give_back_prepared_space` is the same rule for single-node segments.)
    fn give_back_prepared_space(&mut self) -> Result<(), Error> {
        let Some(last) = self.segments.last() else { return Ok(()) };
        if last.file_len <= last.len {
            return Ok(());
        }
        let (len, file) = (last.len, segment::path(&self.dir, last.first));
        let handle = self.active_file()?;
        handle.set_len(len).map_err(|e| Error::io("set_len", &file, e))?;
        handle.sync_data().map_err(|e| Error::io("fdatasync", &file, e))?;
        self.segments.last_mut().expect("checked above").file_len = len;
        Ok(())
    }

    fn active_file(&mut self) -> Result<&mut Box<dyn StorageFile>, Error> {
        if self.active.is_none() {
            let first = self.segments.last().expect("only called with a segment").first;
            let file = segment::path(&self.dir, first);
            self.active = Some(self.storage.open_write(&file).map_err(|e| Error::io("open", &file, e))?);
        }
        Ok(self.active.as_mut().expect("just opened"))
    }

    fn truncate(&mut self, index: u64) -> Result<(), Error> {
        // Newest first, each removal durable before the next, so that a crash leaves a
        // contiguous prefix of the log, never a hole.
        while let Some(last) = self.segments.last()
            && last.first >= index
        {
            let file = segment::path(&self.dir, last.first);
            self.active = None;
            self.storage.remove(&file).map_err(|e| Error::io("remove", &file, e))?;
            self.storage.sync_dir(&self.dir).map_err(|e| Error::io("sync directory", &self.dir, e))?;
            self.segments.pop();
        }
        let Some(last) = self.segments.last() else { return Ok(()) };
        if last.end() <= index {
            return Ok(());
        }
        let at = last.offsets[(index - last.first) as usize];
        let file = segment::path(&self.dir, last.first);
        let handle = self.active_file()?;
        handle.set_len(at).map_err(|e| Error::io("set_len", &file, e))?;
        handle.sync_data().map_err(|e| Error::io("fdatasync", &file, e))?;
        let last = self.segments.last_mut().expect("checked above");
        last.offsets.truncate((index - last.first) as usize);
        last.len = at;
        last.file_len = at;
        Ok(())
    }

    fn purge(&mut self, upto: LogId) -> Result<(), Error> {
        // The purge point first: a crash after it leaves segments that recovery removes; the
        // other order could leave a log whose start nobody recorded. A purge point already
        // recorded still removes what it covers (entries appended below it, as openraft's
        // suite does, are purged again).
        if self.meta.purged.is_none_or(|p| p < upto) {
            self.meta.purged = Some(upto);
            self.persist_meta()?;
        }
        let mut removed = false;
        while let Some(oldest) = self.segments.first()
            && oldest.end() <= upto.index + 1
        {
            let file = segment::path(&self.dir, oldest.first);
            if self.segments.len() == 1 {
                self.active = None;
            }
            self.storage.remove(&file).map_err(|e| Error::io("remove", &file, e))?;
            self.segments.remove(0);
            removed = true;
        }
        if removed {
            self.storage.sync_dir(&self.dir).map_err(|e| Error::io("sync directory", &self.dir, e))?;
        }
        Ok(())
    }
}
