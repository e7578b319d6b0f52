//! The election watchdog: with openraft's own election timer off, only the watchdog can
//! replace a dead leader. With it, a new leader appears and commits go on; without it (the
//! control), no leader appears at all, which shows the first test depends on it.

use std::time::{Duration, Instant};

use airomem_raft::Role;

use crate::{Cluster, ledger};

/// Kills the leader and returns the survivors' ids.
async fn kill_the_leader(cluster: &mut Cluster) -> Vec<u64> {
    let leader = cluster.leader().await;
    cluster.nodes.remove(&leader).expect("the leader").halt();
    cluster.nodes.keys().copied().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_alone_elects_a_new_leader() {
    let mut cluster = Cluster::start(3, |c| c.election_timer(false)).await;
    cluster.node(cluster.leader().await).commit(1).await.expect("commits");
    let survivors = kill_the_leader(&mut cluster).await;

    // `leader()` waits until both survivors follow the same live leader.
    let new = cluster.leader().await;
    assert!(survivors.contains(&new));
    let receipt = cluster.node(survivors[0]).commit(2).await.expect("commits under the new leader");
    assert_eq!(receipt.seq, 2);
    cluster.converge(&ledger(&[1, 2])).await;
    cluster.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_watchdog_nobody_replaces_the_dead_leader() {
    let mut cluster = Cluster::start(3, |c| c.election_timer(false).watchdog(false)).await;
    let survivors = kill_the_leader(&mut cluster).await;
    // Twice as long as the watchdog needs at most (2× + 1× the maximum election timeout):
    // not a synchronisation, the length of the observation.
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_millis(2 * 3 * 600) {
        for &id in &survivors {
            assert_ne!(cluster.node(id).status().role, Role::Leader, "node {id} was elected without a watchdog");
            assert_ne!(cluster.node(id).status().role, Role::Candidate, "node {id} stood without a watchdog");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.close().await;
}
