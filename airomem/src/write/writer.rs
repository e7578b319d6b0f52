//! The writer thread: owns the journal, turns queued commits into batches (one write, one
//! sync each), applies each batch under one write-lock acquisition, then acknowledges.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use airomem_core::{Serializer, State};
use tokio::sync::oneshot;
use tracing::error;

use crate::Error;
use crate::options::{Durability, StoreOptions};
use crate::write::committer::Committer;
use crate::write::request::{Message, Request};
use crate::write::shared::Shared;

/// The longest a batch waits for expected callers, whatever the disk.
const MAX_LINGER: Duration = Duration::from_micros(500);
/// How long either side of a lone commit polls when no sync is awaited (`OsBuffered`,
/// `Periodic`): the round trip is then a write into the page cache, a few microseconds, and
/// a lone committer is back well within this.
const BUFFERED_SPIN: Duration = Duration::from_micros(50);
/// How long a batch under `OsBuffered` or `Periodic` waits for the next command of an import
/// (see [`Writer::follow_stream`]) before it is written without it. An import hands commands
/// over every microsecond or two; a pause longer than this means the importer is waiting
/// for receipts, or is done.
const STREAM_GAP: Duration = Duration::from_micros(20);
/// The longest such a batch waits in all, so that commits queued behind an import are not
/// held back for long.
const STREAM_LINGER: Duration = Duration::from_micros(500);

/// How the writer paces batches and syncs: what it learned from the last ones.
struct Pacing {
    /// How long the last `fdatasync` took (a copy of the committer's, read after each batch):
    /// bounds how long a batch waits for stragglers.
    last_sync_took: Duration,
    /// How many commits the next batch may expect: see [`Writer::linger`].
    expected: usize,
    /// Commits taken into batches so far; `Shared::submitted` minus this is the queue.
    taken: u64,
    /// Payload bytes in the batch being assembled.
    batch_bytes: usize,
}

/// The writer thread's whole world. Built by [`Writer::new`] at open and consumed by
/// [`Writer::run`] on its own thread.
pub(crate) struct Writer<S: State, Z> {
    committer: Arc<Mutex<Committer<S, Z>>>,
    shared: Arc<Shared<S>>,
    rx: Receiver<Message<S>>,
    durability: Durability,
    max_batch_bytes: usize,
    max_batch_commands: usize,
    /// The longest either side of a commit busy-waits (see [`crate::StoreOptions::spin_limit`]).
    spin_limit: Duration,
    /// A message taken from the queue that did not fit the batch: handled next.
    carry: Option<Message<S>>,
    pacing: Pacing,
}

/// What the writer hands back when it stops: how closing went, and who asked for it (the
/// answer is sent only once the directory is unlocked).
pub(crate) struct Stopped {
    pub result: Result<(), Error>,
    pub reply: Option<oneshot::Sender<Result<(), Error>>>,
}

impl<S: State, Z: Serializer> Writer<S, Z> {
    pub(crate) fn new(
        committer: Arc<Mutex<Committer<S, Z>>>,
        shared: Arc<Shared<S>>,
        rx: Receiver<Message<S>>,
        options: &StoreOptions,
    ) -> Self {
        if options.durability != Durability::Fsync {
            // No sync stands between a lone commit and its receipt (see `sync` for `Fsync`).
            let spin = BUFFERED_SPIN.min(options.spin_limit).as_nanos() as u64;
            shared.spin_nanos.store(spin, Ordering::Relaxed);
            shared.spin_in_place.store(true, Ordering::Relaxed);
        }
        Writer {
            committer,
            shared,
            rx,
            durability: options.durability,
            max_batch_bytes: options.max_batch_bytes,
            max_batch_commands: options.max_batch_commands,
            spin_limit: options.spin_limit,
            carry: None,
            pacing: Pacing { last_sync_took: Duration::ZERO, expected: 0, taken: 0, batch_bytes: 0 },
        }
    }

