//! A simulated disk with a tripwire, so that a test cuts the power at the very storage
//! operation it means to, not at one it happens to reach.
//!
//! [`Watched`] (the workspace's `Hooked` storage over a [`SimStorage`]) passes every
//! operation to the disk after showing it to a [`Tripwire`].
//! Armed with a rule, the tripwire cuts the power of the disks it was given (one node's, or
//! every node's for a whole-cluster loss) just before the first operation the rule picks, so
//! that the operation and everything after it fail and change nothing. The library needs no
//! test hook for this: every file operation of the Raft log and the state machine already goes
//! through the storage seam.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

pub use airomem_workspace::hooked::Op;
use airomem_workspace::hooked::{Hooked, Hooks};
use airomem_workspace::sim::SimStorage;

/// Picks the operation to cut the power at: called before every operation (with its kind and
/// the path the store named) until it returns true.
pub type Rule = Box<dyn FnMut(Op, &Path) -> bool + Send>;

/// Cuts the power of some disks at an operation a [`Rule`] picks; shared by the [`Watched`]
/// disks it watches (across a node's restarts, or across the nodes of a cluster).
#[derive(Default)]
pub struct Tripwire {
    wire: Mutex<Wire>,
}

#[derive(Default)]
struct Wire {
    rule: Option<Rule>,
    victims: Vec<SimStorage>,
    /// The operation the power was cut at, described.
    tripped: Option<String>,
    /// The lengths of the `set_len`s made on Raft log segments, in order: each is a
    /// truncation of the log (or a torn tail cut at open, or a rollover, which these tests'
    /// 64 MiB segments never reach).
    segment_cuts: Vec<u64>,
}

impl Tripwire {
    /// A tripwire, not armed.
    pub fn new() -> Arc<Tripwire> {
        Arc::default()
    }

    fn wire(&self) -> std::sync::MutexGuard<'_, Wire> {
        self.wire.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Cuts the power of every disk of `victims` just before the first operation `rule` picks
    /// (replacing an earlier rule, and forgetting an earlier trip).
    pub fn arm(&self, victims: Vec<SimStorage>, rule: impl FnMut(Op, &Path) -> bool + Send + 'static) {
        let mut wire = self.wire();
        wire.rule = Some(Box::new(rule));
        wire.victims = victims;
        wire.tripped = None;
    }

    /// The operation the power was cut at, if it was.
    pub fn tripped(&self) -> Option<String> {
        self.wire().tripped.clone()
    }

    /// The lengths of the `set_len`s made on Raft log segments so far (see [`Wire`]).
    pub fn segment_cuts(&self) -> Vec<u64> {
        self.wire().segment_cuts.clone()
    }

    fn see(&self, op: Op, path: &Path, set_len: Option<u64>) {
        let mut wire = self.wire();
        if let Some(len) = set_len
            && is_segment(path)
        {
            wire.segment_cuts.push(len);
        }
        let Some(rule) = wire.rule.as_mut() else { return };
        if rule(op, path) {
            for disk in &wire.victims {
                disk.power_cut();
            }
            wire.rule = None;
            wire.tripped = Some(format!("{op:?} {}", path.display()));
        }
    }
}

/// Whether `path` is a Raft log segment.
pub fn is_segment(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "raftlog")
}

/// Whether `path` is a snapshot file, or the directory of snapshots, of the node in `node_dir`.
pub fn is_snapshot_of(node_dir: &Path, path: &Path) -> bool {
    let snapshots = node_dir.join("snapshots");
    path == snapshots || path.parent() == Some(snapshots.as_path())
}

/// The sequence number a snapshot's temporary file is named by (its last log index + 1).
pub fn temp_snapshot_seq(path: &Path) -> Option<u64> {
    path.file_name()?.to_str()?.strip_suffix(".snapshot.tmp")?.parse().ok()
}

/// A [`SimStorage`] whose operations a [`Tripwire`] sees first.
pub type Watched = Hooked<Tripwire, SimStorage>;

impl Hooks for Tripwire {
    fn before(&self, op: Op, path: &Path) {
        self.see(op, path, None);
    }

    fn before_set_len(&self, path: &Path, len: u64) {
        self.see(Op::SetLen, path, Some(len));
    }
}
