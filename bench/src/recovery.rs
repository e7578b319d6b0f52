//! Recovery speed: how fast `Store::open` rebuilds a session store from its journal,
//! against the in-memory limit of decoding the same postcard payloads and executing them
//! on a `Sessions` (a `HashMap` insert or remove each), with no I/O, framing or checksums.
//!
//! The same store then gives the lookup latency, its size on disk, and recovery from a
//! snapshot plus a short journal tail, with the disk use left after snapshot retention.

use std::hint::black_box;
use std::ops::Range;
use std::path::Path;
use std::time::{Duration, Instant};

use airomem::{Durability, PostcardSerializer, Serializer, State, Store, StoreOptions};
use airomem_workspace::{Sessions, SessionsCommand};

use crate::commits::{SessionStore, drive, drive_from};
use crate::dataset::{BUILD_STREAMS, Dataset, commands};
use crate::measure::{BoxError, DiskUse, REPETITIONS, Summary, disk_use, per_second, sync_disks};

/// Writers that commit the tail after the snapshot, durably.
const TAIL_WRITERS: usize = 64;

/// Recovery and in-memory replay figures.
#[derive(Clone, Copy, Debug)]
pub struct RecoveryResult {
    /// Commands in the journal.
    pub records: u64,
    /// Journal bytes, segment headers included.
    pub journal_bytes: u64,
    /// Journal segments.
    pub segments: u64,
    /// The most bytes in a segment.
    pub segment_size: u64,
    /// Commands per second while building the journal with `Durability::OsBuffered`.
    pub build_rate: f64,
    /// Wall time of `Store::open`, seconds.
    pub open_secs: Summary,
    /// Records replayed per second of `Store::open` wall time.
    pub open_rate: Summary,
    /// Records replayed per second of `recovery().duration` (repair and replay, without
    /// the thread hand-offs of `open`).
    pub replay_rate: Summary,
    /// Wall time of the in-memory decode-and-execute loop, seconds.
    pub memory_secs: Summary,
    /// Commands per second of the in-memory loop.
    pub memory_rate: Summary,
    /// Nanoseconds per lookup of an existing token: `store.query()` guard + `HashMap::get`.
    pub lookup_nanos: Summary,
    /// The same lookups under one guard: the map alone.
    pub lookup_map_nanos: Summary,
    /// Nanoseconds per `store.query()` guard taken and dropped, with no lookup: the lock alone.
    pub lookup_lock_nanos: Summary,
    /// The store directory on disk after the build, closed.
    pub disk: DiskUse,
    /// Recovery from a snapshot and a tail.
    pub snapshot: SnapshotRecovery,
}

/// A snapshot taken after the data set, `tail` more durable commands, then reopening.
#[derive(Clone, Copy, Debug)]
pub struct SnapshotRecovery {
    /// Commands after the snapshot.
    pub tail: u64,
    /// Bytes of the serialized state.
    pub raw_len: u64,
    /// Bytes of the snapshot file.
    pub file_len: u64,
    /// Journal segments that retention removed.
    pub segments_removed: u64,
    /// The store directory after the tail, closed.
    pub disk: DiskUse,
    /// Wall time of `Store::open`, seconds.
    pub open_secs: Summary,
    /// Records (the data set and the tail) per second of `Store::open` wall time.
    pub open_rate: Summary,
}

