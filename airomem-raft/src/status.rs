//! What a node reports about itself and its group: [`Status`], [`Role`], [`Members`].
//! Serializable, for the admin endpoint and `airomem cluster … --json`.

use std::collections::BTreeMap;

use openraft::{Raft, ServerState};
use serde::{Deserialize, Serialize};

use crate::types::{NodeId, TypeConfig};

/// What a node is doing in its Raft group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Role {
    /// It leads: commits go through it.
    Leader,
    /// It follows a leader (or waits for one).
    Follower,
    /// It stands for election.
    Candidate,
    /// It is not a voter: not yet bootstrapped, or not a member.
    Learner,
    /// It is stopping.
    Shutdown,
}

/// A node's view of its group, from [`crate::ReplicatedStore::status`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Status {
    /// This node's id.
    pub id: u64,
    /// Its role.
    pub role: Role,
    /// The leader it knows of, if any (possibly stale: a dead leader stays here until an
    /// election replaces it).
    pub leader: Option<u64>,
    /// Its current term.
    pub term: u64,
    /// The last index in its log, committed or not (a leader cut off from the others keeps
    /// appending entries that may never commit).
    pub last_log_index: Option<u64>,
    /// The last log index it knows committed.
    pub commit_index: Option<u64>,
    /// The last log index applied to its state.
    pub applied_index: Option<u64>,
    /// How many commands its state has executed: the `seq` of the last one.
    pub applied_seq: u64,
    /// The last log index its newest snapshot covers (built here or installed from the
    /// leader).
    pub snapshot_index: Option<u64>,
    /// The last log index removed from its log (covered by a snapshot).
    pub purged_index: Option<u64>,
}

/// The members of a group, from [`crate::ReplicatedStore::members`]: each node's id with the
/// address its peers reach it at (empty on the in-process network).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Members {
    /// The voters: a majority of them must hold an entry for it to commit.
    pub voters: BTreeMap<u64, String>,
    /// The learners: they receive every entry but do not vote.
    pub learners: BTreeMap<u64, String>,
    /// The leader the answering node knows of.
    pub leader: Option<u64>,
}

/// The status of node `id` from its core's metrics and its state machine's progress
/// (`(applied index, applied seq)`) and commit point.
pub(crate) fn status_of(
    id: NodeId,
    raft: &Raft<TypeConfig>,
    (applied_index, applied_seq): (Option<u64>, u64),
    commit_index: Option<u64>,
) -> Status {
    let metrics = raft.metrics();
    let metrics = metrics.borrow();
    let role = match metrics.state {
        ServerState::Leader => Role::Leader,
        ServerState::Follower => Role::Follower,
        ServerState::Candidate => Role::Candidate,
        ServerState::Learner => Role::Learner,
        ServerState::Shutdown => Role::Shutdown,
    };
    Status {
        id,
        role: if metrics.running_state.is_err() { Role::Shutdown } else { role },
        leader: metrics.current_leader,
        term: metrics.current_term,
        last_log_index: metrics.last_log_index,
        commit_index,
        applied_index,
        applied_seq,
        snapshot_index: metrics.snapshot.map(|id| id.index),
        purged_index: metrics.purged.map(|id| id.index),
    }
}
