use std::cell::Cell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::Seq;

/// What a command may know about its own commit while it executes.
///
/// Both values are fixed when the command is written to the journal and are read back from
/// it on replay, so a command that needs "now" must use [`CommitContext::time`] rather than
/// `SystemTime::now()`: that keeps replay deterministic (Prevayler's execution time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommitContext {
    /// The command's sequence number.
    pub seq: Seq,
    /// Nanoseconds since the Unix epoch at which the command was journaled.
    pub unix_nanos: u64,
}

thread_local! {
    static CURRENT: Cell<Option<CommitContext>> = const { Cell::new(None) };
}

impl CommitContext {
    /// A context for `seq` committed at `unix_nanos`: what the store hands each command. A
    /// test of a command's `execute` can [`enter`](CommitContext::enter) one of its own.
    #[must_use]
    pub const fn new(seq: Seq, unix_nanos: u64) -> CommitContext {
        CommitContext { seq, unix_nanos }
    }

    /// The context of the command executing on this thread, or `None` outside
    /// [`crate::State::execute`].
    #[must_use]
    pub fn current() -> Option<CommitContext> {
        CURRENT.with(Cell::get)
    }

    /// The recorded commit time as a `SystemTime`.
    #[must_use]
    pub fn time(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.unix_nanos)
    }

    /// Runs `f` with `self` as the current context, restoring the previous one afterwards,
    /// even if `f` unwinds.
    pub fn enter<R>(self, f: impl FnOnce() -> R) -> R {
        struct Restore(Option<CommitContext>);
        impl Drop for Restore {
            fn drop(&mut self) {
                CURRENT.with(|c| c.set(self.0));
            }
        }
        let _restore = Restore(CURRENT.with(|c| c.replace(Some(self))));
        f()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_is_scoped_and_restored_after_unwinding() {
        assert_eq!(CommitContext::current(), None);
        let ctx = CommitContext { seq: Seq(7), unix_nanos: 42 };
        let seen = ctx.enter(CommitContext::current);
        assert_eq!(seen, Some(ctx));
        let unwound = std::panic::catch_unwind(|| ctx.enter(|| panic!("boom")));
        assert!(unwound.is_err());
        assert_eq!(CommitContext::current(), None);
    }
}
