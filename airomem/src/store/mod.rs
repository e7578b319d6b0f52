//! The store's handle: commits, queries, snapshots on demand, stats and close. A handle
//! hands commands to the write path and reads the state under its lock; it never touches a
//! file itself.

#[cfg(feature = "snapshot")]
mod backup;
pub mod blocking;
pub(crate) mod import;
mod open;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airomem_core::{PostcardSerializer, Serializer, State};
use tokio::sync::{Semaphore, oneshot};

use crate::Error;
use crate::execute::encode_copy;
use crate::meters::Stamp;
use crate::park::pause;
#[cfg(feature = "snapshot")]
use crate::report::SnapshotInfo;
use crate::report::{RecoveryReport, Stats};
use crate::write::committer::Committer;
use crate::write::request::{Commands, Committed, CommittedUnit, Deliver, Message, Reply, Request};
use crate::write::shared::Shared;
use crate::write::tenure::Life;

/// How long a lone commit waits for its receipt in place before yielding (see `receive`).
const INLINE_SPIN: Duration = Duration::from_micros(25);
/// What a queued command costs in back-pressure budget beyond its payload.
const REQUEST_OVERHEAD: usize = 64;
/// The largest buffer a command's encoding starts with (see `Inner::payload_hint`).
const MAX_PAYLOAD_HINT: usize = 4096;

/// A durable, in-memory prevalent system.
///
/// Cheap to clone: clones share one store. Commits from any number of tasks are written in
/// batches with one `fdatasync` each; reads never wait for the disk.
///
/// The directory stays locked while the store's writer thread runs: until [`Store::close`]
/// returns, or, once the last clone is dropped, until the writer has written what was
/// queued and closed the journal (a drop never waits for that; an open of the same
/// directory in this process does).
pub struct Store<S: State, Z: Serializer = PostcardSerializer> {
    inner: Arc<Inner<S, Z>>,
}

impl<S: State, Z: Serializer> Clone for Store<S, Z> {
    fn clone(&self) -> Self {
        Store { inner: Arc::clone(&self.inner) }
    }
}

struct Inner<S: State, Z> {
    shared: Arc<Shared<S>>,
    serializer: Arc<Z>,
    /// Shared with the writer thread, which closes it before releasing the directory.
    committer: Arc<Mutex<Committer<S, Z>>>,
    /// Whether a lone commit may be committed in its caller's thread (see
    /// [`Committer::may_commit_here`]): `commit_in_caller`, and a policy that never syncs a
    /// commit.
    lone_in_caller: bool,
    sender: Sender<Message<S>>,
    /// Set by `close`: commits are refused from then on.
    closed: AtomicBool,
    pending: Arc<Semaphore>,
    max_pending: u32,
    /// The writer thread's registration: marked closing when the last handle goes.
    life: Option<Arc<Life>>,
    dir: PathBuf,
    report: RecoveryReport,
    /// Retention's lock (the committer and the snapshot thread hold clones): a backup holds
    /// it while it pins files, so none is removed under it. Backups need snapshots, so
    /// without the feature nothing reads it.
    #[cfg_attr(not(feature = "snapshot"), allow(dead_code))]
    prune: Arc<Mutex<()>>,
    /// The length of the last command encoded: the capacity the next one starts with, so
    /// that encoding does not grow its buffer step by step (measured: 5 % of an import's time
    /// went to `realloc`).
    payload_hint: AtomicUsize,
}

// Defined beside the state's lock, so that a follower (below this layer) hands out the same guard.
pub use crate::write::shared::Query;

