//! A command that panics halfway through `execute` has no effect: its caller gets
//! `Error::CommandPanicked`, no reader ever sees the half-changed state, later commits work,
//! and recovery skips it. A crash between the panicking command's batch and its abort
//! marker is handled at the next open by aborting it then.

mod segment_files;

use std::collections::BTreeMap;
use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use airomem::{Durability, Error, PostcardSerializer, PostcardStore, Seq, State, Store, StoreOptions};
use serde::{Deserialize, Serialize};
use tokio::sync::Barrier;

/// Two balances that every command changes together, and a journal of deposits: a command
/// that stops between its two halves would leave `a != b` and an entry without its money.
#[derive(Serialize, Deserialize, Default, Clone, Debug, PartialEq, Eq)]
struct Books {
    a: u64,
    b: u64,
    deposits: BTreeMap<u64, u64>,
}

impl Books {
    fn consistent(&self) -> bool {
        self.a == self.b && self.a == self.deposits.values().sum::<u64>()
    }
}

#[derive(Serialize, Deserialize, Debug, Clone)]
struct Deposit {
    key: u64,
    amount: u64,
    explode: bool,
}

impl State for Books {
    type Command = Deposit;

    fn execute(&mut self, command: Deposit) {
        self.deposits.insert(command.key, command.amount);
        self.a += command.amount;
        if command.explode {
            panic!("deposit {} exploded halfway", command.key);
        }
        self.b += command.amount;
    }
}

fn deposit(key: u64, explode: bool) -> Deposit {
    Deposit { key, amount: key + 1, explode }
}

fn apply(model: &mut Books, d: &Deposit) {
    assert!(!d.explode);
    model.deposits.insert(d.key, d.amount);
    model.a += d.amount;
    model.b += d.amount;
}

/// Keeps the expected panics of exploding deposits out of the test output; every other panic
/// is reported as usual.
fn quiet_expected_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info.payload().downcast_ref::<String>().map(String::as_str).unwrap_or_default();
            if !message.ends_with("exploded halfway") {
                default(info);
            }
        }));
    });
}

async fn open(dir: &std::path::Path) -> PostcardStore<Books> {
    open_with(dir, Durability::Fsync).await
}

/// Under `OsBuffered` a lone commit is committed in its caller's thread, not by the writer
/// thread: the rollback runs there.
async fn open_with(dir: &std::path::Path, durability: Durability) -> PostcardStore<Books> {
    quiet_expected_panics();
    let options = StoreOptions::default().segment_size(512).durability(durability);
    Store::open_with(PostcardSerializer, dir, options).await.expect("open")
}

