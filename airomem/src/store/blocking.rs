//! The store for programs without an async runtime: every method blocks the calling thread.
//!
//! [`Store`] here is a handle on the same store as [`crate::Store`]: the same writer thread,
//! journal, state, guarantees and errors. Only the waiting differs: where the async API
//! returns a future, this one parks the calling thread until the writer has answered. No
//! tokio runtime is needed or started; the writer was never a tokio thread.
//!
//! ```
//! use std::thread;
//!
//! use airomem::{PostcardSerializer, State, blocking};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, Default)]
//! struct Counter {
//!     total: u64,
//! }
//!
//! impl State for Counter {
//!     type Command = u64;
//!     fn execute(&mut self, amount: u64) {
//!         self.total = self.total.saturating_add(amount);
//!     }
//! }
//!
//! fn main() -> Result<(), airomem::Error> {
//!     # let tmp = tempfile::tempdir().expect("tempdir");
//!     # let dir = tmp.path().join("counter");
//!     let store: blocking::PostcardStore<Counter> = blocking::Store::open(PostcardSerializer, &dir)?;
//!     // Clones are handles on one store: commit from as many threads as you like.
//!     let workers: Vec<_> = (1..=4)
//!         .map(|amount| {
//!             let store = store.clone();
//!             thread::spawn(move || store.commit(amount))
//!         })
//!         .collect();
//!     for worker in workers {
//!         worker.join().expect("worker thread")?;
//!     }
//!     // Returns once durable and applied; the closure sees the state right after it.
//!     let total = store.commit_with(5, |counter| counter.total)?;
//!     assert_eq!(total, 15);
//!     store.close()?; // waits until the directory is released
//!
//!     let store: blocking::PostcardStore<Counter> = blocking::Store::open(PostcardSerializer, &dir)?;
//!     assert_eq!(store.query()?.total, 15);
//!     Ok(())
//! }
//! ```
//!
//! # Who owns what
//!
//! A blocking handle owns no more than an async one: an `Arc` on the store's shared part.
//! The writer thread owns the journal and the directory lock, as for every store (see
//! [`crate::Store`]). [`Store::from`] and [`Store::into_async`] convert a handle without
//! reopening anything, so one store can serve async tasks and plain threads at once, and
//! their commits share batches and syncs. Dropping the last handle of either kind asks the
//! writer to finish what is queued and returns at once; [`Store::close`] waits for it.
//!
//! # Calling it from async code
//!
//! Don't: a blocking call holds its thread until the writer answers (one `fdatasync` under
//! [`crate::Durability::Fsync`]), and on a runtime's worker thread that stalls every task
//! on it. It does not deadlock there (nothing in it waits for the runtime), but use
//! [`Store::as_async`] instead.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::path::Path;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

use airomem_core::{PostcardSerializer, Serializer, State};

use crate::{Committed, CommittedUnit, Error, Imported, Query, RecoveryReport, Stats, StoreOptions};

/// A durable, in-memory prevalent system whose methods block instead of returning futures.
///
/// Cheap to clone, `Send` and `Sync`: clones share one store, and commits from any number
/// of threads are written in batches with one `fdatasync` each. Each method behaves as its
/// namesake on [`crate::Store`] and returns the same errors; only waiting differs. There is
/// no cancellation to speak of: a call returns once the writer has answered.
pub struct Store<S: State, Z: Serializer = PostcardSerializer> {
    store: crate::Store<S, Z>,
}

/// A blocking store that journals commands as postcard, the compact default.
pub type PostcardStore<S> = Store<S, PostcardSerializer>;

/// A blocking store that journals commands as JSON.
#[cfg(feature = "json")]
pub type JsonStore<S> = Store<S, airomem_core::JsonSerializer>;

impl<S: State, Z: Serializer> Store<S, Z> {
    /// Opens (or creates) the store in `dir` with default options, recovering the state
    /// from what is on disk. See [`crate::Store::open`].
    pub fn open(serializer: Z, dir: impl AsRef<Path>) -> Result<Self, Error> {
        Self::open_with(serializer, dir, StoreOptions::default())
    }

    /// Opens (or creates) the store in `dir`, recovering the state on this thread. See
    /// [`crate::Store::open_with`].
    pub fn open_with(serializer: Z, dir: impl AsRef<Path>, options: StoreOptions) -> Result<Self, Error> {
        crate::Store::open_blocking(serializer, dir.as_ref().to_path_buf(), options).map(Store::from)
    }

    /// Commits a command: journals it, makes it durable (per the store's
    /// [`crate::Durability`]), applies it to the state, and returns its receipt. See
    /// [`crate::Store::commit`].
    pub fn commit(&self, command: S::Command) -> Result<Committed, Error> {
        block_on(self.store.commit(command))
    }

