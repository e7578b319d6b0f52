//! Durable commits per second: concurrent writer tasks committing the session workload to
//! a `PostcardStore<Sessions>` with the default `Durability::Fsync`, so every commit is
//! acknowledged only after its `fdatasync`.

use std::collections::VecDeque;
use std::path::Path;
use std::time::{Duration, Instant};

use airomem::{PostcardSerializer, PostcardStore, Stats, Store, StoreOptions};
use airomem_workspace::{Sessions, SessionsCommand, token};
use tokio::task::JoinSet;

use crate::measure::{BoxError, REPETITIONS, Summary, per_second, percentile, sync_disks};

/// The session store every measurement uses.
pub type SessionStore = PostcardStore<Sessions>;

/// One writer's deterministic stream of commands: nine in ten create a session with a fresh
/// 32-character token, one in ten deletes the oldest session this stream created and has
/// not deleted yet (a create when there is none).
///
/// Streams with different ids never share a token, so any number of them can run against
/// one store, and replaying them one after another builds the same state.
#[derive(Debug)]
pub struct SessionWorkload {
    next_token: u64,
    live: VecDeque<u64>,
    issued: u64,
}

impl SessionWorkload {
    /// The stream numbered `stream` (below 2^32).
    pub fn new(stream: u64) -> SessionWorkload {
        SessionWorkload { next_token: stream << 32, live: VecDeque::new(), issued: 0 }
    }

    /// Sessions this stream has created and not deleted.
    pub fn live_sessions(&self) -> usize {
        self.live.len()
    }
}

impl Iterator for SessionWorkload {
    type Item = SessionsCommand;

    fn next(&mut self) -> Option<SessionsCommand> {
        self.issued += 1;
        if self.issued.is_multiple_of(10)
            && let Some(n) = self.live.pop_front()
        {
            return Some(SessionsCommand::DeleteSession { token: token(n) });
        }
        let n = self.next_token;
        self.next_token += 1;
        self.live.push_back(n);
        Some(SessionsCommand::CreateSession { token: token(n), user_id: n })
    }
}

/// How many of `total` commands writer `index` of `writers` commits.
pub fn share(total: u64, writers: usize, index: usize) -> u64 {
    let writers = writers as u64;
    let index = index as u64;
    total / writers + u64::from(index < total % writers)
}

/// What [`drive`] measured.
#[derive(Debug)]
pub struct Driven {
    /// From the first commit started to the last one acknowledged.
    pub elapsed: Duration,
    /// Every commit's latency, sorted.
    pub latencies: Vec<Duration>,
    /// Sessions that should be live afterwards, if the store started empty.
    pub expected_sessions: usize,
}

/// Commits `total` commands from `writers` concurrent tasks, writer `i` running
/// [`SessionWorkload::new`]`(i)`, and waits until all are acknowledged.
pub async fn drive(store: &SessionStore, writers: usize, total: u64) -> Result<Driven, BoxError> {
    drive_from(store, 0, writers, total).await
}

