//! The proposer: turns the commands that reach a node, from its own handles and through the
//! network from other nodes', into log entries of several commands each.
//!
//! openraft 0.9's core awaits each append's flush before it takes the next client write
//! (`RaftCore::append_to_log`), so a leader proposing one command per entry pays one
//! `fdatasync` per command, however many callers wait: measured with three nodes on one disk
//! and 64 writers, the leader flushed one entry at a time and the group committed 1–7k
//! commands/s. The proposer keeps at most [`IN_FLIGHT`] entries in the core at once and, while
//! they are taken in, gathers whatever arrives into the next one: group commit above the log.
//!
//! A slot is held until the entry is answered, or until it no longer can be: when the node
//! stops leading the term it proposed in (it stepped down, or a new term began), or after a
//! bound. openraft 0.9 answers a `client_write` whose entry a new leader truncates
//! (`ForwardToLeader`), but not one whose entry a snapshot install purges: the following
//! handler purges the whole log when it lacks the snapshot's last entry, and the entry's
//! responder stays in the core forever. Holding the slot for it wedged the node: elected
//! again, it proposed nothing (issue 22, section 4). The callers of an entry given up on are
//! told so ([`Answer::Abandoned`]): the entry may still commit under a new leader, so the
//! outcome is unknown, and their retries (same client and serial) are answered from the
//! session table if it did.
//!
//! Owner: the [`crate::ReplicatedStore`] that spawned it aborts the task when it closes, halts
//! or drops; the batches already handed to the core finish (or fail) in their own tasks and
//! answer their callers either way.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openraft::error::{ClientWriteError, RaftError};
use openraft::metrics::RaftServerMetrics;
use openraft::{BasicNode, Raft, ServerState};
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::debug;

use crate::types::{Applied, Command, NodeId, Request, TypeConfig, Vote};

/// Entries a node's proposer has proposed and not yet had answered (an answer comes once the
/// entry is committed and applied): while one is replicated and applied, the next is already
/// being appended, so the core never idles between them. Measured at 64 writers: 1, 2 and 4
/// gave 54k, 60k and 40k commands/s (more in flight means smaller batches, more syncs).
const IN_FLIGHT: usize = 2;

/// The most commands in one entry: bounds the entry (openraft ships up to 300 entries per
/// message) and the work one apply does under the state's lock.
const MAX_BATCH: usize = 1024;

/// The most bytes of commands gathered into one entry (a command larger than this goes
/// alone). openraft 0.9 gives an append one heartbeat interval to arrive and be made durable
/// on the follower, and never splits an entry: a batch of many megabytes would time out again
/// and again.
const MAX_BATCH_BYTES: usize = 1024 * 1024;

/// What a proposal gets back.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Answer {
    /// The entry committed and this node applied it: its log index and the command's outcome.
    Applied(u64, Applied),
    /// The core refused the write (not the leader, shutting down) or failed it.
    Failed(RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>),
    /// The proposer stopped waiting for the entry, for the reason given: it may or may not
    /// commit.
    Abandoned(String),
}

struct Proposal {
    request: Request,
    reply: oneshot::Sender<Answer>,
}

/// A node's proposer, as its peers reach it.
#[derive(Clone)]
pub(crate) struct Proposer {
    tx: mpsc::UnboundedSender<Proposal>,
}

impl Proposer {
    /// Starts the proposer of the node whose core is `raft`. An entry still unanswered after
    /// `give_up_after` releases its slot; by then its callers have stopped waiting for this
    /// attempt (the store passes its attempt timeout). An entry's commands take at most
    /// `entry_bytes` together (the transport's limit) and [`MAX_BATCH_BYTES`], unless one
    /// alone is larger.
    pub(crate) fn spawn(
        raft: Raft<TypeConfig>,
        give_up_after: Duration,
        entry_bytes: usize,
    ) -> (Proposer, JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Proposer { tx }, tokio::spawn(run(raft, rx, give_up_after, entry_bytes)))
    }

    /// Proposes `request`; `None` when the proposer is gone (its node closed or halted)
    /// before it answered, with the outcome unknown.
    pub(crate) async fn propose(&self, request: Request) -> Option<Answer> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Proposal { request, reply }).ok()?;
        answer.await.ok()
    }
}

async fn run(
    raft: Raft<TypeConfig>,
    mut rx: mpsc::UnboundedReceiver<Proposal>,
    give_up_after: Duration,
    entry_bytes: usize,
) {
    let entry_bytes = entry_bytes.min(MAX_BATCH_BYTES);
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    // A proposal that did not fit the previous batch opens the next one.
    let mut held = None;
    loop {
        let first = match held.take() {
            Some(first) => first,
            None => match rx.recv().await {
                Some(first) => first,
                None => break,
            },
        };
        // Waiting for a slot is when the next batch grows.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else { break };
        let mut bytes = first.request.bytes.len();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            let Ok(proposal) = rx.try_recv() else { break };
            // An entry travels whole: the transport can split an append between entries,
            // never inside one.
            bytes += proposal.request.bytes.len();
            if bytes > entry_bytes {
                held = Some(proposal);
                break;
            }
            batch.push(proposal);
        }
        // A caller that stopped waiting (its attempt timed out) retries as a new proposal, if
        // at all: proposing the stale copy would only add an entry nobody waits for.
        batch.retain(|p| !p.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        tokio::spawn(propose(raft.clone(), batch, slot, give_up_after));
    }
}

/// Proposes one entry, holding `slot` until it is answered or given up on, and answers its
/// callers.
async fn propose(raft: Raft<TypeConfig>, batch: Vec<Proposal>, slot: OwnedSemaphorePermit, give_up_after: Duration) {
    let (requests, replies): (Vec<Request>, Vec<oneshot::Sender<Answer>>) =
        batch.into_iter().map(|p| (p.request, p.reply)).unzip();
    let mut server = raft.server_metrics();
    // Read before the write: a change after it is a change after the proposal.
    let vote = server.borrow_and_update().vote;
    // The leader stamps the time: every replica executes with the leader's clock.
    let command = Command { unix_nanos: unix_nanos_now(), requests: requests.into() };
    let written = tokio::select! {
        written = raft.client_write(command) => Ok(written),
        why = no_longer_leading(&mut server, vote) => Err(why),
        () = tokio::time::sleep(give_up_after) => Err("the entry was not committed in time"),
    };
    drop(slot);
    match written {
        Ok(Ok(response)) => {
            let index = response.log_id.index;
            for (reply, applied) in replies.into_iter().zip(response.data) {
                drop(reply.send(Answer::Applied(index, applied)));
            }
        }
        Ok(Err(e)) => {
            for reply in replies {
                drop(reply.send(Answer::Failed(e.clone())));
            }
        }
        Err(why) => {
            debug!(why, commands = replies.len(), "gave up waiting for a proposed entry");
            for reply in replies {
                drop(reply.send(Answer::Abandoned(why.to_owned())));
            }
        }
    }
}

/// Returns once the node no longer leads under `vote`, the vote it held when it proposed:
/// past that, openraft may never answer the entry (see the module docs).
async fn no_longer_leading(
    server: &mut watch::Receiver<RaftServerMetrics<NodeId, BasicNode>>,
    vote: Vote,
) -> &'static str {
    loop {
        if server.changed().await.is_err() {
            // The core stopped: `client_write` fails on its own.
            return std::future::pending().await;
        }
        let metrics = server.borrow_and_update();
        if metrics.state != ServerState::Leader || metrics.vote != vote {
            return "the node stopped leading the term it proposed the entry in";
        }
    }
}

fn unix_nanos_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
