//! The deduplication table: part of the replicated state, so that a command retried after a
//! lost answer or a leader change never executes twice.
//!
//! Each client (a `ReplicatedStore` handle) numbers its commands (`serial`) and tells, with
//! each one, the lowest serial it still waits for (`low_water`). The table keeps, per
//! client, the outcome of every serial at or above the low water; a copy of a recorded
//! serial gets the recorded outcome without executing, and a copy below the low water gets
//! [`Applied::Expired`] (its sender stopped waiting for it).
//!
//! **Idle clients are forgotten** after [`SESSION_IDLE_NANOS`] of leader-stamped time without a
//! command, swept at most once per [`SWEEP_EVERY_NANOS`]. Both depend only on the replicated
//! commit times, so every replica and every replay forgets the same clients at the same entry.
//! A copy of a command that arrives after its client was forgotten would execute again: the
//! store bounds its retries by `commit_timeout`, which `NodeConfig` keeps far below the idle
//! time.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::types::Applied;

/// A client silent for this long (leader-stamped time) is forgotten: one hour.
pub(crate) const SESSION_IDLE_NANOS: u64 = 3_600 * 1_000_000_000;
/// Idle clients are looked for at most this often (leader-stamped time): one minute.
pub(crate) const SWEEP_EVERY_NANOS: u64 = 60 * 1_000_000_000;

/// What the table knows of one client.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Session {
    /// The commit time of the client's latest command.
    last_seen: u64,
    /// The highest low water the client announced.
    low_water: u64,
    /// Outcomes of its serials at or above `low_water`.
    outcomes: BTreeMap<u64, Applied>,
}

/// Every known client's recent outcomes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Sessions {
    clients: BTreeMap<u128, Session>,
    /// The commit time of the last sweep for idle clients.
    last_sweep: u64,
}

/// Whether a command must execute.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Check {
    /// First time seen: execute it, then [`Sessions::record`] its outcome.
    New,
    /// A copy of a command already applied: answer this, execute nothing.
    Duplicate(Applied),
    /// Below its client's low water: answer [`Applied::Expired`], execute nothing.
    Expired,
}

impl Sessions {
    /// Registers that `client` sent `serial` (with `low_water`) at commit time `now`, forgets
    /// what the low water and idleness allow, and says whether the command must execute.
    pub(crate) fn check(&mut self, client: u128, serial: u64, low_water: u64, now: u64) -> Check {
        if now >= self.last_sweep.saturating_add(SWEEP_EVERY_NANOS) {
            self.clients.retain(|_, s| s.last_seen.saturating_add(SESSION_IDLE_NANOS) >= now);
            self.last_sweep = now;
        }
        let session = self.clients.entry(client).or_default();
        session.last_seen = session.last_seen.max(now);
        if low_water > session.low_water {
            session.low_water = low_water;
            session.outcomes = session.outcomes.split_off(&low_water);
        }
        if let Some(outcome) = session.outcomes.get(&serial) {
            Check::Duplicate(outcome.clone())
        } else if serial < session.low_water {
            Check::Expired
        } else {
            Check::New
        }
    }

    /// Records the outcome of a command [`Sessions::check`] called new.
    pub(crate) fn record(&mut self, client: u128, serial: u64, outcome: Applied) {
        let session = self.clients.get_mut(&client).expect("`check` registered the client");
        session.outcomes.insert(serial, outcome);
    }

    /// How many clients are remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.clients.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn a_copy_gets_the_recorded_outcome_and_the_low_water_forgets() {
        let mut table = Sessions::default();
        let executed = Applied::Executed { seq: 1, index: 1, unix_nanos: 5 };
        assert_eq!(table.check(7, 0, 0, 5), Check::New);
        table.record(7, 0, executed.clone());
        assert_eq!(table.check(7, 0, 0, 6), Check::Duplicate(executed.clone()));
        let panicked = Applied::Panicked { index: 2, message: "boom".into() };
        assert_eq!(table.check(7, 1, 0, 7), Check::New);
        table.record(7, 1, panicked.clone());
        assert_eq!(table.check(7, 1, 0, 8), Check::Duplicate(panicked));
        // Another client's serials are its own.
        assert_eq!(table.check(8, 0, 0, 9), Check::New);
        // Serial 2 announces that 0 and 1 are finished: their copies expire.
        assert_eq!(table.check(7, 2, 2, 10), Check::New);
        assert_eq!(table.check(7, 0, 0, 11), Check::Expired);
        assert_eq!(table.check(7, 1, 0, 11), Check::Expired);
    }

    #[test]
    fn idle_clients_are_forgotten_by_commit_time_only() {
        let mut table = Sessions::default();
        assert_eq!(table.check(1, 0, 0, SECOND), Check::New);
        table.record(1, 0, Applied::Executed { seq: 1, index: 1, unix_nanos: SECOND });
        assert_eq!(table.check(2, 0, 0, SECOND), Check::New);
        // Client 2 stays active; client 1 falls silent for more than an hour.
        let later = SECOND + SESSION_IDLE_NANOS / 2;
        assert_eq!(table.check(2, 1, 1, later), Check::New);
        let much_later = SECOND + SESSION_IDLE_NANOS + SWEEP_EVERY_NANOS;
        assert_eq!(table.check(2, 2, 2, much_later), Check::New);
        assert_eq!(table.len(), 1, "client 1 was forgotten, client 2 kept");
        // Forgotten means new again: the reason retries are bounded far below the idle time.
        assert_eq!(table.check(1, 0, 0, much_later), Check::New);
    }
}
