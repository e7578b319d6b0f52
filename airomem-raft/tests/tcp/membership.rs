//! Membership over TCP: a learner joins a running group and catches up (through a snapshot,
//! the log behind it purged), is promoted, and nodes are removed, never below the minimum
//! unless forced.

use airomem_raft::{Error, Role};

use crate::{Cluster, add, ledger, secret};

/// Node 4 joins a group whose log was purged behind a snapshot: `add_learner` returns once
/// it caught up, its state equals the leader's exactly; promoted, it votes; then removals
/// go down to three voters and no further unless forced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_joins_catches_up_is_promoted_and_nodes_are_removed() {
    let configure = |c: airomem_raft::NodeConfig| c.snapshot_every(100).logs_kept_after_snapshot(10);
    let mut cluster = Cluster::start(3, configure).await;
    let leader = cluster.leader().await;
    for value in 1..=500 {
        cluster.node(leader).commit(add(value)).await.expect("commits");
    }
    let purged = cluster.node(leader).status().purged_index.expect("the log was purged behind a snapshot");
    assert!(purged > 100, "purged up to {purged}");

    let fourth = crate::bind_all([4]).await;
    cluster.addrs.extend(fourth);
    cluster.open(4, secret(), configure).await;
    let follower = if leader == 1 { 2 } else { 1 };
    let leader_log = cluster.node(leader).status().last_log_index;
    // Asked of a follower: it goes to the leader.
    cluster.node(follower).add_learner(4, cluster.addrs[&4].to_string()).await.expect("the learner is added");
    // Returned once caught up: it holds the leader's whole log as of the call (openraft's
    // own wait stops 5,000 entries short).
    let learner = cluster.node(4).status();
    assert!(learner.last_log_index >= leader_log, "{learner:?} behind {leader_log:?}");
    crate::wait_until("node 4 to apply everything", || cluster.node(4).query().expect("reads").entries.len() == 500)
        .await;
    assert_eq!(cluster.node(4).query().expect("reads").entries, ledger(1..=500));
    assert!(cluster.node(4).status().snapshot_index.is_some(), "it caught up through a snapshot");
    assert_eq!(cluster.node(4).status().role, Role::Learner);

    let members = cluster.node(4).members().await.expect("members");
    assert_eq!(members.voters.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(members.learners.keys().copied().collect::<Vec<_>>(), [4]);
    assert_eq!(members.learners[&4], cluster.addrs[&4].to_string());

    cluster.node(leader).promote([4]).await.expect("promoted");
    crate::wait_until("node 4 to vote", || cluster.node(4).status().role == Role::Follower).await;
    cluster.node(4).commit(add(501)).await.expect("commits with four voters");

    let refused = cluster.node(leader).promote([9]).await;
    assert!(matches!(refused, Err(Error::Refused { .. })), "{refused:?}");

    let victim = (1..=3).find(|&id| id != leader).expect("a follower");
    cluster.node(leader).remove(victim).await.expect("four voters go down to three");
    let members = cluster.node(leader).members().await.expect("members");
    assert_eq!(members.voters.len(), 3);
    assert!(!members.voters.contains_key(&victim) && !members.learners.contains_key(&victim));
    cluster.close_node(victim).await;

    let next = cluster.nodes.keys().copied().find(|&id| id != leader).expect("another voter");
    let refused = cluster.node(leader).remove(next).await;
    assert!(matches!(&refused, Err(Error::Refused { reason }) if reason.contains("minimum")), "{refused:?}");
    assert_eq!(cluster.node(leader).members().await.expect("members").voters.len(), 3, "nothing changed");
    cluster.node(leader).remove_forced(next).await.expect("forced");
    assert_eq!(cluster.node(leader).members().await.expect("members").voters.len(), 2);
    cluster.node(leader).commit(add(502)).await.expect("two voters still commit");
    cluster.close().await;
}

/// A node removed and added back twenty times (wiping its directory every other time)
/// rejoins each time with the group's exact state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_is_removed_and_added_back_repeatedly() {
    let configure = |c: airomem_raft::NodeConfig| c.snapshot_every(50).logs_kept_after_snapshot(5).min_voters(2);
    let mut cluster = Cluster::start(3, configure).await;
    let rounds: u64 = std::env::var("AIROMEM_READD_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(6);
    let mut value = 0;
    for round in 0..rounds {
        let leader = cluster.leader().await;
        let victim = (1..=3).find(|&id| id != leader).expect("a follower");
        cluster.node(leader).remove(victim).await.unwrap_or_else(|e| panic!("round {round}: removing: {e}"));
        cluster.close_node(victim).await;
        for _ in 0..30 {
            value += 1;
            cluster.node(leader).commit(add(value)).await.expect("two voters commit");
        }
        if round % 2 == 1 {
            std::fs::remove_dir_all(cluster.root.path().join(format!("node-{victim}"))).expect("wipes");
        }
        cluster.open(victim, secret(), configure).await;
        let addr = cluster.addrs[&victim].to_string();
        cluster.node(leader).add_learner(victim, addr).await.unwrap_or_else(|e| panic!("round {round}: adding: {e}"));
        cluster.node(leader).promote([victim]).await.unwrap_or_else(|e| panic!("round {round}: promoting: {e}"));
        cluster.converge(&ledger(1..=value)).await;
    }
    cluster.close().await;
}
