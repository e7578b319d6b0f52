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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_commit_and_every_replica_applies_the_same_commands() {
    const WAIT: Option<Duration> = Some(Duration::from_secs(20));
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
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut machines = Vec::new();
    let mut rafts = Vec::new();
    for id in 1..=3u64 {
        let node_dir = dir.path().join(id.to_string());
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
