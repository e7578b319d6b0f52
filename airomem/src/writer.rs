//! The writer thread: owns the journal, turns queued commits into batches (one write, one
//! sync each), applies each batch under one write-lock acquisition, then acknowledges.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

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

use airomem_core::{CommitContext, Seq, Serializer, State};
use airomem_journal::{JournalConfig, JournalWriter};
use tokio::sync::{OwnedSemaphorePermit, oneshot};
use tracing::{debug, error, warn};

use crate::execute::execute;
use crate::health::Health;
use crate::rebuild::rebuild;
use crate::stats::Counters;
use crate::{Committed, CommittedUnit, Durability, Error};

/// What the writer shares with the `Store` handles.
pub(crate) struct Shared<S> {
    pub state: RwLock<S>,
    pub counters: Arc<Counters>,
    /// Whether commits and reads are still served (see [`crate::health`]).
    pub health: Health,
    /// Commits handed to the writer so far (see [`Writer::linger`]).
    pub submitted: std::sync::atomic::AtomicU64,
    /// Commits whose callers are waiting for their outcome.
    pub in_flight: AtomicUsize,
    /// How long a lone caller may poll for its outcome before sleeping, in nanoseconds: zero
    /// when the disk is too slow for polling to pay (see [`crate::StoreOptions::spin_limit`]).
    pub spin_nanos: AtomicU64,
    /// Whether a lone caller starts its poll in place, without yielding: only when no sync
    /// stands between its command and its receipt. Under `Fsync` a core spinning in place is
    /// one the file system's journal thread may need to finish the sync (measured: 12 %
    /// fewer lone commits on 2 cores).
    pub spin_in_place: AtomicBool,
}

impl<S> Shared<S> {
    pub(crate) fn new(state: S, counters: Arc<Counters>) -> Self {
        Shared {
            state: RwLock::new(state),
            counters,
            health: Health::default(),
            submitted: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            spin_nanos: AtomicU64::new(0),
            spin_in_place: AtomicBool::new(false),
        }
    }
}

/// How the caller of one commit hears of its outcome.
pub(crate) enum Reply<S> {
    Receipt(oneshot::Sender<Result<Committed, Error>>),
    /// The receipt of an atomic unit.
    Unit(oneshot::Sender<Result<CommittedUnit, Error>>),
    /// Runs under the write lock right after the command, so it sees the state exactly as
    /// the command left it.
    Query(QueryReply<S>),
}

/// The closure behind [`Reply::Query`]: handed the state right after the command, or the
/// error; computes the caller's result and returns the step that delivers it.
pub(crate) type QueryReply<S> = Box<dyn FnOnce(Result<(&S, Committed), Error>) -> Deliver + Send>;

/// Tells a caller its outcome.
pub(crate) type Deliver = Box<dyn FnOnce() + Send>;

impl<S> Reply<S> {
    fn fail(self, error: Error) {
        self.prepare_failure(error).deliver();
    }

    fn prepare_failure(self, error: Error) -> Outcome {
        match self {
            Reply::Receipt(tx) => Outcome::Receipt(tx, Err(error)),
            Reply::Unit(tx) => Outcome::Unit(tx, Err(error)),
            Reply::Query(f) => Outcome::Deliver(f(Err(error))),
        }
    }

    /// The outcome of a request whose commands all succeeded: `first..=last`.
    fn prepare_success(self, state: &S, first: Seq, last: Seq, unix_nanos: u64) -> Outcome {
        let committed = Committed { seq: last, unix_nanos };
        match self {
            Reply::Receipt(tx) => Outcome::Receipt(tx, Ok(committed)),
            Reply::Unit(tx) => Outcome::Unit(tx, Ok(CommittedUnit { first, last, unix_nanos })),
            Reply::Query(f) => Outcome::Deliver(f(Ok((state, committed)))),
        }
    }
}

/// A caller's outcome, held back until the write lock is released and the counters are
/// updated, so that `stats()` read by an answered caller includes its command.
pub(crate) enum Outcome {
    Receipt(oneshot::Sender<Result<Committed, Error>>, Result<Committed, Error>),
    Unit(oneshot::Sender<Result<CommittedUnit, Error>>, Result<CommittedUnit, Error>),
    Deliver(Deliver),
}

impl Outcome {
    fn deliver(self) {
        match self {
            Outcome::Receipt(tx, result) => drop(tx.send(result)),
            Outcome::Unit(tx, result) => drop(tx.send(result)),
            Outcome::Deliver(deliver) => deliver(),
        }
    }
}

