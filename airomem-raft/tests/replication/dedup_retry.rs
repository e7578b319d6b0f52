//! A commit whose answer is lost is retried with the same client id and serial, and the
//! replicated state answers the retry with the recorded outcome: the command runs once.

use crate::{Cluster, ledger, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_commit_whose_answer_was_lost_applies_exactly_once() {
    let cluster = Cluster::start(3, |c| c).await;
    let leader = cluster.leader().await;
    let follower = cluster.other_than(&[leader]);
    cluster.node(leader).commit(1).await.expect("commits");
    cluster.converge(&ledger(&[1])).await;

    // Nothing from the leader reaches `follower`: its forwarded commit arrives and is
    // committed with the third node, but every answer is lost, so it keeps retrying.
    cluster.network.block(leader, follower);
    let receipt = retried_until_unblocked(&cluster, leader, follower).await;
    assert_eq!(receipt.seq, 2, "the outcome recorded for the first copy");
    cluster.converge(&ledger(&[1, 2])).await;
    for node in cluster.nodes.values() {
        assert_eq!(node.status().applied_seq, 2, "executed once on node {}", node.status().id);
    }
    cluster.close().await;
}

/// Commits 2 through `follower` while `leader`'s answers to it are blocked; unblocks once the
/// command was applied and a few retries were appended.
async fn retried_until_unblocked(cluster: &Cluster, leader: u64, follower: u64) -> airomem_raft::Receipt {
    let client = cluster.node(follower);
    let commit = client.commit(2);
    tokio::pin!(commit);
    let leader_node = cluster.node(leader);
    tokio::select! {
        outcome = &mut commit => panic!("the commit returned while every answer was lost: {outcome:?}"),
        () = wait_until("the leader to apply the command", || leader_node.status().applied_seq == 2) => {}
    }
    // Let a few retries (each a new log entry with the same serial) through before healing.
    let applied = leader_node.status().applied_index.expect("applied");
    tokio::select! {
        outcome = &mut commit => panic!("the commit returned while every answer was lost: {outcome:?}"),
        () = wait_until("retries to be appended", || leader_node.status().applied_index > Some(applied + 2)) => {}
    }
    cluster.network.unblock(leader, follower);
    commit.await.expect("the retry learns the recorded outcome")
}
