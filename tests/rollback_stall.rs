//! How long readers wait while a panicking command is rolled back on a store of a million
//! commands: a measurement, not a check. Run it in release:
//! `cargo test --release --all-features --test rollback_stall -- --ignored --nocapture`
//! (`AIROMEM_STALL_COMMANDS` changes the count).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use std::collections::HashMap;

use airomem::{Durability, Error, PostcardSerializer, PostcardStore, Store, StoreOptions};
use airomem_workspace::{Append, DELIBERATE_PANIC, SeqLog, quiet_deliberate_panics};
use serde::{Deserialize, Serialize};

/// A small state with a long history: counters over a thousand keys.
#[derive(Default, Serialize, Deserialize)]
struct Counters {
    by_key: HashMap<u64, u64>,
}

#[derive(Serialize, Deserialize)]
struct Bump {
    key: u64,
    panic: bool,
}

impl airomem::State for Counters {
    type Command = Bump;
    fn execute(&mut self, bump: Bump) {
        *self.by_key.entry(bump.key).or_default() += 1;
        assert!(!bump.panic, "{DELIBERATE_PANIC}");
    }
}

/// Two panicking commands, one after the other, at the end of `commands` bumps over 1,000
/// keys: the first rollback replays the whole history; with snapshots it leaves one behind,
/// and the second starts from it.
fn measure_long_history(commands: u64) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    runtime.block_on(async {
        let options = StoreOptions::default().durability(Durability::OsBuffered);
        let store: PostcardStore<Counters> =
            Store::open_with(PostcardSerializer, tmp.path(), options).await.expect("open");
        airomem_workspace::commit_from_64_tasks(&store, commands, |n| Bump { key: n % 1000, panic: false }).await;
        let mut stalls = Vec::new();
        for _ in 0..2 {
            let started = Instant::now();
            let outcome = store.commit(Bump { key: 0, panic: true }).await;
            stalls.push(started.elapsed().as_secs_f64() * 1000.0);
            assert!(matches!(outcome, Err(Error::CommandPanicked { .. })), "{outcome:?}");
            // Lets the snapshot the rollback left behind (feature `snapshot`) be published
            // before the next panic: a measurement may wait, a test would not.
            let waited = Instant::now();
            while cfg!(feature = "snapshot")
                && store.stats().snapshot_seq == 0
                && waited.elapsed() < Duration::from_secs(10)
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        println!(
            "{commands} commands over 1,000 keys: the first rollback took {:.1} ms, the second {:.1} ms",
            stalls[0], stalls[1]
        );
        store.close().await.expect("close");
    });
}

fn measure(commands: u64, snapshot_every: Option<u64>) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    runtime.block_on(async {
        let mut options = StoreOptions::default().durability(Durability::OsBuffered);
        #[cfg(feature = "snapshot")]
        if let Some(n) = snapshot_every {
            options = options.snapshot_every_commands(n);
        }
        #[cfg(not(feature = "snapshot"))]
        let _ = snapshot_every;
        let store: PostcardStore<SeqLog> =
            Store::open_with(PostcardSerializer, tmp.path(), options).await.expect("open");
        airomem_workspace::commit_from_64_tasks(&store, commands, |n| Append { value: n, pad: Vec::new(), panic: false }).await;

        // A reader that measures its longest wait for the read lock.
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let store = store.clone();
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let mut longest = Duration::ZERO;
                while !done.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let len = store.query().map(|s| s.entries.len()).unwrap_or(0);
                    longest = longest.max(started.elapsed());
                    std::hint::black_box(len);
                }
                longest
            })
        };
        let started = Instant::now();
        let outcome = store.commit(Append { value: u64::MAX, pad: Vec::new(), panic: true }).await;
        let rollback = started.elapsed();
        assert!(matches!(outcome, Err(Error::CommandPanicked { .. })), "{outcome:?}");
        done.store(true, Ordering::Relaxed);
        let longest = reader.join().expect("reader");
        assert_eq!(store.query().expect("query").entries.len() as u64, commands);
        println!(
            "{commands} commands, automatic snapshots {snapshot_every:?}: the panicking commit returned after {:.1} ms; \
             the longest read waited {:.1} ms",
            rollback.as_secs_f64() * 1000.0,
            longest.as_secs_f64() * 1000.0
        );
        store.close().await.expect("close");
    });
}

#[test]
#[ignore = "a measurement: run in release with --ignored --nocapture"]
fn rollback_stall_of_a_million_command_store() {
    quiet_deliberate_panics();
    let commands: u64 = std::env::var("AIROMEM_STALL_COMMANDS").map_or(1_000_000, |n| n.parse().expect("a count"));
    measure(commands, None);
    measure(commands, Some(100_000));
    measure_long_history(commands);
}
