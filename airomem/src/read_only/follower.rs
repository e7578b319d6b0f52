//! A read-only copy of a live store's state in another process (or beside it in this one),
//! kept current by following the journal as the store appends to it.
//!
//! The follower takes no lock and writes nothing, so the store's writer never waits for it.
//! It starts from the state [`Past`] reads up to the last final batch, then reads the
//! journal's new records through a [`Tail`]: only batches that are final (whole, and past
//! the point where an abort marker could still cancel one of their commands), each applied
//! under one write lock, so no query sees part of a batch or of an atomic unit. When
//! retention removes the segment it was reading (it fell behind a snapshot), it reads the
//! state again from the newest snapshot.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use airomem_core::storage::Storage;
use airomem_core::{CommitContext, Seq, Serializer, State};
use tracing::{debug, warn};

use crate::Error;
use crate::execute::execute;
use crate::options::StoreOptions;
use crate::read_only::past::{At, Past};
use crate::read_only::tail::{Advance, Tail, TailError, TailRecord};
use crate::read_only::view::HistoryView;
use crate::write::shared::Query;

/// How often a following thread looks for new records unless told otherwise.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// How many times a reload starts over because retention removed what it was reading.
const RELOADS: u32 = 16;

/// A read-only replica of a store's state, kept current by following its journal.
///
/// [`Follower::open`] builds the state like [`Past::open`] and returns a follower that moves
/// only when asked ([`Follower::catch_up`]); [`Follower::follow`] also starts a thread that
/// catches up every poll interval. Either way it takes no lock and writes no file, so it may
/// run in another process beside the running store, and the store's writer never waits for
/// it.
///
/// What it shows is always a state the store had: after every command up to
/// [`Follower::seq`], commands cancelled by an abort marker never counted, atomic units whole.
/// It holds back the newest batch until the batch is final: until the store writes the next
/// batch or rolls over to a new segment (only then can no abort marker for it follow). So the
/// store's last batch before it goes idle is shown once it commits again. Under
/// [`crate::Durability::Fsync`] everything shown was synced; under weaker policies it may
/// show batches written but not yet synced, which a power cut can still take from the store.
///
/// The following thread, if any, is owned by this handle: dropping the handle stops it and
/// waits for the step it may be in to end.
pub struct Follower<S: State> {
    shared: Arc<Shared<S>>,
    /// Dropped to stop the following thread: its receiver then reports a disconnect.
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// What the handle and its following thread share.
struct Shared<S: State> {
    state: RwLock<S>,
    /// The cursor and the way to rebuild; one step at a time.
    reader: Mutex<Box<dyn Read<S>>>,
    /// The last command applied, and the first error the following thread met, behind one
    /// lock so that a waiter sees either.
    progress: Mutex<Progress>,
    moved: Condvar,
}

#[derive(Default)]
struct Progress {
    seq: Seq,
    error: Option<Error>,
}

/// The part of a follower that knows the serializer: reads, decodes, rebuilds.
trait Read<S: State>: Send {
    /// Rebuilds the state at the newest final batch, and moves the cursor just after it.
    fn reload(&mut self) -> Result<(S, Seq), Error>;
    /// The final batches appended since the last call.
    fn advance(&mut self) -> Result<Advance, TailError>;
    fn decode(&self, record: &TailRecord) -> Result<S::Command, Error>;
    /// Rebuilds the state after command `seq`, or after the last whole unit before it (after
    /// a command panicked here), and says which command that is.
    fn state_at(&self, seq: Seq) -> Result<(S, Seq), Error>;
    /// Drops the cursor: the next [`Read::advance`] answers `Gone`, and the step reloads.
    /// For a step that failed after the cursor moved past commands it did not apply.
    fn forget(&mut self);
}

struct Reader<Z> {
    serializer: Z,
    dir: PathBuf,
    options: StoreOptions,
    view: Arc<dyn Storage>,
    tail: Option<Tail>,
}

impl<S: State, Z: Serializer + Clone + Send> Read<S> for Reader<Z> {
    fn reload(&mut self) -> Result<(S, Seq), Error> {
        let mut attempts = 0;
        loop {
            let tail = match Tail::at_final_end(Arc::clone(&self.view), &self.dir) {
                Ok(tail) => tail,
                Err(TailError::Failed(e)) => return Err(e),
                // The newest segment went between the listing and its open: retention ran
                // after a rollover. Listing again finds the one that replaced it.
                Err(TailError::Gone) if attempts < RELOADS => {
                    attempts += 1;
                    continue;
                }
                Err(TailError::Gone) => return Err(Error::RemovedWhileReading { path: self.dir.clone() }),
            };
            let at = Seq(tail.next().0 - 1);
            match Past::<S>::open_with(self.serializer.clone(), &self.dir, At::Seq(at), &self.options) {
                Ok(past) if past.seq() == at => {
                    self.tail = Some(tail);
                    return Ok((past.into_state(), at));
                }
                // Retention ran between the two reads, or a newer snapshot than the point
                // read (taken after its batch was final) took the older one's place.
                Ok(_) | Err(Error::HistoryGone { .. } | Error::RemovedWhileReading { .. }) if attempts < RELOADS => {
                    attempts += 1;
                    debug!(attempts, "the store moved on while the follower reloaded; reloading again");
                }
                Ok(past) => {
                    return Err(Error::HistoryGone { dir: self.dir.clone(), wanted: at, earliest: past.seq() });
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn advance(&mut self) -> Result<Advance, TailError> {
        match self.tail.as_mut() {
            Some(tail) => tail.advance(),
            None => Err(TailError::Gone),
        }
    }

    fn decode(&self, record: &TailRecord) -> Result<S::Command, Error> {
        if record.schema_version != S::SCHEMA_VERSION {
            // The store was opened by a build of another schema: this follower's types
            // cannot apply its records (an older segment is read through the schema chain
            // by a reload, never by the tail).
            return Err(Error::SchemaNewer {
                file: self.dir.clone(),
                found: record.schema_version,
                current: S::SCHEMA_VERSION,
            });
        }
        self.serializer.decode(&record.payload).map_err(|e| Error::decode(Some(self.dir.clone()), Some(record.seq), e))
    }

    fn state_at(&self, seq: Seq) -> Result<(S, Seq), Error> {
        let past = Past::<S>::open_with(self.serializer.clone(), &self.dir, At::Seq(seq), &self.options)?;
        let at = past.seq();
        Ok((past.into_state(), at))
    }

    fn forget(&mut self) {
        self.tail = None;
    }
}

impl<S: State + Send + Sync> Follower<S> {
    /// Builds the state of the store in `dir` from its newest snapshot and journal, up to
    /// the last final batch, without the lock and without writing anything. The follower
    /// then moves only when [`Follower::catch_up`] is called.
    ///
    /// Errors: those of [`Past::open`] ([`Error::NotAStore`], damage, a schema the state
    /// cannot read).
    pub fn open<Z>(serializer: Z, dir: impl AsRef<Path>) -> Result<Follower<S>, Error>
    where
        Z: Serializer + Clone + Send + 'static,
    {
        Follower::open_with(serializer, dir, &StoreOptions::default())
    }

    /// [`Follower::open`] through the storage of `options` (see [`StoreOptions::storage`]).
    pub fn open_with<Z>(serializer: Z, dir: impl AsRef<Path>, options: &StoreOptions) -> Result<Follower<S>, Error>
    where
        Z: Serializer + Clone + Send + 'static,
    {
        let dir = dir.as_ref().to_path_buf();
        let view: Arc<dyn Storage> = Arc::new(HistoryView::new(Arc::clone(&options.storage), &dir));
        let mut reader = Reader { serializer, dir, options: options.clone(), view, tail: None };
        let (state, seq) = Read::<S>::reload(&mut reader)?;
        debug!(seq = seq.0, "follower opened");
        let reader: Box<dyn Read<S>> = Box::new(reader);
        let shared = Shared {
            state: RwLock::new(state),
            reader: Mutex::new(reader),
            progress: Mutex::new(Progress { seq, error: None }),
            moved: Condvar::new(),
        };
        Ok(Follower { shared: Arc::new(shared), stop: None, thread: None })
    }

    /// [`Follower::open`], then a thread that catches up every `poll_interval` (see
    /// [`DEFAULT_POLL_INTERVAL`]) until this handle is dropped. The thread stops at the first
    /// error and keeps it for [`Follower::error`] and [`Follower::wait_for`]; the state stays
    /// at the last command applied before it.
    pub fn follow<Z>(serializer: Z, dir: impl AsRef<Path>, poll_interval: Duration) -> Result<Follower<S>, Error>
    where
        Z: Serializer + Clone + Send + 'static,
        S: 'static,
    {
        let mut follower = Follower::open(serializer, dir)?;
        follower.start(poll_interval)?;
        Ok(follower)
    }

    fn start(&mut self, poll_interval: Duration) -> Result<(), Error>
    where
        S: 'static,
    {
        let (stop, stopped) = mpsc::channel::<()>();
        // A weak reference: the thread never keeps the state alive, and the handle that owns
        // the thread is not shared with it, so the thread never drops its own owner.
        let shared: Weak<Shared<S>> = Arc::downgrade(&self.shared);
        let thread = std::thread::Builder::new()
            .name("airomem-follower".into())
            .spawn(move || {
                loop {
                    let Some(shared) = shared.upgrade() else { return };
                    if let Err(e) = shared.step() {
                        warn!(error = %e, "the follower stopped");
                        shared.fail(e);
                        return;
                    }
                    drop(shared);
                    match stopped.recv_timeout(poll_interval) {
                        Err(RecvTimeoutError::Timeout) => {}
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
            })
            .map_err(|e| Error::Io { op: "spawn follower thread", path: PathBuf::new(), source: Arc::new(e) })?;
        self.stop = Some(stop);
        self.thread = Some(thread);
        Ok(())
    }

    /// A read lock on the state, the same guard [`crate::Store::query`] returns. Catching up
    /// waits while one is held; keep it short.
    pub fn query(&self) -> Result<Query<'_, S>, Error> {
        Ok(Query(self.shared.state.read().unwrap_or_else(PoisonError::into_inner)))
    }

    /// The last command the state includes (`Seq(0)`: none).
    pub fn seq(&self) -> Seq {
        self.shared.progress().seq
    }

    /// The error the following thread stopped on, if it did.
    pub fn error(&self) -> Option<Error> {
        self.shared.progress().error.clone()
    }

    /// One step: reads what the store appended, applies the batches that became final, and
    /// returns how many commands it applied. If retention removed the segment the follower
    /// was reading, it rebuilds the state from the newest snapshot first.
    ///
    /// Errors: damage in the journal, a record that does not decode, a schema this state
    /// cannot read, a command that panics here but did not in the store (the state is then
    /// rebuilt to just before it). The state stays at the last good command. It reads files
    /// on the calling thread; from async code, call it in `tokio::task::spawn_blocking`.
    pub fn catch_up(&self) -> Result<u64, Error> {
        self.shared.step()
    }

    /// Blocks until the state includes command `seq`, the following thread stopped on an
    /// error, or `timeout` passed (then returns the sequence number reached so far, below
    /// `seq`). Without a following thread, steps itself until then. It blocks the calling
    /// thread; from async code, call it in `tokio::task::spawn_blocking`.
    pub fn wait_for(&self, seq: Seq, timeout: Duration) -> Result<Seq, Error> {
        let deadline = Instant::now() + timeout;
        if self.thread.is_none() {
            loop {
                self.catch_up()?;
                let reached = self.seq();
                let now = Instant::now();
                if reached >= seq || now >= deadline {
                    return Ok(reached);
                }
                // The same pace as a following thread: no step makes the store go faster.
                std::thread::sleep(DEFAULT_POLL_INTERVAL.min(deadline - now));
            }
        }
        let mut progress = self.shared.progress();
        loop {
            if let Some(e) = &progress.error {
                return Err(e.clone());
            }
            let now = Instant::now();
            if progress.seq >= seq || now >= deadline {
                return Ok(progress.seq);
            }
            progress =
                self.shared.moved.wait_timeout(progress, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
        }
    }
}

impl<S: State> Shared<S> {
    fn progress(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn fail(&self, e: Error) {
        self.progress().error = Some(e);
        self.moved.notify_all();
    }

    fn step(&self) -> Result<u64, Error> {
        let mut reader = self.reader.lock().unwrap_or_else(PoisonError::into_inner);
        let Advance { records, reached } = match reader.advance() {
            Ok(advance) => advance,
            Err(TailError::Failed(e)) => return Err(e),
            Err(TailError::Gone) => {
                // Retention took the segment the cursor was in: every command in it is in a
                // snapshot now. The state read at the newest final batch replaces ours.
                let (state, seq) = reader.reload()?;
                let behind = self.progress().seq;
                debug!(from = behind.0, to = seq.0, "follower fell behind retention; reloaded from a snapshot");
                *self.state.write().unwrap_or_else(PoisonError::into_inner) = state;
                self.moved_to(seq);
                return Ok(seq.0.saturating_sub(behind.0));
            }
        };
        let records: Vec<TailRecord> = records.into_iter().filter(TailRecord::is_live).collect();
        if records.is_empty() {
            // Markers, or a batch wholly cancelled: nothing to apply, but the point moved.
            if reached > self.progress().seq {
                self.moved_to(reached);
            }
            return Ok(0);
        }
        // From here on the cursor is past `reached`: a step that fails forgets it, so that
        // the next one reloads rather than go on from commands this state never got.
        let commands = match records.iter().map(|r| reader.decode(r)).collect::<Result<Vec<_>, Error>>() {
            Ok(commands) => commands,
            Err(e) => {
                reader.forget();
                return Err(e);
            }
        };
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        for (record, command) in records.iter().zip(commands) {
            let context = CommitContext::new(record.seq, record.unix_nanos);
            if let Err(message) = execute(&mut *state, command, context) {
                // The store executed it without a panic (no marker cancels it): `execute`
                // is not deterministic, or this build differs. The half-changed state is
                // replaced before anyone sees it.
                reader.forget();
                let (rebuilt, at) = reader.state_at(Seq(record.seq.0 - 1))?;
                *state = rebuilt;
                drop(state);
                self.moved_to(at);
                return Err(Error::ReplayPanicked { seq: record.seq, message });
            }
        }
        drop(state);
        self.moved_to(reached);
        Ok(records.len() as u64)
    }

    fn moved_to(&self, seq: Seq) {
        self.progress().seq = seq;
        self.moved.notify_all();
    }
}

impl<S: State> Drop for Follower<S> {
    fn drop(&mut self) {
        // The thread waits on this channel between steps: closing it ends the wait at once.
        drop(self.stop.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            warn!("the follower thread panicked");
        }
    }
}

impl<S: State> std::fmt::Debug for Follower<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let progress = self.shared.progress();
        f.debug_struct("Follower").field("seq", &progress.seq).field("error", &progress.error).finish_non_exhaustive()
    }
}
