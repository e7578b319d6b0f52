//! Linearizable reads in rounds: concurrent readers share one read-index round trip to the
//! leader instead of one each.
//!
//! A round may serve only the readers that arrived before it began: one that began earlier
//! could have learned its commit index before a command acknowledged to the reader. So a
//! reader joins the next round; while one round runs, the readers that arrive wait for it to
//! end and then go together in the next. Under load each round serves every reader that came
//! during the previous one.
//!
//! Owner: each round runs in a task of its own (a reader that stops waiting does not cancel
//! it for the others); the task ends when no reader waits, and each round is bounded by the
//! attempt timeout.

use std::mem;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, RaftError};
use tokio::sync::oneshot;

use crate::transport::{Call, Link, Reply};

/// The outcome of one round: the log index a read must wait for (`None`: nothing committed
/// yet), or why the round failed.
type Outcome = Result<Option<u64>, String>;

#[derive(Default)]
struct Waiting {
    /// A round is running (its task will start the next one if readers wait).
    running: bool,
    /// The readers for the next round.
    next: Vec<oneshot::Sender<Outcome>>,
}

/// The rounds of one node.
#[derive(Clone, Default)]
pub(crate) struct ReadRounds {
    waiting: Arc<Mutex<Waiting>>,
    /// Rounds begun so far.
    rounds: Arc<AtomicU64>,
}

fn lock(waiting: &Mutex<Waiting>) -> MutexGuard<'_, Waiting> {
    // A push, a take or a flag: never left half done.
    waiting.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ReadRounds {
    /// The log index a linearizable read that begins now must see applied: the leader's
    /// commit index, learned in a round that began after this call.
    pub(crate) async fn read_index(&self, link: &Link, timeout: Duration) -> Outcome {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut waiting = lock(&self.waiting);
            waiting.next.push(tx);
            !mem::replace(&mut waiting.running, true)
        };
        if start {
            tokio::spawn(run(Arc::clone(&self.waiting), Arc::clone(&self.rounds), link.clone(), timeout));
        }
        rx.await.unwrap_or_else(|_| Err("the read's round was dropped".into()))
    }

    /// How many rounds this node has begun.
    #[cfg(test)]
    pub(crate) fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::Relaxed)
    }
}

async fn run(waiting: Arc<Mutex<Waiting>>, rounds: Arc<AtomicU64>, link: Link, timeout: Duration) {
    loop {
        let readers = {
            let mut waiting = lock(&waiting);
            if waiting.next.is_empty() {
                waiting.running = false;
                return;
            }
            mem::take(&mut waiting.next)
        };
        rounds.fetch_add(1, Ordering::Relaxed);
        let outcome = round(&link, timeout).await;
        for reader in readers {
            drop(reader.send(outcome.clone()));
        }
    }
}

/// One read-index request to the leader this node knows, following one redirect.
async fn round(link: &Link, timeout: Duration) -> Outcome {
    let mut leader = link.local().raft.metrics().borrow().current_leader;
    for _ in 0..2 {
        let Some(to) = leader else { return Err("no leader known".into()) };
        match link.call(to, Call::ReadIndex, timeout).await {
            Ok(Reply::ReadIndex(Ok(read))) => return Ok(read.map(|id| id.index)),
            Ok(Reply::ReadIndex(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))))) => {
                leader = f.leader_id.filter(|&next| next != to);
                if leader.is_none() {
                    return Err(format!("node {to} is not the leader"));
                }
            }
            Ok(Reply::ReadIndex(Err(e))) => return Err(format!("node {to}: {e}")),
            Ok(other) => return Err(format!("node {to} sent an unexpected reply: {other:?}")),
            Err(f) => return Err(f.reason()),
        }
    }
    Err("the leader changed during the read".into())
}