pub(crate) struct Request<S: State> {
    pub commands: Commands<S::Command>,
    pub reply: Reply<S>,
    /// The caller hands over another request right behind this one (an import does, for all
    /// but its last command): see [`Writer::follow_stream`].
    pub followed: bool,
    /// Back-pressure: released when the writer is done with the request.
    pub _permit: OwnedSemaphorePermit,
}

/// What a request commits: one command, or an atomic unit of several, each with the bytes
/// it is journaled as.
pub(crate) enum Commands<C> {
    One(Vec<u8>, C),
    Unit(Vec<(Vec<u8>, C)>),
}

impl<C> Commands<C> {
    fn bytes(&self) -> usize {
        match self {
            Commands::One(payload, _) => payload.len(),
            Commands::Unit(unit) => unit.iter().map(|(payload, _)| payload.len()).sum(),
        }
    }

    fn len(&self) -> usize {
        match self {
            Commands::One(..) => 1,
            Commands::Unit(unit) => unit.len(),
        }
    }
}

pub(crate) enum Message<S: State> {
    Commit(Request<S>),
    Close(oneshot::Sender<Result<(), Error>>),
    #[cfg(feature = "snapshot")]
    Snapshot(crate::snapshots::SnapshotReply),
}

/// How the writer paces batches and syncs: what it learned from the last ones.
struct Pacing {
    last_sync: Instant,
    /// How long the last `fdatasync` took: bounds how long a batch waits for stragglers.
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
    journal: JournalWriter,
    config: JournalConfig,
    serializer: Arc<Z>,
    shared: Arc<Shared<S>>,
    rx: Receiver<Message<S>>,
    durability: Durability,
    max_batch_bytes: usize,
    max_batch_commands: usize,
    /// The longest either side of a commit busy-waits (see [`crate::StoreOptions::spin_limit`]).
    spin_limit: Duration,
    /// Every command aborted while this writer ran; recovery finds them by their markers.
    aborted: BTreeSet<Seq>,
    /// A message taken from the queue that did not fit the batch: handled next.
    carry: Option<Message<S>>,
    pacing: Pacing,
    /// Held while files are removed by snapshot retention, and while the state is rebuilt
    /// from files after a panic.
    prune: Arc<std::sync::Mutex<()>>,
    #[cfg(feature = "snapshot")]
    snapshotter: crate::snapshots::Snapshotter,
    /// A rollback replayed a long journal tail: snapshot once the batch is done.
    #[cfg(feature = "snapshot")]
    snapshot_after_batch: bool,
}

/// A rollback that replays more commands than this leaves a snapshot behind, so that the next
/// one starts from it.
#[cfg(feature = "snapshot")]
const REBUILD_SNAPSHOT_AFTER: u64 = 10_000;

/// What the writer hands back when it stops: how closing went, and who asked for it (the
/// answer is sent only once the directory is unlocked).
pub(crate) struct Stopped {
    pub result: Result<(), Error>,
    pub reply: Option<oneshot::Sender<Result<(), Error>>>,
}

