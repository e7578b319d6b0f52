//! A whole-cluster power loss across a snapshot and the purge behind it.
//!
//! **The sequence.** Three nodes under concurrent writers, each snapshotting every
//! [`SNAPSHOTS`]`.every` entries and purging its log behind the snapshot. Once every node has
//! built a snapshot and purged its log, a tripwire watching all three disks waits for the next
//! snapshot any node starts (the creation of its temporary file) and cuts the power of all
//! three disks at once at the `k`-th operation that node then makes on its snapshots or on its
//! `raft.meta` (where the purge point is recorded, with the log directory's sync): round `k` cuts at the `k`-th, so the rounds
//! walk the snapshot's write, `fdatasync`, rename and directory sync, the removal of the
//! previous snapshot, and the meta file writes of the purge, one operation after another.
//! Rounds go on until one cuts after the new purge point reached the disk.
//!
//! **How it knows it got there.** Before arming: every node's status shows a snapshot and a
//! purge point. After the cut: the tripwire names the operation it cut at, and the crash
//! image of the node caught mid-snapshot is read (its snapshot files, and the purge point in
//! its meta file, whose layout DESIGN.md gives): across the rounds, the new snapshot was lost,
//! kept with the purge behind it lost, and kept with the purge kept, each at least once.
//!
//! **What must hold.** Every node reopens on its crash image, with at least the snapshot and
//! purge point it had before arming; the history check then proves that every acknowledged
//! command is on every node at its place, that none ran twice and that every replica is
//! identical.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use airomem_raft::Network;
use airomem_workspace::sim::{SimStorage, SplitMix64};

use crate::history::History;
use crate::watched::{Op, Tripwire, is_snapshot_of, temp_snapshot_seq};
use crate::{Live, Node, Snapshots, converge, node_dir, open_watched, wait_until};

const SNAPSHOTS: Snapshots = Snapshots { every: 30, kept: 5 };
const WRITERS: u64 = 4;
/// Rounds run at once: most of a round's time is election timers.
const CONCURRENT: u64 = 3;
/// Rounds at most: the snapshot and the purge behind it take about 15 operations.
const MAX_ROUNDS: u64 = 60;

/// What the crash image of the node caught mid-snapshot kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kept {
    /// Not the new snapshot.
    Nothing,
    /// The new snapshot, not the purge point behind it.
    Snapshot,
    /// The new snapshot and the purge point behind it.
    SnapshotAndPurge,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_cluster_power_loss_across_a_snapshot_and_its_purge_keeps_every_acknowledged_command() {
    crate::support::init_tracing();
    let mut reached = BTreeSet::new();
    let mut next = 0;
    let mut running = tokio::task::JoinSet::new();
    // Rounds start in order of `k` until a round has cut after the purge reached the disk.
    while (next < MAX_ROUNDS && !reached.contains(&Kept::SnapshotAndPurge)) || !running.is_empty() {
        while next < MAX_ROUNDS && !reached.contains(&Kept::SnapshotAndPurge) && (running.len() as u64) < CONCURRENT {
            running.spawn(one_round(next));
            next += 1;
        }
        match running.join_next().await.expect("a round is running") {
            Ok(kept) => drop(reached.insert(kept)),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    eprintln!("{next} rounds of whole-cluster power loss across a snapshot: reached {reached:?}");
    assert_eq!(
        reached,
        BTreeSet::from([Kept::Nothing, Kept::Snapshot, Kept::SnapshotAndPurge]),
        "not every stage of the snapshot and its purge was cut"
    );
}

/// The snapshots and the purge point a node's disk holds: what its recovery starts from.
#[derive(Clone, Copy, Debug)]
struct Durable {
    /// The newest snapshot's sequence number (its last log index + 1).
    snapshot: Option<u64>,
    /// The purge point's log index, read from `raft.meta` (bit 2 of byte 10 says it is
    /// present, bytes 48..56 hold its index: DESIGN.md, "Meta file").
    purged: Option<u64>,
}

fn durable(disk: &SimStorage, dir: &Path) -> Durable {
    let contents = disk.contents();
    let snapshots = dir.join("snapshots");
    let snapshot = contents
        .keys()
        .filter(|p| p.parent() == Some(snapshots.as_path()))
        .filter_map(|p| p.file_name()?.to_str()?.strip_suffix(".snapshot")?.parse().ok())
        .max();
    let purged = contents.get(&dir.join("log").join("raft.meta")).and_then(|meta| {
        assert_eq!(&meta[..8], b"AIROMEMV", "a meta file");
        (meta[10] & 4 != 0).then(|| u64::from_le_bytes(meta[48..56].try_into().expect("8 bytes")))
    });
    Durable { snapshot, purged }
}

/// Cuts the power of every disk at the `k`-th operation on its snapshots or meta file of the
/// first node that starts a snapshot; `target` gets that node's directory and the new
/// snapshot's sequence number, `seen` the operations until the cut.
fn across(
    k: usize,
    target: Arc<Mutex<Option<(PathBuf, u64)>>>,
    seen: Arc<Mutex<Vec<(Op, String)>>>,
) -> impl FnMut(Op, &Path) -> bool + Send + 'static {
    move |op, path| {
        let mut target = target.lock().expect("target");
        if target.is_none() {
            let Some(seq) = temp_snapshot_seq(path).filter(|_| op == Op::Create) else { return false };
            let dir = path.parent().and_then(Path::parent).expect("node/snapshots/file").to_path_buf();
            *target = Some((dir, seq));
        }
        let (dir, _) = target.as_ref().expect("just set");
        // The meta file is replaced by a write, an fdatasync, a rename and a sync of the log's
        // directory (which nothing else here syncs: these segments never roll over).
        let log = dir.join("log");
        let meta = (op == Op::SyncDir && path == log)
            || (path.parent() == Some(log.as_path())
                && path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("raft.meta")));
        if !meta && !is_snapshot_of(dir, path) {
            return false;
        }
        let mut seen = seen.lock().expect("seen");
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        seen.push((op, name));
        seen.len() > k
    }
}