    /// The committer, for one batch or one sync. A committer poisoned by a panic in a
    /// caller's thread ([`Committer::may_commit_here`]) may be half way through a batch:
    /// this thread then stops as if it had panicked itself. A single command's own code runs
    /// there only inside `execute` and a `commit_with` query, which catch their panics; an
    /// atomic unit's commands are also dropped there when the unit is refused or rolled back.
    fn committer(&self) -> MutexGuard<'_, Committer<S, Z>> {
        match self.committer.lock() {
            Ok(guard) => guard,
            Err(_) => panic!("a commit panicked in its caller's thread while holding the journal"),
        }
    }

    /// Handles messages until the store is closed or every handle is gone, then closes the
    /// journal (and the snapshot thread). The caller releases the directory afterwards.
    pub(crate) fn run(mut self) -> Stopped {
        let mut batch: Vec<Request<S>> = Vec::new();
        let mut outcomes = Vec::new();
        // Declared after the batch, so dropped before it when a panic unwinds this thread:
        // the callers whose answers are dropped with the batch then find the store marked.
        let _unwinding = UnwindGuard(Arc::clone(&self.shared));
        while let Some(message) = self.next_message() {
            match message {
                Message::Commit(request) => {
                    self.pacing.batch_bytes = request.commands.bytes();
                    batch.push(request);
                    self.fill(&mut batch);
                    self.linger(&mut batch);
                    self.follow_stream(&mut batch);
                    let requests = batch.len() as u64;
                    let commands = batch.iter().map(|r| r.commands.len() as u64).sum::<u64>();
                    let mut committer = self.committer();
                    let bytes = committer.bytes();
                    committer.commit_batch(&mut batch, &mut outcomes, false);
                    // Under the lock, so that a caller who finds it equal to `submitted`
                    // knows nothing it sent earlier is still uncommitted.
                    self.shared.written.fetch_add(requests, Ordering::Release);
                    #[cfg(feature = "snapshot")]
                    if committer.snapshot_due(commands, bytes) {
                        committer.snapshot(None);
                    }
                    #[cfg(not(feature = "snapshot"))]
                    let _ = (commands, bytes);
                    let last_sync_took = committer.last_sync().1;
                    drop(committer);
                    self.pacing.last_sync_took = last_sync_took;
                    self.expect_next(requests);
                }
                Message::Close(tx) => {
                    let result = self.committer().finish();
                    if let (Err(e), true) = (&result, tx.is_closed()) {
                        // Nobody awaits `close`: the store is being dropped.
                        error!(error = %e, "the journal could not be synced when the store was dropped");
                    }
                    return Stopped { result, reply: Some(tx) };
                }
                #[cfg(feature = "snapshot")]
                Message::Snapshot(tx) => self.committer().snapshot(Some(tx)),
                Message::Nudge => {
                    self.committer().settle();
                    #[cfg(feature = "snapshot")]
                    {
                        let mut committer = self.committer();
                        let bytes = committer.bytes();
                        if committer.snapshot_due(0, bytes) {
                            committer.snapshot(None);
                        }
                    }
                }
            }
        }
        let result = self.committer().finish();
        if let Err(e) = &result {
            error!(error = %e, "the journal could not be synced when the store was dropped");
        }
        Stopped { result, reply: None }
    }

    /// Waits for the next message; with periodic durability, syncs when the interval ends.
    fn next_message(&mut self) -> Option<Message<S>> {
        if let Some(message) = self.carry.take() {
            return Some(message);
        }
        if self.pacing.expected <= 1 {
            // A lone committer comes back within microseconds of its receipt when it polls
            // for it; catching it here saves waking this thread. With more callers, polling
            // here would take the CPU they need to come back.
            let spin = match self.durability {
                Durability::Fsync => self.pacing.last_sync_took,
                Durability::Periodic(_) | Durability::OsBuffered => BUFFERED_SPIN,
            }
            .min(self.spin_limit);
            let started = Instant::now();
            while started.elapsed() < spin {
                match self.rx.try_recv() {
                    Ok(message) => return Some(message),
                    Err(TryRecvError::Disconnected) => return None,
                    Err(TryRecvError::Empty) => std::hint::spin_loop(),
                }
            }
        }
        if let Durability::Periodic(interval) = self.durability {
            // Nothing unsynced (or nothing more that can be synced, once poisoned): nothing to
            // wake up for until the next message. A caller that commits in its own thread
            // sends a nudge when it leaves the first unsynced write.
            loop {
                let wait = {
                    let committer = self.committer();
                    if !committer.has_unsynced() || self.shared.health.is_poisoned() {
                        break;
                    }
                    interval.saturating_sub(committer.last_sync().0.elapsed())
                };
                match self.rx.recv_timeout(wait) {
                    Ok(message) => return Some(message),
                    Err(RecvTimeoutError::Timeout) => self.committer().periodic_sync(),
                    Err(RecvTimeoutError::Disconnected) => return None,
                }
            }
            return self.rx.recv().ok();
        }
        self.rx.recv().ok()
    }

    /// Takes every commit already waiting, up to the batch limits. Anything else stops the
    /// batch and is handled next, in order.
    fn fill(&mut self, batch: &mut Vec<Request<S>>) {
        while self.room(batch) {
            let Ok(message) = self.rx.try_recv() else { break };
            if !self.add(batch, message) {
                break;
            }
        }
    }

    /// Waits briefly for the callers acknowledged by the previous batch to come back.
    ///
    /// Without this, N callers that each commit in a loop split into two groups that take
    /// turns: while one group's batch syncs, the other queues up, and the writer takes that
    /// queue the moment the sync returns, just before the first group's callers resubmit.
    /// Each sync then carries N/2 commands. Waiting for the expected callers (those just
    /// acknowledged plus those that were queued meanwhile), but never longer than the last
    /// sync took, lets one sync carry all N. A caller that does not come back costs the
    /// others that one sync's time once, after which the expectation adjusts. (Half a sync
    /// was too short once prepared space made syncs fast: 64 callers on 2 cores need longer
    /// than that to come back, and batches averaged 53–59 instead of 63.)
    fn linger(&mut self, batch: &mut Vec<Request<S>>) {
        if self.durability != Durability::Fsync || batch.len() >= self.pacing.expected {
            return;
        }
        let deadline = Instant::now() + self.pacing.last_sync_took.min(MAX_LINGER);
        while batch.len() < self.pacing.expected && self.room(batch) && self.carry.is_none() {
            let wait = deadline.saturating_duration_since(Instant::now());
            let Ok(message) = self.rx.recv_timeout(wait) else { break };
            if !self.add(batch, message) {
                break;
            }
        }
    }

    /// Under `OsBuffered` and `Periodic`, keeps a batch open while its last request says
    /// another follows, polling for it, until a gap of [`STREAM_GAP`] or [`STREAM_LINGER`] in
    /// all.
    ///
    /// Without this an import is cut into batches of three or four commands (measured: 3.7
    /// commands per write over a million, against 617 under `Fsync`, where the sync gives the
    /// queue time to fill): one task hands commands over about as fast as the writer journals
    /// them, so the writer finds the queue nearly empty each time it is free, and every few
    /// commands pay a `write` call and a batch's hand-offs. Only a caller that says more is
    /// coming is waited for, so lone commits and concurrent writers never wait here.
    fn follow_stream(&mut self, batch: &mut Vec<Request<S>>) {
        if self.durability == Durability::Fsync || !batch.last().is_some_and(|request| request.followed) {
            return;
        }
        let started = Instant::now();
        let mut last_arrival = started;
        while batch.last().is_some_and(|request| request.followed) && self.room(batch) && self.carry.is_none() {
            match self.rx.try_recv() {
                Ok(message) => {
                    if !self.add(batch, message) {
                        break;
                    }
                    last_arrival = Instant::now();
                }
                Err(TryRecvError::Empty) => {
                    let now = Instant::now();
                    if now - last_arrival > STREAM_GAP || now - started > STREAM_LINGER {
                        break;
                    }
                    std::hint::spin_loop();
                }
                Err(TryRecvError::Disconnected) => break,
            }
        }
    }

    /// After a batch of `done` commits was acknowledged: those callers, plus everyone who
    /// queued meanwhile, are who the next batch can expect.
    fn expect_next(&mut self, done: u64) {
        self.pacing.taken += done;
        let queued = self.shared.submitted.load(Ordering::Relaxed).saturating_sub(self.pacing.taken);
        self.pacing.expected = usize::try_from(done + queued).unwrap_or(usize::MAX).min(self.max_batch_commands);
    }

    fn room(&self, batch: &[Request<S>]) -> bool {
        batch.len() < self.max_batch_commands
    }

    /// Adds a commit to the batch if it fits; otherwise keeps the message for next time.
    fn add(&mut self, batch: &mut Vec<Request<S>>, message: Message<S>) -> bool {
        match message {
            Message::Commit(request) if self.pacing.batch_bytes + request.commands.bytes() <= self.max_batch_bytes => {
                self.pacing.batch_bytes += request.commands.bytes();
                batch.push(request);
                true
            }
            other => {
                self.carry = Some(other);
                false
            }
        }
    }
}

/// Marks the store as having lost its writer if dropped while the writer thread unwinds.
struct UnwindGuard<S>(Arc<Shared<S>>);

impl<S> Drop for UnwindGuard<S> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.health.writer_unwinding();
            // Reads waiting for a rollback this thread will never do now get the error.
            self.0.rollback.open();
        }
    }
}