impl<S: State, Z: Serializer> Writer<S, Z> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        journal: JournalWriter,
        config: JournalConfig,
        serializer: Arc<Z>,
        shared: Arc<Shared<S>>,
        rx: Receiver<Message<S>>,
        options: &crate::StoreOptions,
        aborted: BTreeSet<Seq>,
        prune: Arc<std::sync::Mutex<()>>,
        #[cfg(feature = "snapshot")] snapshotter: crate::snapshots::Snapshotter,
    ) -> Self {
        if options.durability != Durability::Fsync {
            // No sync stands between a lone commit and its receipt (see `sync` for `Fsync`).
            let spin = BUFFERED_SPIN.min(options.spin_limit).as_nanos() as u64;
            shared.spin_nanos.store(spin, Ordering::Relaxed);
            shared.spin_in_place.store(true, Ordering::Relaxed);
        }
        Writer {
            journal,
            config,
            serializer,
            shared,
            rx,
            durability: options.durability,
            max_batch_bytes: options.max_batch_bytes,
            max_batch_commands: options.max_batch_commands,
            spin_limit: options.spin_limit,
            aborted,
            carry: None,
            pacing: Pacing {
                last_sync: Instant::now(),
                last_sync_took: Duration::ZERO,
                expected: 0,
                taken: 0,
                batch_bytes: 0,
            },
            prune,
            #[cfg(feature = "snapshot")]
            snapshotter,
            #[cfg(feature = "snapshot")]
            snapshot_after_batch: false,
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
                    let bytes = self.journal.counters().bytes;
                    let requests = batch.len() as u64;
                    let commands = batch.iter().map(|r| r.commands.len() as u64).sum::<u64>();
                    self.commit_batch(&mut batch, &mut outcomes);
                    self.expect_next(requests);
                    #[cfg(feature = "snapshot")]
                    // `|`, not `||`: the trigger counts every batch, and the flag is reset either way.
                    if self.snapshotter.due(commands, self.journal.counters().bytes - bytes)
                        | std::mem::take(&mut self.snapshot_after_batch)
                    {
                        self.snapshot(None);
                    }
                    #[cfg(not(feature = "snapshot"))]
                    let _ = (commands, bytes);
                }
                Message::Close(tx) => {
                    let result = self.finish();
                    if let (Err(e), true) = (&result, tx.is_closed()) {
                        // Nobody awaits `close`: the store is being dropped.
                        error!(error = %e, "the journal could not be synced when the store was dropped");
                    }
                    return Stopped { result, reply: Some(tx) };
                }
                #[cfg(feature = "snapshot")]
                Message::Snapshot(tx) => self.snapshot(Some(tx)),
            }
        }
        let result = self.finish();
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
            // wake up for until the next message.
            while self.journal.has_unsynced() && !self.shared.health.is_poisoned() {
                let wait = interval.saturating_sub(self.pacing.last_sync.elapsed());
                match self.rx.recv_timeout(wait) {
                    Ok(message) => return Some(message),
                    Err(RecvTimeoutError::Timeout) => self.periodic_sync(),
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

    /// Serializes the state for a snapshot, under the read lock, and hands the image to the
    /// snapshot thread. The journal is synced first, whatever the durability policy, so a
    /// snapshot never includes a record that a crash could take out of the journal.
    #[cfg(feature = "snapshot")]
    fn snapshot(&mut self, reply: Option<crate::snapshots::SnapshotReply>) {
        if let Err(error) = self.shared.health.check_commit() {
            if let Some(reply) = reply {
                drop(reply.send(Err(error)));
            }
            return;
        }
        if let Err(e) = self.sync() {
            let error = self.poison(e);
            if let Some(reply) = reply {
                drop(reply.send(Err(error)));
            }
            return;
        }
        let seq = Seq(self.journal.next_seq().0 - 1);
        let state = self.shared.state.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.snapshotter.take(&*self.serializer, &*state, seq, reply);
    }

    /// Marks the store poisoned by a failed write or sync, and returns the error its callers get.
    fn poison(&self, e: airomem_journal::JournalError) -> Error {
        let error = Error::write_failed(e);
        self.shared.health.poison(&error.to_string());
        error
    }

    fn commit_batch(&mut self, batch: &mut Vec<Request<S>>, outcomes: &mut Vec<Outcome>) {
        if let Err(error) = self.shared.health.check_commit() {
            for request in batch.drain(..) {
                request.reply.fail(error.clone());
            }
            return;
        }
        let unix_nanos = match self.write(batch) {
            Ok(nanos) => nanos,
            Err(e) => {
                let error = self.poison(e);
                for request in batch.drain(..) {
                    request.reply.fail(error.clone());
                }
                return;
            }
        };

        let total = batch.iter().map(|r| r.commands.len() as u64).sum::<u64>();
        let mut next = Seq(self.journal.next_seq().0 - total);
        let (mut commits, mut aborted) = (0, 0);
        {
            let shared = Arc::clone(&self.shared);
            let mut state = shared.state.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            for request in batch.drain(..) {
                let first = next;
                let count = request.commands.len() as u64;
                next = Seq(first.0 + count);
                if let Err(error) = shared.health.check_read() {
                    // The state could not be rebuilt after an earlier command of this batch
                    // panicked: executing more commands on it, or computing `commit_with`
                    // results from it, would hand out a half-applied state. The commands are
                    // durable and the next open replays them.
                    outcomes.push(request.reply.prepare_failure(error));
                    continue;
                }
                // No allocation for a lone command: this runs under the write lock.
                let (one, unit) = match request.commands {
                    Commands::One(_, command) => (Some(command), Vec::new()),
                    Commands::Unit(unit) => (None, unit),
                };
                let commands = one.into_iter().chain(unit.into_iter().map(|(_, command)| command));
                // The unit's commands run in order under this one write lock, so no reader
                // sees a part of it; the first that panics rolls all of them back.
                let mut panicked = None;
                for (i, command) in commands.enumerate() {
                    let seq = Seq(first.0 + i as u64);
                    if let Err(message) = execute(&mut *state, command, CommitContext::new(seq, unix_nanos)) {
                        panicked = Some((seq, message));
                        break;
                    }
                }
                match panicked {
                    None => {
                        commits += count;
                        outcomes.push(request.reply.prepare_success(&state, first, Seq(next.0 - 1), unix_nanos));
                    }
                    Some((seq, message)) => {
                        aborted += count;
                        warn!(seq = seq.0, message, "command panicked; aborting it and rolling the state back");
                        self.abort(&mut state, first, seq);
                        outcomes.push(request.reply.prepare_failure(Error::CommandPanicked { seq, message }));
                    }
                }
            }
        }
        self.shared.counters.record(commits, aborted, self.journal.counters(), self.journal.next_seq());
        for outcome in outcomes.drain(..) {
            outcome.deliver();
        }
    }

    /// Writes the batch with one write and makes it as durable as the policy asks.
    fn write(&mut self, batch: &[Request<S>]) -> Result<u64, airomem_journal::JournalError> {
        let unix_nanos = self.journal.begin_batch()?;
        for request in batch {
            match &request.commands {
                Commands::One(payload, _) => {
                    self.journal.push(payload)?;
                }
                Commands::Unit(unit) => {
                    for (i, (payload, _)) in unit.iter().enumerate() {
                        self.journal.push(payload)?;
                        if i + 1 < unit.len() {
                            self.journal.continue_unit();
                        }
                    }
                }
            }
        }
        self.journal.write_batch()?;
        match self.durability {
            Durability::Fsync => self.sync()?,
            Durability::Periodic(interval) if self.pacing.last_sync.elapsed() >= interval => self.sync()?,
            Durability::Periodic(_) | Durability::OsBuffered => {}
        }
        debug!(requests = batch.len(), next_seq = self.journal.next_seq().0, "batch written");
        Ok(unix_nanos)
    }

    fn sync(&mut self) -> Result<(), airomem_journal::JournalError> {
        let started = Instant::now();
        self.journal.sync()?;
        let pacing = &mut self.pacing;
        pacing.last_sync = Instant::now();
        pacing.last_sync_took = pacing.last_sync - started;
        if self.durability == Durability::Fsync {
            // A lone commit waits for about one sync, two if it just missed a batch.
            let wait = pacing.last_sync_took * 2;
            let spin = if wait <= self.spin_limit { wait.as_nanos() as u64 } else { 0 };
            self.shared.spin_nanos.store(spin, Ordering::Relaxed);
        }
        Ok(())
    }

    fn periodic_sync(&mut self) {
        if let Err(e) = self.sync() {
            self.poison(e);
        }
    }

    /// Journals an abort marker for `seq`, which panicked, and rebuilds the state as it was
    /// before `first`, the first command of its request (itself, or the start of its atomic
    /// unit: one aborted command cancels its whole unit, in replay too), holding the write
    /// lock throughout so that no reader sees a half-applied request.
    fn abort(&mut self, state: &mut S, first: Seq, seq: Seq) {
        self.aborted.insert(seq);
        if let Err(e) = self.journal.append_abort(seq) {
            // The command stays in the final batch on disk, so recovery aborts it.
            self.poison(e);
        }
        let until = Seq(first.0 - 1);
        let _files = self.prune.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match rebuild::<S, Z>(&self.config, &self.serializer, until, &self.aborted) {
            Ok((rebuilt, replayed)) => {
                *state = rebuilt;
                // The next rollback should not replay this tail again: with snapshots, one is
                // taken right after this batch, so a rebuild starts near the end.
                #[cfg(feature = "snapshot")]
                if replayed > REBUILD_SNAPSHOT_AFTER {
                    self.snapshot_after_batch = true;
                }
                #[cfg(not(feature = "snapshot"))]
                let _ = replayed;
            }
            Err(e) => {
                error!(error = %e, "the state could not be rebuilt after a panicking command; refusing reads");
                self.shared.health.mark_broken(&e.to_string());
            }
        }
    }

    /// Closes the journal: waits for the snapshot thread, then syncs and trims the newest
    /// segment. Reports an earlier failure instead when the store was poisoned.
    fn finish(&mut self) -> Result<(), Error> {
        #[cfg(feature = "snapshot")]
        self.snapshotter.shutdown();
        self.shared.health.check_commit()?;
        self.journal.trim().map_err(|e| self.poison(e))
    }
}

/// Marks the store as having lost its writer if dropped while the writer thread unwinds.
struct UnwindGuard<S>(Arc<Shared<S>>);

impl<S> Drop for UnwindGuard<S> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.health.writer_unwinding();
        }
    }
}
