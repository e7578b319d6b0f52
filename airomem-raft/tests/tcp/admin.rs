//! The admin endpoint, as `airomem cluster` uses it: status of any node, members and changes
//! sent to any node and followed to the leader.

use airomem_raft::{AdminClient, Role};

use crate::{Cluster, add, secret};

/// Every call through a follower's address reaches the leader; status answers for the node
/// asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_calls_through_any_node_reach_the_leader() {
    let mut cluster = Cluster::start(3, |c| c).await;
    let leader = cluster.leader().await;
    let follower = if leader == 1 { 2 } else { 1 };
    cluster.node(leader).commit(add(1)).await.expect("commits");
    let admin = AdminClient::new(cluster.addrs[&follower].to_string(), secret());

    let status = admin.status().await.expect("status");
    assert_eq!((status.id, status.role, status.leader), (follower, Role::Follower, Some(leader)));
    let members = admin.members().await.expect("members");
    assert_eq!(members.leader, Some(leader));
    assert_eq!(members.voters.len(), 3);

    let fourth = crate::bind_all([4]).await;
    cluster.addrs.extend(fourth);
    cluster.open(4, secret(), |c| c).await;
    admin.add_learner(4, cluster.addrs[&4].to_string()).await.expect("adds");
    admin.promote([4]).await.expect("promotes");
    assert_eq!(admin.members().await.expect("members").voters.len(), 4);
    admin.remove(4, false).await.expect("removes");
    assert_eq!(admin.members().await.expect("members").voters.len(), 3);
    let refused = admin.remove(3, false).await;
    assert!(matches!(refused, Err(airomem_raft::Error::Refused { .. })), "{refused:?}");
    cluster.close().await;
}
