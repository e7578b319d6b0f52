//! A smoke test of whole-cluster power loss (the 1,000-seed version lives elsewhere): three
//! nodes on simulated disks, writers committing on every node, the power of all three cut at
//! once; reopened on the crash images, the group keeps every acknowledged command exactly
//! once and all replicas end identical.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use airomem::PostcardSerializer;
use airomem_raft::Network;
use airomem_workspace::sim::SimStorage;

use crate::{Cluster, Node, config, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_commands_survive_a_power_loss_of_every_node() {
    for seed in 0..3u64 {
        let disks: Vec<SimStorage> = (0..=3).map(|_| SimStorage::new()).collect();
        let cluster_disks = disks.clone();
        let cluster = Cluster::start(3, move |c| {
            let id = c.id() as usize;
            c.storage(Arc::new(cluster_disks[id].clone()))
        })
        .await;
        let nodes: BTreeMap<u64, Arc<Node>> = cluster.nodes.into_iter().map(|(id, n)| (id, Arc::new(n))).collect();
        let acked = Arc::new(Mutex::new(BTreeSet::new()));
        let mut writers = Vec::new();
        for (&id, node) in &nodes {
            let node = Arc::clone(node);
            let acked = Arc::clone(&acked);
            writers.push(tokio::spawn(async move {
                for i in 0..1_000u64 {
                    let value = id * 1_000_000 + i;
                    match node.commit(value).await {
                        Ok(_) => drop(acked.lock().expect("not poisoned").insert(value)),
                        Err(_) => break,
                    }
                }
            }));
        }
        wait_until("some commits", || acked.lock().expect("not poisoned").len() >= 20 + 10 * seed as usize).await;
        for disk in &disks[1..] {
            disk.power_cut();
        }
        let acked: BTreeSet<u64> = acked.lock().expect("not poisoned").clone();
        for (_, node) in nodes {
            // The writers hold clones; the node stops when it leaves the network.
            match Arc::try_unwrap(node) {
                Ok(node) => node.halt(),
                Err(shared) => drop(shared),
            }
        }
        for writer in writers {
            writer.abort();
        }

        let network = Network::new();
        let mut reopened = BTreeMap::new();
        for id in 1..=3u64 {
            let image = disks[id as usize].crash(seed * 10 + id);
            let node =
                Node::open(config(id, cluster.root.path()).storage(Arc::new(image)), PostcardSerializer, &network)
                    .await
                    .expect("reopens on the crash image");
            reopened.insert(id, node);
        }
        let cluster = Cluster { network, nodes: reopened, root: cluster.root };
        cluster.leader().await;
        // A commit after recovery makes every surviving entry committed and applied.
        cluster.node(1).commit(u64::MAX - 1).await.expect("commits after recovery");
        let reference = cluster.node(1).query_linearizable().await.expect("reads").entries.clone();
        cluster.converge(&reference).await;
        let values: Vec<u64> = reference.iter().map(|&(v, _)| v).collect();
        let distinct: BTreeSet<u64> = values.iter().copied().collect();
        assert_eq!(distinct.len(), values.len(), "seed {seed}: a command ran twice");
        let lost: Vec<&u64> = acked.difference(&distinct).collect();
        assert!(lost.is_empty(), "seed {seed}: acknowledged commands lost: {lost:?}");
        cluster.close().await;
    }
}