    /// Commits a command and runs `query` on the state right after it, under the same lock:
    /// the result reflects exactly this command and those before it. `query` runs under the
    /// state's write lock and must not block. See [`crate::Store::commit_with`].
    pub fn commit_with<R, Q>(&self, command: S::Command, query: Q) -> Result<R, Error>
    where
        R: Send + 'static,
        Q: FnOnce(&S) -> R + Send + 'static,
    {
        block_on(self.store.commit_with(command, query))
    }

    /// Commits `commands` as one atomic unit: consecutive sequence numbers, one journal
    /// batch, applied under one write lock, replayed all or none after any crash. See
    /// [`crate::Store::commit_all`].
    pub fn commit_all(&self, commands: impl IntoIterator<Item = S::Command>) -> Result<CommittedUnit, Error> {
        block_on(self.store.commit_all(commands))
    }

    /// Commits `commands` as one atomic unit and runs `query` on the state right after the
    /// last of them, under the same lock. See [`crate::Store::commit_all_with`].
    pub fn commit_all_with<R, Q>(&self, commands: impl IntoIterator<Item = S::Command>, query: Q) -> Result<R, Error>
    where
        R: Send + 'static,
        Q: FnOnce(&S) -> R + Send + 'static,
    {
        block_on(self.store.commit_all_with(commands, query))
    }

    /// Commits every command of `commands` in order from this thread, pipelined: each is
    /// handed to the writer without waiting for the receipt of the one before. Stops at the
    /// first failure with [`Error::ImportStopped`]. See [`crate::Store::import`].
    pub fn import(&self, commands: impl IntoIterator<Item = S::Command>) -> Result<Imported, Error> {
        block_on(self.store.import(commands))
    }

    /// [`Store::import`], handing `on_receipt` each command's index and receipt, in order.
    /// See [`crate::Store::import_with_receipts`].
    pub fn import_with_receipts(
        &self,
        commands: impl IntoIterator<Item = S::Command>,
        on_receipt: impl FnMut(u64, Committed),
    ) -> Result<Imported, Error> {
        block_on(self.store.import_with_receipts(commands, on_receipt))
    }

    /// Takes a snapshot now and returns once it is durable. See [`crate::Store::snapshot`].
    #[cfg(feature = "snapshot")]
    pub fn snapshot(&self) -> Result<crate::SnapshotInfo, Error> {
        block_on(self.store.snapshot())
    }

    /// A read lock on the state: never waits for I/O. See [`crate::Store::query`].
    pub fn query(&self) -> Result<Query<'_, S>, Error> {
        self.store.query()
    }

    /// Running totals since open: commits, batches, syncs, bytes.
    pub fn stats(&self) -> Stats {
        self.store.stats()
    }

    /// What recovery found and did when this store was opened.
    pub fn recovery(&self) -> &RecoveryReport {
        self.store.recovery()
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        self.store.dir()
    }

    /// Stops accepting commits, waits for those already queued, syncs and trims the
    /// journal, releases the directory, and reports any failure. Other handles, async ones
    /// included, get [`Error::Closed`] afterwards. See [`crate::Store::close`].
    pub fn close(self) -> Result<(), Error> {
        block_on(self.store.close())
    }

    /// The same store as an async handle, for code that has a runtime.
    pub fn as_async(&self) -> &crate::Store<S, Z> {
        &self.store
    }

    /// Turns this handle into an async one on the same store.
    pub fn into_async(self) -> crate::Store<S, Z> {
        self.store
    }
}

impl<S: State, Z: Serializer> From<crate::Store<S, Z>> for Store<S, Z> {
    /// A blocking handle on the same store: nothing is reopened.
    fn from(store: crate::Store<S, Z>) -> Self {
        Store { store }
    }
}

impl<S: State, Z: Serializer> From<Store<S, Z>> for crate::Store<S, Z> {
    /// An async handle on the same store: nothing is reopened.
    fn from(store: Store<S, Z>) -> Self {
        store.store
    }
}

impl<S: State, Z: Serializer> Clone for Store<S, Z> {
    fn clone(&self) -> Self {
        Store { store: self.store.clone() }
    }
}

impl<S: State, Z: Serializer> fmt::Debug for Store<S, Z> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("blocking::Store").field(&self.store).finish()
    }
}

thread_local! {
    /// Whether this thread is inside [`block_on`]: see [`pause`].
    static DRIVING: Cell<bool> = const { Cell::new(false) };
    /// Wakes this thread from [`block_on`]'s park; built once per thread, so a commit does
    /// not allocate one.
    static WAKER: Waker = Waker::from(Arc::new(Unpark(thread::current())));
}

