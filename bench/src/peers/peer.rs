//! What every peer implements ([`Peer`]), apart from the code that picks and drives one, so
//! that the peers and the runner depend on it and not on each other.

use std::collections::HashMap;
use std::path::Path;

use airomem_workspace::SessionsCommand;
use tokio::runtime::Handle;

use crate::measure::BoxError;

/// Whether a peer's load sizes its `HashMap` before filling it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SizeHint {
    /// `HashMap::new()`, grown by the inserts, as airomem's `Sessions` is during replay.
    None,
    /// `HashMap::with_capacity(n)`, `n` from the database (a `COUNT(*)`, a table length),
    /// asked for inside the timed load.
    Count,
}

/// The commands of a data set, for [`Peer::build`].
pub type Commands = Box<dyn Iterator<Item = SessionsCommand> + Send>;

/// A system holding the session store, as the bench drives it.
pub trait Peer: Sized + Send + Sync {
    /// Opens (or creates) a store in `dir` whose [`Peer::commit`] returns once the command
    /// is as durable as the system makes it by default.
    fn open(dir: &Path, runtime: &Handle) -> Result<Self, BoxError>;

    /// Commits one command; called from many threads at once.
    fn commit(&self, command: SessionsCommand) -> Result<(), BoxError>;

    /// Live sessions.
    fn sessions(&self) -> Result<usize, BoxError>;

    /// Looks up every token in turn, each with whatever lock or transaction a lookup
    /// needs, and returns the sum of the user ids found.
    fn lookup_sum(&self, tokens: &[String]) -> Result<u64, BoxError>;

    /// Writes `commands` into a new store in `dir` as fast as the API allows: one
    /// transaction for the databases, no per-command sync for the prevalence libraries. The
    /// result must be durable when this returns. Not a timed figure.
    fn build(dir: &Path, runtime: &Handle, commands: Commands) -> Result<(), BoxError>;

    /// Like [`Peer::build`], with a snapshot taken after the first `snapshot_after` commands,
    /// if the system has snapshots that its recovery loads; `Ok(false)` (and nothing built)
    /// if not.
    fn build_with_snapshot(
        _dir: &Path,
        _runtime: &Handle,
        _commands: Commands,
        _snapshot_after: u64,
    ) -> Result<bool, BoxError> {
        Ok(false)
    }

    /// Recovery: opens the store in `dir` and brings every session into memory, as a
    /// prevalent system holds them (the databases load all rows into a `HashMap` that the
    /// returned value keeps).
    fn recover(dir: &Path, runtime: &Handle) -> Result<Self, BoxError>;

    /// Whether the sessions in memory after [`Peer::recover`] are exactly `expected`.
    fn recovered_equals(&self, expected: &HashMap<String, u64>) -> Result<bool, BoxError>;

    /// Closes the store, syncing whatever the system syncs on close.
    fn close(self) -> Result<(), BoxError>;
}
