//! What commits a batch: the journal, the durability policy, the rollback of a panicking
//! command. The writer thread commits its batches through it, and so does a lone caller that
//! finds nothing queued (see [`Committer::may_commit_here`]): a single command through
//! [`Committer::commit_encoded`], an atomic unit through [`Committer::commit_here`]. One
//! mutex, held for a whole batch, keeps them in one order.
//!
//! Lock order: this mutex, then the state's lock, then the prune lock. Nothing holding the
//! state's lock takes this one.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use airomem_core::{CommitContext, Seq, Serializer, State};
use airomem_journal::{JournalConfig, JournalWriter};
use tracing::{debug, error, warn};

use crate::Error;
use crate::execute::{execute, panic_message};
use crate::meters::Stamp;
use crate::options::{Durability, StoreOptions};
use crate::recover::rebuild;
#[cfg(feature = "snapshot")]
use crate::snapshot::worker::{SnapshotReply, Snapshotter};
use crate::write::request::{Commands, Committed, Outcome, Request};
use crate::write::shared::Shared;

/// A rollback that replays more commands than this leaves a snapshot behind, so that the next
/// one starts from it.
#[cfg(feature = "snapshot")]
const REBUILD_SNAPSHOT_AFTER: u64 = 10_000;

/// The journal and everything a batch needs to be written, synced, applied and answered.
///
/// Owned by the store: its handles and its writer thread share it behind a mutex. The writer
/// thread closes it ([`Committer::finish`]) before it releases the directory; from then on
/// it refuses to write (`running` is false), so a handle that outlives the writer can never
/// touch files another store may have opened since.
pub(crate) struct Committer<S: State, Z> {
    journal: JournalWriter,
    config: JournalConfig,
    serializer: Arc<Z>,
    shared: Arc<Shared<S>>,
    durability: Durability,
    /// The longest either side of a commit busy-waits (see [`crate::StoreOptions::spin_limit`]).
    spin_limit: Duration,
    /// Every command aborted while this store ran; recovery finds them by their markers.
    aborted: BTreeSet<Seq>,
    /// Held while files are removed by snapshot retention, and while the state is rebuilt
    /// from files after a panic.
    prune: Arc<std::sync::Mutex<()>>,
    #[cfg(feature = "snapshot")]
    snapshotter: Snapshotter,
    /// A rollback replayed a long journal tail: snapshot once the batch is done.
    #[cfg(feature = "snapshot")]
    snapshot_after_batch: bool,
    /// The batch of one that [`Committer::commit_here`] commits, kept for its allocation.
    lone: Vec<Request<S>>,
    /// Its callers' outcomes, likewise.
    lone_outcomes: Vec<Outcome>,
    /// When each committed request of the batch being answered was handed over, for
    /// `airomem_commit_seconds`; kept for its allocation.
    queued: Vec<Stamp>,
    last_sync: Instant,
    /// How long the last `fdatasync` took: bounds how long a batch waits for stragglers.
    last_sync_took: Duration,
    /// False once the writer thread has closed the journal.
    running: bool,
    /// A command that panicked in a caller's thread, whose rollback (its abort marker, a
    /// rebuild from the files) is the writer thread's: `(first command of its request, the
    /// command)`. Until [`Committer::settle`] carries it out, reads wait at the
    /// [`crate::write::shared::RollbackGate`] and no caller commits in its own thread.
    pending_rollback: Option<(Seq, Seq)>,
}

/// The journal as a commit in a caller's thread found it (see [`Committer::leaves_work`]).
#[derive(Clone, Copy)]
struct BeforeHere {
    /// The write will be the first unsynced one under `Periodic`.
    wakes_timer: bool,
    /// The journal's byte count before the write.
    bytes: u64,
}

