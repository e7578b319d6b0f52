//! Failovers with snapshots every few hundred entries (issue 22, section 4): 60 events, each
//! the leader either killed (its disk loses power, the node halts, then restarts on its crash
//! image) or cut off from the others while commands wait on it and healed only once the
//! majority has purged its log past everything the cut-off leader holds, so that it catches up
//! from a snapshot that drops the entries it appended alone. Writers and a linearizable reader
//! run on every node throughout.
//!
//! It asserts liveness and counts, not speed: every failover completes (a commit invoked after
//! the event is acknowledged) within [`WEDGE`], a bound far above a healthy failover (about a
//! second) that only detects a wedged leader, and so does the work between two events; at the
//! end, the history check proves that no acknowledged command was lost or applied twice.
//! Before the proposer released the slots of entries it can no longer get answered, a node
//! that was cut off as leader and then elected again never committed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use airomem_raft::Network;
use airomem_workspace::sim::SplitMix64;

use crate::Load;
use crate::{
    Node, Snapshots, count_from_env, kill_node, leader_of, open_snapshotting, restart_node, start_three, statuses,
    wait_until, within,
};

/// Events by default (half kills, half partitions); `AIROMEM_FAILOVER_EVENTS` overrides it.
const EVENTS: u64 = 60;
/// How long a failover, or the work between two events, may take before the test calls the
/// group wedged. Generous for a loaded 2-core machine: not a speed requirement.
const WEDGE: Duration = Duration::from_secs(20);
/// Receipts between two events, so that every leader does some work.
const WORK_BETWEEN_EVENTS: usize = 20;
const WRITERS: u64 = 6;
/// Writers that also commit through a leader while it is cut off, so that commands wait on it.
const WAITING_WRITERS: u64 = 2;
/// Log entries between snapshots, and entries kept behind one: small enough that one partition
/// purges past what the cut-off leader holds.
const SNAPSHOTS: Snapshots = Snapshots { every: 200, kept: 20 };

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failovers_with_frequent_snapshots_never_wedge_the_group() {
    crate::support::init_tracing();
    let events = count_from_env("AIROMEM_FAILOVER_EVENTS", EVENTS);
    let root = tempfile::tempdir().expect("a temporary directory");
    let network = Network::new();
    let (mut disks, live) = start_three(root.path(), &network, SNAPSHOTS).await;
    let first = Arc::clone(&live.lock().expect("live nodes")[&1]);
    first.bootstrap(1..=3).await.expect("bootstraps");
    drop(first);

    // The node cut off from the others (0: none). A commit through it waits until
    // `commit_timeout`, so only the first few writers use it, and the others keep the majority
    // busy enough to fill a few hundred log entries in a second or two.
    let cut_off = Arc::new(AtomicU64::new(0));
    let usable = {
        let cut_off = Arc::clone(&cut_off);
        move |writer: u64, node: &Node| writer < WAITING_WRITERS || node.status().id != cut_off.load(Ordering::SeqCst)
    };
    let load = Load::start(&live, WRITERS, (100, 199), usable);
    let history = &load.history;

    let mut failovers = Vec::new();
    let mut rng = SplitMix64::new(11);
    for event in 0..events {
        let target = history.acked() + WORK_BETWEEN_EVENTS;
        within(WEDGE, history.wait_acked(target), || format!("event {event}: no progress; {}", statuses(&live))).await;
        let leader = leader_of(&live).await;
        let started = Instant::now();
        let kill = event % 2 == 0;
        // When the leader is cut off: its handle, and the last index in its log.
        let mut cut = None;
        if kill {
            kill_node(&live, &disks[&leader], leader);
        } else {
            let old = Arc::clone(&live.lock().expect("live nodes")[&leader]);
            network.isolate(leader);
            cut_off.store(leader, Ordering::SeqCst);
            // Nothing the cut-off leader appends from now on reaches another node.
            let holds = old.status().last_log_index.expect("a leader has a log");
            cut = Some((old, holds));
        }
        // Taken once the leader is halted or cut off: a command invoked earlier could still be
        // answered by it, which is no failover.
        let tick = history.now();
        within(WEDGE, history.wait_acked_invoked_after(tick), || {
            let done = if kill { "killing" } else { "cutting off" };
            format!("event {event}: no commit after {done} leader {leader}; {}", statuses(&live))
        })
        .await;
        failovers.push(started.elapsed());

        let Some((old, holds)) = cut else {
            // The old leader restarts on what its disk kept, and catches up.
            let seed = event * 10 + leader + rng.below(1_000) * 1_000;
            let new_leader = leader_of(&live).await;
            let (dir, net) = (root.path(), &network);
            restart_node(&live, &mut disks, leader, seed, new_leader, |disk| async move {
                open_snapshotting(leader, dir, &disk, net, SNAPSHOTS).await
            })
            .await;
            continue;
        };
        // The majority purges past everything the old leader holds, so that no entry of its
        // log can match, and it must be sent a snapshot.
        let purged_past = || {
            live.lock()
                .expect("live nodes")
                .iter()
                .filter(|&(&id, _)| id != leader)
                .all(|(_, n)| n.status().purged_index.is_some_and(|p| p >= holds))
        };
        wait_until("the majority to purge past the cut-off leader's log", purged_past).await;
        let installed_before = old.status().snapshot_index;
        network.heal();
        cut_off.store(0, Ordering::SeqCst);
        let new_leader = leader_of(&live).await;
        let target = live.lock().expect("live nodes")[&new_leader].status().commit_index;
        wait_until("the healed node catches up from a snapshot", || {
            let status = old.status();
            status.applied_index >= target && status.snapshot_index > installed_before
        })
        .await;
    }
    let summary = load.finish(&live).await;
    failovers.sort_unstable();
    eprintln!(
        "{events} failovers (kills and partitions, snapshots every {} entries): {summary:?}; \
         failover p50 {:?}, max {:?}",
        SNAPSHOTS.every,
        failovers[failovers.len() / 2],
        failovers.last().expect("at least one event")
    );
    assert!(summary.reads > 0 && summary.acked >= events as usize * WORK_BETWEEN_EVENTS, "{summary:?}");
}
