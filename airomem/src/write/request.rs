//! What a caller hands the writer thread, and what it gets back: the request with its
//! commands, the reply that carries the outcome, and the receipts users see.

use std::time::{Duration, UNIX_EPOCH};

use airomem_core::{Seq, State};
use tokio::sync::{OwnedSemaphorePermit, oneshot};

use crate::Error;
use crate::meters::Stamp;
#[cfg(feature = "snapshot")]
use crate::snapshot::worker::SnapshotReply;

/// The receipt of a committed command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Committed {
    /// The command's sequence number.
    pub seq: Seq,
    /// Its recorded commit time, nanoseconds since the Unix epoch; what
    /// [`crate::CommitContext::current`] told the command.
    pub unix_nanos: u64,
}

/// The receipt of an atomic unit ([`Store::commit_all`](crate::Store::commit_all)): its commands got the consecutive
/// sequence numbers `first..=last` and one commit time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommittedUnit {
    /// The unit's first command.
    pub first: Seq,
    /// Its last command.
    pub last: Seq,
    /// Their recorded commit time, nanoseconds since the Unix epoch.
    pub unix_nanos: u64,
}

impl CommittedUnit {
    /// How many commands the unit holds.
    pub fn len(&self) -> u64 {
        self.last.0 - self.first.0 + 1
    }

    /// Never: a unit holds at least one command.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl Committed {
    /// The recorded commit time.
    pub fn time(&self) -> std::time::SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.unix_nanos)
    }
}

/// How the caller of one commit hears of its outcome.
pub(crate) enum Reply<S> {
    Receipt(oneshot::Sender<Result<Committed, Error>>),
    /// The receipt of an atomic unit.
    Unit(oneshot::Sender<Result<CommittedUnit, Error>>),
    /// Runs under the write lock right after the command, so it sees the state exactly as
    /// the command left it.
    Query(QueryReply<S>),
}

/// The closure behind [`Reply::Query`]: handed the state right after the command, or the
/// error; computes the caller's result and returns the step that delivers it.
pub(crate) type QueryReply<S> = Box<dyn FnOnce(Result<(&S, Committed), Error>) -> Deliver + Send>;

/// Tells a caller its outcome.
pub(crate) type Deliver = Box<dyn FnOnce() + Send>;

impl<S> Reply<S> {
    pub(crate) fn fail(self, error: Error) {
        self.prepare_failure(error).deliver();
    }

    pub(crate) fn prepare_failure(self, error: Error) -> Outcome {
        match self {
            Reply::Receipt(tx) => Outcome::Receipt(tx, Err(error)),
            Reply::Unit(tx) => Outcome::Unit(tx, Err(error)),
            Reply::Query(f) => Outcome::Deliver(f(Err(error))),
        }
    }

    /// The outcome of a request whose commands all succeeded: `first..=last`.
    pub(crate) fn prepare_success(self, state: &S, first: Seq, last: Seq, unix_nanos: u64) -> Outcome {
        let committed = Committed { seq: last, unix_nanos };
        match self {
            Reply::Receipt(tx) => Outcome::Receipt(tx, Ok(committed)),
            Reply::Unit(tx) => Outcome::Unit(tx, Ok(CommittedUnit { first, last, unix_nanos })),
            Reply::Query(f) => Outcome::Deliver(f(Ok((state, committed)))),
        }
    }
}

/// A caller's outcome, held back until the write lock is released and the counters are
/// updated, so that `stats()` read by an answered caller includes its command.
pub(crate) enum Outcome {
    Receipt(oneshot::Sender<Result<Committed, Error>>, Result<Committed, Error>),
    Unit(oneshot::Sender<Result<CommittedUnit, Error>>, Result<CommittedUnit, Error>),
    Deliver(Deliver),
}

impl Outcome {
    pub(crate) fn deliver(self) {
        match self {
            Outcome::Receipt(tx, result) => drop(tx.send(result)),
            Outcome::Unit(tx, result) => drop(tx.send(result)),
            Outcome::Deliver(deliver) => deliver(),
        }
    }
}

pub(crate) struct Request<S: State> {
    pub commands: Commands<S::Command>,
    pub reply: Reply<S>,
    /// The caller hands over another request right behind this one (an import does, for all
    /// but its last command): see [`crate::write::writer::Writer::follow_stream`].
    pub followed: bool,
    /// When the caller handed it over: where its `airomem_commit_seconds` starts. `None`
    /// when commit latency is not measured.
    pub queued: Option<Stamp>,
    /// Back-pressure: released when the writer is done with the request. None for one
    /// committed in its caller's thread, which never queues.
    pub _permit: Option<OwnedSemaphorePermit>,
}

/// What a request commits: one command, or an atomic unit of several, each with the bytes
/// it is journaled as.
pub(crate) enum Commands<C> {
    One(Vec<u8>, C),
    Unit(Vec<(Vec<u8>, C)>),
}

impl<C> Commands<C> {
    pub(crate) fn bytes(&self) -> usize {
        match self {
            Commands::One(payload, _) => payload.len(),
            Commands::Unit(unit) => unit.iter().map(|(payload, _)| payload.len()).sum(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Commands::One(..) => 1,
            Commands::Unit(unit) => unit.len(),
        }
    }
}

pub(crate) enum Message<S: State> {
    Commit(Request<S>),
    Close(oneshot::Sender<Result<(), Error>>),
    #[cfg(feature = "snapshot")]
    Snapshot(SnapshotReply),
    /// A caller committed in its own thread and left work for the writer thread: a timer to
    /// start under `Periodic`, or a snapshot that came due.
    Nudge,
}