impl<S: State, Z: Serializer> Store<S, Z> {
    /// Commits a command: journals it, makes it durable (per the store's
    /// [`crate::Durability`]), applies it to the state, and returns its receipt.
    ///
    /// The command is encoded here, in the caller's task, and the state executes the copy
    /// decoded from those bytes: exactly what recovery will execute.
    ///
    /// # Cancellation
    ///
    /// Dropping this future (a timeout, a `select!`, an aborted task) cancels the commit only
    /// while it still waits for back-pressure (more than `max_pending_bytes` queued): the
    /// command was never handed to the writer, and it will not be written. Once it is handed
    /// over (the first poll, unless the queue is full), dropping the future no longer cancels
    /// anything: the command is written, synced and executed as usual, and only its receipt
    /// is lost, so **its outcome is unknown to the caller**. Find out by reading the state
    /// (an idempotency key in the command makes that, and a retry, safe).
    pub async fn commit(&self, command: S::Command) -> Result<Committed, Error> {
        let _in_flight = InFlight::enter(&self.inner.shared);
        let (payload, command) = match self.offer(command, |_, committed| Ok(committed))? {
            Offered::Committed(outcome) => return outcome,
            Offered::Declined(payload, command) => (payload, command),
        };
        let (tx, rx) = oneshot::channel();
        self.send_encoded(payload, command, Reply::Receipt(tx)).await?;
        self.receive(rx).await
    }

    /// Commits a command and runs `query` on the state right after it, under the same lock:
    /// the result reflects exactly this command and those before it (Prevayler's
    /// transaction-with-query). `query` must not block: it runs under the state's write
    /// lock, on the writer thread or, for a lone commit under `OsBuffered` or `Periodic`, in
    /// the caller's thread.
    pub async fn commit_with<R, Q>(&self, command: S::Command, query: Q) -> Result<R, Error>
    where
        R: Send + 'static,
        Q: FnOnce(&S) -> R + Send + 'static,
    {
        let _in_flight = InFlight::enter(&self.inner.shared);
        let mut query = Some(query);
        let run = |state: &S, _| run_query(query.take().expect("answered once"), state);
        let (payload, command) = match self.offer(command, run)? {
            Offered::Committed(outcome) => return outcome,
            Offered::Declined(payload, command) => (payload, command),
        };
        let (reply, rx) = query_reply(query.expect("not run: the command was not committed here"));
        self.send_encoded(payload, command, reply).await?;
        self.receive(rx).await
    }

    /// Commits `commands` as one atomic unit: they get consecutive sequence numbers, are
    /// journaled in one batch and made durable together (per the store's
    /// [`crate::Durability`]), and are applied in order under one write lock, so a reader
    /// sees all of them or none. Recovery after any crash replays all of them or none, never
    /// a part. If one panics, the whole unit is rolled back and the caller gets
    /// [`Error::CommandPanicked`] naming it.
    ///
    /// The unit as a whole is subject to back-pressure: it waits until its encoded size fits
    /// under `max_pending_bytes`, and one larger than that is refused with
    /// [`Error::UnitTooLarge`]; an empty one with [`Error::EmptyUnit`]. Cancellation is as for
    /// [`Store::commit`], for the whole unit.
    pub async fn commit_all(&self, commands: impl IntoIterator<Item = S::Command>) -> Result<CommittedUnit, Error> {
        let (tx, rx) = oneshot::channel();
        let _in_flight = InFlight::enter(&self.inner.shared);
        self.send_unit(commands, Reply::Unit(tx)).await?;
        self.receive(rx).await
    }

    /// Commits `commands` as one atomic unit ([`Store::commit_all`]) and runs `query` on
    /// the state right after the last of them, under the same lock.
    pub async fn commit_all_with<R, Q>(
        &self,
        commands: impl IntoIterator<Item = S::Command>,
        query: Q,
    ) -> Result<R, Error>
    where
        R: Send + 'static,
        Q: FnOnce(&S) -> R + Send + 'static,
    {
        let (reply, rx) = query_reply(query);
        let _in_flight = InFlight::enter(&self.inner.shared);
        self.send_unit(commands, reply).await?;
        self.receive(rx).await
    }

