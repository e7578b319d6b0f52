//! Three replicated nodes in one process, through the public API only. One scenario per file;
//! one test binary, so that the machine links openraft once.
//!
//! Timing: heartbeat 50 ms, election timeout 300–600 ms, a loaded 2-core machine in mind.
//! No test sleeps to synchronise: each waits for a status condition with a deadline, and
//! every commit goes through `commit`, which rides out a leader change.

mod bootstrap_twice;
mod commit_from_leader_and_follower;
mod dedup_retry;
mod halt_and_power_cut;
mod linearizable_read;
mod lossy_network;
mod panicking_command;
mod partition;
mod reelected_after_snapshot_install;
mod restart_keeps_acknowledged;
mod snapshot_catch_up;
mod snapshot_chunks;
mod watchdog;
mod whole_cluster_power_loss;

#[path = "../support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use airomem::{CommitContext, Freeze, PostcardSerializer, Serializer, SnapshotView, State};
use airomem_raft::{Network, NodeConfig, ReplicatedStore, Status};
use serde::{Deserialize, Serialize};

/// A command value that makes `execute` panic (after it changed the state).
pub const PANIC: u64 = u64::MAX;

/// Records each command's value with the sequence number it executed with.
#[derive(Default, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// (value, seq) of each executed command.
    pub entries: Vec<(u64, u64)>,
}

impl State for Ledger {
    type Command = u64;

    fn execute(&mut self, value: u64) {
        let seq = CommitContext::current().expect("inside a commit").seq.0;
        self.entries.push((value, seq));
        assert!(value != PANIC, "the test's panicking command");
    }

    // These suites build their snapshots from a frozen view (a clone: the states are
    // small), so the streamed build is what their crashes and transfers exercise; the
    // `tcp` suite and `snapshot_chunks` keep the plain path.
    fn snapshot_view<Z: Serializer>(&self) -> Option<SnapshotView<Z>> {
        Some(SnapshotView::of(self))
    }
}

impl Freeze for Ledger {
    type Frozen = Ledger;

    fn freeze(&self) -> Ledger {
        self.clone()
    }
}

/// `values` as executed one after the other from seq 1.
pub fn ledger(values: &[u64]) -> Vec<(u64, u64)> {
    values.iter().enumerate().map(|(i, &v)| (v, i as u64 + 1)).collect()
}

/// A node of the test group.
pub type Node = ReplicatedStore<Ledger>;

/// How long a test waits for a condition before failing.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Test timings: see the module docs.
pub fn config(id: u64, dir: &std::path::Path) -> NodeConfig {
    NodeConfig::new(id, dir.join(format!("node-{id}")))
        .heartbeat(Duration::from_millis(50))
        .election_timeout(Duration::from_millis(300), Duration::from_millis(600))
        .commit_timeout(Duration::from_secs(10))
}

/// Waits until `condition` holds; panics after [`PATIENCE`].
pub async fn wait_until(what: &str, condition: impl FnMut() -> bool) {
    support::wait_until(what, PATIENCE, condition).await;
}

/// A group of nodes on one network, each in its own directory under one temporary root.
pub struct Cluster {
    /// The network joining them.
    pub network: Network,
    /// The nodes running, by id.
    pub nodes: BTreeMap<u64, Node>,
    /// Where their directories are.
    pub root: tempfile::TempDir,
}

impl Cluster {
    /// Nodes 1..=n opened with `configure` applied to the test config, bootstrapped by node 1.
    pub async fn start(n: u64, configure: impl Fn(NodeConfig) -> NodeConfig) -> Cluster {
        support::init_tracing();
        let root = tempfile::tempdir().expect("a temporary directory");
        let network = Network::new();
        let mut nodes = BTreeMap::new();
        for id in 1..=n {
            let node = Node::open(configure(config(id, root.path())), PostcardSerializer, &network)
                .await
                .expect("the node opens");
            nodes.insert(id, node);
        }
        nodes[&1].bootstrap(1..=n).await.expect("bootstraps");
        let cluster = Cluster { network, nodes, root };
        cluster.leader().await;
        cluster
    }

    /// Node `id`.
    pub fn node(&self, id: u64) -> &Node {
        &self.nodes[&id]
    }

    /// A node that is leader and that every other node follows.
    pub async fn leader(&self) -> u64 {
        self.leader_among(&[]).await
    }

    /// A node that is leader and that every node not in `excluded` follows.
    pub async fn leader_among(&self, excluded: &[u64]) -> u64 {
        let mut leader = None;
        wait_until("a leader every node knows", || {
            let statuses: Vec<Status> =
                self.nodes.iter().filter(|(id, _)| !excluded.contains(id)).map(|(_, n)| n.status()).collect();
            leader = support::agreed_leader(&statuses);
            leader.is_some()
        })
        .await;
        leader.expect("waited for")
    }

    /// Some node other than `not`.
    pub fn other_than(&self, not: &[u64]) -> u64 {
        *self.nodes.keys().find(|id| !not.contains(id)).expect("another node")
    }

    /// Waits until every node's state is `expected`.
    pub async fn converge(&self, expected: &[(u64, u64)]) {
        for (&id, node) in &self.nodes {
            wait_until(&format!("node {id} to hold {expected:?}"), || node.query().expect("reads").entries == expected)
                .await;
        }
    }

    /// Closes every node.
    pub async fn close(self) {
        for (_, node) in self.nodes {
            node.close().await.expect("closes");
        }
    }
}
