//! Failing disks: every storage operation of a workload, in turn, fails with `EIO` or with
//! `ENOSPC` ([`SimStorage::fail_at`]), once.
//!
//! * A fault during `open` makes `open` return that error, and the next open succeeds.
//! * A fault during a commit fails exactly that commit (its whole batch) with
//!   `Error::WriteFailed`, or `Error::StorageFull` (`is_storage_full()`) for `ENOSPC`;
//!   every later commit gets `Error::Poisoned`; nothing after the fault is acknowledged; reads
//!   keep showing exactly the acknowledged commands.
//! * Reopening, on the disk as it is (fault gone) or on any crash image of it, yields exactly
//!   the acknowledged commands, plus possibly commands of the failed batch, each whole or not
//!   at all, in sequence order.
//! * With the `snapshot` feature, a fault while a snapshot is written fails that snapshot
//!   only: the store goes on committing, and reopens with everything.

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::sync::Arc;

use airomem::{Error, PostcardSerializer, Store, StoreOptions};
use airomem_workspace::sim::SimStorage;
use airomem_workspace::{Append, SeqLog as Log};

const DIR: &str = "/sim/store";
const COMMANDS: u64 = 50;
/// Small, so that the workloads roll over several times and faults hit rollovers too.
const SEGMENT_SIZE: u64 = 400;
const FAULTS: [ErrorKind; 2] = [ErrorKind::Other, ErrorKind::StorageFull];
/// Crash images of each faulty disk that are reopened too.
const CRASH_SEEDS: u64 = 3;

type LogStore = Store<Log, PostcardSerializer>;

fn append(value: u64) -> Append {
    Append { value, pad: vec![value as u8; (value % 89) as usize], panic: false }
}

fn options(sim: &SimStorage) -> StoreOptions {
    StoreOptions::default().storage(Arc::new(sim.clone())).segment_size(SEGMENT_SIZE)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime")
}

fn fault_name(kind: ErrorKind) -> &'static str {
    if kind == ErrorKind::StorageFull { "ENOSPC" } else { "EIO" }
}

/// Whether `e` reports the injected fault `kind`, and says so in its message.
fn is_the_fault(e: &Error, kind: ErrorKind) -> Result<(), String> {
    let errno = if kind == ErrorKind::StorageFull { 28 } else { 5 };
    // The OS error is either in the message or, for errors that wrap it, its source.
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    if !message.contains(&format!("os error {errno}")) {
        return Err(format!("the error does not name the {} it stems from: {message}", fault_name(kind)));
    }
    if e.is_storage_full() != (kind == ErrorKind::StorageFull) {
        return Err(format!("is_storage_full() is {} for {e:?}", e.is_storage_full()));
    }
    Ok(())
}

/// The error a commit whose own batch hit the fault must get.
fn is_the_batch_fault(e: &Error, kind: ErrorKind) -> Result<(), String> {
    match (e, kind) {
        (Error::StorageFull(_), ErrorKind::StorageFull) | (Error::WriteFailed(_), ErrorKind::Other) => {
            is_the_fault(e, kind)
        }
        _ => Err(format!(
            "expected {} for the failed batch, got {e:?}",
            if kind == ErrorKind::Other { "Error::WriteFailed" } else { "Error::StorageFull" }
        )),
    }
}

/// What a run of commits told its callers.
#[derive(Debug, Default)]
struct Told {
    /// Acknowledged `(seq, value)`, by seq.
    acked: Vec<(u64, u64)>,
    /// Values whose commit got the fault itself (the failed batch).
    failed: BTreeSet<u64>,
}