    async fn send_unit(&self, commands: impl IntoIterator<Item = S::Command>, reply: Reply<S>) -> Result<(), Error> {
        let mut unit = Vec::new();
        let mut bytes = 0usize;
        for command in commands {
            let (payload, command) = self.encode(command)?;
            bytes += payload.len() + REQUEST_OVERHEAD;
            unit.push((payload, command));
        }
        if unit.is_empty() {
            return Err(Error::EmptyUnit);
        }
        let limit = u64::from(self.inner.max_pending);
        if bytes as u64 > limit {
            return Err(Error::UnitTooLarge { commands: unit.len(), bytes: bytes as u64, limit });
        }
        let request = Request {
            commands: Commands::Unit(unit),
            reply,
            followed: false,
            queued: self.handed_over(),
            _permit: None,
        };
        self.hand_over(request).await
    }

    /// Waits for a commit's outcome. A lone commit polls for it while the disk is fast
    /// enough (see [`StoreOptions::spin_limit`]); everything else sleeps until woken.
    async fn receive<T>(&self, mut rx: oneshot::Receiver<Result<T, Error>>) -> Result<T, Error> {
        // A commit made in the caller's thread is answered already: no clock, no poll.
        match rx.try_recv() {
            Ok(outcome) => return outcome,
            Err(oneshot::error::TryRecvError::Closed) => return Err(self.gone()),
            Err(oneshot::error::TryRecvError::Empty) => {}
        }
        let shared = &self.inner.shared;
        let budget = Duration::from_nanos(shared.spin_nanos.load(Ordering::Relaxed));
        if !budget.is_zero() && shared.in_flight.load(Ordering::Relaxed) <= 1 {
            let started = Instant::now();
            // First in place, without handing the thread back: a receipt that comes within
            // a few microseconds (a buffered write) then costs no trip through the runtime's
            // scheduler, whose every yield polls its I/O driver. Bounded so the worker's
            // other tasks wait no longer than a short poll.
            let in_place =
                if shared.spin_in_place.load(Ordering::Relaxed) { started + INLINE_SPIN.min(budget) } else { started };
            while Instant::now() < in_place {
                match rx.try_recv() {
                    Ok(outcome) => return outcome,
                    Err(oneshot::error::TryRecvError::Closed) => return Err(self.gone()),
                    Err(oneshot::error::TryRecvError::Empty) => std::hint::spin_loop(),
                }
            }
            loop {
                match rx.try_recv() {
                    Ok(outcome) => return outcome,
                    Err(oneshot::error::TryRecvError::Closed) => return Err(self.gone()),
                    Err(oneshot::error::TryRecvError::Empty) => {}
                }
                // Another commit arriving means a batch will share the wake-ups: stop
                // burning a core that its task may need.
                if started.elapsed() >= budget || shared.in_flight.load(Ordering::Relaxed) > 1 {
                    break;
                }
                // Not `tokio::task::yield_now`: a blocking handle drives this future too.
                pause().await;
            }
        }
        rx.await.map_err(|_| self.gone())?
    }

    #[cfg(test)]
    pub(crate) fn shared(&self) -> &Shared<S> {
        &self.inner.shared
    }

    /// Why the writer is no longer there to answer: it panicked, or the store was closed.
    pub(crate) fn gone(&self) -> Error {
        match self.inner.shared.health.check_read() {
            Err(e @ Error::WriterPanicked { .. }) => e,
            _ => Error::Closed,
        }
    }

    /// Encodes a command into a buffer of its own and decodes it again (see
    /// [`encode_copy`]), for a request handed to the writer thread.
    fn encode(&self, command: S::Command) -> Result<(Vec<u8>, S::Command), Error> {
        let mut payload = Vec::with_capacity(self.inner.payload_hint.load(Ordering::Relaxed));
        let command = encode_copy::<S, Z>(&self.inner.serializer, command, &mut payload)?;
        // Rounded up, so that commands a little longer than the last fit too; capped, so
        // that one huge command does not make every later buffer huge.
        let hint = payload.len().next_power_of_two().min(MAX_PAYLOAD_HINT);
        if hint != self.inner.payload_hint.load(Ordering::Relaxed) {
            self.inner.payload_hint.store(hint, Ordering::Relaxed);
        }
        Ok((payload, command))
    }

