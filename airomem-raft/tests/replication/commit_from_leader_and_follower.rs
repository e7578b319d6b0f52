//! A commit made on the leader and one made on a follower (forwarded to the leader) are both
//! applied by every replica, in order, and each is visible on the node that made it as soon
//! as `commit` returns.

use crate::{Cluster, ledger};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_from_the_leader_and_from_a_follower_reach_every_replica() {
    let cluster = Cluster::start(3, |c| c).await;
    let leader = cluster.leader().await;
    let follower = cluster.other_than(&[leader]);

    let first = cluster.node(leader).commit(10).await.expect("commits on the leader");
    assert_eq!(first.seq, 1);
    assert_eq!(cluster.node(leader).query().expect("reads").entries, ledger(&[10]));

    let second = cluster.node(follower).commit(20).await.expect("commits through a follower");
    assert_eq!(second.seq, 2);
    assert!(second.index > first.index);
    assert!(second.unix_nanos >= first.unix_nanos, "leader time never runs backwards");
    // Applied on the follower before its commit returned.
    assert_eq!(cluster.node(follower).query().expect("reads").entries, ledger(&[10, 20]));

    cluster.converge(&ledger(&[10, 20])).await;
    for node in cluster.nodes.values() {
        let status = node.status();
        assert_eq!(status.applied_seq, 2);
        assert!(status.applied_index >= Some(second.index));
        assert!(status.commit_index >= Some(second.index) || status.id != leader);
    }
    cluster.close().await;
}

/// Benchmarks and servers share one node between tasks and spawn its futures: a compile-time
/// check that they can.
#[test]
fn the_store_and_its_futures_can_cross_threads() {
    fn send<T: Send>(_: &T) {}
    fn shared<T: Send + Sync>() {}
    shared::<crate::Node>();
    shared::<airomem_raft::Network>();
    let _ = |node: &crate::Node| {
        send(&node.commit(1));
        send(&node.query_linearizable());
        send(&node.snapshot());
        send(&node.bootstrap([1]));
    };
}
