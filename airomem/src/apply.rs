//! Executing commands: live, at recovery, and when rebuilding after a panic. All three go
//! through here so that a command sees the same [`CommitContext`] every time.

use std::any::Any;
use std::collections::BTreeSet;
use std::panic::{self, AssertUnwindSafe};

use airomem_core::{CommitContext, Seq, Serializer, State};
use airomem_journal::{JournalConfig, Repair, ReplayError, ReplayOutcome, ReplayRange, replay};

use crate::Error;
use crate::recover::{Base, base};

/// Executes one command, catching a panic. After a panic the state may be half changed and
/// must not be shown to anyone: the caller rebuilds it.
pub(crate) fn execute<S: State>(state: &mut S, command: S::Command, context: CommitContext) -> Result<(), String> {
    context.enter(|| panic::catch_unwind(AssertUnwindSafe(|| state.execute(command)))).map_err(panic_message)
}

pub(crate) fn panic_message(payload: Box<dyn Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => {
            payload.downcast_ref::<&str>().map_or_else(|| "(non-string panic payload)".to_string(), |s| s.to_string())
        }
    }
}

/// Why a replay visitor stopped.
pub(crate) enum Stop {
    Decode(Seq, airomem_core::CodecError),
    Panicked { seq: Seq, message: String, in_final_batch: bool },
}

/// Replays the journal into `state`, decoding each record with `serializer`.
pub(crate) fn replay_into<S: State, Z: Serializer>(
    config: &JournalConfig,
    serializer: &Z,
    range: ReplayRange<'_>,
    repair: Option<&mut Repair>,
    state: &mut S,
) -> Result<ReplayOutcome, ReplayError<Stop>> {
    replay(config, range, repair, |record| {
        let command: S::Command = serializer.decode(record.payload).map_err(|e| Stop::Decode(record.seq, e))?;
        let context = CommitContext { seq: record.seq, unix_nanos: record.unix_nanos };
        execute(state, command, context).map_err(|message| Stop::Panicked {
            seq: record.seq,
            message,
            in_final_batch: record.in_final_batch,
        })
    })
}

/// Builds the state as it was after `until`, skipping `skip`, from the newest snapshot at or
/// before `until` and the journal. Used after a live command panicked, while the writer
/// still holds the journal; the caller keeps snapshot retention from removing files meanwhile.
pub(crate) fn rebuild<S: State, Z: Serializer>(
    config: &JournalConfig,
    serializer: &Z,
    until: Seq,
    skip: &BTreeSet<Seq>,
) -> Result<S, Error> {
    let Base { mut state, seq, .. } = base::<S, Z>(config, serializer, Some(until))?;
    let range = ReplayRange { from: seq.next(), until: Some(until), skip };
    replay_into(config, serializer, range, None, &mut state).map_err(stop_error)?;
    Ok(state)
}

pub(crate) fn stop_error(e: ReplayError<Stop>) -> Error {
    match e {
        ReplayError::Journal(e) => e.into(),
        ReplayError::Visit(Stop::Decode(seq, e)) => Error::codec(Some(seq), e),
        ReplayError::Visit(Stop::Panicked { seq, message, .. }) => Error::ReplayPanicked { seq, message },
    }
}
