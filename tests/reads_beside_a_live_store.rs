//! Reads that take no lock (`Past::open`, `tool::export`) beside a store that keeps
//! committing, rolling its journal over every few commands, taking snapshots and removing
//! or archiving what they cover. Every read must succeed and return a gapless prefix of the
//! history, never shorter than the one before it. One command in seven panics: a read never
//! shows one, although the store's abort marker for it may not be written yet.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use airomem::{At, Durability, Past, PostcardSerializer, Store, StoreOptions};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

#[derive(Serialize, Deserialize, Default)]
struct Log {
    entries: Vec<u64>,
}

#[derive(Serialize, Deserialize)]
struct Push {
    value: u64,
    /// About 300 bytes, so that a 700-byte segment holds two commands.
    padding: String,
}

impl airomem::State for Log {
    type Command = Push;
    fn execute(&mut self, push: Push) {
        self.entries.push(push.value);
        assert!(!panics(push.value), "{}", airomem_workspace::DELIBERATE_PANIC);
    }
}

/// Whether the command pushing `value` panics (after pushing: the store must roll it back).
fn panics(value: u64) -> bool {
    value % 7 == 3
}

/// Commits `Push(0)`, `Push(1)`, ... from a thread of its own, one per permit of `pace`,
/// until `stop` is set. Pacing keeps the journal (which every read replays) from growing
/// without bound while the commits still run concurrently with the reads.
fn writer(
    dir: &Path,
    options: StoreOptions,
    pace: Arc<Semaphore>,
    stop: Arc<AtomicBool>,
    opened: std::sync::mpsc::Sender<()>,
) -> std::thread::JoinHandle<u64> {
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("rt");
        runtime.block_on(async move {
            let store: Store<Log, _> = Store::open_with(PostcardSerializer, &dir, options).await.expect("open");
            opened.send(()).expect("the reader waits");
            let mut value = 0;
            loop {
                pace.acquire().await.expect("open semaphore").forget();
                if stop.load(Ordering::Acquire) {
                    break;
                }
                let outcome = store.commit(Push { value, padding: "x".repeat(300) }).await;
                assert_eq!(outcome.is_err(), panics(value), "#{value}: {outcome:?}");
                value += 1;
            }
            store.close().await.expect("close");
            value
        })
    })
}

/// Reads the latest state `reads` times beside the writer, checking each is the prefix
/// `0..n` and that `n` never goes down.
fn read_beside(options: StoreOptions, reads: usize) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    airomem_workspace::quiet_deliberate_panics();
    let pace = Arc::new(Semaphore::new(COMMITS_PER_READ));
    let stop = Arc::new(AtomicBool::new(false));
    let (opened, is_open) = std::sync::mpsc::channel();
    let running = writer(&dir, options, Arc::clone(&pace), Arc::clone(&stop), opened);
    is_open.recv().expect("the store opened");
    let (mut last, mut shown) = (0, 0);
    let mut failures = Vec::new();
    for _ in 0..reads {
        match Past::<Log>::open(PostcardSerializer, &dir, At::Latest) {
            Ok(past) => {
                let n = past.seq().0;
                let entries = &past.state().entries;
                assert!(n >= last && entries.len() >= shown, "a read went back from #{last} to #{n}");
                let expected: Vec<u64> = (0..).filter(|&v| !panics(v)).take(entries.len()).collect();
                assert!(*entries == expected, "the state at #{n} is not a prefix of the commands that succeed");
                (last, shown) = (n, entries.len());
            }
            Err(e) => failures.push(e.to_string()),
        }
        pace.add_permits(COMMITS_PER_READ);
    }
    stop.store(true, Ordering::Release);
    pace.add_permits(1);
    let committed = running.join().expect("writer");
    assert!(failures.is_empty(), "{} of {reads} reads failed, first: {}", failures.len(), failures[0]);
    assert!(committed > 0 && last > 0, "the reads ran beside commits ({committed} committed, read up to #{last})");
}

/// Enough to roll a 700-byte segment over twice per read.
const COMMITS_PER_READ: usize = 4;

#[test]
fn reads_beside_journal_rollovers_never_fail_nor_go_back() {
    let options = StoreOptions::default().segment_size(700).durability(Durability::OsBuffered);
    read_beside(options, 1000);
}

#[test]
fn reads_beside_snapshots_and_retention_never_fail_nor_go_back() {
    let options = StoreOptions::default()
        .segment_size(700)
        .durability(Durability::OsBuffered)
        .snapshot_every_commands(25)
        .snapshots_retained(1);
    read_beside(options, 1000);
}

#[test]
fn reads_beside_archiving_retention_never_fail_nor_go_back() {
    let options = StoreOptions::default()
        .segment_size(700)
        .durability(Durability::OsBuffered)
        .snapshot_every_commands(25)
        .snapshots_retained(1)
        .keep_history(true);
    read_beside(options, 1000);
}
