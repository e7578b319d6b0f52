//! Closing and reopening every node (on real files) keeps every acknowledged command, and
//! the group goes on committing after the restart.

use airomem::PostcardSerializer;
use airomem_raft::Network;

use crate::{Cluster, Node, config, ledger};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_of_the_whole_cluster_keeps_every_acknowledged_command() {
    let cluster = Cluster::start(3, |c| c).await;
    let mut values = Vec::new();
    for value in 1..=30u64 {
        // Spread over the three nodes: forwarded and local commits alike.
        let receipt = cluster.node(value % 3 + 1).commit(value).await.expect("commits");
        assert_eq!(receipt.seq, value);
        values.push(value);
    }
    let Cluster { nodes, root, .. } = cluster;
    for (_, node) in nodes {
        node.close().await.expect("closes");
    }

    let network = Network::new();
    let mut nodes = std::collections::BTreeMap::new();
    for id in 1..=3 {
        let node = Node::open(config(id, root.path()), PostcardSerializer, &network).await.expect("reopens");
        nodes.insert(id, node);
    }
    let cluster = Cluster { network, nodes, root };
    // No bootstrap: the group forms again from what its members recorded.
    cluster.leader().await;
    cluster.converge(&ledger(&values)).await;
    let receipt = cluster.node(2).commit(31).await.expect("commits after the restart");
    assert_eq!(receipt.seq, 31);
    values.push(31);
    cluster.converge(&ledger(&values)).await;
    cluster.close().await;
}
