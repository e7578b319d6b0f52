//! The public replicated store: one node of a Raft group holding an airomem `State`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLockReadGuard};
use std::time::{Duration, Instant};

use airomem::{PostcardSerializer, Serializer, State};
use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::metrics::WaitError;
use openraft::{BasicNode, Raft};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::config::NodeConfig;
use crate::log::{LogHalter, LogOptions, LogReader, LogStore};
use crate::proposer::{Answer, Proposer};
use crate::reads::ReadRounds;
use crate::state_machine::{Replica, StateMachine};
use crate::status::{Members, Role, Status, status_of};
use crate::transport::admin::{self, ADMIN_TIMEOUT, AdminCall, AdminOutcome};
use crate::transport::{Call, Connector, Contact, Failure, Link, Local, Reply, Transport, random_u64};
use crate::types::{Applied, NodeId, Request, TypeConfig};
use crate::{Error, watchdog};

/// The first pause between two attempts of a commit or read; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(5);
const MAX_PAUSE: Duration = Duration::from_millis(100);

/// The attempts of one call (a commit, a read, an admin call) until its deadline, with a
/// pause between them that doubles from [`FIRST_PAUSE`] to [`MAX_PAUSE`].
struct Retry {
    deadline: Instant,
    pause: Duration,
}

impl Retry {
    fn within(timeout: Duration) -> Retry {
        Retry { deadline: Instant::now() + timeout, pause: FIRST_PAUSE }
    }

    /// The time left; `None` once the deadline has passed.
    fn left(&self) -> Option<Duration> {
        self.deadline.checked_duration_since(Instant::now()).filter(|left| !left.is_zero())
    }

    /// Sleeps before the next attempt (never past the deadline).
    async fn pause(&mut self) {
        tokio::time::sleep(self.pause.min(self.deadline.saturating_duration_since(Instant::now()))).await;
        self.pause = (self.pause * 2).min(MAX_PAUSE);
    }
}

/// The receipt of a committed command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Receipt {
    /// The command's sequence number: the dense count of commands executed, the same on
    /// every replica; what `CommitContext::current` told the command.
    pub seq: u64,
    /// The Raft log index of the entry it executed in.
    pub index: u64,
    /// Its commit time, nanoseconds since the Unix epoch: the leader's clock when it accepted
    /// the command, made monotonic; what `CommitContext::current` told the command.
    pub unix_nanos: u64,
}

/// A snapshot built by [`ReplicatedStore::snapshot`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SnapshotInfo {
    /// The last log index it covers.
    pub index: u64,
}

/// A read lock on the replicated state. Applying committed entries on this node waits while
/// it is held, so keep it short and never hold it across an `.await`.
pub struct ReadGuard<'a, S>(RwLockReadGuard<'a, Replica<S>>);

impl<S> Deref for ReadGuard<'_, S> {
    type Target = S;
    fn deref(&self) -> &S {
        &self.0.state
    }
}

/// This handle's identity as a client of the group, for deduplication.
struct Client {
    id: u128,
    /// The next serial, and the serials whose caller still waits for an outcome.
    serials: Mutex<(u64, BTreeSet<u64>)>,
}

impl Client {
    fn new() -> Client {
        let id = (u128::from(random_u64()) << 64) | u128::from(random_u64());
        Client { id, serials: Mutex::new((0, BTreeSet::new())) }
    }

    fn begin(&self) -> u64 {
        // Under one lock with `low_water`: a serial is in flight from the moment it exists,
        // so no command can announce a low water above it.
        let mut serials = self.serials.lock().unwrap_or_else(PoisonError::into_inner);
        let serial = serials.0;
        serials.0 += 1;
        serials.1.insert(serial);
        serial
    }

    fn end(&self, serial: u64) {
        self.serials.lock().unwrap_or_else(PoisonError::into_inner).1.remove(&serial);
    }

    /// Every serial below this one is finished.
    fn low_water(&self) -> u64 {
        let serials = self.serials.lock().unwrap_or_else(PoisonError::into_inner);
        serials.1.first().copied().unwrap_or(serials.0)
    }
}

