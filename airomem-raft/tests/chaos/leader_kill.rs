//! The leader killed 50 times under load: its disk loses power and the node halts; the
//! survivors elect a new leader and commits go on; the old leader restarts on its crash image,
//! rejoins and catches up (from the log, or from a snapshot once the log it needs is purged)
//! before the next kill. Writers and linearizable readers run on every node throughout, and
//! the whole history is checked at the end.

use std::time::Instant;

use airomem_raft::Network;
use airomem_workspace::sim::SplitMix64;

use crate::Load;
use crate::{
    Snapshots, count_from_env, kill_node, leader_of, open_snapshotting, pick, restart_node, start_three, statuses,
    within,
};

/// Kills by default; `AIROMEM_LEADER_KILLS` overrides it.
const KILLS: u64 = 50;
/// Receipts between two kills, so that every leader does some work.
const WORK_BETWEEN_KILLS: usize = 30;
const WRITERS: u64 = 4;
/// Snapshots every few hundred entries and a short log behind them, so that a restarted
/// node sometimes finds the entries it lacks purged and is sent a snapshot instead.
const SNAPSHOTS: Snapshots = Snapshots { every: 300, kept: 50 };
/// Terms one failover may go through before the test calls it a livelock.
const MAX_TERMS_PER_FAILOVER: u64 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_again_and_again_loses_nothing_and_stays_linearizable() {
    crate::support::init_tracing();
    let kills = count_from_env("AIROMEM_LEADER_KILLS", KILLS);
    let root = tempfile::tempdir().expect("a temporary directory");
    let network = Network::new();
    let (mut disks, live) = start_three(root.path(), &network, SNAPSHOTS).await;
    let first = pick(&live, &mut SplitMix64::new(0));
    first.bootstrap(1..=3).await.expect("bootstraps");
    drop(first);

    let load = Load::start(&live, WRITERS, (1, 99), |_, _| true);
    let history = &load.history;

    let mut failovers = Vec::new();
    // Terms each failover went through: counted, not timed.
    let mut elections = Vec::new();
    let mut rng = SplitMix64::new(7);
    for kill in 0..kills {
        let target = history.acked() + WORK_BETWEEN_KILLS;
        history.wait_acked(target).await;
        let leader = leader_of(&live).await;
        let term = live.lock().expect("live nodes")[&leader].status().term;
        let killed_at = Instant::now();
        kill_node(&live, &disks[&leader], leader);
        // Taken once the leader is halted: a command invoked earlier could still be answered
        // by it (its followers alone are a majority), which is no failover.
        let tick = history.now();
        // Failover: from the kill to the first receipt of a command invoked after it.
        within(crate::PATIENCE, history.wait_acked_invoked_after(tick), || {
            format!("kill {kill}: no commit after killing leader {leader}; {}", statuses(&live))
        })
        .await;
        failovers.push(killed_at.elapsed());
        let new_leader = leader_of(&live).await;
        let new_term = live.lock().expect("live nodes")[&new_leader].status().term;
        elections.push(new_term - term);

        // The old leader restarts on what its disk kept, and catches up before the next kill.
        let seed = kill * 10 + leader + rng.below(1_000) * 1_000;
        let (dir, net) = (root.path(), &network);
        restart_node(&live, &mut disks, leader, seed, new_leader, |disk| async move {
            open_snapshotting(leader, dir, &disk, net, SNAPSHOTS).await
        })
        .await;
    }
    let summary = load.finish(&live).await;
    failovers.sort_unstable();
    elections.sort_unstable();
    eprintln!(
        "{kills} leader kills: {summary:?}; failover p50 {:?}, max {:?}; terms per failover: {elections:?}",
        failovers[failovers.len() / 2],
        failovers.last().expect("at least one kill")
    );
    // A failover takes a term or two (a split vote); the survivors must not keep splitting
    // the vote for many terms (the election watchdog once made them, for up to 11 s).
    let worst = *elections.last().expect("at least one kill");
    assert!(worst <= MAX_TERMS_PER_FAILOVER, "a failover went through {worst} terms: {elections:?}");
    assert!(summary.reads > 0 && summary.acked >= kills as usize * WORK_BETWEEN_KILLS, "{summary:?}");
}
