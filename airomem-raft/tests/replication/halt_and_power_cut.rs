//! A node halted after a power cut of its (simulated) disk, reopened on the crash image,
//! recovers and rejoins: it ends with the group's exact state.

use std::sync::Arc;

use airomem::PostcardSerializer;
use airomem_workspace::sim::SimStorage;

use crate::{Cluster, Node, config, ledger};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_by_a_power_loss_recovers_and_rejoins() {
    for killed_leader in [false, true] {
        let disks: Vec<SimStorage> = (0..=3).map(|_| SimStorage::new()).collect();
        let cluster_disks = disks.clone();
        let mut cluster = Cluster::start(3, move |c| {
            let id = c.id() as usize;
            c.storage(Arc::new(cluster_disks[id].clone()))
        })
        .await;
        let mut values = Vec::new();
        for value in 1..=10u64 {
            cluster.node(value % 3 + 1).commit(value).await.expect("commits");
            values.push(value);
        }
        let leader = cluster.leader().await;
        let victim = if killed_leader { leader } else { cluster.other_than(&[leader]) };
        disks[victim as usize].power_cut();
        cluster.nodes.remove(&victim).expect("the victim").halt();

        // The survivors go on (after an election if the leader died).
        let writer = cluster.other_than(&[victim]);
        for value in 11..=15u64 {
            cluster.node(writer).commit(value).await.expect("the survivors commit");
            values.push(value);
        }

        let image = disks[victim as usize].crash(victim * 1_000 + u64::from(killed_leader));
        let reopened = config(victim, cluster.root.path()).storage(Arc::new(image));
        let node =
            Node::open(reopened, PostcardSerializer, &cluster.network).await.expect("reopens on the crash image");
        cluster.nodes.insert(victim, node);
        cluster.converge(&ledger(&values)).await;
        cluster.node(victim).commit(16).await.expect("the rejoined node commits");
        values.push(16);
        cluster.converge(&ledger(&values)).await;
        cluster.close().await;
    }
}
