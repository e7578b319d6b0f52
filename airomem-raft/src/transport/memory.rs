//! The in-process transport: every message between nodes of one process, Raft's own and the
//! clients' (forwarded commits, read-index requests), goes through one [`Network`], which
//! can drop, delay and lose messages per direction between any two nodes.
//!
//! A message is "sent" by calling the target node's Raft handle in the caller's task: after
//! the one-way delay of its direction the link is checked (blocked, or lost with the link's
//! probability: not delivered), the target handles it, and the answer travels back the same
//! way (blocked or lost on the way back: delivered, answer lost). Openraft sees a message
//! that did not arrive, or whose answer did not, as `Unreachable`.
//!
//! Each registration of a node has an incarnation number: once a node is halted or closed,
//! messages from its old incarnation are dropped even if a new one has registered under the
//! same id, as a killed process sends nothing more.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::{BasicNode, Raft};

use crate::proposer::Proposer;
use crate::types::{NodeId, TypeConfig};

/// A random `u64` from the standard library's per-process random keys (enough for client
/// ids, jitter and simulated loss; nothing here needs a cryptographic generator).
pub(crate) fn random_u64() -> u64 {
    static DRAWS: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(DRAWS.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}

/// When a node last heard from a leader (an accepted append or snapshot), for the election
/// watchdog.
#[derive(Debug)]
pub(crate) struct Contact {
    base: Instant,
    /// Milliseconds after `base`.
    last: AtomicU64,
    /// When a vote request of this node was refused by a node holding a longer log:
    /// milliseconds after `base`, plus one (0: never).
    outlogged: AtomicU64,
}

impl Contact {
    pub(crate) fn new() -> Contact {
        Contact { base: Instant::now(), last: AtomicU64::new(0), outlogged: AtomicU64::new(0) }
    }

    /// Records that a peer refused this node's vote request because its log is longer: this
    /// node cannot win an election until it has caught up.
    pub(crate) fn saw_longer_log(&self) {
        let now = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.outlogged.fetch_max(now.saturating_add(1), Ordering::Relaxed);
    }

    /// How long ago a peer last refused a vote for having a longer log; `None` if never.
    pub(crate) fn since_longer_log(&self) -> Option<Duration> {
        match self.outlogged.load(Ordering::Relaxed) {
            0 => None,
            at => Some(self.base.elapsed().saturating_sub(Duration::from_millis(at - 1))),
        }
    }

    /// Records a contact now.
    pub(crate) fn touch(&self) {
        let now = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.fetch_max(now, Ordering::Relaxed);
    }

    /// How long ago the last contact was.
    pub(crate) fn elapsed(&self) -> Duration {
        self.base.elapsed().saturating_sub(Duration::from_millis(self.last.load(Ordering::Relaxed)))
    }
}

/// A registered node: what a message to it reaches.
#[derive(Clone)]
pub(crate) struct Peer {
    pub(crate) raft: Raft<TypeConfig>,
    /// Where the commands sent to this node are batched into log entries.
    pub(crate) proposer: Proposer,
    incarnation: u64,
    contact: Arc<Contact>,
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

/// Why a message got no answer.
#[derive(Debug)]
pub(crate) enum Failure {
    /// It never reached the target (blocked, lost, no such node, sender halted).
    NotDelivered(String),
    /// The target handled it, but the answer was blocked or lost on the way back.
    AnswerLost(String),
}

impl Failure {
    fn into_unreachable(self) -> Unreachable {
        let message = match self {
            Failure::NotDelivered(m) | Failure::AnswerLost(m) => m,
        };
        Unreachable::new(&io::Error::new(io::ErrorKind::NotConnected, message))
    }
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

    pub(crate) fn is_registered(&self, id: NodeId) -> bool {
        lock(&self.inner.nodes).contains_key(&id)
    }

    /// A new incarnation number for a node about to register.
    pub(crate) fn next_incarnation(&self) -> u64 {
        self.inner.incarnations.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn register(
        &self,
        id: NodeId,
        incarnation: u64,
        raft: Raft<TypeConfig>,
        proposer: Proposer,
        contact: Arc<Contact>,
    ) {
        lock(&self.inner.nodes).insert(id, Peer { raft, proposer, incarnation, contact });
    }

    /// Takes the node off the network, unless a newer incarnation already replaced it.
    pub(crate) fn unregister(&self, id: NodeId, incarnation: u64) {
        let mut nodes = lock(&self.inner.nodes);
        if nodes.get(&id).is_some_and(|p| p.incarnation == incarnation) {
            nodes.remove(&id);
        }
    }

    /// The contact record of node `id`, if that incarnation is the one registered.
    fn contact(&self, id: NodeId, incarnation: u64) -> Option<Arc<Contact>> {
        lock(&self.inner.nodes).get(&id).filter(|p| p.incarnation == incarnation).map(|p| Arc::clone(&p.contact))
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

    /// Sends a message from incarnation `incarnation` of node `from` to node `to`: `handle`
    /// runs on the target's side if the message arrives, and its output is the answer.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        from: NodeId,
        incarnation: u64,
        to: NodeId,
        handle: F,
    ) -> Result<T, Failure>
    where
        F: FnOnce(Peer) -> Fut,
        Fut: Future<Output = T>,
    {
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
        let target = peer.incarnation;
        let answer = handle(peer).await;
        if from != to {
            let delay = self.delay_of(to, from);
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
        }
        // A node stopped meanwhile sends no answer, and a stopped sender receives none.
        if !self.current(to, target) || !self.current(from, incarnation) {
            return Err(Failure::AnswerLost(format!("node {to} or {from} stopped before the answer arrived")));
        }
        if from != to {
            self.passes(to, from).map_err(Failure::AnswerLost)?;
        }
        Ok(answer)
    }
}

/// What openraft gets to open connections from one node: the network and who is sending.
pub(crate) struct Connector {
    pub(crate) network: Network,
    pub(crate) from: NodeId,
    pub(crate) incarnation: u64,
    /// How long replication to an unreachable node pauses between attempts.
    pub(crate) backoff: Duration,
}

/// One node's connection to another, for openraft's replication and elections.
pub(crate) struct Connection {
    network: Network,
    from: NodeId,
    incarnation: u64,
    target: NodeId,
    backoff: Duration,
}

impl RaftNetworkFactory<TypeConfig> for Connector {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> Connection {
        Connection {
            network: self.network.clone(),
            from: self.from,
            incarnation: self.incarnation,
            target,
            backoff: self.backoff,
        }
    }
}

type RpcResult<T, E = openraft::error::Infallible> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl Connection {
    #[expect(clippy::result_large_err, reason = "the error type is openraft's, returned as openraft's trait requires")]
    fn answer<T, E: std::error::Error>(
        &self,
        outcome: Result<Result<T, RaftError<NodeId, E>>, Failure>,
    ) -> RpcResult<T, E> {
        match outcome {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            Err(failure) => Err(RPCError::Unreachable(failure.into_unreachable())),
        }
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let outcome = self
            .network
            .call(self.from, self.incarnation, self.target, |peer| async move {
                let answer = peer.raft.append_entries(rpc).await;
                // Only an append from a leader the node accepts counts as hearing from one.
                if answer.as_ref().is_ok_and(|a| !matches!(a, AppendEntriesResponse::HigherVote(_))) {
                    peer.contact.touch();
                }
                answer
            })
            .await;
        self.answer(outcome)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        let outcome = self
            .network
            .call(self.from, self.incarnation, self.target, |peer| async move {
                let answer = peer.raft.install_snapshot(rpc).await;
                if answer.is_ok() {
                    peer.contact.touch();
                }
                answer
            })
            .await;
        self.answer(outcome)
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, _option: RPCOption) -> RpcResult<VoteResponse<NodeId>> {
        let mine = rpc.last_log_id;
        let outcome = self
            .network
            .call(self.from, self.incarnation, self.target, |peer| async move { peer.raft.vote(rpc).await })
            .await;
        if let Ok(Ok(answer)) = &outcome
            && !answer.vote_granted
            && answer.last_log_id > mine
            && let Some(contact) = self.network.contact(self.from, self.incarnation)
        {
            // The election watchdog must leave this node to openraft's own timer, which
            // waits longer after seeing a longer log (see `watchdog`).
            contact.saw_longer_log();
        }
        self.answer(outcome)
    }

    fn backoff(&self) -> Backoff {
        // openraft's default pauses 500 ms; a healed link should carry heartbeats again
        // within a heartbeat or two.
        Backoff::new(std::iter::repeat(self.backoff))
    }
}
