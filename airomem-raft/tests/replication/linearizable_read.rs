//! A linearizable read, on any node, sees every command acknowledged before it began, even
//! on a follower whose link from the leader is slow (so that its local state lags).

use std::time::Duration;

use crate::{Cluster, ledger};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linearizable_read_sees_every_commit_acknowledged_before_it() {
    let cluster = Cluster::start(3, |c| c).await;
    let leader = cluster.leader().await;
    let slow = cluster.other_than(&[leader]);
    // Appends reach `slow` 25 ms late: above the time a commit takes with the other
    // follower, below the heartbeat interval, which openraft gives an append to complete.
    cluster.network.delay(leader, slow, Duration::from_millis(25));

    let mut values = Vec::new();
    for value in 1..=5u64 {
        cluster.node(leader).commit(value).await.expect("commits");
        values.push(value);
        for node in cluster.nodes.values() {
            let state = node.query_linearizable().await.expect("a linearizable read");
            assert_eq!(state.entries, ledger(&values), "node {} missed an acknowledged commit", node.status().id);
        }
    }
    cluster.network.heal();
    cluster.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_missed_a_commit_waits_for_it_before_reading() {
    let cluster = Cluster::start(3, |c| c).await;
    let leader = cluster.leader().await;
    let stale = cluster.other_than(&[leader]);
    cluster.network.block(leader, stale);
    cluster.node(leader).commit(1).await.expect("commits with the other follower");
    // Nothing from the leader reached `stale`: its local state cannot have the command.
    assert_eq!(cluster.node(stale).query().expect("reads").entries, ledger(&[]));
    cluster.network.unblock(leader, stale);
    // Replication to `stale` resumes only after a backoff; the read index arrives first, and
    // the read waits until `stale` has applied up to it.
    let state = cluster.node(stale).query_linearizable().await.expect("a linearizable read");
    assert_eq!(state.entries, ledger(&[1]));
    drop(state);
    cluster.close().await;
}