/// Ends a serial when its `commit` returns or is cancelled.
struct InFlight<'a>(&'a Client, u64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.end(self.1);
    }
}

/// One node of a replicated airomem store: the user's [`State`] on every node of a Raft
/// group, changed only by commands committed through the group's leader.
///
/// * **Commits** go to the leader wherever they are made ([`ReplicatedStore::commit`]) and
///   return once a majority holds the command durably and this node has applied it.
/// * **Reads** are local: [`ReplicatedStore::query`] (possibly stale) or
///   [`ReplicatedStore::query_linearizable`] (sees every commit acknowledged before it began).
/// * **Retries are safe**: each handle is a client with a random id that numbers its
///   commands; the replicated state remembers recent outcomes per client, so a command
///   retried after a lost answer or a leader change executes once.
///
/// Resources: the node's Raft core and its replication tasks (tokio tasks), the election
/// watchdog (a tokio task), and the log's writer thread, which holds the log directory's
/// lock. [`ReplicatedStore::close`] stops them all and returns once the directory is free;
/// [`ReplicatedStore::halt`] stops them as a kill would; dropping the handle asks them to stop
/// and returns at once (the directory stays locked until the Raft core has shut down).
pub struct ReplicatedStore<S: State, Z: Serializer = PostcardSerializer> {
    id: NodeId,
    raft: Raft<TypeConfig>,
    machine: StateMachine<S, Z>,
    log: LogReader,
    halter: LogHalter,
    /// This node's way to the others (made by its transport when it opened).
    link: Link,
    /// Concurrent linearizable reads share their rounds to the leader.
    reads: ReadRounds,
    /// The largest encoded command this node sends (its transport's entry limit).
    command_limit: usize,
    client: Client,
    /// Taken (and aborted) by whichever of `close`, `halt` and `Drop` comes first.
    watchdog: Mutex<Option<JoinHandle<()>>>,
    /// The proposer's task (see `proposer`); aborted like the watchdog.
    proposing: Mutex<Option<JoinHandle<()>>>,
    commit_timeout: Duration,
    /// How long one attempt of a commit or read waits for its answer before retrying.
    attempt_timeout: Duration,
    dir: PathBuf,
    /// Set by `close` and `halt`: `Drop` has nothing left to do.
    stopped: AtomicBool,
}

impl<S: State, Z: Serializer> fmt::Debug for ReplicatedStore<S, Z> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicatedStore")
            .field("dir", &self.dir)
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

fn stopped(e: impl fmt::Display) -> Error {
    Error::Stopped { reason: e.to_string() }
}

/// What one attempt at a commit ran into.
enum Attempt {
    /// The log index of the entry that answered, and the command's outcome.
    Done(u64, Applied),
    /// Not handed to any node: certainly not applied.
    NotDelivered(String),
    /// Handed to a node, outcome unknown; the leader that node named, if any.
    Unknown(String, Option<NodeId>),
}