/// Opens `disk` and checks that it holds the acknowledged commands, then possibly some of the
/// failed batch, in order, each whole, and that the store takes new commits.
async fn check_reopen(disk: &SimStorage, told: &Told, what: &str) -> Result<(), String> {
    let store = LogStore::open_with(PostcardSerializer, DIR, options(disk))
        .await
        .map_err(|e| format!("{what}: reopen failed: {e}"))?;
    let log = store.query().map_err(|e| format!("{what}: query: {e}"))?.entries.clone();
    let acked = told.acked.len();
    if log.len() < acked || log[..acked] != told.acked[..] {
        return Err(format!("{what}: recovered {log:?}, acknowledged {:?}", told.acked));
    }
    for (i, &(seq, value)) in log.iter().enumerate().skip(acked) {
        if seq != i as u64 + 1 || !told.failed.contains(&value) {
            return Err(format!(
                "{what}: recovered ({seq}, {value}) after the acknowledged commands; only commands of the failed \
                 batch {:?} may follow, in sequence order",
                told.failed
            ));
        }
    }
    let next = store.commit(append(u64::MAX)).await.map_err(|e| format!("{what}: commit after reopen: {e}"))?;
    if next.seq.0 != log.len() as u64 + 1 {
        return Err(format!("{what}: after recovering {} commands the next commit got seq {}", log.len(), next.seq));
    }
    store.close().await.map_err(|e| format!("{what}: close after reopen: {e}"))
}

/// Checks reopening `sim` as it is and from crash images of it.
async fn check_reopens(sim: &SimStorage, told: &Told) -> Result<(), String> {
    for seed in 0..CRASH_SEEDS {
        check_reopen(&sim.crash(seed), told, &format!("crash image {seed}")).await?;
    }
    // Last, as this one changes the disk (repairs, one more commit).
    sim.clear_faults();
    check_reopen(sim, told, "the same disk").await
}

/// Where the fault struck in one run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Struck {
    Open,
    Commit,
    /// In `close`, which gives back the journal's zeroed space: it must report the fault.
    Close,
    Nowhere,
}

/// Opens a fresh disk with `fault` armed at operation `at`; `Ok(None)` if open failed as it
/// should (and the checks after a failed open passed).
async fn open_or_check_failure(sim: &SimStorage, at: u64, kind: ErrorKind) -> Result<Option<LogStore>, String> {
    sim.fail_at(at, kind);
    match LogStore::open_with(PostcardSerializer, DIR, options(sim)).await {
        Ok(store) => {
            if sim.ops() > at {
                return Err(format!("the fault struck operation {at} of open, yet open succeeded"));
            }
            Ok(Some(store))
        }
        Err(e) => {
            if sim.ops() <= at {
                return Err(format!("open failed before reaching the fault: {e}"));
            }
            is_the_fault(&e, kind).map_err(|m| format!("open: {m}"))?;
            check_reopens(sim, &Told::default()).await.map_err(|m| format!("after the failed open: {m}"))?;
            Ok(None)
        }
    }
}

/// One writer commits `COMMANDS` commands with operation `at` failing with `kind`.
async fn single_writer(at: u64, kind: ErrorKind) -> Result<Struck, String> {
    let sim = SimStorage::new();
    let Some(store) = open_or_check_failure(&sim, at, kind).await? else { return Ok(Struck::Open) };
    let mut told = Told::default();
    let mut failed_at: Option<u64> = None;
    for value in 0..COMMANDS {
        let before = sim.ops();
        let result = store.commit(append(value)).await;
        // One caller: every operation between `before` and now was this commit's.
        let struck = (before..sim.ops()).contains(&at);
        match (result, failed_at) {
            (Ok(committed), None) if !struck => told.acked.push((committed.seq.0, value)),
            (Ok(committed), _) => {
                return Err(format!("commit {value} acknowledged as {} though the fault struck", committed.seq));
            }
            (Err(e), None) if struck => {
                is_the_batch_fault(&e, kind).map_err(|m| format!("commit {value}: {m}"))?;
                told.failed.insert(value);
                failed_at = Some(value);
            }
            (Err(e), None) => return Err(format!("commit {value} failed without the fault: {e}")),
            (Err(Error::Poisoned { .. }), Some(_)) => {}
            (Err(e), Some(first)) => {
                return Err(format!("commit {value}, after the failure of {first}, got {e:?} instead of Poisoned"));
            }
        }
    }
    let seen = store.query().map_err(|e| format!("query on the poisoned store: {e}"))?.entries.clone();
    if seen != told.acked {
        return Err(format!("reads show {seen:?}, acknowledged {:?}", told.acked));
    }
    let before_close = sim.ops();
    let closed = store.close().await;
    let in_close = (before_close..sim.ops()).contains(&at);
    check_close(closed, failed_at.is_some(), in_close, kind)?;
    check_reopens(&sim, &told).await?;
    Ok(if failed_at.is_some() {
        Struck::Commit
    } else if in_close {
        Struck::Close
    } else {
        Struck::Nowhere
    })
}

