//! Under random message loss on every link, in both directions, commits from every node
//! still succeed and each command is applied exactly once: lost requests are resent, lost
//! answers are answered again from the deduplication table.

use crate::{Cluster, ledger};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_through_a_lossy_network_apply_exactly_once() {
    let cluster = Cluster::start(3, |c| c).await;
    for from in 1..=3 {
        for to in 1..=3 {
            if from != to {
                cluster.network.loss(from, to, 0.2);
            }
        }
    }
    let mut values = Vec::new();
    for value in 1..=30u64 {
        let receipt = cluster.node(value % 3 + 1).commit(value).await.expect("commits despite the loss");
        assert_eq!(receipt.seq, value, "no command ran twice");
        values.push(value);
    }
    cluster.network.heal();
    cluster.converge(&ledger(&values)).await;
    cluster.close().await;
}
