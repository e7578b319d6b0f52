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
//! Owner: the [`crate::ReplicatedStore`] that spawned it aborts the task when it closes, halts
//! or drops; the batches already handed to the core finish (or fail) in their own tasks and
//! answer their callers either way.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Raft};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::types::{Applied, Command, NodeId, Request, TypeConfig};

/// Entries a node's proposer has proposed and not yet had answered (an answer comes once the
/// entry is committed and applied): while one is replicated and applied, the next is already
/// being appended, so the core never idles between them. Measured at 64 writers: 1, 2 and 4
/// gave 54k, 60k and 40k commands/s (more in flight means smaller batches, more syncs).
const IN_FLIGHT: usize = 2;

/// The most commands in one entry: bounds the entry (openraft ships up to 300 entries per
/// message) and the work one apply does under the state's lock.
const MAX_BATCH: usize = 1024;

/// What a proposal gets back: the log index of the entry that carried it and its outcome, or
/// the core's refusal (not the leader, shutting down).
pub(crate) type Answer = Result<(u64, Applied), RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>>;

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
    /// Starts the proposer of the node whose core is `raft`.
    pub(crate) fn spawn(raft: Raft<TypeConfig>) -> (Proposer, JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Proposer { tx }, tokio::spawn(run(raft, rx)))
    }

    /// Proposes `request`; `None` when the proposer is gone (its node closed or halted)
    /// before it answered, with the outcome unknown.
    pub(crate) async fn propose(&self, request: Request) -> Option<Answer> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Proposal { request, reply }).ok()?;
        answer.await.ok()
    }
}

async fn run(raft: Raft<TypeConfig>, mut rx: mpsc::UnboundedReceiver<Proposal>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        // Waiting for a slot is when the next batch grows.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else { break };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(proposal) => batch.push(proposal),
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            let (requests, replies): (Vec<Request>, Vec<oneshot::Sender<Answer>>) =
                batch.into_iter().map(|p| (p.request, p.reply)).unzip();
            // The leader stamps the time: every replica executes with the leader's clock.
            let written = raft.client_write(Command { unix_nanos: unix_nanos_now(), requests: requests.into() }).await;
            drop(slot);
            match written {
                Ok(response) => {
                    let index = response.log_id.index;
                    for (reply, applied) in replies.into_iter().zip(response.data) {
                        drop(reply.send(Ok((index, applied))));
                    }
                }
                Err(e) => {
                    for reply in replies {
                        drop(reply.send(Err(e.clone())));
                    }
                }
            }
        });
    }
}

fn unix_nanos_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
