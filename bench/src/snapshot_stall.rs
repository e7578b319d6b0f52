//! The longest commit stall while a snapshot is written: [`WRITERS`] tasks commit durably
//! to a store of `sessions` sessions while `Store::snapshot` runs, against the same load for
//! the same length of time without a snapshot.
//!
//! The snapshot serializes the state under the read lock, between two batches (commits
//! wait for that), then compresses, writes and syncs it on another thread while commits go
//! on. A commit counts towards a window if it was in flight at any moment of it.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use airomem::{Durability, PostcardSerializer, SnapshotInfo, Store, StoreOptions};
use airomem_workspace::{SessionsCommand, token};
use tokio::task::JoinSet;

use crate::commits::{SessionStore, SessionWorkload, share};
use crate::measure::{BoxError, REPETITIONS, Summary, percentile, sync_disks};

/// Concurrent writers during both windows.
pub const WRITERS: usize = 16;
/// Writer tasks that build the store (not timed).
const BUILD_WRITERS: usize = 64;
/// Streams of the building tasks; far from those of the dataset and of the windows.
const BUILD_STREAM: u64 = 1 << 20;
/// Writers commit this long before a window opens, so that it starts under steady load.
const WARM_UP: Duration = Duration::from_millis(100);

/// What the writers saw in one window.
#[derive(Debug)]
struct Window {
    length: Duration,
    /// Latencies of the commits in flight during the window, sorted.
    latencies: Vec<Duration>,
}

/// Commit latencies with and without a snapshot, and what the snapshots cost.
#[derive(Clone, Copy, Debug)]
pub struct SnapshotStall {
    /// Sessions in the store when the first snapshot starts.
    pub sessions: u64,
    /// p50, p99 and max commit latency in microseconds, and commits per second, during
    /// `store.snapshot()`.
    pub with: Latencies,
    /// The same for windows of the same length without a snapshot.
    pub without: Latencies,
    /// Length of the snapshot windows, seconds.
    pub window_secs: Summary,
    /// Bytes of the serialized state.
    pub raw_len: Summary,
    /// Bytes of the compressed snapshot file.
    pub file_len: Summary,
    /// Seconds spent serializing under the read lock.
    pub serialize_secs: Summary,
    /// Seconds spent compressing, writing, syncing and publishing, with no lock held.
    pub write_secs: Summary,
}

/// Commit latency figures of a set of windows.
#[derive(Clone, Copy, Debug)]
pub struct Latencies {
    /// Median, microseconds.
    pub p50_micros: Summary,
    /// 99th percentile, microseconds.
    pub p99_micros: Summary,
    /// Longest, microseconds.
    pub max_micros: Summary,
    /// Commits in flight per second of window.
    pub rate: Summary,
}

impl Latencies {
    fn of(windows: &[Window]) -> Latencies {
        let micros = |d: Duration| d.as_secs_f64() * 1e6;
        Latencies {
            p50_micros: Summary::over(windows, |w| micros(percentile(&w.latencies, 50.0))),
            p99_micros: Summary::over(windows, |w| micros(percentile(&w.latencies, 99.0))),
            max_micros: Summary::over(windows, |w| micros(percentile(&w.latencies, 100.0))),
            rate: Summary::over(windows, |w| w.latencies.len() as f64 / w.length.as_secs_f64()),
        }
    }
}

