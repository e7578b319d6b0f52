//! `--lone-commit`: one caller committing alone, through the async API (one task on the
//! bench's multi-threaded runtime, as the "1 writer" row) and through the blocking API (the
//! main thread, no runtime involved), under `Durability::OsBuffered` and `Durability::Fsync`.
//!
//! A lone commit is where the two APIs differ: it polls for its receipt (see
//! `StoreOptions::spin_limit`), pausing with `tokio::task::yield_now` in a task and with
//! `std::thread::yield_now` on a blocking handle, and it pays one wake-up of its waiting
//! thread or task when it stops polling. Each round runs one repetition of all four (which API
//! goes first alternates), so a slow spell of a shared disk shows in the ranges rather than
//! in the ratios.

use std::path::Path;
use std::time::Instant;

use airomem::{Durability, PostcardSerializer, Store, StoreOptions, blocking};
use airomem_workspace::Sessions;
use tokio::runtime::Runtime;

use crate::commits::{SessionStore, SessionWorkload, drive};
use crate::measure::{BoxError, Summary, per_second, sync_disks};

/// Rounds of the four measurements; the median is reported.
const ROUNDS: usize = 7;

/// Runs the comparison in `dir` and prints it as markdown on standard output.
pub fn run(runtime: &Runtime, dir: &Path) -> Result<(), BoxError> {
    let policies = [("OsBuffered", Durability::OsBuffered, 20_000), ("Fsync", Durability::Fsync, 5_000)];
    let mut rates: Vec<[Vec<f64>; 2]> = policies.iter().map(|_| [Vec::new(), Vec::new()]).collect();
    for round in 0..ROUNDS {
        for (p, &(name, durability, commits)) in policies.iter().enumerate() {
            eprintln!("lone commit: {name}, round {}/{ROUNDS}", round + 1);
            let options = StoreOptions::default().durability(durability);
            // Which goes first alternates, so that neither always follows the other's writes.
            for api in [round % 2, 1 - round % 2] {
                let store_dir = dir.join(format!("lone-{api}-{name}-{round}"));
                let rate = if api == 0 {
                    lone_task(runtime, &store_dir, options.clone(), commits)?
                } else {
                    lone_thread(&store_dir, options.clone(), commits)?
                };
                rates[p][api].push(rate);
                std::fs::remove_dir_all(&store_dir)?;
            }
        }
    }
    println!("| policy (commits per repetition) | async, one task | blocking, one thread | blocking / async |");
    println!("| --- | ---: | ---: | ---: |");
    for (&(name, _, commits), [tasks, threads]) in policies.iter().zip(&rates) {
        let (task, thread) = (Summary::of(tasks.iter().copied()), Summary::of(threads.iter().copied()));
        println!(
            "| {name} ({commits}) | {:.0}/s ({:.0}–{:.0}) | {:.0}/s ({:.0}–{:.0}) | {:.2}× |",
            task.median,
            task.min,
            task.max,
            thread.median,
            thread.min,
            thread.max,
            thread.median / task.median
        );
    }
    println!("\nMedians of {ROUNDS} interleaved rounds (min–max in brackets), session workload, postcard.");
    Ok(())
}

/// Commits per second of one task on `runtime`: the bench's "1 writer" measurement.
fn lone_task(runtime: &Runtime, store_dir: &Path, options: StoreOptions, commits: u64) -> Result<f64, BoxError> {
    runtime.block_on(async {
        let store: SessionStore = Store::open_with(PostcardSerializer, store_dir, options).await?;
        sync_disks()?;
        let driven = drive(&store, 1, commits).await?;
        let probe = store.clone();
        store.close().await?;
        check(&probe.stats(), commits)?;
        Ok(per_second(commits, driven.elapsed))
    })
}

/// Commits per second of this thread through a blocking handle.
fn lone_thread(store_dir: &Path, options: StoreOptions, commits: u64) -> Result<f64, BoxError> {
    let store: blocking::PostcardStore<Sessions> = blocking::Store::open_with(PostcardSerializer, store_dir, options)?;
    sync_disks()?;
    let started = Instant::now();
    for command in SessionWorkload::new(0).take(commits as usize) {
        store.commit(command)?;
    }
    let elapsed = started.elapsed();
    let probe = store.clone();
    store.close()?;
    check(&probe.stats(), commits)?;
    Ok(per_second(commits, elapsed))
}

/// Read after `close`, which drains the writer.
fn check(stats: &airomem::Stats, commits: u64) -> Result<(), BoxError> {
    if stats.commits != commits || stats.aborted != 0 {
        return Err(format!("{commits} commits acknowledged but stats() counts {stats:?}").into());
    }
    Ok(())
}
