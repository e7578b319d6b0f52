//! `--backup`: `Store::backup` of a store of 1,000,000 commands (100,000 with `--quick`)
//! while 16 writers commit under `Durability::Fsync` in a closed loop: how long the backup
//! takes, what it holds, and the writers' commit latency during it against the same
//! writers' latency in the 3 s just before it. Each round takes a fresh
//! backup of the grown store.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use airomem::{PostcardSerializer, PostcardStore, Store, StoreOptions};
use airomem_workspace::{Sessions, SessionsCommand, token};
use tokio::runtime::Runtime;

use crate::measure::{BoxError, percentile};

const WRITERS: u64 = 16;
const ROUNDS: usize = 3;
/// Phases the writers file their latencies under.
const BEFORE: u8 = 0;
const DURING: u8 = 1;
const STOP: u8 = 2;

/// One round's figures.
struct Round {
    backup: Duration,
    seq: u64,
    files: usize,
    linked: usize,
    bytes: u64,
    /// (commits scaled to `window`, p50, p99) before and during the backup.
    before: (usize, Duration, Duration),
    during: (usize, Duration, Duration),
    window: Duration,
}

/// Runs the measurement in `dir` and prints it as markdown on standard output.
pub fn run(runtime: &Runtime, dir: &Path, commands: u64) -> Result<(), BoxError> {
    let store_dir = dir.join("store");
    runtime.block_on(fill(&store_dir, commands))?;
    let mut rounds = Vec::new();
    for round in 0..ROUNDS {
        eprintln!("backup: round {}/{ROUNDS}", round + 1);
        let dest = dir.join(format!("backup-{round}"));
        rounds.push(runtime.block_on(one(&store_dir, &dest, commands + round as u64 * 1_000_000_000))?);
        std::fs::remove_dir_all(&dest)?;
    }
    println!(
        "| round | backup | cut (#) | files (linked) | bytes | writers' commits/s before / during | p50 before / during | p99 before / during |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
    for (i, r) in rounds.iter().enumerate() {
        let rate = |n: usize| n as f64 / r.window.as_secs_f64();
        println!(
            "| {} | {} | {} | {} ({}) | {:.1} MB | {:.0} / {:.0} | {} / {} | {} / {} |",
            i + 1,
            ms(r.backup),
            r.seq,
            r.files,
            r.linked,
            r.bytes as f64 / 1e6,
            rate(r.before.0),
            rate(r.during.0),
            ms(r.before.1),
            ms(r.during.1),
            ms(r.before.2),
            ms(r.during.2)
        );
    }
    Ok(())
}

fn options() -> StoreOptions {
    StoreOptions::default()
}

async fn fill(dir: &Path, commands: u64) -> Result<(), BoxError> {
    let started = Instant::now();
    let store: PostcardStore<Sessions> = Store::open_with(PostcardSerializer, dir, options()).await?;
    store.import((0..commands).map(|i| SessionsCommand::CreateSession { token: token(i), user_id: i })).await?;
    store.snapshot().await?;
    store.close().await?;
    eprintln!("backup: {commands} commands imported and snapshotted in {:.1?}", started.elapsed());
    Ok(())
}

async fn one(dir: &Path, dest: &Path, first_token: u64) -> Result<Round, BoxError> {
    let store: PostcardStore<Sessions> = Store::open_with(PostcardSerializer, dir, options()).await?;
    let phase = Arc::new(AtomicU8::new(BEFORE));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (store, phase) = (store.clone(), Arc::clone(&phase));
        writers.push(tokio::spawn(async move {
            let mut latencies: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
            let mut i = first_token + w * 100_000_000;
            loop {
                let now = phase.load(Ordering::Relaxed);
                if now == STOP {
                    return latencies;
                }
                let started = Instant::now();
                let command = SessionsCommand::CreateSession { token: token(i), user_id: i };
                store.commit(command).await.expect("commit");
                // Filed under the phase it started in; one that straddles goes to the first.
                latencies[usize::from(now)].push(started.elapsed());
                i += 1;
            }
        }));
    }
    // The window before is a fixed 3 s (the backup's length is known only once it ends);
    // the rates are per second, so the two windows compare.
    let window = Duration::from_secs(3);
    tokio::time::sleep(window).await;
    phase.store(DURING, Ordering::Relaxed);
    let started = Instant::now();
    let report = store.backup(dest).await?;
    let backup = started.elapsed();
    phase.store(STOP, Ordering::Relaxed);
    let mut before = Vec::new();
    let mut during = Vec::new();
    for writer in writers {
        let [b, d] = writer.await?;
        before.extend(b);
        during.extend(d);
    }
    store.close().await?;
    airomem::backup::verify(dest)?;
    before.sort_unstable();
    during.sort_unstable();
    let figures = |l: &[Duration], over: Duration| {
        // Commits per `window`: the rate line divides by it.
        let scaled = (l.len() as f64 * window.as_secs_f64() / over.as_secs_f64()) as usize;
        (scaled, percentile(l, 50.0), percentile(l, 99.0))
    };
    Ok(Round {
        backup,
        seq: report.seq.0,
        files: report.files.len(),
        linked: report.linked,
        bytes: report.bytes,
        before: figures(&before, window),
        during: figures(&during, backup),
        window,
    })
}