impl<S: State, Z: Serializer> Committer<S, Z> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        journal: JournalWriter,
        config: JournalConfig,
        serializer: Arc<Z>,
        shared: Arc<Shared<S>>,
        options: &StoreOptions,
        aborted: BTreeSet<Seq>,
        prune: Arc<std::sync::Mutex<()>>,
        #[cfg(feature = "snapshot")] snapshotter: Snapshotter,
    ) -> Self {
        Committer {
            journal,
            config,
            serializer,
            shared,
            durability: options.durability,
            spin_limit: options.spin_limit,
            aborted,
            prune,
            #[cfg(feature = "snapshot")]
            snapshotter,
            #[cfg(feature = "snapshot")]
            snapshot_after_batch: false,
            lone: Vec::with_capacity(1),
            lone_outcomes: Vec::with_capacity(1),
            queued: Vec::new(),
            last_sync: Instant::now(),
            last_sync_took: Duration::ZERO,
            running: true,
            pending_rollback: None,
        }
    }

    /// Whether a caller holding this committer may commit in its own thread, which cannot
    /// reorder its command behind anything or cost it a wait on the disk: only under
    /// `OsBuffered` or `Periodic` (the write goes to the page cache; under `Fsync` a caller
    /// would block on the sync), and only while nothing handed to the writer thread is still
    /// uncommitted, so that a command never overtakes one sent before it, even one whose
    /// caller gave up waiting.
    ///
    /// This saves a lone committer both thread hand-offs (to the writer and back), which
    /// cost more than the write itself. What it costs the caller's thread is that `write`
    /// call, normally a few microseconds; the kernel may hold it longer while it throttles
    /// a process that dirties pages faster than the disk takes them.
    ///
    /// A caller's thread only ever writes into the page cache: a commit whose batch of
    /// `records` commands and `bytes` payload bytes would roll the journal over (a sync of
    /// the old segment, a new segment and head, each synced) goes to the writer thread, and
    /// so does every commit while the rollback of a command that panicked in a caller's
    /// thread is still to be done.
    pub(crate) fn may_commit_here(&self, records: usize, bytes: usize) -> bool {
        let shared = &self.shared;
        self.running
            && self.durability != Durability::Fsync
            && self.pending_rollback.is_none()
            && shared.submitted.load(Ordering::Acquire) == shared.written.load(Ordering::Acquire)
            && self.journal.fits(records, bytes)
    }

    /// Commits one command, encoded as `payload` and decoded again as `command` (the copy
    /// that executes), in the calling thread (which checked [`Self::may_commit_here`]),
    /// exactly as the writer thread would commit it in a batch of its own, and answers with
    /// `answer`, run on the state right after the command under the same write lock. Returns
    /// that answer, or the error, and whether the writer thread must be nudged (see
    /// [`crate::write::request::Message::Nudge`]).
    ///
    /// No request, no channel: the caller has its answer when this returns. The command's
    /// own code runs here only inside `execute` and `answer`, which catch its panics: its
    /// encoding, decoding and drop happened before the caller took the committer, so that
    /// a panic in them can never poison the committer's mutex. For the same reason the
    /// command is taken out of `command` only to be executed: one that is refused stays
    /// there, for the caller to drop once it has let go of the committer.
    pub(crate) fn commit_encoded<R>(
        &mut self,
        payload: &[u8],
        command: &mut Option<S::Command>,
        answer: impl FnOnce(&S, Committed) -> Result<R, Error>,
    ) -> (Result<R, Error>, bool) {
        let started = self.shared.meters.stamp();
        if let Err(error) = self.shared.health.check_commit() {
            return (Err(error), false);
        }
        let before = self.before_here();
        let unix_nanos = match self.write_one(payload) {
            Ok(nanos) => nanos,
            Err(e) => return (Err(self.poison(e)), false),
        };
        let seq = Seq(self.journal.next_seq().0 - 1);
        let (result, commits, aborted) = {
            let shared = Arc::clone(&self.shared);
            let mut state = shared.state.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            // As in `commit_batch`: a state that could not be rebuilt is not executed on.
            match shared.health.check_read() {
                Err(error) => (Err(error), 0, 0),
                Ok(()) => match self.apply(&mut state, seq, command.take().into_iter(), unix_nanos, true) {
                    Ok(()) => (answer(&state, Committed { seq, unix_nanos }), 1, 0),
                    Err(error) => (Err(error), 0, 1),
                },
            }
        };
        // After the write lock, as in `commit_batch`, and before the caller hears.
        self.shared.counters.record(commits, aborted, self.journal.counters(), self.journal.next_seq());
        let meters = &self.shared.meters;
        meters.batch(1, commits, self.journal.counters().bytes - before.bytes, self.shared.counters.segments());
        if let (Some(started), 1) = (started, commits) {
            meters.commit(started.later().since(started));
        }
        (result, self.leaves_work(1, before))
    }

    /// Commits one request in the calling thread (which checked [`Self::may_commit_here`])
    /// through the writer's own batch code, as a batch of one, and answers it. Returns
    /// whether the writer thread must be nudged (see [`crate::write::request::Message::Nudge`]).
    pub(crate) fn commit_here(&mut self, request: Request<S>) -> bool {
        let before = self.before_here();
        let commands = request.commands.len() as u64;
        let (mut lone, mut outcomes) = (std::mem::take(&mut self.lone), std::mem::take(&mut self.lone_outcomes));
        lone.push(request);
        self.commit_batch(&mut lone, &mut outcomes, true);
        (self.lone, self.lone_outcomes) = (lone, outcomes);
        self.leaves_work(commands, before)
    }

    /// What [`Self::leaves_work`] compares against, read before a commit in a caller's thread.
    fn before_here(&self) -> BeforeHere {
        BeforeHere {
            // Under `Periodic`, the writer thread sleeps without a timer while nothing is
            // unsynced: the first unsynced write must wake it, or it would never be synced.
            wakes_timer: matches!(self.durability, Durability::Periodic(_)) && !self.journal.has_unsynced(),
            bytes: self.journal.counters().bytes,
        }
    }

    /// Whether a commit of `commands` made in a caller's thread left the writer thread work:
    /// a periodic sync to start, or a snapshot that came due. Serializing the state is the
    /// writer thread's work, not a caller's: the nudge makes it check again (`snapshot_due`
    /// with nothing new), and a snapshot taken meanwhile has reset the counts, so none is
    /// taken twice.
    fn leaves_work(&mut self, commands: u64, before: BeforeHere) -> bool {
        if self.pending_rollback.is_some() {
            return true;
        }
        #[cfg(feature = "snapshot")]
        let snapshot =
            self.snapshotter.due(commands, self.journal.counters().bytes - before.bytes) || self.snapshot_after_batch;
        #[cfg(not(feature = "snapshot"))]
        let snapshot = {
            let _ = (commands, before.bytes);
            false
        };
        snapshot || before.wakes_timer
    }

    /// Counts a written batch of `commands` that began at journal byte count `bytes`; true
    /// when a snapshot is due, automatically or after a long rollback.
    #[cfg(feature = "snapshot")]
    pub(crate) fn snapshot_due(&mut self, commands: u64, bytes: u64) -> bool {
        // `|`, not `||`: the trigger counts every batch, and the flag is reset either way.
        self.snapshotter.due(commands, self.journal.counters().bytes - bytes)
            | std::mem::take(&mut self.snapshot_after_batch)
    }

    /// The journal's byte count so far.
    pub(crate) fn bytes(&self) -> u64 {
        self.journal.counters().bytes
    }

    /// Whether anything written is not yet synced.
    pub(crate) fn has_unsynced(&self) -> bool {
        self.journal.has_unsynced()
    }

    /// When the last sync finished, and how long it took.
    pub(crate) fn last_sync(&self) -> (Instant, Duration) {
        (self.last_sync, self.last_sync_took)
    }

    /// Serializes the state for a snapshot, under the read lock, and hands the image to the
    /// snapshot thread. The journal is synced first, whatever the durability policy, so a
    /// snapshot never includes a record that a crash could take out of the journal.
    #[cfg(feature = "snapshot")]
    pub(crate) fn snapshot(&mut self, reply: Option<SnapshotReply>) {
        self.settle();
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
        let (segment, offset) = self.journal.next_record_position();
        let next_record = airomem_snapshot::RecordPosition { segment, offset };
        let started = Instant::now();
        let state = self.shared.state.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        // This thread is the only one that changes the state, and it is here, between two
        // batches: the view holds exactly the commands up to `seq`, and the read lock lets
        // queries go on while it is taken.
        match state.snapshot_view::<Z>() {
            Some(view) => {
                drop(state);
                let freeze_time = started.elapsed();
                let serializer = Arc::clone(&self.serializer);
                let write = Box::new(move |out: &mut dyn std::io::Write| view.write_to(&serializer, out));
                self.snapshotter.take_view(write, seq, next_record, freeze_time, reply);
            }
            None => self.snapshotter.take(&*self.serializer, &*state, seq, next_record, reply),
        }
    }

    /// Marks the store poisoned by a failed write or sync, and returns the error its callers get.
    fn poison(&self, e: airomem_journal::JournalError) -> Error {
        let error = Error::write_failed(e);
        self.shared.health.poison(&error.to_string());
        error
    }

    pub(crate) fn commit_batch(&mut self, batch: &mut Vec<Request<S>>, outcomes: &mut Vec<Outcome>, here: bool) {
        self.settle();
        if let Err(error) = self.shared.health.check_commit() {
            for request in batch.drain(..) {
                request.reply.fail(error.clone());
            }
            return;
        }
        let bytes_before = self.journal.counters().bytes;
        let unix_nanos = match self.write(batch, here) {
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
                match self.apply(&mut state, first, commands, unix_nanos, here) {
                    Ok(()) => {
                        commits += count;
                        self.queued.extend(request.queued);
                        outcomes.push(request.reply.prepare_success(&state, first, Seq(next.0 - 1), unix_nanos));
                    }
                    Err(error) => {
                        aborted += count;
                        outcomes.push(request.reply.prepare_failure(error));
                    }
                }
            }
        }
        self.shared.counters.record(commits, aborted, self.journal.counters(), self.journal.next_seq());
        let meters = &self.shared.meters;
        meters.batch(total, commits, self.journal.counters().bytes - bytes_before, self.shared.counters.segments());
        if !self.queued.is_empty() {
            let now = self.queued[0].later();
            for queued in self.queued.drain(..) {
                meters.commit(now.since(queued));
            }
        }
        for outcome in outcomes.drain(..) {
            outcome.deliver();
        }
    }

    /// Executes the commands of one request, numbered from `first`, on `state` (under the
    /// write lock, so that no reader sees a part of them). The first that panics rolls all
    /// of them back, and its error is returned: at once in the writer thread; in a caller's
    /// thread (`here`), which never waits for the disk, the rollback is left to the writer
    /// thread (see [`Committer::settle`]) and reads wait for it.
    fn apply(
        &mut self,
        state: &mut S,
        first: Seq,
        commands: impl Iterator<Item = S::Command>,
        unix_nanos: u64,
        here: bool,
    ) -> Result<(), Error> {
        for (i, command) in commands.enumerate() {
            let seq = Seq(first.0 + i as u64);
            if let Err(message) = execute(state, command, CommitContext::new(seq, unix_nanos)) {
                warn!(seq = seq.0, message, "command panicked; aborting it and rolling the state back");
                if here {
                    // Under the write lock: no read can come between the panic and the gate.
                    self.pending_rollback = Some((first, seq));
                    self.shared.rollback.close();
                } else {
                    self.abort(state, first, seq);
                }
                return Err(Error::CommandPanicked { seq, message });
            }
        }
        Ok(())
    }

    /// Carries out the rollback a command that panicked in a caller's thread left to the
    /// writer thread, if there is one, and opens the gate reads wait at. Everything that
    /// takes the committer in the writer thread calls it first, so no batch is written, no
    /// snapshot taken and the journal not closed before it.
    pub(crate) fn settle(&mut self) {
        let Some((first, seq)) = self.pending_rollback.take() else { return };
        let shared = Arc::clone(&self.shared);
        let mut state = shared.state.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.abort(&mut state, first, seq);
        shared.rollback.open();
    }

    /// Writes the batch with one write and makes it as durable as the policy asks. A batch
    /// written `here`, in a caller's thread, never syncs under `Periodic`: the writer thread
    /// does that on its timer (see [`Committer::may_commit_here`]).
    fn write(&mut self, batch: &[Request<S>], here: bool) -> Result<u64, airomem_journal::JournalError> {
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
        self.end_batch(batch.len(), here)?;
        Ok(unix_nanos)
    }

    /// Writes one command as a batch of its own, in a caller's thread.
    fn write_one(&mut self, payload: &[u8]) -> Result<u64, airomem_journal::JournalError> {
        let unix_nanos = self.journal.begin_batch()?;
        self.journal.push(payload)?;
        self.end_batch(1, true)?;
        Ok(unix_nanos)
    }

    fn end_batch(&mut self, requests: usize, here: bool) -> Result<(), airomem_journal::JournalError> {
        self.journal.write_batch()?;
        match self.durability {
            Durability::Fsync => self.sync()?,
            Durability::Periodic(interval) if !here && self.last_sync.elapsed() >= interval => self.sync()?,
            Durability::Periodic(_) | Durability::OsBuffered => {}
        }
        debug!(requests, next_seq = self.journal.next_seq().0, "batch written");
        Ok(())
    }

    pub(crate) fn sync(&mut self) -> Result<(), airomem_journal::JournalError> {
        let started = Instant::now();
        self.journal.sync()?;
        self.last_sync = Instant::now();
        self.last_sync_took = self.last_sync - started;
        self.shared.meters.fsync(self.last_sync_took);
        if self.durability == Durability::Fsync {
            // A lone commit waits for about one sync, two if it just missed a batch.
            let wait = self.last_sync_took * 2;
            let spin = if wait <= self.spin_limit { wait.as_nanos() as u64 } else { 0 };
            self.shared.spin_nanos.store(spin, Ordering::Relaxed);
        }
        Ok(())
    }

    pub(crate) fn periodic_sync(&mut self) {
        if let Err(e) = self.sync() {
            self.poison(e);
        }
        // Not only at the next batch: `stats()` would show this sync missing until then.
        self.shared.counters.record(0, 0, self.journal.counters(), self.journal.next_seq());
    }

    /// Journals an abort marker for `seq`, which panicked, and rebuilds the state as it was
    /// before `first`, the first command of its request (itself, or the start of its atomic
    /// unit: one aborted command cancels its whole unit, in replay too), holding the write
    /// lock throughout so that no reader sees a half-applied request.
    ///
    /// A rebuild that panics itself (a `Deserialize`, a migration or a `Drop` of the user's
    /// types) leaves the state half changed with no way back: the store is marked broken
    /// before anyone can read it, and the panic goes no further.
    fn abort(&mut self, state: &mut S, first: Seq, seq: Seq) {
        self.aborted.insert(seq);
        if let Err(e) = self.journal.append_abort(seq) {
            // The command stays in the final batch on disk, so recovery aborts it.
            self.poison(e);
        }
        let until = Seq(first.0 - 1);
        let _files = self.prune.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let rebuilt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rebuild::<S, Z>(&self.config, &self.serializer, until, &self.aborted).map_err(|e| e.to_string())
        }))
        .unwrap_or_else(|panic| Err(format!("the rebuild panicked: {}", panic_message(panic))));
        match rebuilt {
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
            Err(cause) => {
                error!(cause, "the state could not be rebuilt after a panicking command; refusing reads");
                self.shared.health.mark_broken(&cause);
            }
        }
    }

    /// Stops everything that could still change a file, after the writer thread panicked:
    /// nothing is written from now on, and the snapshot thread is joined (a snapshot it is
    /// writing is finished first). Nothing is synced or trimmed: the journal's state is
    /// whatever the panic left, and the next open recovers it.
    pub(crate) fn halt(&mut self) {
        self.running = false;
        self.pending_rollback = None;
        #[cfg(feature = "snapshot")]
        self.snapshotter.shutdown();
    }

    /// Closes the journal: waits for the snapshot thread, then syncs and trims the newest
    /// segment. Reports an earlier failure instead when the store was poisoned.
    pub(crate) fn finish(&mut self) -> Result<(), Error> {
        self.settle();
        self.running = false;
        #[cfg(feature = "snapshot")]
        self.snapshotter.shutdown();
        self.shared.health.check_commit()?;
        self.journal.trim().map_err(|e| self.poison(e))
    }
}
