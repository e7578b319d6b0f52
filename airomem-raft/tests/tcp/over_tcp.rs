//! The group works over TCP as it does in process: commits from any node, linearizable and
//! leader reads, a restart.

use std::time::Duration;

use airomem_raft::{Error, Role};

use crate::{Cluster, add, ledger, secret};

/// Commits sent to every node are forwarded to the leader over TCP, and every node ends
/// with the same ledger; reads of each kind see them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_from_every_node_reach_every_node() {
    let cluster = Cluster::start(3, |c| c).await;
    let leader = cluster.leader().await;
    for value in 1..=30u64 {
        let node = (value % 3) + 1;
        let receipt = cluster.node(node).commit(add(value)).await.expect("commits");
        assert_eq!(receipt.seq, value);
        assert_eq!(cluster.node(node).query().expect("reads").entries.len() as u64, value);
    }
    cluster.converge(&ledger(1..=30)).await;
    for id in 1..=3 {
        let read = cluster.node(id).query_linearizable().await.expect("a linearizable read");
        assert_eq!(read.entries, ledger(1..=30));
    }
    assert_eq!(cluster.node(leader).query_leader().expect("the leader serves").entries.len(), 30);
    let follower = if leader == 1 { 2 } else { 1 };
    assert!(matches!(cluster.node(follower).query_leader(), Err(Error::NotLeader { leader: Some(l) }) if l == leader));
    let fresh = cluster.node(follower).query_fresh(Duration::from_secs(5)).expect("heard from the leader lately");
    assert_eq!(fresh.entries.len(), 30);
    drop(fresh);
    cluster.close().await;
}

/// Many concurrent linearizable reads on a follower are served (and share rounds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_linearizable_reads_are_all_served() {
    let cluster = Cluster::start(3, |c| c).await;
    let leader = cluster.leader().await;
    let follower = if leader == 1 { 2 } else { 1 };
    cluster.node(leader).commit(add(7)).await.expect("commits");
    let node = cluster.node(follower);
    let reads = (0..200).map(|_| async { node.query_linearizable().await.map(|r| r.entries.clone()) });
    for read in futures::future::join_all(reads).await {
        assert_eq!(read.expect("served"), ledger([7]));
    }
    cluster.close().await;
}

/// A node closed and reopened on the same port rejoins and catches up with what was
/// committed while it was away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_rejoins_over_tcp() {
    let mut cluster = Cluster::start(3, |c| c).await;
    let leader = cluster.leader().await;
    let away = if leader == 3 { 2 } else { 3 };
    cluster.close_node(away).await;
    for value in 1..=20 {
        cluster.node(leader).commit(add(value)).await.expect("commits with a majority");
    }
    cluster.open(away, secret(), |c| c).await;
    cluster.converge(&ledger(1..=20)).await;
    let status = cluster.node(away).status();
    assert!(matches!(status.role, Role::Follower | Role::Leader | Role::Candidate), "{status:?}");
    cluster.close().await;
}