impl<S: State, Z: Serializer> ReplicatedStore<S, Z> {
    /// Opens node `config.id()` from its directory (recovering its log up to the recorded
    /// commit point and its newest snapshot), and joins `network`.
    ///
    /// A new node is not part of any group until [`ReplicatedStore::bootstrap`] (on any one
    /// node, or several with the same members); a node that was a member rejoins its group.
    pub async fn open(config: NodeConfig, serializer: Z, transport: &impl Transport) -> Result<Self, Error> {
        let id = config.id;
        let raft_config = Arc::new(config.raft_config()?);
        if transport.is_attached(id) {
            return Err(Error::InvalidConfig { reason: format!("node {id} is already open on this transport") });
        }
        let storage = Arc::clone(&config.storage);
        let dir = config.dir.clone();
        let opened = tokio::task::spawn_blocking(move || {
            let mut log = LogStore::open(Arc::clone(&storage), &dir.join("log"), LogOptions::default())?;
            let machine = StateMachine::open(storage, &dir.join("snapshots"), serializer, log.reader())?;
            log.gate_purges(machine.durable_snapshots());
            Ok::<_, Error>((log, machine))
        })
        .await;
        let (log, machine) = match opened {
            Ok(opened) => opened?,
            // A panic in recovery is a bug; it must surface as one.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => return Err(stopped(e)),
        };
        let reader = log.reader();
        let halter = log.halter();
        let pending_link = Arc::new(std::sync::OnceLock::new());
        let connector = Connector { link: Arc::clone(&pending_link) };
        let raft = Raft::new(id, raft_config, connector, log, machine.clone()).await.map_err(stopped)?;
        let contact = Arc::new(Contact::new());
        let attempt_timeout = (config.election_max * 2).max(Duration::from_millis(500));
        let command_limit = transport.entry_limit();
        let (proposer, proposing) = Proposer::spawn(raft.clone(), attempt_timeout, command_limit);
        let status = {
            let (raft, machine, log) = (raft.clone(), machine.clone(), reader.clone());
            Arc::new(move || status_of(id, &raft, machine.progress(), log.committed()))
        };
        let local = Local {
            id,
            raft: raft.clone(),
            proposer,
            contact: Arc::clone(&contact),
            status,
            min_voters: config.min_voters,
        };
        let link = match transport.attach(local, config.heartbeat) {
            Ok(link) => link,
            Err(e) => {
                proposing.abort();
                drop(raft.shutdown().await);
                return Err(e);
            }
        };
        // Set once, here: nothing else fills it.
        drop(pending_link.set(link.clone()));
        let watchdog = config.watchdog.then(|| watchdog::spawn(raft.clone(), id, contact, config.election_max));
        info!(node = id, dir = %config.dir.display(), "replicated store opened");
        Ok(ReplicatedStore {
            id,
            raft,
            machine,
            log: reader,
            halter,
            link,
            command_limit,
            reads: ReadRounds::default(),
            client: Client::new(),
            watchdog: Mutex::new(watchdog),
            proposing: Mutex::new(Some(proposing)),
            commit_timeout: config.commit_timeout,
            attempt_timeout,
            dir: config.dir,
            stopped: AtomicBool::new(false),
        })
    }

    /// Forms the group: `members` (which must include this node) become its voters. Call it
    /// once, on one node, when the group is first created; the others learn of it from the
    /// leader. Idempotent: a node that already belongs to a group returns `Ok(())` and
    /// changes nothing (calling it on several nodes with the same members is safe; with
    /// different members it would split the group).
    pub async fn bootstrap(&self, members: impl IntoIterator<Item = u64>) -> Result<(), Error> {
        let ids: BTreeSet<NodeId> = members.into_iter().collect();
        if self.raft.is_initialized().await.map_err(stopped)? {
            return Ok(());
        }
        let mut members = BTreeMap::new();
        for id in ids {
            let Some(addr) = self.link.address_of(id) else {
                return Err(Error::InvalidConfig {
                    reason: format!("no address known for node {id}: name it with TcpConfig::peer"),
                });
            };
            members.insert(id, BasicNode::new(addr));
        }
        match self.raft.initialize(members).await {
            Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(RaftError::APIError(e @ InitializeError::NotInMembers(_))) => {
                Err(Error::InvalidConfig { reason: e.to_string() })
            }
            Err(RaftError::Fatal(e)) => Err(stopped(e)),
        }
    }