    /// Hands an encoded command that [`Store::offer`] could not commit to the writer thread.
    /// When a request is handed over, if commit latency is measured (the metrics'
    /// `airomem_commit_seconds`): with metrics off, no clock is read for it.
    fn handed_over(&self) -> Option<Stamp> {
        self.inner.shared.meters.stamp()
    }

    /// Not offered to the committer again: a command committed in the caller's thread goes
    /// through [`Committer::commit_encoded`] only, which never drops it under the lock.
    async fn send_encoded(&self, payload: Vec<u8>, command: S::Command, reply: Reply<S>) -> Result<(), Error> {
        let request = Request {
            commands: Commands::One(payload, command),
            reply,
            followed: false,
            queued: self.handed_over(),
            _permit: None,
        };
        self.queue(request).await
    }

    /// Hands a request of a command that others follow, as an import does (see
    /// `Writer::follow_stream`), to the writer thread.
    pub(crate) async fn send_followed(
        &self,
        command: S::Command,
        reply: Reply<S>,
        followed: bool,
    ) -> Result<(), Error> {
        let (payload, command) = self.encode(command)?;
        let request = Request {
            commands: Commands::One(payload, command),
            reply,
            followed,
            queued: self.handed_over(),
            _permit: None,
        };
        self.queue(request).await
    }

    /// Commits a request awaited alone in the caller's thread when it can
    /// ([`Committer::commit_here`]); otherwise queues it for the writer thread.
    async fn hand_over(&self, request: Request<S>) -> Result<(), Error> {
        if let Some(mut committer) = self.committer_here(request.commands.len(), request.commands.bytes()) {
            let nudge = committer.commit_here(request);
            drop(committer);
            self.nudge_if(nudge);
            return Ok(());
        }
        self.queue(request).await
    }

    /// Encodes a command and commits it in the caller's thread when it can
    /// ([`Committer::commit_encoded`]), answering with `answer`; otherwise gives back its
    /// encoding and decoded copy, for the writer thread. Fails only to encode it.
    ///
    /// The command is encoded, decoded and dropped before the committer is taken, into a
    /// buffer this thread keeps: its own code never runs under the committer's lock except
    /// inside `execute` and `answer`, where its panics are caught.
    fn offer<R>(
        &self,
        command: S::Command,
        answer: impl FnOnce(&S, Committed) -> Result<R, Error>,
    ) -> Result<Offered<R, S::Command>, Error> {
        // Another commit in flight means a batch for the writer thread: the command's own
        // buffer then goes with it, with no copy out of this thread's.
        if !self.alone() {
            let (payload, command) = self.encode(command)?;
            return Ok(Offered::Declined(payload, command));
        }
        // `try_with`: a commit made while this thread's locals are being destroyed (from
        // another local's destructor) works, with a buffer of its own.
        let mut payload = LONE_PAYLOAD.try_with(std::cell::Cell::take).unwrap_or_default();
        payload.clear();
        let offered = encode_copy::<S, Z>(&self.inner.serializer, command, &mut payload).map(|command| {
            let mut command = Some(command);
            match self.committer_here(1, payload.len()) {
                Some(mut committer) => {
                    let (outcome, nudge) = committer.commit_encoded(&payload, &mut command, answer);
                    drop(committer);
                    self.nudge_if(nudge);
                    drop(command);
                    Offered::Committed(outcome)
                }
                None => Offered::Declined(payload.clone(), command.expect("not taken: nothing was committed")),
            }
        });
        // One huge command must not keep a huge buffer alive for the thread's lifetime.
        payload.clear();
        payload.shrink_to(MAX_PAYLOAD_HINT);
        let _gone = LONE_PAYLOAD.try_with(|buffer| buffer.set(payload));
        offered
    }