/// Operations a fault-free single-writer run takes: one batch per commit, the most any
/// run of these commands can take.
fn fault_free_operations(runtime: &tokio::runtime::Runtime) -> u64 {
    let sim = SimStorage::new();
    runtime.block_on(async {
        let store = LogStore::open_with(PostcardSerializer, DIR, options(&sim)).await.expect("open");
        for value in 0..COMMANDS {
            store.commit(append(value)).await.expect("commit");
        }
        store.close().await.expect("close");
    });
    sim.ops()
}

/// Runs `workload` with each operation up to the most a run takes failing in turn, with each
/// fault, and reports every run that broke a rule.
fn each_operation_fails_in_turn<F>(name: &str, workload: impl Fn(u64, ErrorKind) -> F)
where
    F: std::future::Future<Output = Result<Struck, String>>,
{
    let runtime = runtime();
    let total = fault_free_operations(&runtime);
    assert!(total > 2 * COMMANDS, "every commit writes and syncs: {total} operations");
    let mut failures = Vec::new();
    let mut struck = std::collections::BTreeMap::new();
    for kind in FAULTS {
        for at in 0..=total {
            match runtime.block_on(workload(at, kind)) {
                Ok(where_) => *struck.entry(where_).or_insert(0) += 1,
                Err(m) => failures.push(format!("{} at operation {at}: {m}", fault_name(kind))),
            }
        }
    }
    let runs = 2 * (total + 1);
    println!("{name}: {runs} faulty runs over {total} operations; struck (passing runs): {struck:?}");
    assert!(failures.is_empty(), "{name}: {} of {runs} runs failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn every_operation_of_a_single_writer_fails_in_turn() {
    each_operation_fails_in_turn("single writer", single_writer);
}
const WRITERS: u64 = 5;

/// `WRITERS` concurrent callers commit `COMMANDS` commands in all, with operation `at`
/// failing with `kind`. Batching depends on timing, so the failed batch is identified by
/// its callers: those told of the fault itself.
async fn concurrent_writers(at: u64, kind: ErrorKind) -> Result<Struck, String> {
    let sim = SimStorage::new();
    let Some(store) = open_or_check_failure(&sim, at, kind).await? else { return Ok(Struck::Open) };
    let tasks: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut results = Vec::new();
                for i in 0..COMMANDS / WRITERS {
                    let value = writer * 1000 + i;
                    results.push((value, store.commit(append(value)).await));
                }
                results
            })
        })
        .collect();
    let mut told = Told::default();
    for task in tasks {
        let mut errored = false;
        for (value, result) in task.await.map_err(|e| format!("writer task: {e}"))? {
            match result {
                Ok(_) if errored => return Err(format!("{value} acknowledged after its caller saw an error")),
                Ok(committed) => told.acked.push((committed.seq.0, value)),
                Err(Error::Poisoned { .. }) => errored = true,
                Err(e) => {
                    is_the_batch_fault(&e, kind).map_err(|m| format!("commit {value}: {m}"))?;
                    told.failed.insert(value);
                    errored = true;
                }
            }
        }
    }
    told.acked.sort_unstable();
    if told.acked.iter().enumerate().any(|(i, &(seq, _))| seq != i as u64 + 1) {
        return Err(format!("the acknowledged commands are not exactly seqs 1..: {:?}", told.acked));
    }
    let struck = sim.ops() > at;
    if struck == told.failed.is_empty() {
        return Err(format!("fault struck: {struck}, but the commits told of it: {:?}", told.failed));
    }
    let seen = store.query().map_err(|e| format!("query: {e}"))?.entries.clone();
    if seen != told.acked {
        return Err(format!("reads show {seen:?}, acknowledged {:?}", told.acked));
    }
    let before_close = sim.ops();
    let closed = store.close().await;
    let in_close = (before_close..sim.ops()).contains(&at);
    check_close(closed, struck, in_close, kind)?;
    check_reopens(&sim, &told).await?;
    Ok(if struck {
        Struck::Commit
    } else if in_close {
        Struck::Close
    } else {
        Struck::Nowhere
    })
}

