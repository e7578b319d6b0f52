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
mod kind;
mod peer;
pub mod prevayler;
pub mod redb;
mod run;
pub mod sqlite;

use std::path::Path;

use tokio::runtime::Handle;

use crate::commits::{Driven, SessionWorkload};
use crate::dataset::Dataset;
use crate::measure::{BoxError, REPETITIONS};
pub use kind::PeerKind;
pub(crate) use peer::{Peer, SizeHint};
pub use run::{PeerCommits, PeerRecovery};

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

// Running a peer needs the peer types, so these methods stay here rather than in `kind`.
impl PeerKind {
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