    /// The committer, when a commit may be made in the caller's thread: only when no other
    /// commit is awaited (one more would make a batch worth the writer thread's hand-offs),
    /// the committer is free, and it allows it ([`Committer::may_commit_here`]).
    fn committer_here(&self, records: usize, bytes: usize) -> Option<std::sync::MutexGuard<'_, Committer<S, Z>>> {
        let inner = &*self.inner;
        if !self.alone() {
            return None;
        }
        // Busy (a batch, a sync, a snapshot's serialization) or poisoned: the writer thread
        // takes the commit, and answers for a poisoned one. Our own code, not the command
        // (whose panic `execute` catches), could still panic while this is held: the
        // committer's mutex is then poisoned and the writer thread stops.
        let committer = inner.committer.try_lock().ok()?;
        if inner.closed.load(Ordering::Acquire) || !committer.may_commit_here(records, bytes) {
            return None;
        }
        Some(committer)
    }

    /// Whether this store commits in callers' threads and this caller's commit is the only
    /// one awaited.
    fn alone(&self) -> bool {
        self.inner.lone_in_caller && self.inner.shared.in_flight.load(Ordering::Relaxed) <= 1
    }

    /// Tells the writer thread of work a commit in a caller's thread left it.
    fn nudge_if(&self, nudge: bool) {
        if nudge {
            // A store being closed or dropped needs no nudge: its writer syncs as it stops.
            drop(self.inner.sender.send(Message::Nudge));
        }
    }

    /// Waits for room under `max_pending_bytes`, then hands the request to the writer thread.
    async fn queue(&self, mut request: Request<S>) -> Result<(), Error> {
        let bytes = request.commands.bytes() + request.commands.len() * REQUEST_OVERHEAD;
        let cost = bytes.min(self.inner.max_pending as usize) as u32;
        let permit = Arc::clone(&self.inner.pending).acquire_many_owned(cost).await.map_err(|_| Error::Closed)?;
        request._permit = Some(permit);
        self.inner.shared.submitted.fetch_add(1, Ordering::Release);
        self.post(Message::Commit(request))
    }

    /// Hands a message to the writer, unless the store was closed.
    fn post(&self, message: Message<S>) -> Result<(), Error> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        self.inner.sender.send(message).map_err(|_| self.gone())
    }

    /// Takes a snapshot now and returns once it is durable.
    ///
    /// The writer takes it between two batches, under the read lock: queries go on
    /// meanwhile. A state that offers a frozen view (`State::snapshot_view`) makes commits
    /// wait only while the view is taken, O(1) or O(shards); otherwise the state is
    /// serialized there and commits wait for the whole serialization
    /// (`SnapshotInfo::freeze_time` says which). Serializing a view, compression, writing,
    /// `fdatasync` and publishing happen on the snapshot thread with no lock held, while
    /// commits continue. Then retention removes old snapshots and covered segments.
    #[cfg(feature = "snapshot")]
    pub async fn snapshot(&self) -> Result<SnapshotInfo, Error> {
        let (tx, rx) = oneshot::channel();
        self.post(Message::Snapshot(tx))?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// A read lock on the state. Never waits for I/O; waits only while a batch of commands
    /// is being applied in memory.
    pub fn query(&self) -> Result<Query<'_, S>, Error> {
        let shared = &self.inner.shared;
        loop {
            shared.health.check_read()?;
            let guard = shared.state.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            // A command that panicked in a caller's thread left the state half changed, and
            // the writer thread has yet to roll it back: wait for that, as for a write lock.
            if !shared.rollback.is_closed() {
                return Ok(Query(guard));
            }
            drop(guard);
            shared.rollback.wait();
        }
    }

    /// Running totals since open (commits, batches, syncs, bytes), the last snapshot's
    /// figures, and the process's resident memory. On Linux that last one reads
    /// `/proc/self/status`, some microseconds: fine for a scrape or a log line, not for every
    /// commit.
    pub fn stats(&self) -> Stats {
        self.inner.shared.counters.snapshot()
    }

    /// What recovery found and did when this store was opened.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.inner.report
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Stops accepting commits, waits for those already queued and for a snapshot being
    /// written, syncs and trims the journal, releases the directory, and reports any failure.
    /// Other clones get [`Error::Closed`] afterwards.
    ///
    /// This is the way to wait for a store to be closed. Dropping the last handle instead
    /// only asks the writer thread to do the same and returns at once (so that dropping a
    /// store never blocks an async runtime): the directory stays locked until the writer has
    /// finished, and an open of the same directory in this process waits for that.
    pub async fn close(self) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.post(Message::Close(tx))?;
        self.inner.closed.store(true, Ordering::Release);
        if let Some(life) = &self.inner.life {
            life.closing();
        }
        rx.await.map_err(|_| self.gone())?
    }
}

