//! openraft's view of a [`Link`]: its network factory and per-peer clients.

use std::io;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use openraft::BasicNode;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};

use crate::transport::link::Link;
use crate::transport::local::Failure;
use crate::transport::rpc::{Call, Reply};
use crate::types::{NodeId, TypeConfig};

/// Makes openraft's clients of one node's link.
///
/// openraft needs the factory before the node's core exists, and the link needs the core (to
/// hand it the calls that arrive), so the link is filled in once the node is attached; a call
/// before that is not delivered.
pub(crate) struct Connector {
    pub(crate) link: Arc<OnceLock<Link>>,
}

/// openraft's client of one peer.
pub(crate) struct Connection {
    link: Arc<OnceLock<Link>>,
    target: NodeId,
}

impl RaftNetworkFactory<TypeConfig> for Connector {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Connection {
        // The membership names each node's address; a node added later is reached through it.
        if let Some(link) = self.link.get()
            && !node.addr.is_empty()
        {
            link.learn_address(target, &node.addr);
        }
        Connection { link: Arc::clone(&self.link), target }
    }
}

/// A peer's answer to a Raft call: `None` when it answered with a reply of another kind.
type Answered<T, E> = Option<Result<T, RaftError<NodeId, E>>>;

type RpcResult<T, E = openraft::error::Infallible> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl Connection {
    async fn send(&self, call: Call, option: &RPCOption) -> Result<Reply, Failure> {
        // openraft's hard deadline for this RPC (a heartbeat interval for appends, the
        // snapshot timeout for chunks): past it the answer is useless to the core.
        let Some(link) = self.link.get() else {
            return Err(Failure::NotDelivered("the node is still starting".into()));
        };
        link.call(self.target, call, option.hard_ttl()).await
    }

    #[expect(clippy::result_large_err, reason = "the error type is openraft's, returned as openraft's trait requires")]
    fn answer<T, E: std::error::Error>(&self, outcome: Result<Answered<T, E>, Failure>) -> RpcResult<T, E> {
        match outcome {
            Ok(Some(Ok(answer))) => Ok(answer),
            Ok(Some(Err(e))) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            // The peer answered something else: a mismatched peer. Not `Unreachable`, so it
            // is visible, but openraft retries it no faster than a heartbeat.
            Ok(None) => Err(RPCError::Network(NetworkError::new(&io::Error::new(
                io::ErrorKind::InvalidData,
                format!("node {} sent an unexpected reply", self.target),
            )))),
            // Unreachable makes openraft back off (see `backoff`) instead of retrying at once
            // and logging each failure.
            Err(Failure::NotDelivered(why)) => {
                Err(RPCError::Unreachable(Unreachable::new(&io::Error::new(io::ErrorKind::NotConnected, why))))
            }
            Err(Failure::AnswerLost(why)) => {
                Err(RPCError::Unreachable(Unreachable::new(&io::Error::new(io::ErrorKind::TimedOut, why))))
            }
        }
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let entries = rpc.entries.len();
        let outcome = match self.send(Call::Append(rpc), &option).await {
            Ok(Reply::Append(answer)) => Ok(Some(answer)),
            Ok(Reply::Refused(why)) if why.starts_with(crate::transport::tcp::TOO_LARGE) && entries > 1 => {
                // Half as many entries next time: openraft splits the request.
                return Err(RPCError::PayloadTooLarge(openraft::error::PayloadTooLarge::new_entries_hint(
                    (entries / 2) as u64,
                )));
            }
            Ok(_) => Ok(None),
            Err(f) => Err(f),
        };
        self.answer(outcome)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        let outcome = match self.send(Call::Snapshot(rpc), &option).await {
            Ok(Reply::Snapshot(answer)) => Ok(Some(answer)),
            Ok(_) => Ok(None),
            Err(f) => Err(f),
        };
        self.answer(outcome)
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> RpcResult<VoteResponse<NodeId>> {
        let mine = rpc.last_log_id;
        let outcome = match self.send(Call::Vote(rpc), &option).await {
            Ok(Reply::Vote(answer)) => Ok(Some(answer)),
            Ok(_) => Ok(None),
            Err(f) => Err(f),
        };
        if let Ok(Some(Ok(answer))) = &outcome
            && !answer.vote_granted
            && answer.last_log_id > mine
        {
            // The election watchdog must leave this node to openraft's own timer, which
            // waits longer after seeing a longer log (see `watchdog`).
            if let Some(link) = self.link.get() {
                link.local().contact.saw_longer_log();
            }
        }
        self.answer(outcome)
    }

    fn backoff(&self) -> Backoff {
        match self.link.get() {
            Some(link) => Backoff::new(link.backoff()),
            None => Backoff::new(std::iter::repeat(Duration::from_millis(50))),
        }
    }
}