    /// Commits `command`: sends it to the leader (through the network, from this node), and
    /// returns once a majority holds it durably and this node has applied it, so that
    /// [`ReplicatedStore::query`] here shows it.
    ///
    /// Lost answers, leader changes and unreachable leaders are retried, as the same command
    /// (same client id and serial), until `commit_timeout`: the replicated state remembers
    /// the outcome, so a retry never executes the command twice.
    ///
    /// # Errors
    ///
    /// * [`Error::CommandPanicked`]: `execute` panicked; every replica rolled it back.
    /// * [`Error::Unavailable`]: no leader could be reached in time and the command was never
    ///   handed to any node: not applied.
    /// * [`Error::Indeterminate`]: it was handed to a node but no outcome came back in time:
    ///   it **may or may not** have been applied, and may still be.
    /// * [`Error::Lagging`]: committed and applied by the leader, but not yet on this node
    ///   (in time, or before this node was closed or halted).
    /// * [`Error::Closed`]: the node was closed or halted before the command was handed to
    ///   any node: not applied. Once it was handed over, a close or halt answers
    ///   [`Error::Indeterminate`] or [`Error::Lagging`] instead.
    pub async fn commit(&self, command: S::Command) -> Result<Receipt, Error> {
        let mut bytes = Vec::new();
        self.machine.serializer().encode(&command, &mut bytes)?;
        if bytes.len() > self.command_limit {
            return Err(Error::CommandTooLarge { size: bytes.len(), limit: self.command_limit });
        }
        let serial = self.client.begin();
        let _in_flight = InFlight(&self.client, serial);
        let mut retry = Retry::within(self.commit_timeout);
        let mut delivered = false;
        let mut reason = String::from("no leader known");
        let mut hint = None;
        loop {
            if self.stopped.load(Ordering::Acquire) {
                return Err(if delivered {
                    Error::Indeterminate {
                        reason: "the node was halted or closed while the command was in flight".into(),
                    }
                } else {
                    Error::Closed
                });
            }
            let Some(left) = retry.left() else {
                debug!(node = self.id, serial, delivered, %reason, "commit gave up");
                return Err(if delivered { Error::Indeterminate { reason } } else { Error::Unavailable { reason } });
            };
            if let Some(leader) = hint.take().or_else(|| self.leader()) {
                let request = Request {
                    client: self.client.id,
                    serial,
                    low_water: self.client.low_water(),
                    bytes: bytes.clone(),
                };
                match self.attempt_write(leader, request, left).await {
                    Attempt::Done(index, applied) => return self.finish(index, applied, retry.deadline).await,
                    Attempt::NotDelivered(why) => reason = why,
                    Attempt::Unknown(why, forward) => {
                        delivered = true;
                        reason = why;
                        hint = forward;
                    }
                }
            }
            retry.pause().await;
        }
    }