/// [`drive`] with writer `i` running stream `first_stream + i`: for adding commands to a
/// store that already holds the sessions of streams below `first_stream`.
pub async fn drive_from(
    store: &SessionStore,
    first_stream: u64,
    writers: usize,
    total: u64,
) -> Result<Driven, BoxError> {
    let mut tasks = JoinSet::new();
    let started = Instant::now();
    for index in 0..writers {
        let store = store.clone();
        let count = share(total, writers, index);
        tasks.spawn(async move {
            let mut workload = SessionWorkload::new(first_stream + index as u64);
            let mut latencies = Vec::with_capacity(count as usize);
            for command in workload.by_ref().take(count as usize) {
                let sent = Instant::now();
                store.commit(command).await?;
                latencies.push(sent.elapsed());
            }
            Ok::<_, airomem::Error>((latencies, workload.live_sessions()))
        });
    }
    let mut latencies = Vec::with_capacity(total as usize);
    let mut expected_sessions = 0;
    while let Some(joined) = tasks.join_next().await {
        let (mine, live) = joined??;
        latencies.extend(mine);
        expected_sessions += live;
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    Ok(Driven { elapsed, latencies, expected_sessions })
}

/// One repetition at one writer count.
#[derive(Debug)]
pub struct Run {
    driven: Driven,
    stats: Stats,
}

/// Durable commit throughput at one writer count, over [`REPETITIONS`] runs.
#[derive(Clone, Copy, Debug)]
pub struct CommitResult {
    /// Concurrent writer tasks.
    pub writers: usize,
    /// Commits per repetition.
    pub commits: u64,
    /// Acknowledged commits per second.
    pub rate: Summary,
    /// Commits per batch (`stats().commits / stats().batches`).
    pub average_batch: Summary,
    /// `fdatasync` calls per repetition.
    pub syncs: Summary,
    /// Median commit latency, microseconds.
    pub p50_micros: Summary,
    /// 99th-percentile commit latency, microseconds.
    pub p99_micros: Summary,
}

/// Summarises the repetitions of `commits` durable commits from `writers` tasks.
pub fn summarise(writers: usize, commits: u64, runs: &[Run]) -> CommitResult {
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    CommitResult {
        writers,
        commits,
        rate: Summary::over(runs, |r| per_second(commits, r.driven.elapsed)),
        average_batch: Summary::over(runs, |r| r.stats.average_batch()),
        syncs: Summary::over(runs, |r| r.stats.syncs as f64),
        p50_micros: Summary::over(runs, |r| micros(percentile(&r.driven.latencies, 50.0))),
        p99_micros: Summary::over(runs, |r| micros(percentile(&r.driven.latencies, 99.0))),
    }
}

/// Runs repetition `rep`: `commits` durable commits from `writers` concurrent tasks, on a
/// fresh store in `dir` that is removed afterwards.
pub async fn run_once(dir: &Path, writers: usize, commits: u64, rep: usize) -> Result<Run, BoxError> {
    eprintln!("commits: {writers} writer(s), repetition {}/{REPETITIONS}", rep + 1);
    let store_dir = dir.join(format!("commits-{writers}w-{rep}"));
    let run = measure(&store_dir, writers, commits).await?;
    std::fs::remove_dir_all(&store_dir)?;
    Ok(run)
}

async fn measure(store_dir: &Path, writers: usize, commits: u64) -> Result<Run, BoxError> {
    let store: SessionStore = Store::open_with(PostcardSerializer, store_dir, StoreOptions::default()).await?;
    sync_disks()?;
    let driven = drive(&store, writers, commits).await?;

    // The writer thread updates the counters just after it acknowledges a batch, so read
    // them only once `close` has drained it.
    let probe = store.clone();
    store.close().await?;
    let stats = probe.stats();
    let sessions = probe.query()?.tokens.len();
    drop(probe);

    if stats.commits != commits || stats.aborted != 0 {
        return Err(format!("{commits} commits acknowledged but stats() counts {stats:?}").into());
    }
    if sessions != driven.expected_sessions {
        return Err(format!("{sessions} sessions in the store, {} expected", driven.expected_sessions).into());
    }
    Ok(Run { driven, stats })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_is_ninety_percent_creates() {
        let commands: Vec<_> = SessionWorkload::new(3).take(1000).collect();
        let deletes = commands.iter().filter(|c| matches!(c, SessionsCommand::DeleteSession { .. })).count();
        assert_eq!(deletes, 100);
        let SessionsCommand::CreateSession { token: first, .. } = &commands[0] else { panic!("starts with a create") };
        assert_eq!(commands[9], SessionsCommand::DeleteSession { token: first.clone() });
    }

    #[test]
    fn shares_add_up() {
        assert_eq!((0..64).map(|i| share(20_000, 64, i)).sum::<u64>(), 20_000);
        assert_eq!(share(10, 3, 0), 4);
        assert_eq!(share(10, 3, 2), 3);
    }
}
