//! A follower's power cut under load.
//!
//! **The sequence.** Writers commit through every live node and a reader reads through them
//! (linearizable reads) throughout. Round after round, a follower's disk loses power in the
//! middle of the appends it receives: before an append's write, or with an append written and
//! not yet synced (so that its crash image may keep, drop or tear it). The follower halts;
//! the writers go on through the two others; it restarts on its crash image and catches up
//! while they still write.
//!
//! **How it knows it got there.** The tripwire on the follower's disk names the operation the
//! power was cut at (a write or an `fdatasync` of its log's segment), and with an append
//! written the disk had unsynced writes at the cut; commands invoked after the cut are
//! acknowledged before the follower restarts (commits went on during the cut).
//!
//! **What must hold.** The follower reopens on each crash image and catches up; at the end the
//! history check proves that every acknowledged command is on every node at its place, that
//! none ran twice, that every replica is identical and that every read was linearizable.

use std::collections::BTreeMap;
use std::sync::Arc;

use airomem_raft::Network;
use airomem_workspace::sim::SimStorage;

use crate::Load;
use crate::watched::{Op, Tripwire, is_segment};
use crate::{Live, Snapshots, kill_node, leader_of, open_watched, restart_node, wait_until};

const SNAPSHOTS: Snapshots = Snapshots { every: 100, kept: 30 };
const WRITERS: u64 = 4;
/// Receipts before each cut, and during each cut.
const WORK: usize = 20;
/// The rounds: with an append's write not made, and with it made and not synced.
const ROUNDS: [bool; 4] = [false, true, false, true];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followers_power_cut_under_load_loses_nothing_acknowledged() {
    crate::support::init_tracing();
    let root = tempfile::tempdir().expect("a temporary directory");
    let network = Network::new();
    let mut disks: BTreeMap<u64, SimStorage> = (1..=3).map(|id| (id, SimStorage::new())).collect();
    let wires: BTreeMap<u64, Arc<Tripwire>> = (1..=3).map(|id| (id, Tripwire::new())).collect();
    let snapshotting =
        |c: airomem_raft::NodeConfig| c.snapshot_every(SNAPSHOTS.every).logs_kept_after_snapshot(SNAPSHOTS.kept);
    let live: Live = Arc::default();
    for (&id, disk) in &disks {
        let node = open_watched(id, root.path(), disk, &wires[&id], &network, snapshotting).await;
        live.lock().expect("live nodes").insert(id, node);
    }
    let first = Arc::clone(&live.lock().expect("live nodes")[&1]);
    first.bootstrap(1..=3).await.expect("bootstraps");
    drop(first);

    let load = Load::start(&live, WRITERS, (300, 399), |_, _| true);
    let history = &load.history;

    let mut last_victim = 0;
    for (round, written) in ROUNDS.into_iter().enumerate() {
        history.wait_acked(history.acked() + WORK).await;
        let leader = leader_of(&live).await;
        let victim = (1..=3).find(|&id| id != leader && id != last_victim).expect("a follower");
        last_victim = victim;

        // The power goes in the middle of the appends the follower receives.
        let mut write_made = false;
        wires[&victim].arm(vec![disks[&victim].clone()], move |op, path| {
            if !is_segment(path) {
                return false;
            }
            if !written {
                return op == Op::WriteAt;
            }
            write_made |= op == Op::WriteAt;
            write_made && op == Op::SyncData
        });
        wait_until("the follower's power cut", || wires[&victim].tripped().is_some()).await;
        let unsynced = disks[&victim].unsynced();
        kill_node(&live, &disks[&victim], victim);
        let cut = wires[&victim].tripped().expect("tripped");
        if written {
            assert!(unsynced > 0, "round {round}: the append was not pending at the cut ({cut})");
        }

        // Commits go on without it.
        let tick = history.now();
        let acked = history.acked();
        history.wait_acked_invoked_after(tick).await;
        history.wait_acked(acked + WORK).await;

        let leader = leader_of(&live).await;
        let (dir, net, wire) = (root.path(), &network, &wires[&victim]);
        restart_node(&live, &mut disks, victim, round as u64 + 1_000, leader, |disk| async move {
            open_watched(victim, dir, &disk, wire, net, snapshotting).await
        })
        .await;
        eprintln!("round {round}: follower {victim} cut at {cut} ({unsynced} unsynced), {} acked", history.acked());
    }
    let summary = load.finish(&live).await;
    eprintln!("{} follower power cuts under load: {summary:?}", ROUNDS.len());
    assert!(summary.reads > 0 && summary.acked >= ROUNDS.len() * 2 * WORK, "{summary:?}");
}
