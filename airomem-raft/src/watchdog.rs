//! The election watchdog.
//!
//! openraft 0.9 draws each node's election timeout once, at start. When a leader dies, two
//! survivors whose timeouts are close can split the vote, time out together and split it
//! again, round after round (openraft#1838, fixed in 0.10 only). The watchdog breaks the
//! tie from outside: when its node, a voter, has heard from no leader for 2× the maximum
//! election timeout, it waits a random jitter (up to the maximum election timeout) and, if
//! still no leader has shown up, makes the node stand for election. Normal elections finish
//! well within 2× the maximum, so the watchdog only acts when they did not.

use std::sync::Arc;
use std::time::Duration;

use openraft::{Raft, ServerState};
use tokio::task::JoinHandle;
use tracing::{debug, info};

use crate::network::{Contact, random_u64};
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

async fn run(raft: Raft<TypeConfig>, id: NodeId, contact: Arc<Contact>, election_max: Duration) {
    let patience = election_max * 2;
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
                info!(
                    node = id,
                    silent_ms = contact.elapsed().as_millis() as u64,
                    "no leader heard from; standing for election"
                );
                if raft.trigger().elect().await.is_err() {
                    break;
                }
                // Give this election a full round before trying again.
                contact.touch();
            }
        }
    }
    debug!(node = id, "election watchdog stopped");
}
