//! An append larger than the frame limit is split by openraft, not dropped: a follower far
//! behind catches up on entries that together exceed one frame.

use crate::{Add, Cluster, secret};

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
        cluster.open_with(id, small(id, &cluster), |c| c.snapshot_every(100_000)).await;
    }
    cluster.node(1).bootstrap(1..=3).await.expect("bootstraps");
    let leader = cluster.leader().await;
    let away = (1..=3).find(|&id| id != leader).expect("a follower");
    cluster.close_node(away).await;
    for value in 1..=40 {
        let padding = vec![value as u8; 100 * 1024];
        cluster.node(leader).commit(Add { value, padding }).await.expect("commits");
    }
    cluster.open_with(away, small(away, &cluster), |c| c.snapshot_every(100_000)).await;
    crate::wait_until("the follower to catch up", || cluster.node(away).query().expect("reads").entries.len() == 40)
        .await;
    assert_eq!(cluster.node(away).query().expect("reads").padding, 40 * 100 * 1024);
    cluster.close().await;
}