/// Builds a store of the data set's commands in `dir` with segments of at most
/// `segment_size` bytes (small enough that the data set fills several, so that snapshot
/// retention has whole segments to remove), then times reopening it, lookups and the
/// in-memory loop; then a snapshot, `tail` more commands and reopening.
pub async fn run(dir: &Path, data: &Dataset, tail: u64, segment_size: u64) -> Result<RecoveryResult, BoxError> {
    let records = data.records;
    let store_dir = dir.join("recovery");
    eprintln!("recovery: building a journal of {records} commands");
    let options = StoreOptions::default().durability(Durability::OsBuffered).segment_size(segment_size);
    let store: SessionStore = Store::open_with(PostcardSerializer, &store_dir, options).await?;
    let built = drive(&store, BUILD_STREAMS, records).await?;
    let probe = store.clone();
    store.close().await?;
    let stats = probe.stats();
    drop(probe);
    if stats.commits != records {
        return Err(format!("built {records} commands but stats() counts {stats:?}").into());
    }
    if built.expected_sessions != data.expected.len() {
        return Err("the data set does not match the committed workload".into());
    }
    let disk = disk_use(&store_dir)?;

    let payloads = Payloads::encode(records)?;

    // Alternate the two, so that a slow spell of the machine skews neither alone.
    let mut opens = Vec::with_capacity(REPETITIONS);
    let mut memory = Vec::with_capacity(REPETITIONS);
    let mut lookups = Vec::with_capacity(REPETITIONS);
    let mut map_lookups = Vec::with_capacity(REPETITIONS);
    let mut locks = Vec::with_capacity(REPETITIONS);
    for rep in 0..REPETITIONS {
        eprintln!("recovery: Store::open, lookups and in-memory replay, repetition {}/{REPETITIONS}", rep + 1);
        sync_disks()?;
        let started = Instant::now();
        let store: SessionStore = Store::open(PostcardSerializer, &store_dir).await?;
        let elapsed = started.elapsed();
        let report = store.recovery().clone();
        if report.records_replayed != records || store.query()?.tokens != data.expected {
            return Err(format!(
                "reopened store replayed {} records into {} sessions; expected {records} into {}",
                report.records_replayed,
                store.query()?.tokens.len(),
                data.expected.len()
            )
            .into());
        }
        opens.push((elapsed, report));
        lookups.push(lookup_nanos(&store, data)?);
        map_lookups.push(map_lookup_nanos(&store, data)?);
        locks.push(lock_nanos(&store, data.probes.len())?);
        store.close().await?;

        sync_disks()?;
        memory.push(payloads.replay(data.expected.len())?);
    }
    // The memory measurement needs the journal as it is now, before the snapshot.
    crate::memory::copy_store(&store_dir, &dir.join("recovery-journal"))?;
    let snapshot = snapshot_and_tail(&store_dir, data, tail, segment_size).await?;

    let last = &opens[opens.len() - 1].1;
    Ok(RecoveryResult {
        records,
        journal_bytes: last.bytes_read,
        segments: last.segments_read,
        segment_size,
        build_rate: per_second(records, built.elapsed),
        open_secs: Summary::over(&opens, |(elapsed, _)| elapsed.as_secs_f64()),
        open_rate: Summary::over(&opens, |(elapsed, _)| per_second(records, *elapsed)),
        replay_rate: Summary::over(&opens, |(_, report)| per_second(report.records_replayed, report.duration)),
        memory_secs: Summary::over(&memory, Duration::as_secs_f64),
        memory_rate: Summary::over(&memory, |elapsed| per_second(records, *elapsed)),
        lookup_nanos: Summary::of(lookups),
        lookup_map_nanos: Summary::of(map_lookups),
        lookup_lock_nanos: Summary::of(locks),
        disk,
        snapshot,
    })
}

/// Times looking up every probe token under one `store.query()` guard: the map's share.
fn map_lookup_nanos(store: &SessionStore, data: &Dataset) -> Result<f64, BoxError> {
    let state = store.query()?;
    timed_lookups(data, |token| Ok(state.tokens.get(token).copied().unwrap_or(0)))
}

/// Times `lookup` of every probe token, checking that the results add up, in nanoseconds
/// per lookup.
fn timed_lookups(data: &Dataset, mut lookup: impl FnMut(&str) -> Result<u64, BoxError>) -> Result<f64, BoxError> {
    sync_disks()?;
    let started = Instant::now();
    let mut sum = 0;
    for token in &data.probes {
        sum += lookup(token)?;
    }
    let elapsed = started.elapsed();
    if sum != data.probe_sum {
        return Err(format!("lookups summed to {sum}, expected {}", data.probe_sum).into());
    }
    Ok(elapsed.as_secs_f64() * 1e9 / data.probes.len() as f64)
}

/// Times taking and dropping `count` `store.query()` guards: the lock's share.
fn lock_nanos(store: &SessionStore, count: usize) -> Result<f64, BoxError> {
    let started = Instant::now();
    let mut sessions = 0;
    for _ in 0..count {
        sessions += std::hint::black_box(store.query()?.tokens.len());
    }
    let elapsed = started.elapsed();
    std::hint::black_box(sessions);
    Ok(elapsed.as_secs_f64() * 1e9 / count as f64)
}

