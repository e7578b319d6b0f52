//! A follower cut off while the leader commits past a snapshot and purges the log behind it
//! can only catch up by installing the snapshot: after healing it holds the exact state.

use crate::{Cluster, ledger, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_follower_catches_up_from_a_snapshot() {
    let cluster = Cluster::start(3, |c| c.snapshot_every(10).logs_kept_after_snapshot(2)).await;
    let leader = cluster.leader().await;
    let lagging = cluster.other_than(&[leader]);
    let mut values = vec![1];
    cluster.node(leader).commit(1).await.expect("commits");
    cluster.converge(&ledger(&values)).await;

    cluster.network.isolate(lagging);
    let behind = cluster.node(lagging).status().applied_index.expect("applied");
    // The leader may change while `lagging` (which keeps standing for election, alone) is cut
    // off; `commit` follows it.
    let writer = cluster.other_than(&[lagging]);
    for value in 2..=60u64 {
        cluster.node(writer).commit(value).await.expect("commits");
        values.push(value);
    }
    let info = cluster.node(writer).snapshot().await.expect("snapshots");
    assert!(info.index > behind);
    let leader = cluster.leader_among(&[lagging]).await;
    wait_until("the leader to purge what the lagging node lacks", || {
        cluster.node(leader).status().purged_index.is_some_and(|p| p > behind + 1)
    })
    .await;
    assert_eq!(cluster.node(lagging).query().expect("reads").entries, ledger(&[1]));

    cluster.network.heal();
    cluster.converge(&ledger(&values)).await;
    assert_eq!(cluster.node(lagging).status().applied_seq, 60);
    // The state is replaced before openraft records the installed snapshot in its metrics.
    wait_until("the lagging node to report the installed snapshot", || {
        cluster.node(lagging).status().snapshot_index.is_some_and(|s| s > behind)
    })
    .await;
    cluster.close().await;
}
