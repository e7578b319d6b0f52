//! Membership changes and status, as calls any node answers: a node that does not lead
//! answers [`AdminOutcome::NotLeader`] naming the leader it knows, and the caller (a
//! `ReplicatedStore` or the `airomem cluster` command) asks that one.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, Raft};
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::Error;
use crate::status::{Members, Status};
use crate::types::{NodeId, TypeConfig};

/// A membership change or a question about the group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum AdminCall {
    /// The answering node's status.
    Status,
    /// The group's members, as the leader knows them.
    Members,
    /// Adds node `id`, listening at `addr`, as a learner; answered once it has caught up.
    AddLearner { id: NodeId, addr: String },
    /// Makes learners voters.
    Promote { ids: BTreeSet<NodeId> },
    /// Removes node `id` (voter or learner) from the group.
    Remove { id: NodeId, force: bool },
}

/// The answer to an [`AdminCall`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum AdminOutcome {
    /// The answering node's status.
    Status(Status),
    /// The group's members.
    Members(Members),
    /// The change is committed.
    Done,
    /// This node does not lead; the leader it knows of, with its address, if any.
    NotLeader { leader: Option<(NodeId, String)> },
    /// The change was refused and not made (below the minimum voters, no such learner…).
    Refused(String),
    /// The change failed or its outcome is unknown (the leader stepped down during it).
    Failed(String),
}

/// The node an admin call runs on.
pub(crate) struct Target<'a> {
    pub(crate) id: NodeId,
    pub(crate) raft: &'a Raft<TypeConfig>,
    pub(crate) status: &'a (dyn Fn() -> Status + Send + Sync),
    /// Refuse a removal that leaves fewer voters than this, unless forced.
    pub(crate) min_voters: usize,
}

/// Handles an admin call on this node: a question here, a change only on the leader.
pub(crate) async fn handle(local: &Target<'_>, call: AdminCall) -> AdminOutcome {
    let written = match call {
        AdminCall::Status => return AdminOutcome::Status((local.status)()),
        AdminCall::Members => return members(local).map_or_else(|| not_leader(local), AdminOutcome::Members),
        _ if local.raft.metrics().borrow().current_leader != Some(local.id) => return not_leader(local),
        AdminCall::AddLearner { id, addr } => {
            info!(node = local.id, learner = id, %addr, "adding a learner");
            match local.raft.add_learner(id, BasicNode::new(addr), true).await {
                Ok(_) => return caught_up(local, id).await,
                Err(e) => Err(e),
            }
        }
        AdminCall::Promote { ids } => {
            info!(node = local.id, ?ids, "promoting learners to voters");
            local.raft.change_membership(ChangeMembers::AddVoterIds(ids), false).await.map(drop)
        }
        AdminCall::Remove { id, force } => match remove(local, id, force).await {
            Ok(written) => written,
            Err(refused) => return refused,
        },
    };
    match written {
        Ok(()) => AdminOutcome::Done,
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => not_leader(local),
        Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => match e {
            ChangeMembershipError::InProgress(_) => AdminOutcome::Failed(e.to_string()),
            other => AdminOutcome::Refused(other.to_string()),
        },
        Err(e) => AdminOutcome::Failed(e.to_string()),
    }
}

/// What a membership change wrote: `Ok` once committed.
type Written = Result<(), RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>>;

/// Removes node `id`, unless that leaves fewer voters than the minimum (and not `force`),
/// or the last voter, or it is not a member: those are answered (`Err`) without a change.
async fn remove(local: &Target<'_>, id: NodeId, force: bool) -> Result<Written, AdminOutcome> {
    let Some(now) = members(local) else { return Err(not_leader(local)) };
    let voter = now.voters.contains_key(&id);
    if voter {
        let left = now.voters.len() - 1;
        if left < local.min_voters && !force {
            return Err(AdminOutcome::Refused(format!(
                "removing node {id} would leave {left} voters, below the minimum of {}; force it to proceed",
                local.min_voters
            )));
        }
        if left == 0 {
            return Err(AdminOutcome::Refused(format!("node {id} is the last voter")));
        }
    } else if !now.learners.contains_key(&id) {
        return Err(AdminOutcome::Refused(format!("node {id} is not a member")));
    }
    info!(node = local.id, removed = id, force, "removing a node");
    // Voter to learner first, then out: openraft refuses to remove a voter's node in one step.
    if voter {
        let demoted = local.raft.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), true).await;
        if let Err(e) = demoted {
            return Ok(Err(e));
        }
    }
    Ok(local.raft.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false).await.map(drop))
}

/// Waits until learner `id` holds every entry this leader had when it asked: openraft's
/// blocking `add_learner` returns once the learner is within `replication_lag_threshold`
/// entries (5,000 by default, each a batch of commands), which is not caught up.
async fn caught_up(local: &Target<'_>, id: NodeId) -> AdminOutcome {
    let target = local.raft.metrics().borrow().last_log_index;
    let matched = local
        .raft
        .wait(Some(ADMIN_TIMEOUT))
        .metrics(
            |m| {
                let matched = m.replication.as_ref().and_then(|r| r.get(&id).copied().flatten()).map(|l| l.index);
                matched >= target || m.current_leader != Some(local.id)
            },
            "the learner caught up",
        )
        .await;
    match matched {
        Ok(m) if m.current_leader == Some(local.id) => AdminOutcome::Done,
        Ok(_) => AdminOutcome::Failed("the leader changed while the learner caught up; it was added".into()),
        Err(e) => AdminOutcome::Failed(format!("the learner was added, but did not catch up: {e}")),
    }
}

/// The members as this node knows them; `None` if it knows of no group yet.
fn members(local: &Target<'_>) -> Option<Members> {
    let metrics = local.raft.metrics();
    let metrics = metrics.borrow();
    let membership = metrics.membership_config.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    if voters.is_empty() {
        return None;
    }
    let mut all = BTreeMap::new();
    for (id, node) in membership.nodes() {
        all.insert(*id, node.addr.clone());
    }
    let (voters, learners) = all.into_iter().partition(|(id, _)| voters.contains(id));
    Some(Members { voters, learners, leader: metrics.current_leader })
}

fn not_leader(local: &Target<'_>) -> AdminOutcome {
    let metrics = local.raft.metrics();
    let metrics = metrics.borrow();
    let leader = metrics.current_leader.filter(|&l| l != local.id).map(|l| {
        let addr = metrics.membership_config.membership().get_node(&l).map(|n| n.addr.clone()).unwrap_or_default();
        (l, addr)
    });
    AdminOutcome::NotLeader { leader }
}

/// How long one admin call may take: adding a learner waits for it to catch up, which for a
/// large state is a snapshot transfer.
pub(crate) const ADMIN_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// What a membership change's outcome means to its caller.
pub(crate) fn done(outcome: AdminOutcome) -> Result<(), Error> {
    match outcome {
        AdminOutcome::Done => Ok(()),
        AdminOutcome::Refused(reason) => Err(Error::Refused { reason }),
        AdminOutcome::Failed(reason) => Err(Error::Indeterminate { reason }),
        other => Err(Error::Unavailable { reason: format!("unexpected answer: {other:?}") }),
    }
}
