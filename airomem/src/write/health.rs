//! What state a store is in, as one value that only ever gets worse.
//!
//! The writer thread moves it; `query()` and `commit` read it. Each step down refuses more:
//!
//! | health | commits | reads | how it got there |
//! | --- | --- | --- | --- |
//! | `Healthy` | accepted | served | |
//! | `Poisoned` | refused (`Error::Poisoned`) | served: they show exactly the acknowledged commands | a journal write or sync failed |
//! | `Broken` | refused (`Error::Broken`) | refused (`Error::Broken`) | a panicking command left the state half changed and it could not be rebuilt |
//! | `WriterPanicked` | refused (`Error::WriterPanicked`) | refused (`Error::WriterPanicked`) | the writer thread itself panicked (a bug in airomem) |
//!
//! Reopening the store is the way back to `Healthy` from any of them: what is on disk is
//! intact in each case.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::Error;
use crate::meters::Meters;

const HEALTHY: u8 = 0;
const POISONED: u8 = 1;
const BROKEN: u8 = 2;
const WRITER_PANICKED: u8 = 3;

/// The cause recorded while the writer unwinds, before its panic message is known.
const UNWINDING: &str = "the writer thread panicked";

/// A store's health: a level that only rises, and the first cause at each level.
#[derive(Default)]
pub(crate) struct Health {
    level: AtomicU8,
    cause: Mutex<String>,
    /// Told when commits start to be refused (the `airomem_healthy` gauge).
    meters: Meters,
}

impl Health {
    /// A healthy store whose decline `meters` report.
    pub(crate) fn watched(meters: Meters) -> Health {
        Health { meters, ..Health::default() }
    }

    /// A journal write or sync failed: no more commits.
    pub(crate) fn poison(&self, cause: &str) {
        self.worsen(POISONED, cause);
    }

    /// The state cannot be trusted any more: no more reads either.
    pub(crate) fn mark_broken(&self, cause: &str) {
        self.worsen(BROKEN, cause);
    }

    /// The writer thread died. Called twice: while it unwinds, before the callers it was
    /// serving learn that it is gone (the panic message is not known yet), and once the
    /// panic is caught, with the message, which then replaces the first placeholder.
    pub(crate) fn writer_panicked(&self, message: &str) {
        let mut cause = self.cause.lock().unwrap_or_else(PoisonError::into_inner);
        match self.level.load(Ordering::Acquire) {
            WRITER_PANICKED if *cause == UNWINDING => *cause = message.to_string(),
            WRITER_PANICKED => {}
            _ => {
                *cause = message.to_string();
                // Before the level: whoever is refused has the gauge at 0 already.
                self.meters.unhealthy();
                self.level.store(WRITER_PANICKED, Ordering::Release);
            }
        }
    }

    /// Marks a writer that is unwinding from a panic whose message comes later.
    pub(crate) fn writer_unwinding(&self) {
        self.writer_panicked(UNWINDING);
    }

    fn worsen(&self, level: u8, cause: &str) {
        let mut current = self.cause.lock().unwrap_or_else(PoisonError::into_inner);
        if self.level.load(Ordering::Acquire) < level {
            *current = cause.to_string();
            self.meters.unhealthy();
            self.level.store(level, Ordering::Release);
        }
    }

    /// The error a commit gets now, if any.
    pub(crate) fn check_commit(&self) -> Result<(), Error> {
        match self.level.load(Ordering::Acquire) {
            HEALTHY => Ok(()),
            level => Err(self.error(level)),
        }
    }

    /// The error a read gets now, if any. Runs on every `query()`: one atomic load when healthy.
    pub(crate) fn check_read(&self) -> Result<(), Error> {
        match self.level.load(Ordering::Acquire) {
            HEALTHY | POISONED => Ok(()),
            level => Err(self.error(level)),
        }
    }

    /// Whether commits are refused.
    pub(crate) fn is_poisoned(&self) -> bool {
        self.level.load(Ordering::Acquire) != HEALTHY
    }

    fn error(&self, level: u8) -> Error {
        let cause = self.cause.lock().unwrap_or_else(PoisonError::into_inner).clone();
        match level {
            POISONED => Error::Poisoned { cause },
            BROKEN => Error::Broken { cause },
            _ => Error::WriterPanicked { message: cause },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_only_gets_worse_and_keeps_the_first_cause_of_each_level() {
        let health = Health::default();
        assert!(health.check_commit().is_ok() && health.check_read().is_ok());
        health.poison("disk full");
        assert!(matches!(health.check_commit(), Err(Error::Poisoned { cause }) if cause == "disk full"));
        assert!(health.check_read().is_ok(), "a poisoned store still serves the acknowledged state");
        health.poison("second failure");
        assert!(matches!(health.check_commit(), Err(Error::Poisoned { cause }) if cause == "disk full"));
        health.mark_broken("rebuild failed");
        assert!(matches!(health.check_read(), Err(Error::Broken { cause }) if cause == "rebuild failed"));
        health.poison("late");
        assert!(matches!(health.check_commit(), Err(Error::Broken { .. })), "never back to a milder level");
        health.writer_panicked("bug");
        assert!(matches!(health.check_read(), Err(Error::WriterPanicked { message }) if message == "bug"));
    }
}
