use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use airomem_core::Seq;
use airomem_journal::{Corruption, PassedDamage, TornTail, WriterCounters};

/// What `Store::open` found and did.
#[derive(Clone, Debug)]
#[non_exhaustive]
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
    /// Conversions of the state to a newer schema, oldest first: history written under
    /// older schemas was replayed with their own types and converted at each boundary.
    pub migrations: Vec<Migration>,
    /// After a migration: the snapshot written at the current schema before any commit,
    /// so that the next open starts from it instead of migrating again (feature
    /// `snapshot`). `None` if nothing was migrated, or if writing it failed (logged; the
    /// next open migrates again).
    pub sealed: Option<Seq>,
    /// Damage the open passed over because the snapshot it loaded covers it (feature
    /// `snapshot`): the state is whole, but the history before the snapshot is not, so a
    /// fallback to an older snapshot or a full replay would stop there. `None` if the open
    /// read no damaged history; an open does not read segments the snapshot wholly covers,
    /// so `airomem verify` is what finds damage there.
    pub damaged_history: Option<DamagedHistory>,
}

/// Damage in journal history that the loaded snapshot covers, in a [`RecoveryReport`]: what
/// the open passed over, where it kept the evidence, and the snapshot it took so that the
/// next open starts after everything it replayed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DamagedHistory {
    /// The damaged segment. It stays where it is (it may hold records the open replayed);
    /// retention removes it once snapshots cover all of it, like any other segment.
    pub segment: PathBuf,
    /// The offset of the first record in it that does not verify.
    pub offset: u64,
    /// The sequence number that record should carry: the first record of the history lost.
    pub seq: Seq,
    /// What is wrong there.
    pub kind: Corruption,
    /// A copy of the damaged segment in the store's [`crate::DAMAGED_DIR`], which retention
    /// never touches: the evidence, kept until a person removes it. `None` if the copy could
    /// not be written (logged; the open goes on, the segment itself is still in place).
    pub kept: Option<PathBuf>,
    /// The snapshot the open took after replaying past the damage. `None` if the loaded
    /// snapshot already was the journal's end, or if writing it failed (logged).
    pub fresh_snapshot: Option<Seq>,
}

impl DamagedHistory {
    pub(crate) fn found(damage: &PassedDamage) -> DamagedHistory {
        DamagedHistory {
            segment: damage.file.clone(),
            offset: damage.offset,
            seq: damage.seq,
            kind: damage.kind.clone(),
            kept: None,
            fresh_snapshot: None,
        }
    }
}

/// One conversion of the state from a schema to the next newer one, in a
/// [`RecoveryReport`].
///
/// Deliberately not `#[non_exhaustive]`: the three numbers are the whole fact, and a test
/// states the migrations it expects by building them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Migration {
    /// The schema version converted from.
    pub from: u32,
    /// The schema version converted to.
    pub to: u32,
    /// The last record the converted state includes (`Seq(0)`: none).
    pub after: Seq,
}

/// What a store holds and has done, from [`crate::Store::stats`].
///
/// Fields named after the store (`last_seq`, `segments`, `snapshot_seq`) describe the store
/// on disk, also right after a reopen; the others count since this open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
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
    /// The oldest schema version any journal segment or snapshot in the directory was
    /// written under: once it equals the state's own `SCHEMA_VERSION`, nothing on disk needs
    /// an older schema, and the frozen modules of older schemas (with `fn previous`) can be
    /// deleted.
    pub oldest_schema_on_disk: u32,
    /// The last snapshot since open (zero before one): how long writers waited for it (the
    /// Redis `latest_fork_usec` of this store). Microseconds for a frozen view; the whole
    /// serialization on the plain path.
    pub last_snapshot_freeze: Duration,
    /// The last snapshot since open: time spent serializing it (see
    /// [`SnapshotInfo::serialize_time`]).
    pub last_snapshot_serialize: Duration,
    /// The last snapshot since open: bytes of the serialized state, uncompressed (zero before
    /// one). This is the best figure the store has for the size of its state, but it is the
    /// size of the encoding, not of the state in memory, which is typically a few times
    /// larger (pointers, allocator overhead, spare capacity of maps and vectors). See the
    /// guide's chapter on memory.
    pub last_snapshot_raw_bytes: u64,
    /// The last snapshot since open: bytes of its file.
    pub last_snapshot_file_bytes: u64,
    /// The last snapshot since open: shards writers had to copy while it was written.
    pub last_snapshot_shards_copied: u64,
    /// The first record of journal history the open found damaged under the snapshot it
    /// loaded (see [`RecoveryReport::damaged_history`]): the store is whole, but cannot fall
    /// back past that point. `None` if the open found none.
    pub damaged_history: Option<Seq>,
    /// The resident memory of the whole process (not only this store), in bytes, read when
    /// `stats()` was called; `None` where the platform does not say (only Linux does here,
    /// through `/proc/self/status`).
    pub resident_bytes: Option<u64>,
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