fn expect_panicked(result: Result<airomem::Committed, Error>, key: u64) -> Seq {
    match result {
        Err(Error::CommandPanicked { seq, message }) => {
            assert_eq!(message, format!("deposit {key} exploded halfway"), "the panic message is passed on");
            seq
        }
        other => panic!("deposit {key}: expected CommandPanicked, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_command_has_no_effect_and_is_skipped_on_reopen() {
    panicking_command_has_no_effect(Durability::Fsync).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_command_committed_in_its_callers_thread_has_no_effect() {
    panicking_command_has_no_effect(Durability::OsBuffered).await;
}

async fn panicking_command_has_no_effect(durability: Durability) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("books");
    let store = open_with(&dir, durability).await;
    let mut model = Books::default();
    let mut panicked = Vec::new();
    let mut last_seq = Seq(0);
    for key in 0..60u64 {
        let explode = key % 9 == 4;
        let result = store.commit(deposit(key, explode)).await;
        if explode {
            let seq = expect_panicked(result, key);
            assert!(seq > last_seq, "the aborted command had its own seq");
            last_seq = seq;
            panicked.push(seq);
        } else {
            let committed = result.expect("a command that does not panic commits");
            assert!(committed.seq > last_seq);
            last_seq = committed.seq;
            apply(&mut model, &deposit(key, false));
        }
        let state = store.query().expect("query").clone();
        assert_eq!(state, model, "after deposit {key}: no trace of any panicking command");
    }
    assert_eq!(panicked.len(), 7);
    drop(store);

    for _ in 0..2 {
        let store = open_with(&dir, durability).await;
        assert!(segment_files::segment_names(&dir).len() > 2, "aborted commands sit in several segments");
        assert_eq!(*store.query().expect("query"), model, "reopen yields the model");
        let report = store.recovery();
        assert_eq!(report.records_skipped, panicked.len() as u64, "every aborted command is skipped");
        assert_eq!(report.records_replayed, 60 - panicked.len() as u64);
        assert!(report.aborted_now.is_empty(), "the abort markers were written at commit time");
        assert!(report.torn_tail.is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_an_aborted_command_as_soon_as_its_caller_hears() {
    stats_count_an_aborted_command(Durability::Fsync).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_a_command_aborted_in_its_callers_thread_as_soon_as_it_hears() {
    stats_count_an_aborted_command(Durability::OsBuffered).await;
}

async fn stats_count_an_aborted_command(durability: Durability) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = open_with(tmp.path(), durability).await;
    let mut seen = Vec::new();
    let (mut committed, mut aborted) = (0, 0);
    for key in 0..200u64 {
        let explode = key % 2 == 1;
        let result = store.commit(deposit(key, explode)).await;
        if explode {
            expect_panicked(result, key);
            aborted += 1;
        } else {
            result.expect("commit");
            committed += 1;
        }
        let stats = store.stats();
        seen.push((key, (stats.commits, stats.aborted), (committed, aborted)));
    }
    // Once a caller has heard of its command's outcome, `stats()` counts it, committed or
    // aborted.
    for (key, actual, expected) in seen {
        assert_eq!(actual, expected, "(commits, aborted) in stats() right after deposit {key} returned");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_never_see_a_half_applied_command() {
    const WRITERS: u64 = 4;
    const PER_WRITER: u64 = 120;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("books");
    let store = open(&dir).await;
    let done = Arc::new(AtomicBool::new(false));

    // Readers on plain threads, so that their tight loops do not take the runtime's workers.
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let store = store.clone();
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let (mut reads, mut broken) = (0u64, Vec::new());
                loop {
                    // Read once more after `done`, so that the final state is checked too.
                    let finished = done.load(Ordering::Acquire);
                    let state = store.query().expect("reads are never refused");
                    reads += 1;
                    if !state.consistent() {
                        broken.push(state.clone());
                    }
                    drop(state);
                    if finished {
                        return (reads, broken);
                    }
                    std::thread::yield_now();
                }
            })
        })
        .collect();

    let barrier = Arc::new(Barrier::new(WRITERS as usize));
    let mut handles = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        let barrier = Arc::clone(&barrier);
        handles.push(tokio::spawn(async move {
            barrier.wait().await;
            let (mut ok, mut panicked) = (Vec::new(), Vec::new());
            for i in 0..PER_WRITER {
                let key = w * 1000 + i;
                let explode = (i + w) % 5 == 0;
                let result = store.commit(deposit(key, explode)).await;
                if explode {
                    panicked.push(expect_panicked(result, key));
                } else {
                    ok.push((key, result.expect("commit").seq));
                }
            }
            (ok, panicked)
        }));
    }
    let mut model = Books::default();
    let mut panicked = Vec::new();
    for handle in handles {
        let (ok, p) = handle.await.expect("writer");
        for (key, _) in ok {
            apply(&mut model, &deposit(key, false));
        }
        panicked.extend(p);
    }
    done.store(true, Ordering::Release);
    for reader in readers {
        let (reads, broken) = reader.join().expect("reader");
        assert!(reads > 0);
        assert!(broken.is_empty(), "a reader saw {} inconsistent states, e.g. {:?}", broken.len(), broken.first());
    }
    assert_eq!(*store.query().expect("query"), model, "every successful deposit and nothing else");
    let stats = store.stats();
    drop(store);

    let store = open(&dir).await;
    assert_eq!(*store.query().expect("query"), model);
    assert_eq!(store.recovery().records_skipped, panicked.len() as u64);
    assert_eq!(store.recovery().records_replayed, WRITERS * PER_WRITER - panicked.len() as u64);
    assert!(store.recovery().aborted_now.is_empty());

    assert_eq!(stats.aborted, panicked.len() as u64, "stats count the aborted commands");
    assert_eq!(stats.commits, WRITERS * PER_WRITER - panicked.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_before_the_abort_marker_aborts_the_command_at_the_next_open() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("books");
    let store = open(&dir).await;
    let mut model = Books::default();
    for key in 0..5 {
        store.commit(deposit(key, false)).await.expect("commit");
        apply(&mut model, &deposit(key, false));
    }
    let seq = expect_panicked(store.commit(deposit(5, true)).await, 5);
    store.close().await.expect("close");

    // Cut the abort marker off, as if the process had died right after the batch was synced.
    let newest = segment_files::newest_segment(&dir);
    let segment = segment_files::read_segment(&newest);
    let marker = segment.records.last().expect("records").clone();
    assert_eq!(marker.kind, 2, "the last record is the abort marker");
    assert_eq!(
        u64::from_le_bytes(
            fs::read(&newest).expect("read")[marker.offset + 25..marker.end].try_into().expect("8 bytes")
        ),
        seq.0
    );
    let bytes = fs::read(&newest).expect("read");
    fs::write(&newest, &bytes[..marker.offset]).expect("cut the marker");
    segment_files::as_if_crashed(&dir);

    let store = open(&dir).await;
    assert_eq!(store.recovery().aborted_now, vec![seq], "the panicking command is aborted at open");
    assert_eq!(*store.query().expect("query"), model);
    let next = store.commit(deposit(6, false)).await.expect("commit after recovery");
    apply(&mut model, &deposit(6, false));
    assert!(next.seq > seq);
    drop(store);

    let store = open(&dir).await;
    assert!(store.recovery().aborted_now.is_empty(), "the marker written at open is found");
    assert_eq!(store.recovery().records_skipped, 1);
    assert_eq!(*store.query().expect("query"), model);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_abort_marker_is_cut_and_the_command_aborted_again() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let original = tmp.path().join("original");
    let store = open(&original).await;
    let mut model = Books::default();
    for key in 0..5 {
        store.commit(deposit(key, false)).await.expect("commit");
        apply(&mut model, &deposit(key, false));
    }
    let seq = expect_panicked(store.commit(deposit(5, true)).await, 5);
    store.close().await.expect("close");
    let newest = segment_files::newest_segment(&original);
    let marker = segment_files::read_segment(&newest).records.last().expect("records").clone();
    assert_eq!(marker.kind, 2, "the last record is the abort marker");
    let bytes = fs::read(&newest).expect("read");

    for cut in marker.offset + 1..marker.end {
        let dir = tmp.path().join(format!("cut-{cut}"));
        segment_files::copy_dir(&original, &dir);
        let segment = dir.join(newest.file_name().expect("name"));
        fs::write(&segment, &bytes[..cut]).expect("tear the marker");
        segment_files::as_if_crashed(&dir);

        let store = open(&dir).await;
        let report = store.recovery().clone();
        let tail = report.torn_tail.expect("the torn marker is cut");
        assert_eq!((tail.segment.as_path(), tail.offset), (segment.as_path(), marker.offset as u64), "cut {cut}");
        assert_eq!(fs::read(&tail.quarantine).expect("quarantine"), &bytes[marker.offset..cut]);
        assert_eq!(report.aborted_now, vec![seq], "cut {cut}: the command is aborted again at open");
        assert_eq!(*store.query().expect("query"), model, "cut {cut}");
        store.commit(deposit(100, false)).await.expect("commit after recovery");
        drop(store);

        let store = open(&dir).await;
        assert!(store.recovery().torn_tail.is_none());
        assert!(store.recovery().aborted_now.is_empty(), "cut {cut}: the new marker is found");
        assert_eq!(store.recovery().records_skipped, 1);
        let mut expected = model.clone();
        apply(&mut expected, &deposit(100, false));
        assert_eq!(*store.query().expect("query"), expected, "cut {cut}");
    }
}

/// A rollback that had to replay a long journal leaves a snapshot behind (feature `snapshot`),
/// so that the next rollback, and the next open, start near the end instead.
#[cfg(feature = "snapshot")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_rollback_leaves_a_snapshot_behind() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("books");
    let store: PostcardStore<Books> =
        Store::open_with(PostcardSerializer, &dir, StoreOptions::default()).await.expect("open");
    quiet_expected_panics();
    let mut model = Books::default();
    let mut tasks = Vec::new();
    for writer in 0..8u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..1500u64 {
                store.commit(deposit(writer * 10_000 + i, false)).await.expect("commit");
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer");
    }
    for writer in 0..8u64 {
        for i in 0..1500u64 {
            apply(&mut model, &deposit(writer * 10_000 + i, false));
        }
    }
    let seq = expect_panicked(store.commit(deposit(5, true)).await, 5);
    assert_eq!(*store.query().expect("query"), model);
    // Closing waits for the snapshot thread.
    store.close().await.expect("close");
    let store: PostcardStore<Books> =
        Store::open_with(PostcardSerializer, &dir, StoreOptions::default()).await.expect("reopen");
    let from = store.recovery().snapshot.expect("the rollback left a snapshot behind");
    assert!(from > seq, "the snapshot was taken after the rollback: {from} > {seq}");
    assert_eq!(*store.query().expect("query"), model);
}
