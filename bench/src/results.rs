//! What one bench run measured: where it ran ([`Setting`]), airomem's figures and each
//! peer's ([`Results`], [`PeerResults`]); the report and the comparison print them.

use crate::commits::CommitResult;
use crate::peers::{PeerCommits, PeerKind, PeerRecovery};
use crate::raw_disk::RawDiskResults;
use crate::recovery::RecoveryResult;
use crate::snapshot_stall::SnapshotStall;
use crate::sync_probe::SyncProbe;

/// Where the run happened, for the header.
#[derive(Debug)]
pub struct Setting {
    /// "quick" or "full".
    pub mode: &'static str,
    /// The scratch directory.
    pub dir: String,
    /// The file system holding it, as found in `/proc/self/mounts`.
    pub filesystem: String,
    /// Hardware threads available.
    pub cores: usize,
}

/// Everything one run measured.
#[derive(Debug)]
pub struct Results {
    /// The disk's limits.
    pub raw: RawDiskResults,
    /// Durable commit throughput, by writer count, ascending.
    pub commits: Vec<CommitResult>,
    /// Recovery speed.
    pub recovery: RecoveryResult,
    /// The peers' figures, in [`PeerKind::ALL`] order.
    pub peers: Vec<PeerResults>,
    /// Commit stalls during a snapshot.
    pub stall: SnapshotStall,
    /// Memory beyond the state, measured in a fresh process.
    pub memory: crate::memory::MemoryUse,
    /// Opening a store of the previous schema.
    pub migration: crate::migration::MigrationResult,
    /// The commit API against the in-memory and on-disk limits.
    pub commit_api: crate::commit_api::CommitApiResult,
    /// Three replicated nodes against one store.
    pub replication: crate::replication::ReplicationResult,
    /// Tokens looked up per repetition.
    pub lookups: usize,
    /// Sync calls per commit, by `--probe` name, airomem first.
    pub syncs: Vec<(&'static str, SyncProbe)>,
}

/// One peer's figures.
#[derive(Debug)]
pub struct PeerResults {
    /// Which peer.
    pub kind: PeerKind,
    /// Durable commit throughput, by writer count, ascending.
    pub commits: Vec<PeerCommits>,
    /// Recovery, lookups and disk use.
    pub recovery: PeerRecovery,
}
