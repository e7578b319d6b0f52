use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use airomem_core::Seq;
use airomem_journal::{TornTail, WriterCounters};

/// What `Store::open` found and did.
#[derive(Clone, Debug)]
pub struct RecoveryReport {
    /// Journal segments loaded.
    pub segments_read: u64,
    /// Journal bytes loaded.
    pub bytes_read: u64,
    /// Commands executed to rebuild the state.
    pub records_replayed: u64,
    /// Commands skipped because they had been aborted (they panicked).
    pub records_skipped: u64,
    /// Commands found to panic during this recovery, in the last batch before a crash, and
    /// aborted now.
    pub aborted_now: Vec<Seq>,
    /// Unfinished segment files of an interrupted rollover that were removed.
    pub temp_files_removed: u64,
    /// The snapshot the state was loaded from, if any (feature `snapshot`).
    pub snapshot: Option<Seq>,
    /// Snapshots passed over because they did not verify, with the reason, newest first.
    pub snapshots_skipped: Vec<String>,
    /// Unfinished snapshot files of an interrupted write that were removed.
    pub snapshot_temp_files_removed: u64,
    /// The torn write cut from the end of the journal, if a crash left one.
    pub torn_tail: Option<TornTail>,
    /// The sequence number the next command gets.
    pub next_seq: Seq,
    /// Time spent recovering.
    pub duration: Duration,
}

/// What a store holds and has done, from [`crate::Store::stats`].
///
/// Fields named after the store (`last_seq`, `segments`, `snapshot_seq`) describe the store
/// on disk, also right after a reopen; the others count since this open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Commands committed (acknowledged) since open.
    pub commits: u64,
    /// Commands that panicked and were rolled back since open.
    pub aborted: u64,
    /// Batches written since open: each is one write call.
    pub batches: u64,
    /// `fdatasync` calls on journal segments since open.
    pub syncs: u64,
    /// Journal bytes written since open.
    pub journal_bytes: u64,
    /// Journal segments created since open.
    pub segments_created: u64,
    /// The sequence number of the store's last journal record (0 for an empty store).
    pub last_seq: u64,
    /// Journal segments in the store's directory.
    pub segments: u64,
    /// The last command the newest snapshot includes (0 if there is none).
    pub snapshot_seq: u64,
}

impl Stats {
    /// Average commands per batch: how well group commit is doing.
    pub fn average_batch(&self) -> f64 {
        if self.batches == 0 { 0.0 } else { self.commits as f64 / self.batches as f64 }
    }

    /// Journal records written after the newest snapshot: what the next open replays.
    pub fn records_since_snapshot(&self) -> u64 {
        self.last_seq.saturating_sub(self.snapshot_seq)
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    commits: AtomicU64,
    aborted: AtomicU64,
    batches: AtomicU64,
    syncs: AtomicU64,
    journal_bytes: AtomicU64,
    segments_created: AtomicU64,
    last_seq: AtomicU64,
    segments_at_open: u64,
    segments_removed: AtomicU64,
    snapshot_seq: AtomicU64,
}

impl Counters {
    /// The counters of a store just recovered as `report` says, with `segments` on disk; the
    /// caller then [`Counters::record`]s its journal writer, which sets the last sequence
    /// number (abort markers written at open included).
    pub(crate) fn at_open(report: &RecoveryReport, segments: u64) -> Counters {
        Counters {
            segments_at_open: segments,
            snapshot_seq: AtomicU64::new(report.snapshot.map_or(0, |s| s.0)),
            ..Counters::default()
        }
    }

    pub(crate) fn record(&self, commits: u64, aborted: u64, journal: WriterCounters, next_seq: Seq) {
        let relaxed = Ordering::Relaxed;
        self.commits.fetch_add(commits, relaxed);
        self.aborted.fetch_add(aborted, relaxed);
        self.batches.store(journal.batches, relaxed);
        self.syncs.store(journal.syncs, relaxed);
        self.journal_bytes.store(journal.bytes, relaxed);
        self.segments_created.store(journal.segments_created, relaxed);
        self.last_seq.store(next_seq.0 - 1, relaxed);
    }

    /// A snapshot became durable and retention ran.
    #[cfg(feature = "snapshot")]
    pub(crate) fn snapshot_published(&self, info: &crate::SnapshotInfo) {
        self.snapshot_seq.fetch_max(info.seq.0, Ordering::Relaxed);
        self.segments_removed.fetch_add(info.segments_removed, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let relaxed = Ordering::Relaxed;
        let segments_created = self.segments_created.load(relaxed);
        Stats {
            commits: self.commits.load(relaxed),
            aborted: self.aborted.load(relaxed),
            batches: self.batches.load(relaxed),
            syncs: self.syncs.load(relaxed),
            journal_bytes: self.journal_bytes.load(relaxed),
            segments_created,
            last_seq: self.last_seq.load(relaxed),
            segments: (self.segments_at_open + segments_created).saturating_sub(self.segments_removed.load(relaxed)),
            snapshot_seq: self.snapshot_seq.load(relaxed),
        }
    }
}
