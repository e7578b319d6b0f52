//! The election watchdog.
//!
//! openraft 0.9 draws each node's election timeout once, at start. When a leader dies, two
//! survivors whose timeouts are close can split the vote, time out together and split it
//! again, round after round (openraft#1838, fixed in 0.10 only). The watchdog breaks the
//! tie from outside: when its node, a voter, has heard from no leader for 2× the maximum
//! election timeout, it waits a random jitter (up to the maximum election timeout) and, if
//! still no leader has shown up, makes the node stand for election. Normal elections finish
//! well within 2× the maximum, so the watchdog only acts when they did not.
//!
//! A node that lags behind must not be pushed: it cannot win (the others refuse a candidate
//! whose log is shorter than theirs), and each attempt raises the term. openraft makes such a
//! node wait 2× the maximum election timeout longer before it stands again, so that a node
//! with the full log goes first; a watchdog that ignored this made the lagging node stand
//! every round, and when its id was the higher one the node with the full log always stood at
//! the same term and lost on the id: failovers of 3 to 11 s instead of 0.6 s (leader-kill test,
//! seen in the log). So the watchdog stays out for [`LAGGING_DEFERRAL`] after one of its
//! node's vote requests was refused by a node with a longer log (the network records it).

use std::sync::Arc;
use std::time::Duration;

use openraft::{Raft, ServerState};
use tokio::task::JoinHandle;
use tracing::{debug, info};

use crate::transport::{Contact, random_u64};
use crate::types::{NodeId, TypeConfig};

/// Starts the watchdog of node `id`. The task runs until the node's Raft core stops or the
/// returned handle is aborted (the store does both when it closes or halts).
pub(crate) fn spawn(
    raft: Raft<TypeConfig>,
    id: NodeId,
    contact: Arc<Contact>,
    election_max: Duration,
) -> JoinHandle<()> {
    tokio::spawn(run(raft, id, contact, election_max))
}

/// Whether the node is a voter that is not leading: the only nodes that need a leader.
/// `None` once the Raft core has stopped.
fn waits_for_a_leader(raft: &Raft<TypeConfig>, id: NodeId) -> Option<bool> {
    let metrics = raft.metrics();
    let metrics = metrics.borrow();
    if metrics.running_state.is_err() || metrics.state == ServerState::Shutdown {
        return None;
    }
    let voter = metrics.membership_config.membership().voter_ids().any(|v| v == id);
    Some(voter && metrics.state != ServerState::Leader)
}

/// How long after its vote request was refused for a shorter log the watchdog leaves a node to
/// openraft's own election timer, in maximum election timeouts: openraft's extra wait for a
/// node that saw a longer log (2×) plus its election timeout (at most 1×).
const LAGGING_DEFERRAL: u32 = 3;

async fn run(raft: Raft<TypeConfig>, id: NodeId, contact: Arc<Contact>, election_max: Duration) {
    let patience = election_max * 2;
    let deferral = election_max * LAGGING_DEFERRAL;
    let tick = (election_max / 4).max(Duration::from_millis(5));
    let max_jitter_ms = u64::try_from(election_max.as_millis()).unwrap_or(u64::MAX).max(1);
    loop {
        tokio::time::sleep(tick).await;
        match waits_for_a_leader(&raft, id) {
            None => break,
            // A leader, a learner or an uninitialized node: the clock restarts from now.
            Some(false) => contact.touch(),
            Some(true) if contact.elapsed() < patience => {}
            Some(true) => {
                let jitter = Duration::from_millis(random_u64() % max_jitter_ms);
                tokio::time::sleep(jitter).await;
                if contact.elapsed() < patience || waits_for_a_leader(&raft, id) != Some(true) {
                    continue;
                }
                if contact.since_longer_log().is_some_and(|since| since < deferral) {
                    debug!(node = id, "no leader, but a peer has a longer log: leaving the election to it");
                    continue;
                }
                info!(
                    node = id,
                    silent_ms = contact.elapsed().as_millis() as u64,
                    "no leader heard from; standing for election"
                );
                if !stand(&raft, id, election_max).await {
                    break;
                }
                // Give this election a full round before trying again.
                contact.touch();
            }
        }
    }
    debug!(node = id, "election watchdog stopped");
}

/// Makes the node stand for election; `false` once the Raft core has stopped.
///
/// A candidate whose request meets a vote already cast in the same term by a node of higher
/// id loses on the id alone, and adopts that vote: in openraft 0.9 a vote is a (term, node)
/// pair, ordered by term, then id. When the other node lags, it cannot win either, and a node
/// with the full log that always comes second stands at the term the other already took,
/// round after round. So when this candidacy ends on such a vote, with no leader, the node
/// stands again at once, at the next term, which the lagging node then grants.
async fn stand(raft: &Raft<TypeConfig>, id: NodeId, election_max: Duration) -> bool {
    let before = raft.metrics().borrow().current_term;
    if raft.trigger().elect().await.is_err() {
        return false;
    }
    // The candidacy starts when the core takes the command, with a new term.
    let started = raft.wait(Some(election_max / 2)).metrics(|m| m.current_term > before, "the candidacy started").await;
    let Ok(started) = started else { return true };
    let term = started.current_term;
    let decided = raft
        .wait(Some(election_max / 2))
        .metrics(|m| m.state != ServerState::Candidate || m.current_term != term, "the candidacy decided")
        .await;
    let Ok(metrics) = decided else { return true };
    let leader_id = metrics.vote.leader_id();
    if metrics.current_leader.is_none()
        && metrics.state != ServerState::Leader
        && leader_id.term == term
        && leader_id.voted_for() != Some(id)
    {
        info!(node = id, term, "lost the vote on the node id at an equal term; standing again at the next");
        return raft.trigger().elect().await.is_ok();
    }
    true
}
