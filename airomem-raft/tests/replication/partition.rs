//! A partition: the side without a majority cannot commit (it answers `Unavailable` or
//! `Indeterminate` within `commit_timeout`), the majority can, and once the partition heals
//! all three replicas hold the same state.

use std::time::{Duration, Instant};

use airomem_raft::Error;

use crate::{Cluster, ledger};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_minority_cannot_commit_the_majority_can_and_healing_converges() {
    let timeout = Duration::from_secs(2);
    let cluster = Cluster::start(3, |c| c.commit_timeout(timeout)).await;
    let old = cluster.leader().await;
    cluster.node(old).commit(1).await.expect("commits before the partition");

    let majority: Vec<u64> = cluster.nodes.keys().copied().filter(|&id| id != old).collect();
    cluster.network.partition(&[old], &majority);

    // The old leader, alone: its command cannot reach a majority.
    let started = Instant::now();
    let outcome = cluster.node(old).commit(99).await;
    assert!(
        matches!(outcome, Err(Error::Indeterminate { .. } | Error::Unavailable { .. })),
        "the minority committed: {outcome:?}"
    );
    assert!(started.elapsed() < timeout + Duration::from_secs(2), "gave up late: {:?}", started.elapsed());

    // The majority elects a leader among itself (commit retries meanwhile) and commits.
    let receipt = cluster.node(majority[0]).commit(2).await.expect("the majority commits");
    assert_eq!(receipt.seq, 2);
    cluster.node(majority[1]).commit(3).await.expect("the majority commits");

    cluster.network.heal();
    // The old leader's lone entry was never committed: the new leader's log replaces it.
    cluster.converge(&ledger(&[1, 2, 3])).await;
    let receipt = cluster.node(old).commit(4).await.expect("the old leader's side commits after healing");
    assert_eq!(receipt.seq, 4);
    cluster.converge(&ledger(&[1, 2, 3, 4])).await;
    cluster.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_follower_reports_its_commit_unavailable_never_applied() {
    let timeout = Duration::from_secs(1);
    let cluster = Cluster::start(3, |c| c.commit_timeout(timeout)).await;
    let leader = cluster.leader().await;
    let follower = cluster.other_than(&[leader]);
    cluster.network.isolate(follower);
    // Its request never leaves the node, so the outcome is known: not applied.
    let outcome = cluster.node(follower).commit(7).await;
    assert!(matches!(outcome, Err(Error::Unavailable { .. })), "{outcome:?}");
    assert!(matches!(cluster.node(follower).query_linearizable().await, Err(Error::Unavailable { .. })));
    cluster.node(leader).commit(8).await.expect("the majority commits");
    cluster.network.heal();
    cluster.converge(&ledger(&[8])).await;
    cluster.close().await;
}
