//! `bootstrap` is idempotent: again on the same node, or on another node with the same
//! members, it changes nothing; members that leave out the node itself are refused.

use airomem::PostcardSerializer;
use airomem_raft::{Error, Network};

use crate::{Cluster, Node, config, ledger};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrapping_again_is_a_no_op() {
    let cluster = Cluster::start(3, |c| c).await;
    let before = cluster.leader().await;
    let term = cluster.node(before).status().term;
    cluster.node(1).commit(1).await.expect("commits");

    cluster.node(1).bootstrap([1, 2, 3]).await.expect("a second bootstrap is Ok");
    cluster.node(2).bootstrap([1, 2, 3]).await.expect("a bootstrap on another member is Ok");
    cluster.node(3).bootstrap([1, 2, 3]).await.expect("and on the third");

    // Nothing was re-initialized: same leader, same term, the command still there once.
    assert_eq!(cluster.leader().await, before);
    assert_eq!(cluster.node(before).status().term, term);
    cluster.node(3).commit(2).await.expect("commits");
    cluster.converge(&ledger(&[1, 2])).await;
    cluster.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_without_the_node_itself_is_refused() {
    let root = tempfile::tempdir().expect("a temporary directory");
    let network = Network::new();
    let node = Node::open(config(1, root.path()), PostcardSerializer, &network).await.expect("opens");
    assert!(matches!(node.bootstrap([2, 3]).await, Err(Error::InvalidConfig { .. })));
    node.close().await.expect("closes");
}