/// A snapshot that is durable, from [`crate::Store::snapshot`].
#[cfg(feature = "snapshot")]
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SnapshotInfo {
    /// The file.
    pub path: PathBuf,
    /// The last journal record it includes.
    pub seq: Seq,
    /// Bytes of the serialized state.
    pub raw_len: u64,
    /// Bytes of the compressed file.
    pub file_len: u64,
    /// How long commits waited for this snapshot: the time to take the frozen view (see
    /// `State::snapshot_view`) or, on the plain path, the whole serialization under the lock.
    pub freeze_time: Duration,
    /// Whether the state handed out a frozen view, serialized with no lock held.
    pub frozen: bool,
    /// Time spent serializing. On the plain path, under the read lock (it equals
    /// `freeze_time`); from a frozen view, on the snapshot thread while commits went on, and
    /// then it covers the whole file: serializing, compressing, writing, syncing and the
    /// rename are one stream.
    pub serialize_time: Duration,
    /// The rest, with no lock held: compressing, writing, syncing and publishing on the plain
    /// path; only retention after a frozen view's stream.
    pub write_time: Duration,
    /// Parts (shards) of the frozen view that writers had to copy while it was written,
    /// because the view still shared them (`Freeze::copied`); 0 on the plain path.
    pub shards_copied: u64,
    /// Older snapshots removed by retention.
    pub snapshots_removed: u64,
    /// Journal segments removed because the oldest retained snapshot covers them.
    pub segments_removed: u64,
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
    /// The last snapshot published since open, for [`Stats`]'s `last_snapshot_*`: freeze,
    /// serialization, raw bytes, file bytes, shards copied.
    last_snapshot: Mutex<(Duration, Duration, u64, u64, u64)>,
    /// The state's schema version.
    schema: u32,
    /// Segments and snapshots in the directory written under an older schema, from the
    /// survey at open, less those removed since.
    older_files: Mutex<BTreeMap<PathBuf, u32>>,
    /// From the recovery report: the first record of damaged history, if any.
    damaged_history: Option<Seq>,
}

impl Counters {
    /// The counters of a store just recovered as `report` says, with `segments` on disk; the
    /// caller then [`Counters::record`]s its journal writer, which sets the last sequence
    /// number (abort markers written at open included).
    pub(crate) fn at_open(
        report: &RecoveryReport,
        segments: u64,
        schema: u32,
        on_disk: Vec<(PathBuf, u32)>,
    ) -> Counters {
        Counters {
            segments_at_open: segments,
            schema,
            older_files: Mutex::new(on_disk.into_iter().filter(|&(_, v)| v < schema).collect()),
            snapshot_seq: AtomicU64::new(report.snapshot.map_or(0, |s| s.0)),
            damaged_history: report.damaged_history.as_ref().map(|d| d.seq),
            ..Counters::default()
        }
    }

    fn older_files(&self) -> std::sync::MutexGuard<'_, BTreeMap<PathBuf, u32>> {
        self.older_files.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn oldest_schema_on_disk(&self) -> u32 {
        self.older_files().values().copied().min().map_or(self.schema, |v| v.min(self.schema))
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
    pub(crate) fn snapshot_published(&self, info: &SnapshotInfo, changed: &[PathBuf]) {
        self.snapshot_seq.fetch_max(info.seq.0, Ordering::Relaxed);
        self.segments_removed.fetch_add(info.segments_removed, Ordering::Relaxed);
        *self.last_snapshot.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            (info.freeze_time, info.serialize_time, info.raw_len, info.file_len, info.shards_copied);
        // Removed, or (the new snapshot) written under the current schema.
        let mut older = self.older_files();
        for path in changed {
            older.remove(path);
        }
    }

    /// Journal segments in the directory now.
    pub(crate) fn segments(&self) -> u64 {
        let relaxed = Ordering::Relaxed;
        (self.segments_at_open + self.segments_created.load(relaxed))
            .saturating_sub(self.segments_removed.load(relaxed))
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let relaxed = Ordering::Relaxed;
        let segments_created = self.segments_created.load(relaxed);
        let (last_snapshot_freeze, last_snapshot_serialize, last_snapshot_raw_bytes, last_snapshot_file_bytes, copied) =
            *self.last_snapshot.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Stats {
            commits: self.commits.load(relaxed),
            aborted: self.aborted.load(relaxed),
            batches: self.batches.load(relaxed),
            syncs: self.syncs.load(relaxed),
            journal_bytes: self.journal_bytes.load(relaxed),
            segments_created,
            last_seq: self.last_seq.load(relaxed),
            segments: self.segments(),
            snapshot_seq: self.snapshot_seq.load(relaxed),
            oldest_schema_on_disk: self.oldest_schema_on_disk(),
            last_snapshot_freeze,
            last_snapshot_serialize,
            last_snapshot_raw_bytes,
            last_snapshot_file_bytes,
            last_snapshot_shards_copied: copied,
            damaged_history: self.damaged_history,
            resident_bytes: resident_bytes(),
        }
    }
}

/// The process's resident set size, from the `VmRSS` line of `/proc/self/status` (in kB
/// there), or `None` where that file does not exist or does not say.
pub(crate) fn resident_bytes() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        parse_vm_rss(&status)
    }
    #[cfg(not(target_os = "linux"))]
    None
}

#[cfg_attr(not(any(target_os = "linux", test)), allow(dead_code))]
fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|line| line.strip_prefix("VmRSS:"))?;
    let kilobytes = line.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()?;
    kilobytes.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::parse_vm_rss;

    #[test]
    fn vm_rss_is_read_in_kilobytes_and_anything_else_is_none() {
        let status = "Name:\tx\nVmPeak:\t  9000 kB\nVmRSS:\t    2508 kB\nThreads:\t1\n";
        assert_eq!(parse_vm_rss(status), Some(2508 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\t12 MB\n"), None);
    }
}
