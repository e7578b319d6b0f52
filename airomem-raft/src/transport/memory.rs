//! The in-process transport: every message between nodes of one process, Raft's own and the
//! clients' (forwarded commits, read-index requests, membership changes), goes through one
//! [`Network`], which can drop, delay and lose messages per direction between any two nodes.
//!
//! A message is "sent" by handing the call to the target node's [`Local::handle`] in the
//! caller's task: after the one-way delay of its direction the link is checked (blocked, or
//! lost with the link's probability: not delivered), the target handles it, and the answer
//! travels back the same way (blocked or lost on the way back: delivered, answer lost).
//! Openraft sees a message that did not arrive, or whose answer did not, as `Unreachable`.
//!
//! Each registration of a node has an incarnation number: once a node is halted or closed,
//! messages from its old incarnation are dropped even if a new one has registered under the
//! same id, as a killed process sends nothing more.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::Error;
use crate::transport::contact::random_u64;
use crate::transport::local::{Failure, Local, invalid};
use crate::transport::rpc::{Call, Reply};
use crate::types::NodeId;

/// A registered node: what a message to it reaches.
#[derive(Clone)]
struct Peer {
    local: Local,
    incarnation: u64,
}

/// The faults in force.
#[derive(Debug, Default)]
struct Faults {
    /// Directed links that drop every message.
    blocked: BTreeSet<(NodeId, NodeId)>,
    /// Nodes cut off from every other node, both ways.
    isolated: BTreeSet<NodeId>,
    delay: BTreeMap<(NodeId, NodeId), Duration>,
    loss: BTreeMap<(NodeId, NodeId), f64>,
}

#[derive(Default)]
struct Inner {
    nodes: Mutex<BTreeMap<NodeId, Peer>>,
    faults: Mutex<Faults>,
    incarnations: AtomicU64,
}

/// An in-process network for the nodes of a replicated store, with fault controls between
/// any two nodes. Cheap to clone: clones control the same network.
///
/// Faults are per direction (`from` → `to`) and apply to every message, including client
/// commits forwarded to the leader and linearizable reads, so a partition cuts a client on
/// the minority side off as it would on real hardware. A node always reaches itself.
#[derive(Clone, Default)]
pub struct Network {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nodes: Vec<NodeId> = lock(&self.inner.nodes).keys().copied().collect();
        f.debug_struct("Network").field("nodes", &nodes).field("faults", &*lock(&self.inner.faults)).finish()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every change under these locks is a single insert or remove: a panic cannot leave
    // them half done.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Network {
    /// A network with no nodes and no faults.
    pub fn new() -> Network {
        Network::default()
    }

    /// Drops every message from `from` to `to` (one way) until [`Network::unblock`] or
    /// [`Network::heal`].
    pub fn block(&self, from: u64, to: u64) {
        lock(&self.inner.faults).blocked.insert((from, to));
    }

    /// Lets messages from `from` to `to` through again (an isolation stays in force).
    pub fn unblock(&self, from: u64, to: u64) {
        lock(&self.inner.faults).blocked.remove(&(from, to));
    }

    /// Blocks every link between a node of `a` and a node of `b`, both ways.
    pub fn partition(&self, a: &[u64], b: &[u64]) {
        let mut faults = lock(&self.inner.faults);
        for &x in a {
            for &y in b {
                faults.blocked.insert((x, y));
                faults.blocked.insert((y, x));
            }
        }
    }

    /// Cuts `id` off from every other node, both ways, present or future.
    pub fn isolate(&self, id: u64) {
        lock(&self.inner.faults).isolated.insert(id);
    }

    /// Removes every block, isolation, delay and loss.
    pub fn heal(&self) {
        *lock(&self.inner.faults) = Faults::default();
    }

    /// Delays every message from `from` to `to` by `delay` (zero removes the delay).
    ///
    /// openraft gives each append (and heartbeat) one heartbeat interval to complete: a round
    /// trip longer than that stops replication to the node as surely as a block does.
    pub fn delay(&self, from: u64, to: u64, delay: Duration) {
        let mut faults = lock(&self.inner.faults);
        if delay.is_zero() {
            faults.delay.remove(&(from, to));
        } else {
            faults.delay.insert((from, to), delay);
        }
    }

    /// Loses each message from `from` to `to` with `probability` (0 to 1; 1 loses all, 0
    /// removes the loss).
    pub fn loss(&self, from: u64, to: u64, probability: f64) {
        let mut faults = lock(&self.inner.faults);
        if probability <= 0.0 {
            faults.loss.remove(&(from, to));
        } else {
            faults.loss.insert((from, to), probability.min(1.0));
        }
    }