/// `close` fails exactly when a commit already met the fault (the store is poisoned) or the
/// fault struck one of its own operations, and then with the fault itself.
fn check_close(closed: Result<(), Error>, poisoned: bool, in_close: bool, kind: ErrorKind) -> Result<(), String> {
    match closed {
        Ok(()) if !poisoned && !in_close => Ok(()),
        Err(_) if poisoned => Ok(()),
        Err(e) if in_close => is_the_fault(&e, kind).map_err(|m| format!("close: {m}")),
        other => Err(format!("close returned {other:?} (poisoned: {poisoned}, fault in close: {in_close})")),
    }
}

#[test]
fn every_operation_under_concurrent_writers_fails_in_turn() {
    each_operation_fails_in_turn("concurrent writers", concurrent_writers);
}

/// A store with `COMMANDS / 2` commands and one snapshot, then a second snapshot with
/// operation `at` (counted from the snapshot's start) failing with `kind`: the snapshot fails
/// (and may be retried at once), the store keeps committing, and every command is kept.
#[cfg(feature = "snapshot")]
async fn snapshot_with_fault(at: u64, kind: ErrorKind) -> Result<Struck, String> {
    let sim = SimStorage::new();
    let options = options(&sim).snapshots_retained(1);
    let store = LogStore::open_with(PostcardSerializer, DIR, options).await.map_err(|e| format!("open: {e}"))?;
    let mut told = Told::default();
    let mut missed = false;
    for value in 0..COMMANDS {
        if value == COMMANDS / 4 || value == COMMANDS / 2 {
            let first = value == COMMANDS / 4;
            let at = sim.ops() + at;
            if !first {
                sim.fail_at(at, kind);
            }
            let result = store.snapshot().await;
            let struck = sim.ops() > at && !first;
            // A fault armed past the snapshot's operations is not this test's business.
            sim.clear_faults();
            match result {
                Ok(info) if struck => return Err(format!("the snapshot succeeded though the fault struck: {info:?}")),
                Ok(_) if first => {}
                Ok(_) => missed = true,
                Err(e) if struck => {
                    let reported = is_the_fault(&e, kind).map_err(|m| format!("snapshot: {m}"));
                    // The same image again (no commit since): must not trip over the failed one.
                    let retried =
                        store.snapshot().await.map_err(|e| format!("retrying the failed snapshot failed: {e}"));
                    match (reported, retried) {
                        (Ok(()), Ok(_)) => {}
                        (Err(a), Err(b)) => return Err(format!("{a}; {b}")),
                        (Err(m), _) | (_, Err(m)) => return Err(m),
                    }
                }
                Err(e) => return Err(format!("snapshot failed without the fault: {e}")),
            }
        }
        let committed = store.commit(append(value)).await.map_err(|e| format!("commit {value} after snapshot: {e}"))?;
        told.acked.push((committed.seq.0, value));
    }
    store.close().await.map_err(|e| format!("close: {e}"))?;
    check_reopens(&sim, &told).await?;
    Ok(if missed { Struck::Nowhere } else { Struck::Commit })
}

#[cfg(feature = "snapshot")]
#[test]
fn every_operation_of_a_snapshot_fails_in_turn() {
    let runtime = runtime();
    let mut failures = Vec::new();
    let mut runs = 0;
    for kind in FAULTS {
        // Until the fault falls past the snapshot's last operation.
        for at in 0.. {
            runs += 1;
            match runtime.block_on(snapshot_with_fault(at, kind)) {
                Ok(Struck::Nowhere) => break,
                Ok(_) => {}
                Err(m) => failures.push(format!("{} at operation {at} of the snapshot: {m}", fault_name(kind))),
            }
            assert!(at < 100, "a snapshot takes a dozen operations");
        }
    }
    println!("snapshots: {runs} faulty runs");
    assert!(failures.is_empty(), "{} of {runs} runs failed:\n{}", failures.len(), failures.join("\n"));
}