/// Times looking up every probe token, each through its own `store.query()` guard.
fn lookup_nanos(store: &SessionStore, data: &Dataset) -> Result<f64, BoxError> {
    timed_lookups(data, |token| Ok(store.query()?.tokens.get(token).copied().unwrap_or(0)))
}

/// Opens the store with one snapshot retained, takes a snapshot, commits `tail` more
/// commands durably, closes it, and times reopening it.
async fn snapshot_and_tail(
    store_dir: &Path,
    data: &Dataset,
    tail: u64,
    segment_size: u64,
) -> Result<SnapshotRecovery, BoxError> {
    eprintln!("recovery: snapshot, then {tail} more commands");
    let options = StoreOptions::default().segment_size(segment_size).snapshots_retained(1);
    let store: SessionStore = Store::open_with(PostcardSerializer, store_dir, options).await?;
    let info = store.snapshot().await?;
    let driven = drive_from(&store, BUILD_STREAMS as u64, TAIL_WRITERS, tail).await?;
    store.close().await?;
    let disk = disk_use(store_dir)?;
    let expected = data.expected.len() + driven.expected_sessions;

    let mut opens = Vec::with_capacity(REPETITIONS);
    for rep in 0..REPETITIONS {
        eprintln!("recovery: Store::open from the snapshot + tail, repetition {}/{REPETITIONS}", rep + 1);
        sync_disks()?;
        let started = Instant::now();
        let store: SessionStore = Store::open(PostcardSerializer, store_dir).await?;
        let elapsed = started.elapsed();
        let report = store.recovery().clone();
        let sessions = store.query()?.tokens.len();
        store.close().await?;
        if report.snapshot != Some(info.seq) || report.records_replayed != tail || sessions != expected {
            return Err(format!(
                "reopening after the snapshot at {:?} loaded {:?}, replayed {} records into {sessions} sessions; \
                 expected {tail} records into {expected}",
                info.seq, report.snapshot, report.records_replayed
            )
            .into());
        }
        opens.push(elapsed.as_secs_f64());
    }
    Ok(SnapshotRecovery {
        tail,
        raw_len: info.raw_len,
        file_len: info.file_len,
        segments_removed: info.segments_removed,
        disk,
        open_secs: Summary::of(opens.iter().copied()),
        open_rate: Summary::of(opens.iter().map(|secs| (data.records + tail) as f64 / secs)),
    })
}

/// The postcard encodings of the commands the build committed, back to back in one buffer
/// as a journal segment holds them, stream after stream.
pub(crate) struct Payloads {
    bytes: Vec<u8>,
    ranges: Vec<Range<usize>>,
}

impl Payloads {
    pub(crate) fn encode(records: u64) -> Result<Payloads, BoxError> {
        let mut bytes = Vec::new();
        let mut ranges = Vec::with_capacity(records as usize);
        for command in commands(records) {
            let start = bytes.len();
            PostcardSerializer.encode(&command, &mut bytes)?;
            ranges.push(start..bytes.len());
        }
        Ok(Payloads { bytes, ranges })
    }

    /// Each command's payload, in order.
    pub(crate) fn each(&self) -> impl Iterator<Item = &[u8]> {
        self.ranges.iter().map(|range| &self.bytes[range.clone()])
    }

    /// Decodes every payload and executes it on a fresh state; returns the time taken.
    pub(crate) fn replay(&self, expected_sessions: usize) -> Result<Duration, BoxError> {
        let started = Instant::now();
        let mut state = Sessions::default();
        for range in &self.ranges {
            let command: SessionsCommand = PostcardSerializer.decode(&self.bytes[range.clone()])?;
            state.execute(command);
        }
        let state = black_box(state);
        let elapsed = started.elapsed();
        if state.tokens.len() != expected_sessions {
            return Err(
                format!("in-memory replay left {} sessions, {expected_sessions} expected", state.tokens.len()).into()
            );
        }
        Ok(elapsed)
    }
}
