//! A store's figures through the `metrics` facade (feature `metrics`): the series listed in
//! `docs/guide/metrics.md`.
//!
//! Every handle is registered once, when the store opens, in the thread that opens it: the
//! recorder installed then (globally, or as that thread's local default) keeps them, and a
//! commit only feeds a handle it already holds, never looks a name up. Without a recorder the
//! handles do nothing; without the feature this module is a set of empty methods.

use std::time::Duration;

/// A moment on the meters' clock, for commit latencies: two are read per commit made in the
/// caller's thread, so the clock is `quanta`'s, which reads the CPU's time-stamp counter where
/// it is reliable (about 11 ns here, against 25 ns for `std::time::Instant`: at half a million
/// commits a second the difference is a percent of a commit) and the operating system's
/// monotonic clock where it is not.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stamp {
    #[cfg(feature = "metrics")]
    at: quanta::Instant,
}

impl Stamp {
    #[cfg(feature = "metrics")]
    fn now() -> Stamp {
        Stamp { at: quanta::Instant::now() }
    }

    /// The meters' clock now, or never read: a stamp is only ever taken while metering.
    pub(crate) fn later(self) -> Stamp {
        #[cfg(feature = "metrics")]
        return Stamp::now();
        #[cfg(not(feature = "metrics"))]
        self
    }

    /// How long after `earlier` this moment is (zero if the clock went back).
    pub(crate) fn since(self, earlier: Stamp) -> Duration {
        #[cfg(feature = "metrics")]
        return self.at.saturating_duration_since(earlier.at);
        #[cfg(not(feature = "metrics"))]
        {
            let _ = earlier;
            Duration::ZERO
        }
    }
}

/// Names of the series, for the guide's table and the tests that read a scrape.
#[cfg(feature = "metrics")]
mod names {
    pub const COMMIT: &str = "airomem_commit_seconds";
    pub const COMMITS: &str = "airomem_commits_total";
    pub const BATCH: &str = "airomem_batch_commands";
    pub const FSYNC: &str = "airomem_fsync_seconds";
    pub const JOURNAL_BYTES: &str = "airomem_journal_bytes_total";
    pub const SEGMENTS: &str = "airomem_journal_segments";
    pub const SNAPSHOT: &str = "airomem_snapshot_seconds";
    pub const SNAPSHOT_PAUSE: &str = "airomem_snapshot_pause_seconds";
    pub const SNAPSHOT_BYTES: &str = "airomem_snapshot_bytes";
    pub const STATE_BYTES: &str = "airomem_state_bytes";
    pub const RECOVERY: &str = "airomem_recovery_seconds";
    pub const HEALTHY: &str = "airomem_healthy";
}

/// The handles of one store, shared by its writer, its snapshot thread and its health.
/// Cloning shares them.
#[derive(Clone, Default)]
pub(crate) struct Meters {
    #[cfg(feature = "metrics")]
    handles: Option<std::sync::Arc<Handles>>,
}

#[cfg(feature = "metrics")]
struct Handles {
    commit: metrics::Histogram,
    commits: metrics::Counter,
    batch: metrics::Histogram,
    fsync: metrics::Histogram,
    journal_bytes: metrics::Counter,
    segments: metrics::Gauge,
    // Fed only by snapshots, which need the `snapshot` feature; registered either way, so a
    // scrape lists the same series whatever the features.
    #[cfg_attr(not(feature = "snapshot"), allow(dead_code))]
    snapshot: metrics::Histogram,
    #[cfg_attr(not(feature = "snapshot"), allow(dead_code))]
    snapshot_pause: metrics::Histogram,
    #[cfg_attr(not(feature = "snapshot"), allow(dead_code))]
    snapshot_bytes: metrics::Gauge,
    #[cfg_attr(not(feature = "snapshot"), allow(dead_code))]
    state_bytes: metrics::Gauge,
    recovery: metrics::Gauge,
    healthy: metrics::Gauge,
}

impl Meters {
    /// The meters `options` ask for: registered, or none when they turn metrics off.
    pub(crate) fn for_store(options: &crate::options::StoreOptions) -> Meters {
        #[cfg(feature = "metrics")]
        if options.metrics {
            return Meters::register(options.metrics_label.as_deref());
        }
        let _ = options;
        Meters::default()
    }