/// Wakes the thread that waits in [`block_on`].
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs `future` to completion on this thread, parking it while the future waits.
///
/// The store's futures need no runtime: they wait on tokio's `sync` primitives (a
/// semaphore, oneshot channels), which work with any waker, and on the writer thread, which
/// wakes them. A wake-up that comes before the park leaves the thread's token set, so the
/// park returns at once and none is lost; a spurious return only costs another poll.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    // On a runtime's thread, tokio's primitives would charge each poll to the running task's
    // cooperative budget, and once it ran out would leave their wake-up to the scheduler,
    // which cannot run while this parks: a blocking call from async code would hang after
    // some dozens of commits. Unconstrained, they never defer.
    let mut future = pin!(tokio::task::unconstrained(future));
    let waker = WAKER.with(Waker::clone);
    let mut context = Context::from_waker(&waker);
    let _driving = Driving::enter();
    loop {
        match future.as_mut().poll(&mut context) {
            Poll::Ready(output) => return output,
            Poll::Pending => thread::park(),
        }
    }
}

/// Marks this thread as driven by [`block_on`] until dropped (restoring the mark it found,
/// should one `block_on` ever run inside another).
struct Driving(bool);

impl Driving {
    fn enter() -> Driving {
        Driving(DRIVING.replace(true))
    }
}

impl Drop for Driving {
    fn drop(&mut self) {
        DRIVING.set(self.0);
    }
}

/// The pause between two polls of a lone commit's outcome (see
/// [`crate::StoreOptions::spin_limit`]).
///
/// In a tokio task, `tokio::task::yield_now` lets the runtime's other tasks run. Under
/// [`block_on`] the thread is the caller's own, with no tasks to run: the pause lets other
/// threads (the writer, on a machine with few cores) have the CPU, and returns. It must not
/// use `tokio::task::yield_now` there: called on a runtime's thread (a blocking call from
/// async code), that hands the wake-up to the runtime's scheduler, which cannot run while
/// [`block_on`] parks the thread, and the commit would never finish.
pub(crate) async fn pause() {
    if DRIVING.get() {
        thread::yield_now();
    } else {
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_on_returns_what_the_future_returns() {
        assert_eq!(block_on(async { 7 }), 7);
    }

    /// A wake-up from another thread ends the park; one that came before it is not lost.
    #[test]
    fn block_on_waits_for_a_wake_from_another_thread() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sender = thread::spawn(move || tx.send(42).expect("receiver alive"));
        assert_eq!(block_on(rx).expect("sent"), 42);
        sender.join().expect("sender");

        let (tx, rx) = tokio::sync::oneshot::channel();
        tx.send(43).expect("receiver alive");
        assert_eq!(block_on(rx).expect("sent"), 43);
    }

    /// On a runtime's thread, tokio's primitives charge each poll to the running task's
    /// budget (128 polls), then answer `Pending` and leave the wake-up to the scheduler, which
    /// cannot run while `block_on` parks. Without `unconstrained` this test hangs.
    #[test]
    fn block_on_is_not_charged_to_a_runtime_task_budget() {
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        runtime.block_on(async {
            for n in 0..1_000 {
                let (tx, rx) = tokio::sync::oneshot::channel();
                tx.send(n).expect("receiver alive");
                assert_eq!(block_on(rx).expect("sent"), n);
            }
        });
    }

    #[test]
    fn pause_knows_who_drives_it() {
        assert!(!DRIVING.get());
        block_on(async {
            assert!(DRIVING.get(), "inside block_on");
            pause().await;
            assert!(DRIVING.get(), "still inside block_on after a pause");
        });
        assert!(!DRIVING.get(), "the mark is gone once block_on returns");
    }

    /// The reason `pause` exists: on a runtime's thread (a blocking call made from async
    /// code) the lone-commit spin's pause must not leave its wake-up to the runtime's
    /// scheduler, which cannot run while `block_on` parks the thread. `tokio::task::yield_now`
    /// in its place returns `Pending` without waking, and the commit would never finish.
    #[test]
    fn pause_does_not_wait_for_a_scheduler() {
        struct Woken(std::sync::atomic::AtomicBool);
        impl Wake for Woken {
            fn wake(self: Arc<Self>) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        runtime.block_on(async {
            let woken = Arc::new(Woken(std::sync::atomic::AtomicBool::new(false)));
            let waker = Waker::from(Arc::clone(&woken));
            let _driving = Driving::enter();
            let mut paused = pin!(pause());
            let ready = paused.as_mut().poll(&mut Context::from_waker(&waker)).is_ready();
            assert!(
                ready || woken.0.load(std::sync::atomic::Ordering::SeqCst),
                "the pause neither finished nor woke its caller: block_on would park for good"
            );
        });
    }
}
