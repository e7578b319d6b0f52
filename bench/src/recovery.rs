//! Recovery speed: how fast `Store::open` rebuilds a session store from its journal,
//! against the in-memory limit of decoding the same postcard payloads and executing them
//! on a `Sessions` (a `HashMap` insert or remove each), with no I/O, framing or checksums.

use std::error::Error;
use std::hint::black_box;
use std::ops::Range;
use std::path::Path;
use std::time::{Duration, Instant};

use airomem::{Durability, PostcardSerializer, Serializer, State, Store, StoreOptions};
use airomem_workspace::{Sessions, SessionsCommand};

use crate::commits::{SessionStore, SessionWorkload, drive, share};
use crate::measure::{REPETITIONS, Summary, per_second, sync_disks};

/// Writer tasks that build the journal. Building is not timed, only made quick.
const BUILD_WRITERS: usize = 64;

/// Recovery and in-memory replay figures.
#[derive(Clone, Copy, Debug)]
pub struct RecoveryResult {
    /// Commands in the journal.
    pub records: u64,
    /// Journal bytes, segment headers included.
    pub journal_bytes: u64,
    /// Journal segments.
    pub segments: u64,
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
}

/// Builds a store of `records` commands in `dir`, then times reopening it and the
/// in-memory loop.
pub async fn run(dir: &Path, records: u64) -> Result<RecoveryResult, Box<dyn Error>> {
    let store_dir = dir.join("recovery");
    eprintln!("recovery: building a journal of {records} commands");
    let options = StoreOptions::default().durability(Durability::OsBuffered);
    let store: SessionStore = Store::open_with(PostcardSerializer, &store_dir, options).await?;
    let built = drive(&store, BUILD_WRITERS, records).await?;
    let probe = store.clone();
    store.close().await?;
    let stats = probe.stats();
    drop(probe);
    if stats.commits != records {
        return Err(format!("built {records} commands but stats() counts {stats:?}").into());
    }

    let payloads = Payloads::encode(records)?;
    if payloads.expected_sessions != built.expected_sessions {
        return Err("the regenerated payloads do not match the committed workload".into());
    }

    // Alternate the two, so that a slow spell of the machine skews neither alone.
    let mut opens = Vec::with_capacity(REPETITIONS);
    let mut memory = Vec::with_capacity(REPETITIONS);
    for rep in 0..REPETITIONS {
        eprintln!("recovery: Store::open and in-memory replay, repetition {}/{REPETITIONS}", rep + 1);
        sync_disks()?;
        let started = Instant::now();
        let store: SessionStore = Store::open(PostcardSerializer, &store_dir).await?;
        let elapsed = started.elapsed();
        let report = store.recovery().clone();
        let sessions = store.query()?.tokens.len();
        store.close().await?;
        if report.records_replayed != records || sessions != payloads.expected_sessions {
            return Err(format!(
                "reopened store replayed {} records into {sessions} sessions; expected {records} into {}",
                report.records_replayed, payloads.expected_sessions
            )
            .into());
        }
        opens.push((elapsed, report));

        sync_disks()?;
        memory.push(payloads.replay()?);
    }

    let last = &opens[opens.len() - 1].1;
    Ok(RecoveryResult {
        records,
        journal_bytes: last.bytes_read,
        segments: last.segments_read,
        build_rate: per_second(records, built.elapsed),
        open_secs: Summary::over(&opens, |(elapsed, _)| elapsed.as_secs_f64()),
        open_rate: Summary::over(&opens, |(elapsed, _)| per_second(records, *elapsed)),
        replay_rate: Summary::over(&opens, |(_, report)| per_second(report.records_replayed, report.duration)),
        memory_secs: Summary::over(&memory, Duration::as_secs_f64),
        memory_rate: Summary::over(&memory, |elapsed| per_second(records, *elapsed)),
    })
}

/// The postcard encodings of the commands the build committed, back to back in one buffer
/// as a journal segment holds them, stream after stream.
struct Payloads {
    bytes: Vec<u8>,
    ranges: Vec<Range<usize>>,
    expected_sessions: usize,
}

impl Payloads {
    fn encode(records: u64) -> Result<Payloads, Box<dyn Error>> {
        let mut bytes = Vec::new();
        let mut ranges = Vec::with_capacity(records as usize);
        let mut expected_sessions = 0;
        for stream in 0..BUILD_WRITERS {
            let mut workload = SessionWorkload::new(stream as u64);
            for command in workload.by_ref().take(share(records, BUILD_WRITERS, stream) as usize) {
                let start = bytes.len();
                PostcardSerializer.encode(&command, &mut bytes)?;
                ranges.push(start..bytes.len());
            }
            expected_sessions += workload.live_sessions();
        }
        Ok(Payloads { bytes, ranges, expected_sessions })
    }

    /// Decodes every payload and executes it on a fresh state; returns the time taken.
    fn replay(&self) -> Result<Duration, Box<dyn Error>> {
        let started = Instant::now();
        let mut state = Sessions::default();
        for range in &self.ranges {
            let command: SessionsCommand = PostcardSerializer.decode(&self.bytes[range.clone()])?;
            state.execute(command);
        }
        let state = black_box(state);
        let elapsed = started.elapsed();
        if state.tokens.len() != self.expected_sessions {
            return Err(format!(
                "in-memory replay left {} sessions, {} expected",
                state.tokens.len(),
                self.expected_sessions
            )
            .into());
        }
        Ok(elapsed)
    }
}
