//! The messages between nodes: one [`Call`], one [`Reply`]. On TCP each is the postcard
//! payload of one frame; in process they are passed as they are.

use openraft::BasicNode;
use openraft::error::{CheckIsLeaderError, InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::{Deserialize, Serialize};

use crate::proposer::Answer;
use crate::transport::admin::{AdminCall, AdminOutcome};
use crate::types::{LogId, NodeId, Request, TypeConfig};

/// A call from one node (or an admin client) to another.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Call {
    /// Raft: replicate entries (or a heartbeat).
    Append(AppendEntriesRequest<TypeConfig>),
    /// Raft: one chunk of a snapshot.
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    /// Raft: a vote request.
    Vote(VoteRequest<NodeId>),
    /// A client's command, forwarded to the node believed to lead.
    Propose(Request),
    /// A linearizable read's first step: the leader confirms its leadership with a quorum
    /// and names the log index the read must wait for.
    ReadIndex,
    /// A membership change or a status request.
    Admin(AdminCall),
}

impl Call {
    /// A short name, for logs and errors.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Call::Append(_) => "append",
            Call::Snapshot(_) => "snapshot chunk",
            Call::Vote(_) => "vote",
            Call::Propose(_) => "forwarded command",
            Call::ReadIndex => "read index",
            Call::Admin(_) => "admin call",
        }
    }
}

/// The reply to a [`Call`] of the same name.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Reply {
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Snapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    /// `None`: the proposer is gone (the node is stopping); the outcome is unknown.
    Proposed(Option<Answer>),
    ReadIndex(Result<Option<LogId>, RaftError<NodeId, CheckIsLeaderError<NodeId, BasicNode>>>),
    Admin(AdminOutcome),
    /// The receiver could not decode the call, or refused it on this connection (a Raft
    /// call on an admin connection): a bug or a mismatched peer, never retried as is.
    Refused(String),
}