    /// Registers the store's series with the current recorder, labelled `store="<label>"`
    /// when the store was given a label.
    #[cfg(feature = "metrics")]
    fn register(label: Option<&str>) -> Meters {
        use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
        use names::*;
        describe_histogram!(COMMIT, Unit::Seconds, "Time from handing a commit over to its outcome.");
        describe_counter!(COMMITS, Unit::Count, "Commands committed.");
        describe_histogram!(BATCH, Unit::Count, "Commands per journal batch (one write, one sync).");
        describe_histogram!(FSYNC, Unit::Seconds, "Duration of each fdatasync of a journal segment.");
        describe_counter!(JOURNAL_BYTES, Unit::Bytes, "Bytes appended to the journal.");
        describe_gauge!(SEGMENTS, Unit::Count, "Journal segments in the store's directory.");
        describe_histogram!(SNAPSHOT, Unit::Seconds, "Time to take and publish a snapshot.");
        describe_histogram!(SNAPSHOT_PAUSE, Unit::Seconds, "How long commits waited for a snapshot.");
        describe_gauge!(SNAPSHOT_BYTES, Unit::Bytes, "Size of the last snapshot's file.");
        describe_gauge!(STATE_BYTES, Unit::Bytes, "The state serialized, uncompressed, at the last snapshot.");
        describe_gauge!(RECOVERY, Unit::Seconds, "How long the last open took to rebuild the state.");
        describe_gauge!(HEALTHY, "1 while the store accepts commits, 0 once it refuses them.");
        let labels: Vec<metrics::Label> =
            label.map(|name| metrics::Label::new("store", name.to_owned())).into_iter().collect();
        let handles = Handles {
            commit: metrics::histogram!(COMMIT, labels.clone()),
            commits: metrics::counter!(COMMITS, labels.clone()),
            batch: metrics::histogram!(BATCH, labels.clone()),
            fsync: metrics::histogram!(FSYNC, labels.clone()),
            journal_bytes: metrics::counter!(JOURNAL_BYTES, labels.clone()),
            segments: metrics::gauge!(SEGMENTS, labels.clone()),
            snapshot: metrics::histogram!(SNAPSHOT, labels.clone()),
            snapshot_pause: metrics::histogram!(SNAPSHOT_PAUSE, labels.clone()),
            snapshot_bytes: metrics::gauge!(SNAPSHOT_BYTES, labels.clone()),
            state_bytes: metrics::gauge!(STATE_BYTES, labels.clone()),
            recovery: metrics::gauge!(RECOVERY, labels.clone()),
            healthy: metrics::gauge!(HEALTHY, labels.clone()),
        };
        handles.healthy.set(1.0);
        Meters { handles: Some(std::sync::Arc::new(handles)) }
    }

    /// Now, if commit latencies are measured: with metrics off, or without the feature, no
    /// clock is read.
    pub(crate) fn stamp(&self) -> Option<Stamp> {
        #[cfg(feature = "metrics")]
        return self.handles.is_some().then(Stamp::now);
        #[cfg(not(feature = "metrics"))]
        None
    }

    /// A batch of `commands` was written, with `bytes` more journal bytes, and `committed` of
    /// them were applied; `segments` are in the directory now.
    pub(crate) fn batch(&self, commands: u64, committed: u64, bytes: u64, segments: u64) {
        #[cfg(feature = "metrics")]
        if let Some(h) = &self.handles {
            h.batch.record(commands as f64);
            h.commits.increment(committed);
            h.journal_bytes.increment(bytes);
            h.segments.set(segments as f64);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (commands, committed, bytes, segments);
    }

    /// One commit's outcome is ready, `took` after it was handed over.
    pub(crate) fn commit(&self, took: Duration) {
        #[cfg(feature = "metrics")]
        if let Some(h) = &self.handles {
            h.commit.record(took);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = took;
    }

    pub(crate) fn fsync(&self, took: Duration) {
        #[cfg(feature = "metrics")]
        if let Some(h) = &self.handles {
            h.fsync.record(took);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = took;
    }

    /// A snapshot was published: it took `took` in all, of which commits waited `pause`;
    /// `raw` and `file` bytes; `segments` remain after retention.
    #[cfg(feature = "snapshot")]
    pub(crate) fn snapshot(&self, took: Duration, pause: Duration, raw: u64, file: u64, segments: u64) {
        #[cfg(feature = "metrics")]
        if let Some(h) = &self.handles {
            h.snapshot.record(took);
            h.snapshot_pause.record(pause);
            h.state_bytes.set(raw as f64);
            h.snapshot_bytes.set(file as f64);
            h.segments.set(segments as f64);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (took, pause, raw, file, segments);
    }

    /// The store opened: rebuilding the state took `took`, the journal writer's opening wrote
    /// `journal_bytes` (a new segment's header, abort markers), and `segments` are on disk.
    pub(crate) fn opened(&self, took: Duration, journal_bytes: u64, segments: u64) {
        #[cfg(feature = "metrics")]
        if let Some(h) = &self.handles {
            h.recovery.set(took.as_secs_f64());
            h.journal_bytes.increment(journal_bytes);
            h.segments.set(segments as f64);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (took, journal_bytes, segments);
    }

    /// The store stopped accepting commits (poisoned, broken, or its writer gone).
    pub(crate) fn unhealthy(&self) {
        #[cfg(feature = "metrics")]
        if let Some(h) = &self.handles {
            h.healthy.set(0.0);
        }
    }
}