    async fn attempt_write(&self, leader: NodeId, request: Request, left: Duration) -> Attempt {
        match self.link.call(leader, Call::Propose(request), left.min(self.attempt_timeout)).await {
            Err(Failure::NotDelivered(why)) => Attempt::NotDelivered(why),
            Err(Failure::AnswerLost(why)) => Attempt::Unknown(why, None),
            Ok(Reply::Proposed(None)) => Attempt::Unknown(format!("node {leader} stopped before it answered"), None),
            Ok(Reply::Proposed(Some(Answer::Applied(index, applied)))) => Attempt::Done(index, applied),
            // A node that is not (or no longer) the leader may have appended the command
            // before it lost the leadership: the outcome is unknown.
            Ok(Reply::Proposed(Some(Answer::Failed(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))))) => {
                Attempt::Unknown(format!("node {leader} is not the leader"), f.leader_id.filter(|&next| next != leader))
            }
            Ok(Reply::Proposed(Some(Answer::Failed(e)))) => Attempt::Unknown(format!("node {leader}: {e}"), None),
            Ok(Reply::Proposed(Some(Answer::Abandoned(why)))) => {
                Attempt::Unknown(format!("node {leader}: {why}"), None)
            }
            // The peer refused the call unread (a frame too large, a mismatched peer).
            Ok(Reply::Refused(why)) => Attempt::NotDelivered(format!("node {leader} refused the command: {why}")),
            Ok(other) => Attempt::Unknown(format!("node {leader} sent an unexpected reply: {other:?}"), None),
        }
    }

    async fn finish(&self, answered: u64, applied_as: Applied, deadline: Instant) -> Result<Receipt, Error> {
        // Applied here through the entry that answered (a retried copy comes after the
        // original), so that a query on this node shows the command.
        // On the leader it always is (the answer comes after the apply): asking the state
        // machine first spares each caller a wait on the metrics, whose every change would
        // wake every waiting caller.
        let applied = if self.machine.progress().0 >= Some(answered) {
            Ok(())
        } else {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.raft.wait(Some(left)).applied_index_at_least(Some(answered), "commit applied here").await {
                Ok(_) => Ok(()),
                // The leader applied the command, so it is committed: stopping here changes
                // only whether this node shows it. `Closed` would tell the caller it was
                // never handed over, and a retry through another handle (a new client) would
                // run it twice.
                Err(WaitError::Timeout(..) | WaitError::ShuttingDown) => Err(()),
            }
        };
        match applied_as {
            Applied::Executed { seq, index, unix_nanos } => match applied {
                Ok(()) => Ok(Receipt { seq, index, unix_nanos }),
                Err(()) => Err(Error::Lagging { seq, index }),
            },
            Applied::Panicked { index, message } => Err(Error::CommandPanicked { index, message }),
            Applied::Expired => {
                Err(Error::Indeterminate { reason: "the group no longer remembers this command's outcome".into() })
            }
        }
    }

    /// The leader this node knows of.
    fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// A read lock on this node's state: what it has applied, possibly behind the leader.
    /// Never waits for the network or the disk; waits only while entries are being applied.
    ///
    /// # Errors
    ///
    /// [`Error::StateMachineStopped`] once a panicking command could not be rolled back here.
    pub fn query(&self) -> Result<ReadGuard<'_, S>, Error> {
        Ok(ReadGuard(self.machine.read()?))
    }

    /// A read lock on this node's state once it reflects every command acknowledged before
    /// this call began (anywhere in the group): the leader confirms its leadership with a
    /// majority and names its commit index (through the network, when this node is a
    /// follower), then this node waits until it has applied that far.
    ///
    /// # Errors
    ///
    /// [`Error::Unavailable`] when no leader confirmed within `commit_timeout`.
    pub async fn query_linearizable(&self) -> Result<ReadGuard<'_, S>, Error> {
        let mut retry = Retry::within(self.commit_timeout);
        loop {
            if self.stopped.load(Ordering::Acquire) {
                return Err(Error::Closed);
            }
            let reason = match self.reads.read_index(&self.link, self.attempt_timeout).await {
                Ok(wanted) => {
                    let left = retry.left().unwrap_or_default();
                    match self.raft.wait(Some(left)).applied_index_at_least(wanted, "read index applied").await {
                        Ok(_) => return self.query(),
                        Err(WaitError::Timeout(..)) => "this node did not catch up in time".to_owned(),
                        Err(WaitError::ShuttingDown) => return Err(Error::Closed),
                    }
                }
                Err(why) => why,
            };
            if retry.left().is_none() {
                return Err(Error::Unavailable { reason });
            }
            retry.pause().await;
        }
    }

    /// A read lock on this node's state if this node leads, without asking the others: it
    /// shows every command this leader acknowledged, but a leader cut off from the majority
    /// keeps serving until it notices (within an election timeout), while a new leader may
    /// already be acknowledging commands. Cheaper than [`ReplicatedStore::query_linearizable`]
    /// (no round trip), weaker than it in that window.
    ///
    /// # Errors
    ///
    /// [`Error::NotLeader`] on a node that does not lead, naming the leader it knows of.
    pub fn query_leader(&self) -> Result<ReadGuard<'_, S>, Error> {
        let status = self.status();
        if status.role == Role::Leader && status.leader == Some(self.id) {
            self.query()
        } else {
            Err(Error::NotLeader { leader: status.leader })
        }
    }

    /// A read lock on this node's state if it is at most `max_lag` old, on any node: a
    /// follower serves it when it heard from the leader within `max_lag` and has applied
    /// every entry it knows committed; a leader, when a majority acknowledged it within
    /// `max_lag`. The bound is in time since the leader was last heard from (plus the time
    /// one append takes to travel), not in entries: under a steady load the state shown can
    /// miss the commands acknowledged in that time, never older ones.
    ///
    /// # Errors
    ///
    /// [`Error::TooStale`] when this node cannot vouch for `max_lag`.
    pub fn query_fresh(&self, max_lag: Duration) -> Result<ReadGuard<'_, S>, Error> {
        let status = self.status();
        if status.role == Role::Leader {
            let acked = self.raft.metrics().borrow().millis_since_quorum_ack;
            return match acked {
                Some(ms) if Duration::from_millis(ms) <= max_lag => self.query(),
                Some(ms) => {
                    Err(Error::TooStale { reason: format!("a majority last acknowledged this leader {ms} ms ago") })
                }
                None => Err(Error::TooStale { reason: "no majority has acknowledged this leader yet".into() }),
            };
        }
        match self.link.local().contact.last() {
            Some(since) if since <= max_lag => {}
            Some(since) => {
                return Err(Error::TooStale { reason: format!("the leader was last heard from {since:?} ago") });
            }
            None => return Err(Error::TooStale { reason: "this node has not heard from a leader".into() }),
        }
        if status.applied_index < status.commit_index {
            return Err(Error::TooStale {
                reason: format!(
                    "applied up to index {:?}, committed up to {:?}",
                    status.applied_index, status.commit_index
                ),
            });
        }
        self.query()
    }

    /// The group's members, as its leader knows them (as this node knows them when no leader
    /// answers).
    pub async fn members(&self) -> Result<Members, Error> {
        match self.admin(AdminCall::Members, self.commit_timeout).await? {
            AdminOutcome::Members(members) => Ok(members),
            other => Err(Error::Unavailable { reason: format!("unexpected answer: {other:?}") }),
        }
    }

    /// Adds node `id`, whose peers reach it at `addr` (`host:port` of its TCP transport;
    /// anything on the in-process network), as a learner: it receives every entry (or the
    /// newest snapshot, when the log behind it was purged) but does not vote. Returns once the
    /// leader sees it caught up, so a [`ReplicatedStore::promote`] after it does not leave the
    /// group waiting for a slow voter. Adding a member again only updates its address.
    ///
    /// # Errors
    ///
    /// [`Error::Unavailable`] if no leader answered; [`Error::Indeterminate`] if the leader
    /// changed during the call (the learner may or may not have been added: call it again).
    pub async fn add_learner(&self, id: u64, addr: impl Into<String>) -> Result<(), Error> {
        let addr = addr.into();
        self.link.learn_address(id, &addr);
        admin::done(self.admin(AdminCall::AddLearner { id, addr }, ADMIN_TIMEOUT).await?)
    }

    /// Makes the learners `ids` voters, in one joint-consensus change.
    ///
    /// # Errors
    ///
    /// [`Error::Refused`] if one of them is not a learner; otherwise as
    /// [`ReplicatedStore::add_learner`].
    pub async fn promote(&self, ids: impl IntoIterator<Item = u64>) -> Result<(), Error> {
        let ids = ids.into_iter().collect();
        admin::done(self.admin(AdminCall::Promote { ids }, self.commit_timeout).await?)
    }

    /// Removes node `id` (a voter or a learner) from the group. Refused when it would leave
    /// fewer voters than the leader's `min_voters` (see [`NodeConfig::min_voters`]); use
    /// [`ReplicatedStore::remove_forced`] to go below it.
    ///
    /// # Errors
    ///
    /// [`Error::Refused`] below the minimum or for a node that is not a member; otherwise as
    /// [`ReplicatedStore::add_learner`].
    pub async fn remove(&self, id: u64) -> Result<(), Error> {
        admin::done(self.admin(AdminCall::Remove { id, force: false }, self.commit_timeout).await?)
    }

    /// Removes node `id` even below the minimum number of voters (never the last voter). A
    /// group of two voters stops committing while either is down; of one, it has no
    /// redundancy left.
    pub async fn remove_forced(&self, id: u64) -> Result<(), Error> {
        admin::done(self.admin(AdminCall::Remove { id, force: true }, self.commit_timeout).await?)
    }

    /// Sends an admin call to the leader, following the leader each answer names, until
    /// `timeout`.
    async fn admin(&self, call: AdminCall, timeout: Duration) -> Result<AdminOutcome, Error> {
        let mut retry = Retry::within(timeout);
        let mut hint = None;
        let mut reason = String::from("no leader known");
        loop {
            if self.stopped.load(Ordering::Acquire) {
                return Err(Error::Closed);
            }
            let Some(left) = retry.left() else { return Err(Error::Unavailable { reason }) };
            let target = hint.take().or_else(|| self.leader()).unwrap_or(self.id);
            match self.link.call(target, Call::Admin(call.clone()), left).await {
                Ok(Reply::Admin(AdminOutcome::NotLeader { leader: Some((next, addr)) })) if next != target => {
                    if !addr.is_empty() {
                        self.link.learn_address(next, &addr);
                    }
                    hint = Some(next);
                    continue;
                }
                Ok(Reply::Admin(AdminOutcome::NotLeader { .. })) => reason = format!("node {target} knows no leader"),
                Ok(Reply::Admin(outcome)) => return Ok(outcome),
                Ok(other) => reason = format!("node {target} sent an unexpected reply: {other:?}"),
                Err(f) => reason = f.reason(),
            }
            retry.pause().await;
        }
    }

    /// This node's role, leader, term and progress.
    pub fn status(&self) -> Status {
        status_of(self.id, &self.raft, self.machine.progress(), self.log.committed())
    }

    /// Builds a snapshot of this node's state as applied now, and returns once it is durable.
    /// The log behind it is purged, keeping `logs_kept_after_snapshot` entries. Commits and
    /// reads go on meanwhile (applying waits only while the state is serialized).
    pub async fn snapshot(&self) -> Result<SnapshotInfo, Error> {
        let (applied, _) = self.machine.progress();
        let Some(target) = applied else {
            return Err(Error::Unavailable { reason: "nothing applied yet: bootstrap the group first".into() });
        };
        loop {
            drop(self.machine.read()?);
            self.raft.trigger().snapshot().await.map_err(stopped)?;
            // A build already running may cover less: wait a while, then ask again.
            let built = self
                .raft
                .wait(Some(Duration::from_secs(1)))
                .metrics(|m| m.snapshot.is_some_and(|s| s.index >= target), "snapshot built")
                .await;
            match built {
                Ok(metrics) => {
                    let index = metrics.snapshot.map_or(target, |s| s.index);
                    return Ok(SnapshotInfo { index });
                }
                Err(WaitError::Timeout(..)) => continue,
                Err(WaitError::ShuttingDown) => return Err(Error::Closed),
            }
        }
    }

    /// Leaves the network and stops the Raft core, the watchdog and the log's writer
    /// (which records the commit point), then returns: the directory, and a TCP transport's
    /// port, are free once this has returned `Ok`.
    pub async fn close(self) -> Result<(), Error> {
        self.leave();
        self.stopped.store(true, Ordering::Release);
        self.raft.shutdown().await.map_err(stopped)?;
        self.link.closed().await;
        info!(node = self.id, "replicated store closed");
        Ok(())
    }

    /// Stops the node abruptly, as a killed process stops: it leaves the network at once
    /// (nothing more is sent or received), its log's writer stops before its next write
    /// (not even the commit point is recorded) and no further snapshot is written. Its tasks
    /// wind down in the background.
    ///
    /// To simulate a power loss, cut the power of its storage first (the writer may be in the
    /// middle of a write, as a kill can be), then reopen the node on the crash image.
    ///
    /// It takes `&self`, as a kill does not wait for the calls in flight: those still
    /// running through this handle fail ([`Error::Closed`], [`Error::Stopped`] or, for a
    /// commit already handed over, [`Error::Indeterminate`] or, once the leader applied it,
    /// [`Error::Lagging`]), and so does every later call.
    ///
    /// It may block the calling thread for as long as the log's current write or sync takes,
    /// when this handle turns out to be the last one on the log and so waits for its writer
    /// to stop.
    ///
    /// The log's writer thread releases the directory's lock when it stops, which can be
    /// after this returns (it finishes the write or sync it is in). Reopening the same
    /// directory meanwhile fails with [`Error::Io`] whose `op` is `"lock"` (kind
    /// `WouldBlock`), and succeeds once the writer is gone: retry it.
    pub fn halt(&self) {
        if self.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        self.halter.halt();
        self.machine.halt();
        self.leave();
        self.shutdown_in_background();
        warn!(node = self.id, "replicated store halted");
    }

    /// Leaves the network and stops the watchdog.
    fn leave(&self) {
        self.link.leave();
        if let Some(proposing) = self.proposing.lock().unwrap_or_else(PoisonError::into_inner).take() {
            proposing.abort();
        }
        if let Some(watchdog) = self.watchdog.lock().unwrap_or_else(PoisonError::into_inner).take() {
            watchdog.abort();
        }
    }

    fn shutdown_in_background(&self) {
        let raft = self.raft.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(async move { drop(raft.shutdown().await) })),
            // Without a runtime the core's tasks stop with the runtime that runs them.
            Err(_) => debug!(node = self.id, "no runtime to shut the Raft core down from"),
        }
    }
}

