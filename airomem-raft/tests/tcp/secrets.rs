//! Who may talk to a node: a peer or an admin client with the wrong secret is refused and
//! counted; a secret rotates with the group committing throughout.

use airomem_raft::{AdminClient, Error};

use crate::{Cluster, add, ledger, other_secret, secret, tcp};

/// Node 3 holds another secret: nodes 1 and 2 refuse it (and count it), it gets nothing,
/// and the two form a majority without it. An admin client with the wrong secret is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_the_wrong_secret_is_refused_and_counted() {
    crate::support::init_tracing();
    let root = tempfile::tempdir().expect("a temporary directory");
    let addrs = crate::bind_all(1..=3).await;
    let mut cluster = Cluster { addrs, nodes: Default::default(), root };
    cluster.open(1, secret(), |c| c).await;
    cluster.open(2, secret(), |c| c).await;
    cluster.open(3, other_secret(), |c| c).await;
    cluster.node(1).bootstrap(1..=3).await.expect("bootstraps");
    for value in 1..=5 {
        cluster.node(1).commit(add(value)).await.expect("1 and 2 are a majority");
    }
    crate::wait_until("node 3's attempts to be refused", || {
        cluster.transport(1).refused_connections() + cluster.transport(2).refused_connections() > 0
            && cluster.transport(3).refused_connections() > 0
    })
    .await;
    assert!(cluster.node(3).query().expect("reads").entries.is_empty(), "node 3 got nothing");

    // Node 3 stops knocking, so the count below is the admin client's alone.
    cluster.close_node(3).await;
    let intruder = AdminClient::new(cluster.addrs[&1].to_string(), other_secret());
    let before = cluster.transport(1).refused_connections();
    let refused = intruder.status().await;
    assert!(matches!(refused, Err(Error::Denied { .. })), "{refused:?}");
    // The server counts once it has read the client's refusal, which may be after the
    // client returned.
    crate::wait_until("node 1 to count the refusal", || cluster.transport(1).refused_connections() > before).await;
    assert_eq!(cluster.transport(1).refused_connections(), before + 1);
    let admin = AdminClient::new(cluster.addrs[&1].to_string(), secret());
    assert_eq!(admin.status().await.expect("the right secret is served").id, 1);
    cluster.close().await;
}

/// Rotation, one node at a time, the group committing between every step: every node
/// accepts old and new while proving with old; then proves with new; then drops old.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_rotates_without_downtime() {
    let mut cluster = Cluster::start(3, |c| c).await;
    let mut value = 0;
    type MakeSecret = fn() -> airomem_raft::Secret;
    let steps: [(&str, MakeSecret, Option<MakeSecret>); 3] = [
        ("accept the new secret", secret, Some(other_secret)),
        ("prove with the new secret", other_secret, Some(secret)),
        ("drop the old secret", other_secret, None),
    ];
    for (step, current, also) in steps {
        for id in 1..=3 {
            cluster.close_node(id).await;
            let mut config = tcp(id, &cluster.addrs, current());
            if let Some(also) = also {
                config = config.accept_also(also());
            }
            cluster.open_with(id, config, |c| c).await;
            let leader = cluster.leader().await;
            value += 1;
            cluster.node(leader).commit(add(value)).await.unwrap_or_else(|e| panic!("{step}, node {id}: {e}"));
        }
    }
    cluster.converge(&ledger(1..=value)).await;
    for id in 1..=3 {
        assert_eq!(cluster.transport(id).refused_connections(), 0, "node {id} refused a peer during the rotation");
    }
    let old = AdminClient::new(cluster.addrs[&1].to_string(), secret());
    assert!(old.status().await.is_err(), "the old secret is no longer accepted");
    cluster.close().await;
}
