//! A command that panics is rolled back on every replica, takes no sequence number, and its
//! caller gets `Error::CommandPanicked`, wherever the commit was made.

use airomem_raft::Error;

use crate::{Cluster, PANIC, ledger};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_command_rolls_back_everywhere_and_is_reported() {
    let cluster = Cluster::start(3, |c| c).await;
    let leader = cluster.leader().await;
    let follower = cluster.other_than(&[leader]);
    cluster.node(leader).commit(1).await.expect("commits");

    for node in [leader, follower] {
        match cluster.node(node).commit(PANIC).await {
            Err(Error::CommandPanicked { message, .. }) => assert_eq!(message, "the test's panicking command"),
            other => panic!("expected CommandPanicked through node {node}, got {other:?}"),
        }
    }
    // The half change `Ledger::execute` made before panicking is gone everywhere.
    cluster.converge(&ledger(&[1])).await;
    let receipt = cluster.node(follower).commit(2).await.expect("commits after the panics");
    assert_eq!(receipt.seq, 2, "the panicked commands took no sequence number");
    cluster.converge(&ledger(&[1, 2])).await;
    for node in cluster.nodes.values() {
        assert_eq!(node.status().applied_seq, 2);
    }
    cluster.close().await;
}
