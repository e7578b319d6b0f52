//! Nodes joined by the TCP transport on loopback, in one process: real sockets, real
//! handshakes, real frames. (The suites with one process per node run the example service;
//! see `tests/processes`.) One scenario per file, one test binary.
//!
//! Timing as in the `replication` suite: heartbeat 50 ms, election timeout 300–600 ms. No
//! test sleeps to synchronise.

mod admin;
mod dead_peer;
mod membership;
mod over_tcp;
mod secrets;
mod split_appends;

#[path = "../support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use airomem::{CommitContext, PostcardSerializer, State};
use airomem_raft::{NodeConfig, ReplicatedStore, Secret, Status, TcpConfig, TcpTransport};
use serde::{Deserialize, Serialize};

/// Records each command's value with the sequence number it executed with.
#[derive(Default, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// (value, seq) of each executed command.
    pub entries: Vec<(u64, u64)>,
    /// The total length of the padding of every command (for large commands).
    pub padding: u64,
}

/// A command: a value, and padding to make it as large as a test needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Add {
    /// Recorded with its sequence number.
    pub value: u64,
    /// Ignored but counted.
    pub padding: Vec<u8>,
}

impl State for Ledger {
    type Command = Add;

    fn execute(&mut self, add: Add) {
        let seq = CommitContext::current().expect("inside a commit").seq.0;
        self.entries.push((add.value, seq));
        self.padding += add.padding.len() as u64;
    }
}

/// A command with no padding.
pub fn add(value: u64) -> Add {
    Add { value, padding: Vec::new() }
}

/// `values` as executed one after the other from seq 1.
pub fn ledger(values: impl IntoIterator<Item = u64>) -> Vec<(u64, u64)> {
    values.into_iter().enumerate().map(|(i, v)| (v, i as u64 + 1)).collect()
}

/// A node of the test group.
pub type Node = ReplicatedStore<Ledger>;

/// How long a test waits for a condition before failing.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The secret every test node holds unless a test says otherwise.
pub fn secret() -> Secret {
    Secret::new("the test cluster's shared secret").expect("long enough")
}

/// Another secret, for refusals and rotation.
pub fn other_secret() -> Secret {
    Secret::new("a different secret, just as long").expect("long enough")
}

/// Test timings (see the module docs).
pub fn config(id: u64, root: &Path) -> NodeConfig {
    NodeConfig::new(id, root.join(format!("node-{id}")))
        .heartbeat(Duration::from_millis(50))
        .election_timeout(Duration::from_millis(300), Duration::from_millis(600))
        .commit_timeout(Duration::from_secs(10))
}

/// Waits until `condition` holds; panics after [`PATIENCE`].
pub async fn wait_until(what: &str, condition: impl FnMut() -> bool) {
    support::wait_until(what, PATIENCE, condition).await;
}

/// Binds a listener on a free loopback port for each id; each node's first open serves on
/// its listener (`TcpTransport::from_listener`), so no port is free between the choice and
/// the open (an outgoing connection of another test could take it). A reopened node binds
/// its port again.
pub async fn bind_all(ids: impl IntoIterator<Item = u64>) -> BTreeMap<u64, SocketAddr> {
    let mut addrs = BTreeMap::new();
    for id in ids {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds a free port");
        let addr = listener.local_addr().expect("has an address");
        HELD.lock().expect("held listeners").insert(addr, listener);
        addrs.insert(id, addr);
    }
    addrs
}

/// Listeners bound by [`bind_all`] and not yet served on, by address.
static HELD: std::sync::Mutex<BTreeMap<SocketAddr, std::net::TcpListener>> = std::sync::Mutex::new(BTreeMap::new());

/// The TCP configuration of node `id` among `addrs`, with `secret`.
pub fn tcp(id: u64, addrs: &BTreeMap<u64, SocketAddr>, secret: Secret) -> TcpConfig {
    addrs
        .iter()
        .filter(|&(&peer, _)| peer != id)
        .fold(TcpConfig::new(addrs[&id], secret), |config, (&peer, addr)| config.peer(peer, addr.to_string()))
}

/// A group of nodes over TCP on loopback.
pub struct Cluster {
    /// Where each node listens.
    pub addrs: BTreeMap<u64, SocketAddr>,
    /// The nodes running, with their transports, by id.
    pub nodes: BTreeMap<u64, (Node, TcpTransport)>,
    /// Their directories' root.
    pub root: tempfile::TempDir,
}

impl Cluster {
    /// Nodes 1..=n, bootstrapped by node 1, each configured by `configure`.
    pub async fn start(n: u64, configure: impl Fn(NodeConfig) -> NodeConfig) -> Cluster {
        support::init_tracing();
        let root = tempfile::tempdir().expect("a temporary directory");
        let addrs = bind_all(1..=n).await;
        let mut cluster = Cluster { addrs, nodes: BTreeMap::new(), root };
        for id in 1..=n {
            cluster.open(id, secret(), &configure).await;
        }
        cluster.node(1).bootstrap(1..=n).await.expect("bootstraps");
        cluster.leader().await;
        cluster
    }

    /// Opens node `id` (again) with `secret` as its own.
    pub async fn open(&mut self, id: u64, secret: Secret, configure: impl Fn(NodeConfig) -> NodeConfig) {
        self.open_with(id, tcp(id, &self.addrs, secret), configure).await;
    }

    /// Opens node `id` (again) with the TCP configuration `tcp`.
    pub async fn open_with(&mut self, id: u64, tcp: TcpConfig, configure: impl Fn(NodeConfig) -> NodeConfig) {
        let held = HELD.lock().expect("held listeners").remove(&self.addrs[&id]);
        let transport = match held {
            Some(listener) => TcpTransport::from_listener(listener, tcp).expect("serves on its listener"),
            None => TcpTransport::bind(tcp).await.expect("binds"),
        };
        let node = Node::open(configure(config(id, self.root.path())), PostcardSerializer, &transport)
            .await
            .expect("the node opens");
        self.nodes.insert(id, (node, transport));
    }

    /// Node `id`.
    pub fn node(&self, id: u64) -> &Node {
        &self.nodes[&id].0
    }

    /// Node `id`'s transport.
    pub fn transport(&self, id: u64) -> &TcpTransport {
        &self.nodes[&id].1
    }

    /// Closes node `id`.
    pub async fn close_node(&mut self, id: u64) {
        let (node, _) = self.nodes.remove(&id).expect("open");
        node.close().await.expect("closes");
    }

    /// A node that leads and that every open node follows.
    pub async fn leader(&self) -> u64 {
        let mut leader = None;
        wait_until("a leader every node knows", || {
            let statuses: Vec<Status> = self.nodes.values().map(|(n, _)| n.status()).collect();
            leader = support::agreed_leader(&statuses);
            leader.is_some()
        })
        .await;
        leader.expect("waited for")
    }

    /// Waits until every open node's state holds `expected`.
    pub async fn converge(&self, expected: &[(u64, u64)]) {
        for (&id, (node, _)) in &self.nodes {
            wait_until(&format!("node {id} to hold {} entries", expected.len()), || {
                node.query().expect("reads").entries == expected
            })
            .await;
        }
    }

    /// Closes every node.
    pub async fn close(self) {
        for (_, (node, _)) in self.nodes {
            node.close().await.expect("closes");
        }
    }
}
