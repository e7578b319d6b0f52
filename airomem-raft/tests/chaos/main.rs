//! Whole-cluster faults against the public API, checked by the linearizability checker: power
//! loss of every node at once, and the leader killed again and again under load. Each node
//! runs on the simulated disk (`SimStorage`), so a kill loses what was not synced.
//!
//! One test binary, so that the machine links openraft once more only. Waiting is on
//! conditions (receipts, statuses), never on sleeps.

mod failover_snapshots;
mod history;
mod leader_kill;
mod power_loss;
#[path = "../support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airomem::{CommitContext, PostcardSerializer, State};
use airomem_raft::{Error, Network, NodeConfig, ReplicatedStore};
use airomem_workspace::sim::{SimStorage, SplitMix64};
use serde::{Deserialize, Serialize};

use history::{History, Outcome};

/// Every value committed, in the order executed: a receipt's `seq` is its place here.
#[derive(Default, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Values {
    /// The values, in order.
    pub values: Vec<u64>,
}

impl State for Values {
    type Command = u64;

    fn execute(&mut self, value: u64) {
        self.values.push(value);
        let seq = CommitContext::current().expect("inside a commit").seq.0;
        assert_eq!(seq, self.values.len() as u64, "the sequence numbers are dense");
    }
}

/// A node of these tests.
pub type Node = ReplicatedStore<Values>;

/// How long a wait for a condition may take before the test fails: generous, for a loaded
/// 2-core machine; a healthy run waits for well under a second at a time.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The test timings: short election timeouts, so that the many elections of these tests are
/// quick, long enough that a loaded machine does not depose every leader.
pub fn config(id: u64, root: &Path, disk: &SimStorage) -> NodeConfig {
    NodeConfig::new(id, root.join(format!("node-{id}")))
        .storage(Arc::new(disk.clone()))
        .heartbeat(Duration::from_millis(30))
        .election_timeout(Duration::from_millis(150), Duration::from_millis(300))
        .commit_timeout(Duration::from_secs(3))
}

/// Opens node `id` on `disk`.
pub async fn open(id: u64, root: &Path, disk: &SimStorage, network: &Network) -> Arc<Node> {
    Arc::new(Node::open(config(id, root, disk), PostcardSerializer, network).await.expect("the node opens"))
}

/// Commits `value` through `node`, recording the invocation and the outcome in `history`.
pub async fn write(history: &History, node: &Node, value: u64) -> Outcome {
    let pending = history.invoke(value);
    let outcome = match node.commit(value).await {
        Ok(receipt) => Outcome::Acked(receipt.seq),
        // Never handed to any node: certainly not applied.
        Err(Error::Unavailable { .. }) => Outcome::Refused,
        Err(Error::Lagging { seq, .. }) => Outcome::Acked(seq),
        // Unknown, closed or stopped while in flight: it may have reached the log.
        Err(_) => Outcome::Unknown,
    };
    history.wrote(pending, outcome);
    outcome
}

/// Waits until `condition` holds; panics after [`PATIENCE`].
pub async fn wait_until(what: &str, condition: impl FnMut() -> bool) {
    support::wait_until(what, PATIENCE, condition).await;
}

/// The value of the write [`converge`] makes: unique, outside every writer's range.
pub const LAST_WRITE: u64 = u64::MAX - 1;

/// Brings `nodes` to one state: commits one more value (recorded in `history`), whose receipt
/// proves that a leader committed an entry of its own term, so every entry before it is
/// committed too; then waits until every node has applied that far, and returns each node's
/// list of values.
pub async fn converge(history: &History, nodes: &[Arc<Node>]) -> Vec<Vec<u64>> {
    let pending = history.invoke(LAST_WRITE);
    let deadline = Instant::now() + PATIENCE;
    let receipt = loop {
        match nodes[0].commit(LAST_WRITE).await {
            Ok(receipt) => break receipt,
            // A retry of the same command by a new handle would be a new command: wait for
            // a leader before the first attempt instead, by retrying only what was refused.
            Err(Error::Unavailable { .. }) => assert!(Instant::now() < deadline, "no leader after recovery"),
            Err(e) => panic!("the last write failed after recovery: {e}"),
        }
    };
    history.wrote(pending, Outcome::Acked(receipt.seq));
    wait_until("every node applied the last write", || {
        nodes.iter().all(|n| n.status().applied_index >= Some(receipt.index))
    })
    .await;
    nodes.iter().map(|n| n.query().expect("the state reads").values.clone()).collect()
}

/// The nodes running, by id: writers and readers pick one per operation.
pub type Live = Arc<Mutex<BTreeMap<u64, Arc<Node>>>>;

/// A live node drawn by `rng`.
pub fn pick(live: &Live, rng: &mut SplitMix64) -> Arc<Node> {
    let live = live.lock().expect("live nodes");
    let nodes: Vec<&Arc<Node>> = live.values().collect();
    Arc::clone(nodes[rng.below(nodes.len() as u64) as usize])
}

/// The live node that leads, once every live node follows it.
pub async fn leader_of(live: &Live) -> u64 {
    let mut leader = None;
    wait_until("a leader every live node follows", || {
        let statuses: Vec<_> = live.lock().expect("live nodes").values().map(|n| n.status()).collect();
        leader = support::agreed_leader(&statuses);
        leader.is_some()
    })
    .await;
    leader.expect("waited for")
}
