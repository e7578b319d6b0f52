//! Three nodes in one process over a channel-free in-memory router: commands committed
//! through the leader are applied by every replica, in the same order, with the same context.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use airomem::PostcardSerializer;
use airomem::storage::StdStorage;
use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::{BasicNode, Config, Raft};

use super::Recorder;
use crate::log::{LogOptions, LogStore};
use crate::proposer::{Answer, Proposer};
use crate::state_machine::StateMachine;
use crate::types::{Applied, Command, NodeId, Request, TypeConfig};

type Machine = StateMachine<Recorder, PostcardSerializer>;

/// Delivers each RPC by calling the target node's `Raft` handle directly.
#[derive(Clone, Default)]
struct Router {
    nodes: Arc<Mutex<BTreeMap<NodeId, Raft<TypeConfig>>>>,
}

impl Router {
    fn get(&self, id: NodeId) -> Option<Raft<TypeConfig>> {
        self.nodes.lock().unwrap_or_else(PoisonError::into_inner).get(&id).cloned()
    }
}

struct Connection {
    router: Router,
    target: NodeId,
}

fn unreachable<E: std::error::Error>() -> RPCError<NodeId, BasicNode, E> {
    RPCError::Unreachable(Unreachable::new(&io::Error::new(io::ErrorKind::NotConnected, "no such node")))
}

impl RaftNetworkFactory<TypeConfig> for Router {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> Connection {
        Connection { router: self.clone(), target }
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let raft = self.router.get(self.target).ok_or_else(unreachable)?;
        raft.append_entries(rpc).await.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        let raft = self.router.get(self.target).ok_or_else(unreachable)?;
        raft.install_snapshot(rpc).await.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let raft = self.router.get(self.target).ok_or_else(unreachable)?;
        raft.vote(rpc).await.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

const WAIT: Option<Duration> = Some(Duration::from_secs(20));

/// Three nodes in `dir`, initialized and with a leader: the router, each node's `Raft` and
/// state machine, and the leader's `Raft`.
async fn start(dir: &std::path::Path) -> (Arc<Config>, Router, Vec<Raft<TypeConfig>>, Vec<Machine>, Raft<TypeConfig>) {
    // Long election timeouts: the test machine is small and shared, and a late heartbeat must
    // not depose the leader mid-test.
    let config = Config {
        heartbeat_interval: 100,
        election_timeout_min: 1_000,
        election_timeout_max: 2_000,
        ..Default::default()
    };
    let config = Arc::new(config.validate().expect("a valid config"));
    let router = Router::default();
    let mut machines = Vec::new();
    let mut rafts = Vec::new();
    for id in 1..=3u64 {
        let node_dir = dir.join(id.to_string());
        let storage = Arc::new(StdStorage::default());
        let log = LogStore::open(storage.clone(), &node_dir.join("log"), LogOptions::default()).expect("log opens");
        let machine =
            Machine::open(storage, &node_dir.join("snapshots"), PostcardSerializer, log.reader()).expect("opens");
        machines.push(machine.clone());
        let raft = Raft::new(id, Arc::clone(&config), router.clone(), log, machine).await.expect("node starts");
        router.nodes.lock().unwrap_or_else(PoisonError::into_inner).insert(id, raft.clone());
        rafts.push(raft);
    }
    rafts[0].initialize(BTreeSet::from([1, 2, 3])).await.expect("initializes");
    let metrics = rafts[0].wait(WAIT).metrics(|m| m.current_leader.is_some(), "a leader").await.expect("elects");
    let leader = router.get(metrics.current_leader.expect("checked")).expect("a member");
    (config, router, rafts, machines, leader)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_commit_and_every_replica_applies_the_same_commands() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (config, _router, rafts, machines, leader) = start(dir.path()).await;

    let mut last = 0;
    for value in 1..=20u64 {
        let mut bytes = Vec::new();
        airomem::Serializer::encode(&PostcardSerializer, &value, &mut bytes).expect("encodes");
        let reply = leader
            .client_write(Command {
                unix_nanos: value * 1_000,
                requests: vec![Request { client: 7, serial: value, low_water: value, bytes }].into(),
            })
            .await
            .expect("commits");
        assert_eq!(
            reply.data,
            vec![Applied::Executed { seq: value, index: reply.log_id.index, unix_nanos: value * 1_000 }]
        );
        last = reply.log_id.index;
    }
    let expected: Vec<(u64, u64, u64)> = (1..=20).map(|v| (v, v, v * 1_000)).collect();
    for (raft, machine) in rafts.iter().zip(&machines) {
        raft.wait(WAIT).applied_index_at_least(Some(last), "applied").await.expect("catches up");
        assert_eq!(machine.query(|s| s.seen.clone()), expected);
    }
    for raft in rafts {
        raft.shutdown().await.expect("shuts down");
    }
    drop(machines);

    // Restarted, each node rebuilds its state from its own log up to the commit point it
    // recorded, before any election.
    for id in 1..=3u64 {
        let node_dir = dir.path().join(id.to_string());
        let storage = Arc::new(StdStorage::default());
        let log = LogStore::open(storage.clone(), &node_dir.join("log"), LogOptions::default()).expect("log reopens");
        let machine =
            Machine::open(storage, &node_dir.join("snapshots"), PostcardSerializer, log.reader()).expect("reopens");
        let raft = Raft::new(id, Arc::clone(&config), Router::default(), log, machine.clone()).await.expect("restarts");
        assert_eq!(machine.query(|s| s.seen.clone()), expected, "node {id} after a restart");
        raft.shutdown().await.expect("shuts down");
    }
}

/// A leader cut off from its followers stays leader (openraft 0.9 steps down only for a
/// membership change), so its entries are never answered: the proposer gives each up after
/// its bound and releases the slot, and more proposals than it has slots are all answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_a_cut_off_leader_cannot_commit_is_given_up_after_the_bound() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (_config, router, rafts, _machines, leader) = start(dir.path()).await;
    // The followers stop: nothing reaches the leader, nor does it reach anyone.
    let leader_id = leader.metrics().borrow().id;
    router.nodes.lock().unwrap_or_else(PoisonError::into_inner).retain(|&id, _| id == leader_id);
    for raft in rafts.into_iter().filter(|raft| raft.metrics().borrow().id != leader_id) {
        raft.shutdown().await.expect("shuts down");
    }
    let (proposer, proposing) = Proposer::spawn(leader.clone(), Duration::from_millis(200), usize::MAX);

    for serial in 1..=3u64 {
        let request = Request { client: 7, serial, low_water: serial, bytes: vec![0] };
        let answer = tokio::time::timeout(Duration::from_secs(20), proposer.propose(request)).await;
        assert!(
            matches!(&answer, Ok(Some(Answer::Abandoned(why))) if why == "the entry was not committed in time"),
            "proposal {serial}: {answer:?}"
        );
    }
    assert!(leader.metrics().borrow().state.is_leader(), "the cut-off node still leads");
    proposing.abort();
    leader.shutdown().await.expect("shuts down");
}
