//! How nodes reach each other: every message between the nodes of a group, Raft's own and
//! the clients' (forwarded commits, read-index requests, membership changes), is a [`Call`]
//! answered by a [`Reply`], sent over a [`Link`].
//!
//! Two transports make links: the in-process [`memory::Network`] with fault controls, for
//! the simulation tests, and [`tcp::TcpTransport`], for processes and machines. Both hand a
//! call that arrives to the same [`Local::handle`], so the simulations run the same
//! server-side code as a deployment.
//!
//! A user picks a transport by passing it to `ReplicatedStore::open`; the trait that makes
//! it one, [`Transport`], is sealed, so openraft's types never appear in the public API.

pub(crate) mod admin;
mod connector;
pub(crate) mod memory;
pub(crate) mod rpc;
pub(crate) mod tcp;

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use openraft::Raft;
use openraft::raft::AppendEntriesResponse;

pub(crate) use connector::Connector;
pub(crate) use rpc::{Call, Reply};

use crate::proposer::Proposer;
use crate::types::{NodeId, TypeConfig};
use crate::{Error, Status};

/// A random `u64` from the standard library's per-process random keys (enough for client
/// ids, jitter and simulated loss; nothing here needs a cryptographic generator).
pub(crate) fn random_u64() -> u64 {
    static DRAWS: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(DRAWS.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}

/// When a node last heard from a leader (an accepted append or snapshot), for the election
/// watchdog and for bounded-staleness reads.
#[derive(Debug)]
pub(crate) struct Contact {
    base: Instant,
    /// Milliseconds after `base`, plus one (0: never).
    last: AtomicU64,
    /// When a vote request of this node was refused by a node holding a longer log:
    /// milliseconds after `base`, plus one (0: never).
    outlogged: AtomicU64,
}

impl Contact {
    pub(crate) fn new() -> Contact {
        Contact { base: Instant::now(), last: AtomicU64::new(0), outlogged: AtomicU64::new(0) }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX).saturating_add(1)
    }

    /// Records that a peer refused this node's vote request because its log is longer: this
    /// node cannot win an election until it has caught up.
    pub(crate) fn saw_longer_log(&self) {
        self.outlogged.fetch_max(self.now(), Ordering::Relaxed);
    }

    /// How long ago a peer last refused a vote for having a longer log; `None` if never.
    pub(crate) fn since_longer_log(&self) -> Option<Duration> {
        since(self.base, self.outlogged.load(Ordering::Relaxed))
    }

    /// Records a contact now.
    pub(crate) fn touch(&self) {
        self.last.fetch_max(self.now(), Ordering::Relaxed);
    }

    /// How long ago the last contact was; since the node started if never (the watchdog
    /// counts a node that never heard from a leader as out of contact from its start).
    pub(crate) fn elapsed(&self) -> Duration {
        since(self.base, self.last.load(Ordering::Relaxed)).unwrap_or_else(|| self.base.elapsed())
    }

    /// How long ago the last contact was; `None` if this node never heard from a leader.
    pub(crate) fn last(&self) -> Option<Duration> {
        since(self.base, self.last.load(Ordering::Relaxed))
    }
}

fn since(base: Instant, mark: u64) -> Option<Duration> {
    match mark {
        0 => None,
        at => Some(base.elapsed().saturating_sub(Duration::from_millis(at - 1))),
    }
}

/// What a call to a node reaches: the node's Raft core, its proposer, its contact record,
/// and what its admin calls need. Cheap to clone.
#[derive(Clone)]
pub struct Local {
    pub(crate) id: NodeId,
    pub(crate) raft: Raft<TypeConfig>,
    pub(crate) proposer: Proposer,
    pub(crate) contact: Arc<Contact>,
    /// The node's status, for admin calls (the state machine's progress is generic over the
    /// state type; this closure hides it).
    pub(crate) status: Arc<dyn Fn() -> Status + Send + Sync>,
    /// Refuse a removal that leaves fewer voters than this, unless forced.
    pub(crate) min_voters: usize,
}