    /// A new incarnation number for a node about to register.
    fn next_incarnation(&self) -> u64 {
        self.inner.incarnations.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Takes the node off the network, unless a newer incarnation already replaced it.
    fn unregister(&self, id: NodeId, incarnation: u64) {
        let mut nodes = lock(&self.inner.nodes);
        if nodes.get(&id).is_some_and(|p| p.incarnation == incarnation) {
            nodes.remove(&id);
        }
    }

    fn current(&self, id: NodeId, incarnation: u64) -> bool {
        lock(&self.inner.nodes).get(&id).is_some_and(|p| p.incarnation == incarnation)
    }

    fn delay_of(&self, from: NodeId, to: NodeId) -> Duration {
        lock(&self.inner.faults).delay.get(&(from, to)).copied().unwrap_or_default()
    }

    /// Whether a message from `from` to `to` passes now (checked on arrival).
    fn passes(&self, from: NodeId, to: NodeId) -> Result<(), String> {
        let faults = lock(&self.inner.faults);
        if faults.blocked.contains(&(from, to)) || faults.isolated.contains(&from) || faults.isolated.contains(&to) {
            return Err(format!("link {from} → {to} is blocked"));
        }
        if let Some(&p) = faults.loss.get(&(from, to)) {
            // 53 random bits make a uniform float in [0, 1).
            let draw = (random_u64() >> 11) as f64 / (1u64 << 53) as f64;
            if draw < p {
                return Err(format!("a message {from} → {to} was lost"));
            }
        }
        Ok(())
    }

    /// Sends `call` from incarnation `incarnation` of node `from` to node `to`, and returns
    /// the target's reply if both the call and the reply get through.
    async fn call(&self, from: NodeId, incarnation: u64, to: NodeId, call: Call) -> Result<Reply, Failure> {
        if from != to {
            let delay = self.delay_of(from, to);
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
        }
        if !self.current(from, incarnation) {
            return Err(Failure::NotDelivered(format!("node {from} is stopped")));
        }
        if from != to {
            self.passes(from, to).map_err(Failure::NotDelivered)?;
        }
        let peer = lock(&self.inner.nodes).get(&to).cloned();
        let Some(peer) = peer else { return Err(Failure::NotDelivered(format!("node {to} is not on the network"))) };
        let reply = peer.local.handle(call).await;
        if from != to {
            let delay = self.delay_of(to, from);
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
        }
        // A node stopped meanwhile sends no answer, and a stopped sender receives none.
        if !self.current(to, peer.incarnation) || !self.current(from, incarnation) {
            return Err(Failure::AnswerLost(format!("node {to} or {from} stopped before the answer arrived")));
        }
        if from != to {
            self.passes(to, from).map_err(Failure::AnswerLost)?;
        }
        Ok(reply)
    }
}

impl Network {
    /// Puts node `local` on the network.
    pub(crate) fn attach_node(&self, local: Local, heartbeat: Duration) -> Result<MemoryLink, Error> {
        let id = local.id;
        let incarnation = self.next_incarnation();
        let mut nodes = lock(&self.inner.nodes);
        if nodes.contains_key(&id) {
            return Err(invalid(format!("node {id} is already open on this network")));
        }
        nodes.insert(id, Peer { local: local.clone(), incarnation });
        // openraft's default pause is 500 ms; a healed link should carry heartbeats again
        // within a heartbeat or two.
        Ok(MemoryLink { network: self.clone(), incarnation, local, backoff: heartbeat })
    }

    /// Whether node `id` is on the network.
    pub(crate) fn has_node(&self, id: u64) -> bool {
        lock(&self.inner.nodes).contains_key(&id)
    }
}

/// One node's link on the in-process network.
#[derive(Clone)]
pub struct MemoryLink {
    network: Network,
    incarnation: u64,
    local: Local,
    backoff: Duration,
}

impl MemoryLink {
    pub(crate) async fn call(&self, to: NodeId, call: Call) -> Result<Reply, Failure> {
        self.network.call(self.local.id, self.incarnation, to, call).await
    }

    pub(crate) fn local(&self) -> &Local {
        &self.local
    }

    pub(crate) fn leave(&self) {
        self.network.unregister(self.local.id, self.incarnation);
    }

    pub(crate) fn backoff(&self) -> Duration {
        self.backoff
    }
}
