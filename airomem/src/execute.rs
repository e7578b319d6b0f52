//! Executing one command with its panic caught: the executor that live commits (on the
//! writer thread, or in a lone caller's) and replay from the journal share, so that a
//! command sees the same [`CommitContext`] every time.

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};

use airomem_core::{CommitContext, Serializer, State};
use airomem_journal::{JournalError, MAX_PAYLOAD_LEN};

use crate::Error;

/// Executes one command, catching a panic. After a panic the state may be half changed and
/// must not be shown to anyone: the caller rebuilds it.
pub(crate) fn execute<S: State>(state: &mut S, command: S::Command, context: CommitContext) -> Result<(), String> {
    context.enter(|| panic::catch_unwind(AssertUnwindSafe(|| state.execute(command)))).map_err(panic_message)
}

/// Encodes `command` into `payload` and decodes it again: the copy is what executes, exactly
/// what recovery will execute. A command too large for a journal record is refused here,
/// before it takes a sequence number, so the store stays usable.
pub(crate) fn encode_copy<S: State, Z: Serializer>(
    serializer: &Z,
    command: S::Command,
    payload: &mut Vec<u8>,
) -> Result<S::Command, Error> {
    serializer.encode(&command, payload).map_err(|e| Error::encode("command", e))?;
    drop(command);
    if payload.len() > MAX_PAYLOAD_LEN {
        return Err(JournalError::RecordTooLarge { len: payload.len(), max: MAX_PAYLOAD_LEN }.into());
    }
    serializer.decode(payload).map_err(|e| Error::decode(None, None, e))
}

pub(crate) fn panic_message(payload: Box<dyn Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => {
            payload.downcast_ref::<&str>().map_or_else(|| "(non-string panic payload)".to_string(), |s| s.to_string())
        }
    }
}