impl<S: State, Z> Drop for Inner<S, Z> {
    fn drop(&mut self) {
        // This can run on any thread, the writer's own included (a `commit_with` closure or
        // an undeliverable result may own the last handle), so it never waits: the writer
        // finishes what is queued, closes the journal and only then releases the directory.
        if let Some(life) = &self.life {
            life.closing();
        }
        if !*self.closed.get_mut() {
            let (tx, _rx) = oneshot::channel();
            drop(self.sender.send(Message::Close(tx)));
        }
        self.pending.close();
    }
}

impl<S: State, Z: Serializer> fmt::Debug for Store<S, Z> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("dir", &self.inner.dir).field("stats", &self.stats()).finish_non_exhaustive()
    }
}

/// The reply of a commit that runs `query` on the state right after its command (or the
/// last command of its unit), and where its result arrives.
fn query_reply<S, R, Q>(query: Q) -> (Reply<S>, oneshot::Receiver<Result<R, Error>>)
where
    R: Send + 'static,
    Q: FnOnce(&S) -> R + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    let reply = Reply::Query(Box::new(move |outcome: Result<(&S, Committed), Error>| {
        let result = outcome.and_then(|(state, _)| run_query(query, state));
        Box::new(move || drop(tx.send(result))) as Deliver
    }));
    (reply, rx)
}

/// Runs a `commit_with` query on the state its command left; its panic is the caller's
/// error, not the store's.
fn run_query<S, R>(query: impl FnOnce(&S) -> R, state: &S) -> Result<R, Error> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| query(state))).map_err(|_| Error::QueryPanicked)
}

/// Closes the committer of a writer thread that panicked, whatever state it was left in (its
/// mutex may be poisoned): it refuses to write from then on, and its snapshot thread is
/// joined, so a snapshot in flight publishes (or fails) while the directory is still held.
fn halt<S: State, Z: Serializer>(committer: &Mutex<Committer<S, Z>>) {
    let mut committer = committer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    committer.halt();
}

/// What became of a command offered for a commit in its caller's thread ([`Store::offer`]).
enum Offered<R, C> {
    /// Committed there: the caller's outcome.
    Committed(Result<R, Error>),
    /// Not committed: its encoding and decoded copy, for the writer thread.
    Declined(Vec<u8>, C),
}

thread_local! {
    /// The buffer a lone command is encoded into before it is committed in its caller's
    /// thread: kept per thread for its allocation, taken while in use.
    static LONE_PAYLOAD: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Counts a commit as in flight from before it is queued until its caller has the outcome
/// or gave up waiting.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter<S>(shared: &'a Shared<S>) -> InFlight<'a> {
        shared.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(&shared.in_flight)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
