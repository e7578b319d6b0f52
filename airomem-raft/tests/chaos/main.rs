//! Whole-cluster faults against the public API, checked by the linearizability checker: power
//! loss of every node at once, and the leader killed again and again under load. Each node
//! runs on the simulated disk (`SimStorage`), so a kill loses what was not synced.
//!
//! One test binary, so that the machine links openraft once more only. Waiting is on
//! conditions (receipts, statuses), never on sleeps.

mod failover_snapshots;
mod follower_power_cut;
mod history;
mod leader_kill;
mod power_loss;
mod second_fault;
mod snapshot_power_loss;
#[path = "../support/mod.rs"]
mod support;
mod truncation_power_cut;
mod watched;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airomem::{CommitContext, Freeze, PostcardSerializer, Serializer, SnapshotView, State};
use airomem_raft::{Error, Network, NodeConfig, ReplicatedStore, Status};
use airomem_workspace::sim::{SimStorage, SplitMix64};
use serde::{Deserialize, Serialize};

use history::{History, Outcome, Summary, value};
use watched::{Tripwire, Watched};

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

    // These suites build their snapshots from a frozen view (a clone: the states are
    // small), so the streamed build is what their crashes and transfers exercise; the
    // `tcp` suite and `snapshot_chunks` keep the plain path.
    fn snapshot_view<Z: Serializer>(&self) -> Option<SnapshotView<Z>> {
        Some(SnapshotView::of(self))
    }
}

impl Freeze for Values {
    type Frozen = Values;