async fn one_round(k: u64) -> Kept {
    let what = format!("round {k}");
    let root = tempfile::tempdir().expect("a temporary directory");
    let network = Network::new();
    let disks: BTreeMap<u64, SimStorage> = (1..=3).map(|id| (id, SimStorage::new())).collect();
    let wire = Tripwire::new();
    let snapshotting =
        |c: airomem_raft::NodeConfig| c.snapshot_every(SNAPSHOTS.every).logs_kept_after_snapshot(SNAPSHOTS.kept);
    let live: Live = Arc::default();
    for (&id, disk) in &disks {
        let node = open_watched(id, root.path(), disk, &wire, &network, snapshotting).await;
        live.lock().expect("live nodes").insert(id, node);
    }
    let nodes: Vec<Arc<Node>> = live.lock().expect("live nodes").values().cloned().collect();
    nodes[0].bootstrap(1..=3).await.expect("bootstraps");

    let history = Arc::new(History::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..WRITERS {
        let rng = SplitMix64::new(k << 8 | writer);
        let (history, stop, live) = (Arc::clone(&history), Arc::clone(&stop), Arc::clone(&live));
        writers.spawn(crate::writer(history, stop, live, writer, rng, |_| true));
    }

    // Every node has built a snapshot and purged its log behind it.
    wait_until("every node to snapshot and purge", || {
        nodes.iter().all(|n| {
            let status = n.status();
            status.snapshot_index.is_some() && status.purged_index.is_some()
        })
    })
    .await;
    let before: BTreeMap<u64, (u64, u64)> = nodes
        .iter()
        .map(|n| {
            let status = n.status();
            (status.id, (status.snapshot_index.expect("waited for"), status.purged_index.expect("waited for")))
        })
        .collect();

    let target = Arc::new(Mutex::new(None));
    let seen = Arc::new(Mutex::new(Vec::new()));
    wire.arm(disks.values().cloned().collect(), across(k as usize, Arc::clone(&target), Arc::clone(&seen)));
    wait_until("the power cut across a snapshot", || wire.tripped().is_some()).await;
    stop.store(true, Ordering::SeqCst);
    for node in &nodes {
        node.halt();
    }
    while let Some(joined) = writers.join_next().await {
        joined.expect("a writer");
    }
    drop(nodes);
    let (target_dir, new_snapshot) = target.lock().expect("target").clone().expect("the tripwire found its node");
    let target_id: u64 =
        target_dir.file_name().and_then(|n| n.to_str()?.strip_prefix("node-")?.parse().ok()).expect("a node directory");

    // Every node restarts on what its disk kept: at least the snapshot and purge point it had.
    let images: BTreeMap<u64, SimStorage> = disks.iter().map(|(&id, disk)| (id, disk.crash(k * 3 + id))).collect();
    for (&id, image) in &images {
        let kept = durable(image, &node_dir(root.path(), id));
        let (snapshot, purged) = before[&id];
        assert!(kept.snapshot > Some(snapshot), "{what}: node {id} lost its snapshot {snapshot}: {kept:?}");
        assert!(kept.purged >= Some(purged), "{what}: node {id} lost its purge point {purged}: {kept:?}");
    }
    let kept = durable(&images[&target_id], &target_dir);
    let stage = match (kept.snapshot >= Some(new_snapshot), kept.purged > Some(before[&target_id].1)) {
        (false, _) => Kept::Nothing,
        (true, false) => Kept::Snapshot,
        (true, true) => Kept::SnapshotAndPurge,
    };

    let network = Network::new();
    let mut nodes = Vec::new();
    for (&id, image) in &images {
        nodes.push(open_watched(id, root.path(), image, &Tripwire::new(), &network, snapshotting).await);
    }
    let replicas = converge(&history, &nodes).await;
    let summary = history.check(&replicas).unwrap_or_else(|violation| panic!("{what}: {violation}"));
    for node in nodes {
        node.halt();
    }
    let seen = seen.lock().expect("seen").clone();
    eprintln!(
        "{what}: node {target_id} cut at {} building snapshot {new_snapshot}, kept {stage:?}; {summary:?}",
        wire.tripped().expect("tripped")
    );
    assert!(seen.len() == k as usize + 1, "{what}: {seen:?}");
    stage
}
