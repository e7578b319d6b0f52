//! An append larger than the frame limit is split by openraft, not dropped: a follower far
//! behind catches up on entries that together exceed one frame.

use std::time::Duration;

use airomem_raft::NodeConfig;

use crate::{Add, Cluster, secret};

/// openraft 0.9 gives an append one heartbeat interval to arrive and be synced (see the
/// proposer): appends near a megabyte on a loaded test machine need more than the suite's
/// 50 ms, or they time out again and again.
fn timings(config: NodeConfig) -> NodeConfig {
    config
        .heartbeat(Duration::from_millis(250))
        .election_timeout(Duration::from_millis(1500), Duration::from_millis(3000))
}

/// With frames of at most 1 MiB on every node, a follower comes back to 40 entries of 100 KiB: a single
/// append of them would be 4 MiB. It catches up, every command intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_above_the_frame_limit_are_split() {
    crate::support::init_tracing();
    let root = tempfile::tempdir().expect("a temporary directory");
    let addrs = crate::bind_all(1..=3).await;
    let mut cluster = Cluster { addrs, nodes: Default::default(), root };
    let small = |id, cluster: &Cluster| crate::tcp(id, &cluster.addrs, secret()).max_frame(1024 * 1024);
    for id in 1..=3 {
        cluster.open_with(id, small(id, &cluster), |c| timings(c).snapshot_every(100_000)).await;
    }
    cluster.node(1).bootstrap(1..=3).await.expect("bootstraps");
    let leader = cluster.leader().await;
    let away = (1..=3).find(|&id| id != leader).expect("a follower");
    cluster.close_node(away).await;
    for value in 1..=40 {
        let padding = vec![value as u8; 100 * 1024];
        cluster.node(leader).commit(Add { value, padding }).await.expect("commits");
    }
    cluster.open_with(away, small(away, &cluster), |c| timings(c).snapshot_every(100_000)).await;
    crate::wait_until("the follower to catch up", || cluster.node(away).query().expect("reads").entries.len() == 40)
        .await;
    assert_eq!(cluster.node(away).query().expect("reads").padding, 40 * 100 * 1024);
    cluster.close().await;
}

/// Commands that arrive together are batched into one entry, and an entry cannot be split:
/// with frames of at most 1 MiB, 64 concurrent commands of 64 KiB (4 MiB together) must
/// still replicate, so a batch is bounded to fit a frame. A command that could never fit is
/// refused before it is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_large_commands_fits_a_frame() {
    crate::support::init_tracing();
    let root = tempfile::tempdir().expect("a temporary directory");
    let addrs = crate::bind_all(1..=3).await;
    let mut cluster = Cluster { addrs, nodes: Default::default(), root };
    for id in 1..=3 {
        let tcp = crate::tcp(id, &cluster.addrs, secret()).max_frame(1024 * 1024);
        cluster.open_with(id, tcp, timings).await;
    }
    cluster.node(1).bootstrap(1..=3).await.expect("bootstraps");
    let leader = cluster.leader().await;
    let node = cluster.node(leader);
    let commits = (1..=64u64).map(|value| node.commit(Add { value, padding: vec![value as u8; 64 * 1024] }));
    for committed in futures::future::join_all(commits).await {
        committed.expect("commits");
    }
    for id in 1..=3 {
        crate::wait_until(&format!("node {id} to apply all 64"), || {
            cluster.node(id).query().expect("reads").padding == 64 * 64 * 1024
        })
        .await;
    }
    let too_large = node.commit(Add { value: 99, padding: vec![0; 1024 * 1024] }).await;
    assert!(matches!(too_large, Err(airomem_raft::Error::CommandTooLarge { .. })), "{too_large:?}");
    cluster.close().await;
}