impl Local {
    /// Handles one call that arrived for this node.
    pub(crate) async fn handle(&self, call: Call) -> Reply {
        match call {
            Call::Append(rpc) => {
                let answer = self.raft.append_entries(rpc).await;
                // Only an append from a leader the node accepts counts as hearing from one.
                if answer.as_ref().is_ok_and(|a| !matches!(a, AppendEntriesResponse::HigherVote(_))) {
                    self.contact.touch();
                }
                Reply::Append(answer)
            }
            Call::Snapshot(rpc) => {
                let answer = self.raft.install_snapshot(rpc).await;
                if answer.is_ok() {
                    self.contact.touch();
                }
                Reply::Snapshot(answer)
            }
            Call::Vote(rpc) => Reply::Vote(self.raft.vote(rpc).await),
            Call::Propose(request) => Reply::Proposed(self.proposer.propose(request).await),
            Call::ReadIndex => Reply::ReadIndex(self.raft.get_read_log_id().await.map(|(read, _)| read)),
            Call::Admin(call) => Reply::Admin(admin::handle(self, call).await),
        }
    }
}

/// Why a call got no answer.
#[derive(Debug)]
pub(crate) enum Failure {
    /// It never reached the target (blocked, lost, refused, no such node, sender stopped).
    NotDelivered(String),
    /// It may have reached the target, but no answer came back (lost, connection cut,
    /// timed out).
    AnswerLost(String),
}

impl Failure {
    pub(crate) fn reason(self) -> String {
        match self {
            Failure::NotDelivered(m) | Failure::AnswerLost(m) => m,
        }
    }
}

/// One node's way out to the others, made by its transport when the node opens.
#[derive(Clone)]
pub enum Link {
    Memory(memory::MemoryLink),
    Tcp(tcp::TcpLink),
}

impl Link {
    /// Sends `call` to node `to` and waits for its reply, at most `timeout`. A call to this
    /// node itself is handled here, without the network.
    pub(crate) async fn call(&self, to: NodeId, call: Call, timeout: Duration) -> Result<Reply, Failure> {
        let attempt = async {
            match self {
                Link::Memory(link) => link.call(to, call).await,
                Link::Tcp(link) => link.call(to, call).await,
            }
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Failure::AnswerLost(format!("no answer from node {to} within {timeout:?}"))),
        }
    }

    /// The node this link sends from.
    pub(crate) fn local(&self) -> &Local {
        match self {
            Link::Memory(link) => link.local(),
            Link::Tcp(link) => link.local(),
        }
    }

    /// The address a peer is known by (`""` on the in-process network, where ids suffice).
    pub(crate) fn address_of(&self, id: NodeId) -> Option<String> {
        match self {
            Link::Memory(_) => Some(String::new()),
            Link::Tcp(link) => link.address_of(id),
        }
    }

    /// Records where a peer listens (from the membership, or an admin call naming it).
    pub(crate) fn learn_address(&self, id: NodeId, addr: &str) {
        if let Link::Tcp(link) = self {
            link.learn_address(id, addr);
        }
    }

    /// Stops sending and receiving: the node is closing or halted.
    pub(crate) fn leave(&self) {
        match self {
            Link::Memory(link) => link.leave(),
            Link::Tcp(link) => link.leave(),
        }
    }

    /// The pause before openraft retries a peer it could not reach.
    pub(crate) fn backoff(&self) -> Box<dyn Iterator<Item = Duration> + Send> {
        match self {
            Link::Memory(link) => Box::new(std::iter::repeat(link.backoff())),
            Link::Tcp(link) => Box::new(link.backoff()),
        }
    }
}

mod sealed {
    /// What makes a type a transport; sealed so that the crate's internals (openraft's
    /// types among them) stay out of the public API.
    pub trait Attach {
        /// Connects node `local` to this transport. `heartbeat` is the node's heartbeat
        /// interval (the pause before retrying an unreachable peer derives from it).
        fn attach(&self, local: super::Local, heartbeat: std::time::Duration) -> Result<super::Link, crate::Error>;

        /// Whether node `id` is already attached (a second open of it is refused).
        fn is_attached(&self, id: u64) -> bool;
    }
}

/// A way for the nodes of a group to reach each other: [`crate::Network`] (in one process,
/// with fault controls, for tests) or [`crate::TcpTransport`] (between processes and
/// machines). Pass one to [`crate::ReplicatedStore::open`].
pub trait Transport: sealed::Attach {}

impl<T: sealed::Attach> Transport for T {}

pub(crate) use sealed::Attach;

/// Errors of a transport's setup, for `attach`.
pub(crate) fn invalid(reason: impl Into<String>) -> Error {
    Error::InvalidConfig { reason: reason.into() }
}
