//! What a call that arrives at a node reaches ([`Local`]), and why a call got no answer
//! ([`Failure`]).

use std::sync::Arc;

use openraft::Raft;
use openraft::raft::AppendEntriesResponse;

use crate::Error;
use crate::proposer::Proposer;
use crate::status::Status;
use crate::transport::admin::{self, Target};
use crate::transport::contact::Contact;
use crate::transport::rpc::{Call, Reply};
use crate::types::{NodeId, TypeConfig};

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
            Call::Admin(call) => {
                let target =
                    Target { id: self.id, raft: &self.raft, status: &*self.status, min_voters: self.min_voters };
                Reply::Admin(admin::handle(&target, call).await)
            }
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

/// A transport's setup error.
pub(crate) fn invalid(reason: impl Into<String>) -> Error {
    Error::InvalidConfig { reason: reason.into() }
}