    fn freeze(&self) -> Values {
        self.clone()
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

/// The directory of node `id` under `root`, as [`config`] lays it out.
pub fn node_dir(root: &Path, id: u64) -> PathBuf {
    root.join(format!("node-{id}"))
}

/// Opens node `id` on `disk` watched by `wire` (so that the test can cut its power at a chosen
/// operation), with `configure` applied to the test config.
pub async fn open_watched(
    id: u64,
    root: &Path,
    disk: &SimStorage,
    wire: &Arc<Tripwire>,
    network: &Network,
    configure: impl FnOnce(NodeConfig) -> NodeConfig,
) -> Arc<Node> {
    let config = configure(config(id, root, disk)).storage(Arc::new(Watched::over(disk.clone(), Arc::clone(wire))));
    Arc::new(Node::open(config, PostcardSerializer, network).await.expect("the node opens"))
}

/// How often a node's log is snapshotted: every `every` entries, keeping `kept` behind it.
#[derive(Clone, Copy)]
pub struct Snapshots {
    /// Log entries between two snapshots.
    pub every: u64,
    /// Log entries kept behind a snapshot.
    pub kept: u64,
}

/// Opens node `id` on `disk` with the snapshot settings of `snapshots`.
pub async fn open_snapshotting(
    id: u64,
    root: &Path,
    disk: &SimStorage,
    network: &Network,
    snapshots: Snapshots,
) -> Arc<Node> {
    let config = config(id, root, disk).snapshot_every(snapshots.every).logs_kept_after_snapshot(snapshots.kept);
    Arc::new(Node::open(config, PostcardSerializer, network).await.expect("the node opens"))
}

/// Opens nodes 1 to 3, each on a fresh simulated disk: the disks, and the nodes as live.
pub async fn start_three(root: &Path, network: &Network, snapshots: Snapshots) -> (BTreeMap<u64, SimStorage>, Live) {
    let disks: BTreeMap<u64, SimStorage> = (1..=3).map(|id| (id, SimStorage::new())).collect();
    let live: Live = Arc::default();
    for (&id, disk) in &disks {
        let node = open_snapshotting(id, root, disk, network, snapshots).await;
        live.lock().expect("live nodes").insert(id, node);
    }
    (disks, live)
}

/// The count the environment variable `name` asks for, else `default`: the long runs of these
/// tests are asked for by name.
pub fn count_from_env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
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

/// Writer `writer` until `stop`: commits `value(writer, 0)`, `value(writer, 1)`, … each through
/// a live node drawn by `rng` that `usable` accepts, recording each in `history`.
pub async fn writer(
    history: Arc<History>,
    stop: Arc<AtomicBool>,
    live: Live,
    writer: u64,
    mut rng: SplitMix64,
    usable: impl Fn(&Node) -> bool,
) {
    for i in 0.. {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let mut node = pick(&live, &mut rng);
        while !usable(&node) {
            node = pick(&live, &mut rng);
        }
        write(&history, &node, value(writer, i)).await;
    }
}

/// A reader until `stop`: linearizable reads through live nodes drawn by `rng`, each recorded
/// in `history`.
pub async fn reader(history: Arc<History>, stop: Arc<AtomicBool>, live: Live, mut rng: SplitMix64) {
    while !stop.load(Ordering::SeqCst) {
        let node = pick(&live, &mut rng);
        let invoked = history.now();
        // A read that fails (no leader in time, the node halted) observed nothing.
        if let Ok(state) = node.query_linearizable().await {
            let seen = state.values.clone();
            drop(state);
            history.read(invoked, seen);
        }
    }
}

/// Writers and one linearizable reader through the live nodes until [`Load::finish`],
/// recording every outcome in [`Load::history`].
pub struct Load {
    /// What the clients did.
    pub history: Arc<History>,
    stop: Arc<AtomicBool>,
    clients: tokio::task::JoinSet<()>,
}

impl Load {
    /// Starts `writers` writers (writer `w` draws its nodes with seed `writer_seed + w`,
    /// among those `usable(w, node)` accepts) and a reader (seed `reader_seed`).
    pub fn start(
        live: &Live,
        writers: u64,
        (writer_seed, reader_seed): (u64, u64),
        usable: impl Fn(u64, &Node) -> bool + Clone + Send + Sync + 'static,
    ) -> Load {
        let history = Arc::new(History::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut clients = tokio::task::JoinSet::new();
        for w in 0..writers {
            let (history, stop, live, usable) =
                (Arc::clone(&history), Arc::clone(&stop), Arc::clone(live), usable.clone());
            let rng = SplitMix64::new(writer_seed + w);
            clients.spawn(writer(history, stop, live, w, rng, move |node: &Node| usable(w, node)));
        }
        let rng = SplitMix64::new(reader_seed);
        clients.spawn(reader(Arc::clone(&history), Arc::clone(&stop), Arc::clone(live), rng));
        Load { history, stop, clients }
    }

    /// Stops the clients, waits until every live node holds every acknowledged command, checks
    /// the history against their states (panicking on a violation), halts every node, and
    /// returns the history's summary.
    pub async fn finish(mut self, live: &Live) -> Summary {
        self.stop.store(true, Ordering::SeqCst);
        while let Some(joined) = self.clients.join_next().await {
            joined.expect("a client task");
        }
        let nodes: Vec<Arc<Node>> = live.lock().expect("live nodes").values().cloned().collect();
        let replicas = converge(&self.history, &nodes).await;
        let summary = self.history.check(&replicas).unwrap_or_else(|violation| panic!("{violation}"));
        for node in nodes {
            node.halt();
        }
        summary
    }
}

/// Kills node `id`: its disk loses what it had not synced, and the node halts and leaves `live`.
pub fn kill_node(live: &Live, disk: &SimStorage, id: u64) {
    disk.power_cut();
    let node = live.lock().expect("live nodes").remove(&id).expect("the node is live");
    node.halt();
}

/// Restarts killed node `id` on the crash image of its disk that `seed` draws, opened by `open`,
/// and waits until it has applied everything `leader` had committed once it was back.
pub async fn restart_node<Fut: Future<Output = Arc<Node>>>(
    live: &Live,
    disks: &mut BTreeMap<u64, SimStorage>,
    id: u64,
    seed: u64,
    leader: u64,
    open: impl FnOnce(SimStorage) -> Fut,
) {
    let image = disks[&id].crash(seed);
    disks.insert(id, image.clone());
    let node = open(image).await;
    live.lock().expect("live nodes").insert(id, Arc::clone(&node));
    let target = live.lock().expect("live nodes")[&leader].status().commit_index;
    wait_until("the restarted node catches up", || node.status().applied_index >= target).await;
}

/// Awaits `future`, panicking with `what()` if it takes longer than `bound`.
pub async fn within(bound: Duration, future: impl Future<Output = ()>, what: impl FnOnce() -> String) {
    if tokio::time::timeout(bound, future).await.is_err() {
        panic!("{} (waited {bound:?})", what());
    }
}

/// Every live node's status, for a failure message.
pub fn statuses(live: &Live) -> String {
    let statuses: Vec<Status> = live.lock().expect("live nodes").values().map(|n| n.status()).collect();
    format!("statuses: {statuses:?}")
}
