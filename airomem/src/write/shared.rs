//! What the writer thread shares with the store's handles: the state behind its lock, the
//! store's health and counters, the commit tallies, and the gate that holds reads back
//! during a rollback. Only plain data and its own small methods live here.

use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use crate::meters::Meters;
use crate::report::Counters;
use crate::write::health::Health;

/// A read lock on the state. Many can be held at once; commits wait while any is held, so
/// keep it short and never hold it across an `.await`.
pub struct Query<'a, S>(pub(crate) RwLockReadGuard<'a, S>);

impl<S> Deref for Query<'_, S> {
    type Target = S;
    fn deref(&self) -> &S {
        &self.0
    }
}

/// What the writer shares with the `Store` handles.
pub(crate) struct Shared<S> {
    pub state: RwLock<S>,
    pub counters: Arc<Counters>,
    /// The store's `metrics` handles.
    pub meters: Meters,
    /// Whether commits and reads are still served (see [`crate::write::health`]).
    pub health: Health,
    /// Commits handed to the writer so far (see [`crate::write::writer::Writer::linger`]).
    pub submitted: AtomicU64,
    /// Of those, how many the writer has committed (or refused), counted under the
    /// committer's lock: while it falls short of `submitted`, a caller may not commit in its
    /// own thread ([`crate::write::committer::Committer::may_commit_here`]).
    pub written: AtomicU64,
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
    /// Where reads wait while the rollback of a command that panicked in a caller's thread
    /// is the writer thread's to do.
    pub rollback: RollbackGate,
}

/// Holds reads back from a state that a command left half changed, between its panic in a
/// caller's thread and its rollback in the writer thread.
///
/// Closed by the caller whose command panicked, under the state's write lock; opened by the
/// writer thread under the same lock once the state is rebuilt (or the store marked broken),
/// or by the writer's unwinding if it dies first. A reader checks it under the read lock, so
/// it never sees the state between those two points.
#[derive(Default)]
pub(crate) struct RollbackGate {
    closed: AtomicBool,
    waiting: Mutex<()>,
    opened: std::sync::Condvar,
}

impl RollbackGate {
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    pub(crate) fn open(&self) {
        // Under the mutex, so that a reader between its check and its wait is woken.
        let _waiting = self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.closed.store(false, Ordering::Release);
        self.opened.notify_all();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Blocks until the gate is open: as long as a rollback takes, as a reader used to wait
    /// for the write lock the rollback held.
    pub(crate) fn wait(&self) {
        let mut waiting = self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while self.closed.load(Ordering::Acquire) {
            waiting = self.opened.wait(waiting).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }
}

impl<S> Shared<S> {
    pub(crate) fn new(state: S, counters: Arc<Counters>, meters: Meters) -> Self {
        Shared {
            state: RwLock::new(state),
            counters,
            health: Health::watched(meters.clone()),
            meters,
            submitted: AtomicU64::new(0),
            written: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            spin_nanos: AtomicU64::new(0),
            spin_in_place: AtomicBool::new(false),
            rollback: RollbackGate::default(),
        }
    }
}