/// Builds a store of `sessions` sessions in `dir`, then measures [`REPETITIONS`] snapshot
/// windows, each followed by a window of the same length without one.
pub async fn run(dir: &Path, sessions: u64) -> Result<SnapshotStall, BoxError> {
    let store_dir = dir.join("snapshot-stall");
    eprintln!("snapshot stall: building a store of {sessions} sessions");
    build(&store_dir, sessions).await?;
    let store: SessionStore = Store::open(PostcardSerializer, &store_dir).await?;
    let held = store.query()?.tokens.len() as u64;
    if held != sessions {
        return Err(format!("the snapshot store holds {held} sessions, {sessions} expected").into());
    }

    let mut with = Vec::with_capacity(REPETITIONS);
    let mut without = Vec::with_capacity(REPETITIONS);
    let mut infos = Vec::with_capacity(REPETITIONS);
    for rep in 0..REPETITIONS {
        eprintln!(
            "snapshot stall: {WRITERS} writers with and without a snapshot, repetition {}/{REPETITIONS}",
            rep + 1
        );
        let streams = 2 * (rep * WRITERS) as u64;
        sync_disks()?;
        let (window, info) = window(&store, streams, None).await?;
        let length = window.length;
        with.push(window);
        infos.push(info.ok_or("a snapshot window without a snapshot")?);
        sync_disks()?;
        without.push(window_without(&store, streams + WRITERS as u64, length).await?);
    }
    store.close().await?;
    std::fs::remove_dir_all(&store_dir)?;

    let secs = |d: Duration| d.as_secs_f64();
    Ok(SnapshotStall {
        sessions,
        with: Latencies::of(&with),
        without: Latencies::of(&without),
        window_secs: Summary::over(&with, |w| secs(w.length)),
        raw_len: Summary::over(&infos, |i: &SnapshotInfo| i.raw_len as f64),
        file_len: Summary::over(&infos, |i| i.file_len as f64),
        serialize_secs: Summary::over(&infos, |i| secs(i.serialize_time)),
        write_secs: Summary::over(&infos, |i| secs(i.write_time)),
    })
}

/// `sessions` creates from [`BUILD_WRITERS`] tasks with `Durability::OsBuffered`.
async fn build(store_dir: &Path, sessions: u64) -> Result<(), BoxError> {
    let options = StoreOptions::default().durability(Durability::OsBuffered);
    let store: SessionStore = Store::open_with(PostcardSerializer, store_dir, options).await?;
    let mut tasks = JoinSet::new();
    for index in 0..BUILD_WRITERS {
        let store = store.clone();
        let first = (BUILD_STREAM + index as u64) << 32;
        let count = share(sessions, BUILD_WRITERS, index);
        tasks.spawn(async move {
            for n in first..first + count {
                store.commit(SessionsCommand::CreateSession { token: token(n), user_id: n }).await?;
            }
            Ok::<_, airomem::Error>(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    store.close().await?;
    Ok(())
}

async fn window_without(store: &SessionStore, first_stream: u64, length: Duration) -> Result<Window, BoxError> {
    Ok(window(store, first_stream, Some(length)).await?.0)
}

/// Runs [`WRITERS`] committing tasks on streams from `first_stream`; after [`WARM_UP`],
/// the window is a `store.snapshot()` (`hold` is `None`) or a plain wait of `hold`.
async fn window(
    store: &SessionStore,
    first_stream: u64,
    hold: Option<Duration>,
) -> Result<(Window, Option<SnapshotInfo>), BoxError> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = JoinSet::new();
    for index in 0..WRITERS {
        let store = store.clone();
        let stop = Arc::clone(&stop);
        tasks.spawn(async move {
            let mut commits = Vec::new();
            for command in SessionWorkload::new(first_stream + index as u64) {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let sent = Instant::now();
                store.commit(command).await?;
                commits.push((sent, Instant::now()));
            }
            Ok::<_, airomem::Error>(commits)
        });
    }
    tokio::time::sleep(WARM_UP).await;
    let start = Instant::now();
    let info = match hold {
        None => Some(store.snapshot().await?),
        Some(hold) => {
            tokio::time::sleep(hold).await;
            None
        }
    };
    let end = Instant::now();
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let commits = joined??;
        let in_window = commits.into_iter().filter(|&(sent, done)| sent < end && done > start);
        latencies.extend(in_window.map(|(sent, done)| done - sent));
    }
    if latencies.is_empty() {
        return Err("no commit was in flight during the window".into());
    }
    latencies.sort_unstable();
    Ok((Window { length: end - start, latencies }, info))
}
