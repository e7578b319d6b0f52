//! The peers: other ways of keeping the same sessions durable, measured in the same run, on
//! the same file system, with the same workload as airomem.
//!
//! * [`airomem07::Airomem07`]: airomem 0.7 from crates.io, an older, unrelated
//!   implementation of the Prevalent System pattern.
//! * [`prevayler::Prevayler`]: prevayler-rs 0.2, another Prevalent System library.
//! * [`sqlite::Sqlite`]: SQLite (bundled) in WAL mode with `synchronous=FULL`.
//! * [`redb::Redb`]: redb with its default durability.
//!
//! Every peer implements [`Peer`]; [`PeerKind`] names them for the run. Peers are driven by
//! OS threads, one per writer, since two of them have blocking APIs; the two async ones are
//! called through `block_on`.

pub mod airomem07;
pub mod prevayler;
pub mod redb;
mod run;
pub mod sqlite;

use std::collections::HashMap;
use std::path::Path;

use airomem_workspace::SessionsCommand;
use tokio::runtime::Handle;

use crate::commits::{Driven, SessionWorkload};
use crate::dataset::Dataset;
use crate::measure::{BoxError, REPETITIONS};
pub use run::{PeerCommits, PeerRecovery};

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

/// The peers, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerKind {
    /// airomem 0.7 from crates.io.
    Airomem07,
    /// prevayler-rs 0.2.
    Prevayler,
    /// SQLite through rusqlite.
    Sqlite,
    /// redb.
    Redb,
}

/// Runs `$body` with `$peer` bound to the type implementing [`Peer`] for `$kind`.
macro_rules! with_peer {
    ($kind:expr, $peer:ident => $body:expr) => {
        match $kind {
            PeerKind::Airomem07 => {
                type $peer = airomem07::Airomem07;
                $body
            }
            PeerKind::Prevayler => {
                type $peer = prevayler::Prevayler;
                $body
            }
            PeerKind::Sqlite => {
                type $peer = sqlite::Sqlite;
                $body
            }
            PeerKind::Redb => {
                type $peer = redb::Redb;
                $body
            }
        }
    };
}

impl PeerKind {
    /// Every peer, in the report's column order.
    pub const ALL: [PeerKind; 4] = [PeerKind::Airomem07, PeerKind::Prevayler, PeerKind::Sqlite, PeerKind::Redb];

    /// The column heading.
    pub fn name(self) -> &'static str {
        match self {
            PeerKind::Airomem07 => "airomem 0.7",
            PeerKind::Prevayler => "prevayler-rs 0.2",
            PeerKind::Sqlite => "SQLite",
            PeerKind::Redb => "redb 3",
        }
    }

    /// The name `--probe` takes.
    pub fn id(self) -> &'static str {
        match self {
            PeerKind::Airomem07 => "airomem07",
            PeerKind::Prevayler => "prevayler",
            PeerKind::Sqlite => "sqlite",
            PeerKind::Redb => "redb",
        }
    }

    /// How the system is shared between concurrent writers, for the report.
    pub fn sharing(self) -> &'static str {
        match self {
            PeerKind::Airomem07 => {
                "one `Store`, cloned per writer thread (its docs: \"just clone it\"), its async `commit` called \
                 through `Handle::block_on`; `commit` holds the store's write lock across append + `fdatasync`, so \
                 commits run one at a time"
            }
            PeerKind::Prevayler => {
                "`execute_transaction` takes `&mut self`, so the `Prevayler` is wrapped in a `std::sync::RwLock` \
                 (its docs suggest a Mutex or RwLock): commits take the write lock, lookups the read lock"
            }
            PeerKind::Sqlite => {
                "one connection behind a `std::sync::Mutex`, shared by all writer threads (SQLite admits one writer \
                 at a time; with a connection per thread, waiting writers sleep in its busy handler instead, which \
                 was several times slower at 16 and 64 writers in a separate check)"
            }
            PeerKind::Redb => {
                "one `Arc<Database>` shared by all writer threads; `begin_write` waits for the previous write \
                 transaction"
            }
        }
    }

    /// The kind `--probe` names, if any.
    pub fn from_id(id: &str) -> Option<PeerKind> {
        PeerKind::ALL.into_iter().find(|kind| kind.id() == id)
    }

    /// One repetition of `commits` durable commits from `writers` threads, on a fresh store
    /// in `dir` that is removed afterwards.
    pub fn commits_once(
        self,
        dir: &Path,
        runtime: &Handle,
        writers: usize,
        commits: u64,
        rep: usize,
    ) -> Result<Driven, BoxError> {
        eprintln!("commits: {}, {writers} writer(s), repetition {}/{REPETITIONS}", self.name(), rep + 1);
        let store_dir = dir.join(format!("{}-commits-{writers}w-{rep}", self.id()));
        std::fs::create_dir_all(&store_dir)?;
        let driven = with_peer!(self, P => run::commits_once::<P>(&store_dir, runtime, writers, commits))?;
        std::fs::remove_dir_all(&store_dir)?;
        Ok(driven)
    }

    /// Recovery, lookups and disk use on `data`, built in `dir` (and left there).
    pub fn recovery(self, dir: &Path, runtime: &Handle, data: &Dataset, tail: u64) -> Result<PeerRecovery, BoxError> {
        with_peer!(self, P => run::recovery::<P>(self, dir, runtime, data, tail))
    }

    /// Opens a fresh store in `dir`, commits `commits` commands from one writer and closes
    /// it: what `--probe` runs under strace.
    pub fn probe(self, dir: &Path, runtime: &Handle, commits: u64) -> Result<(), BoxError> {
        with_peer!(self, P => {
            let peer = P::open(dir, runtime)?;
            for command in SessionWorkload::new(0).take(commits as usize) {
                peer.commit(command)?;
            }
            peer.close()
        })
    }
}
