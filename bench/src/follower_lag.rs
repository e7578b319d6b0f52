//! A `Follower` beside a store committing 2,000 commands/s (open loop, one task per command): how long after a commit's
//! acknowledgement the follower has applied it (lag), and the writer's commit latency with
//! and without a follower, in interleaved rounds. Same process: the follower shares nothing
//! with the store but the files, and the clock is one.
//!
//! The follower polls every 10 ms (its default) and shows a batch only once the next batch
//! is written (only then can no abort marker for it follow), so at this rate the lag is
//! about the poll interval plus one commit interval.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airomem::{DEFAULT_POLL_INTERVAL, Follower, PostcardSerializer, Store, StoreOptions};
use serde::{Deserialize, Serialize};

use crate::measure::{BoxError, percentile};

#[derive(Serialize, Deserialize, Default)]
struct Counter {
    count: u64,
    sum: u64,
}

impl airomem::State for Counter {
    type Command = u64;
    fn execute(&mut self, value: u64) {
        self.count += 1;
        self.sum = self.sum.wrapping_add(value);
    }
}

const RATE: u64 = 2_000;
const ROUND: Duration = Duration::from_secs(6);
const ROUNDS: usize = 4;

/// Runs `ROUNDS` rounds (without a follower, with one, alternating) and prints the figures.
pub fn run(runtime: &tokio::runtime::Runtime, dir: &Path) -> Result<(), BoxError> {
    let mut without = Vec::new();
    let mut with = Vec::new();
    let mut lags = Vec::new();
    for round in 0..ROUNDS {
        let follow = round % 2 == 1;
        let store_dir = dir.join(format!("round-{round}"));
        let (commits, lag) = runtime.block_on(one_round(&store_dir, follow))?;
        eprintln!("round {round}: follower {follow}, {} commits", commits.len());
        if follow {
            with.extend(commits);
            lags.extend(lag);
        } else {
            without.extend(commits);
        }
        std::fs::remove_dir_all(&store_dir)?;
    }
    for v in [&mut without, &mut with, &mut lags] {
        v.sort_unstable();
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("| figure | p50 | p99 | max | samples |");
    println!("| --- | --- | --- | --- | --- |");
    for (name, v) in [("commit, no follower", &without), ("commit, with a follower", &with), ("follower lag", &lags)] {
        println!(
            "| {name} | {:.2} ms | {:.2} ms | {:.2} ms | {} |",
            ms(percentile(v, 50.0)),
            ms(percentile(v, 99.0)),
            ms(v.last().copied().unwrap_or_default()),
            v.len()
        );
    }
    Ok(())
}

/// One round: a writer at `RATE` for `ROUND`; with `follow`, a follower beside it. Returns
/// the commit latencies and the lags.
async fn one_round(dir: &Path, follow: bool) -> Result<(Vec<Duration>, Vec<Duration>), BoxError> {
    let options = StoreOptions::default().segment_size(1 << 20).snapshot_every_commands(5_000);
    let store: Store<Counter, _> = Store::open_with(PostcardSerializer, dir, options).await?;
    let acked: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(AtomicBool::new(false));
    let watcher = if follow {
        let follower: Follower<Counter> = Follower::follow(PostcardSerializer, dir, DEFAULT_POLL_INTERVAL)?;
        let (acked, done) = (Arc::clone(&acked), Arc::clone(&done));
        Some(std::thread::spawn(move || -> Result<Vec<Duration>, airomem::Error> {
            let mut lags = Vec::new();
            let mut seen = follower.seq();
            while !done.load(Ordering::Acquire) {
                let reached = follower.wait_for(seen.next(), Duration::from_millis(100))?;
                let now = Instant::now();
                let acked = acked.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                for seq in seen.0 + 1..=reached.0 {
                    // A commit applied before its caller heard back counts as no lag.
                    let at = acked.get(seq as usize).copied().flatten();
                    lags.push(at.map_or(Duration::ZERO, |at| now.saturating_duration_since(at)));
                }
                seen = reached;
            }
            Ok(lags)
        }))
    } else {
        None
    };
    // Open loop: each command is sent at its time in a task of its own, whether or not the
    // ones before it are answered, so the rate is the one asked for and commits share
    // syncs as they would from many clients.
    let started = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut i = 0u64;
    while started.elapsed() < ROUND {
        i += 1;
        tokio::time::sleep_until(started + Duration::from_micros(i * 1_000_000 / RATE)).await;
        let (store, acked) = (store.clone(), Arc::clone(&acked));
        tasks.spawn(async move {
            let sent = Instant::now();
            let receipt = store.commit(i).await?;
            let now = Instant::now();
            let mut acked = acked.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let at = receipt.seq.0 as usize;
            if acked.len() <= at {
                acked.resize(at + 1, None);
            }
            acked[at] = Some(now);
            Ok::<Duration, airomem::Error>(now - sent)
        });
    }
    let mut commits = Vec::new();
    while let Some(done) = tasks.join_next().await {
        commits.push(done??);
    }
    // The last batch becomes final with one more.
    store.commit(0).await?;
    done.store(true, Ordering::Release);
    let lags = match watcher {
        Some(watcher) => watcher.join().map_err(|_| "the watcher panicked")??,
        None => Vec::new(),
    };
    store.close().await?;
    Ok((commits, lags))
}
