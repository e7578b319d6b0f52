//! When a node last heard from a leader, and the crate's cheap random numbers.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A random `u64` from the standard library's per-process random keys (enough for client
/// ids, jitter and simulated loss; nothing here needs a cryptographic generator).
pub(crate) fn random_u64() -> u64 {
    static DRAWS: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(DRAWS.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}

/// When a node last heard from a leader (an accepted append or snapshot), for the election
/// watchdog and for bounded-staleness reads.
#[derive(Debug)]
pub(crate) struct Contact {
    base: Instant,
    /// Milliseconds after `base`, plus one (0: never).
    last: AtomicU64,
    /// When a vote request of this node was refused by a node holding a longer log:
    /// milliseconds after `base`, plus one (0: never).
    outlogged: AtomicU64,
}

impl Contact {
    pub(crate) fn new() -> Contact {
        Contact { base: Instant::now(), last: AtomicU64::new(0), outlogged: AtomicU64::new(0) }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX).saturating_add(1)
    }

    /// Records that a peer refused this node's vote request because its log is longer: this
    /// node cannot win an election until it has caught up.
    pub(crate) fn saw_longer_log(&self) {
        self.outlogged.fetch_max(self.now(), Ordering::Relaxed);
    }

    /// How long ago a peer last refused a vote for having a longer log; `None` if never.
    pub(crate) fn since_longer_log(&self) -> Option<Duration> {
        since(self.base, self.outlogged.load(Ordering::Relaxed))
    }

    /// Records a contact now.
    pub(crate) fn touch(&self) {
        self.last.fetch_max(self.now(), Ordering::Relaxed);
    }

    /// How long ago the last contact was; since the node started if never (the watchdog
    /// counts a node that never heard from a leader as out of contact from its start).
    pub(crate) fn elapsed(&self) -> Duration {
        since(self.base, self.last.load(Ordering::Relaxed)).unwrap_or_else(|| self.base.elapsed())
    }

    /// How long ago the last contact was; `None` if this node never heard from a leader.
    pub(crate) fn last(&self) -> Option<Duration> {
        since(self.base, self.last.load(Ordering::Relaxed))
    }
}

fn since(base: Instant, mark: u64) -> Option<Duration> {
    match mark {
        0 => None,
        at => Some(base.elapsed().saturating_sub(Duration::from_millis(at - 1))),
    }
}
