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

use std::fmt;
use std::path::Path;

use airomem_core::{PostcardSerializer, Serializer, State};

use super::Query;
use super::import::Imported;
use crate::Error;
use crate::options::StoreOptions;
use crate::park::block_on;
#[cfg(feature = "snapshot")]
use crate::report::SnapshotInfo;
use crate::report::{RecoveryReport, Stats};
use crate::write::request::{Committed, CommittedUnit};

/// A durable, in-memory prevalent system whose methods block instead of returning futures.
///
/// Cheap to clone, `Send` and `Sync`: clones share one store, and commits from any number
/// of threads are written in batches with one `fdatasync` each. Each method behaves as its
/// namesake on [`crate::Store`] and returns the same errors; only waiting differs. There is
/// no cancellation to speak of: a call returns once the writer has answered.
pub struct Store<S: State, Z: Serializer = PostcardSerializer> {
    store: super::Store<S, Z>,
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
        super::Store::open_blocking(serializer, dir.as_ref().to_path_buf(), options).map(Store::from)
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

    /// Backs the store up into `dest` and returns once the backup is durable. See
    /// [`crate::Store::backup`].
    #[cfg(feature = "snapshot")]
    pub fn backup(&self, dest: impl AsRef<std::path::Path>) -> Result<crate::backup::BackupReport, Error> {
        block_on(self.store.backup(dest))
    }

    /// Takes a snapshot now and returns once it is durable. See [`crate::Store::snapshot`].
    #[cfg(feature = "snapshot")]
    pub fn snapshot(&self) -> Result<SnapshotInfo, Error> {
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
    pub fn as_async(&self) -> &super::Store<S, Z> {
        &self.store
    }

    /// Turns this handle into an async one on the same store.
    pub fn into_async(self) -> super::Store<S, Z> {
        self.store
    }
}

impl<S: State, Z: Serializer> From<super::Store<S, Z>> for Store<S, Z> {
    /// A blocking handle on the same store: nothing is reopened.
    fn from(store: super::Store<S, Z>) -> Self {
        Store { store }
    }
}

impl<S: State, Z: Serializer> From<Store<S, Z>> for super::Store<S, Z> {
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