impl<S: State, Z: Serializer> Drop for ReplicatedStore<S, Z> {
    fn drop(&mut self) {
        if !self.stopped.load(Ordering::Acquire) {
            // A drop never waits: the core shuts down in the background and the log's
            // writer, once the core has dropped it, records the commit point and releases
            // the directory.
            self.leave();
            self.shutdown_in_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use airomem::PostcardSerializer;

    use super::ReplicatedStore;
    use crate::tests::Recorder;
    use crate::types::Applied;
    use crate::{Error, Network, NodeConfig, Role};

    /// The leader has applied the command (its answer names the seq and index), and this node
    /// stops before it applies that far: the command is committed, so the caller must not be
    /// told `Closed`, which says it was never handed over (a retry through a new handle, a
    /// new client, would run it twice).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_command_the_leader_applied_is_not_reported_closed_when_the_node_stops() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = lone_leader(dir.path()).await;
        let applied = store.status().applied_index.expect("the membership entry is applied");

        store.halt();
        // An answer for an entry past anything this node applied.
        let answered = applied + 10;
        let executed = Applied::Executed { seq: 7, index: answered, unix_nanos: 1 };
        let outcome = store.finish(answered, executed, Instant::now() + Duration::from_secs(10)).await;
        assert!(matches!(outcome, Err(Error::Lagging { seq: 7, index }) if index == answered), "{outcome:?}");
    }

    /// A group of one node, opened in `dir`, bootstrapped, leading.
    async fn lone_leader(dir: &std::path::Path) -> ReplicatedStore<Recorder> {
        let store = ReplicatedStore::<Recorder>::open(NodeConfig::new(1, dir), PostcardSerializer, &Network::new())
            .await
            .expect("opens");
        store.bootstrap([1]).await.expect("bootstraps");
        crate::tests::wait_for("node 1 to lead", || store.status().role == Role::Leader).await;
        store
    }

    /// Readers that arrive while a round runs share the next one: two hundred concurrent
    /// linearizable reads take at most two read-index rounds, not two hundred.
    ///
    /// On one thread, so that all two hundred are polled (and waiting) before the first
    /// round can finish: on two, a loaded machine let round one end while `join_all` was
    /// still polling, and the late readers needed a third (seen in CI: "3 rounds").
    #[tokio::test(flavor = "current_thread")]
    async fn concurrent_linearizable_reads_share_their_rounds() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = lone_leader(dir.path()).await;
        let before = store.reads.rounds();
        let reads = (0..200).map(|_| store.query_linearizable());
        for read in futures::future::join_all(reads).await {
            assert!(read.is_ok(), "a read failed");
        }
        let rounds = store.reads.rounds() - before;
        assert!((1..=2).contains(&rounds), "{rounds} rounds for 200 concurrent reads");
        store.close().await.expect("closes");
    }
}
