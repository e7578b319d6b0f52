//! `Store::import`: one task's commands committed in order, pipelined, under back-pressure
//! and beside other committers; the first failure stops it and says exactly what committed,
//! so that a retry from the error alone applies each command once.

use std::sync::Arc;

use airomem::{Durability, Error, PostcardSerializer, PostcardStore, Seq, Store, StoreOptions};
use airomem_workspace::sim::SimStorage;
use airomem_workspace::{Append, SeqLog, quiet_deliberate_panics};

fn append(value: u64) -> Append {
    Append { value, pad: vec![4; (value % 17) as usize], panic: false }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_under_back_pressure_commits_everything_in_order() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // A queue of a few commands at most: the import waits on back-pressure all the time.
    let options = StoreOptions::default().max_pending_bytes(600).segment_size(64 * 1024);
    let store: PostcardStore<SeqLog> =
        Store::open_with(PostcardSerializer, tmp.path().join("store"), options).await.expect("open");
    let mut receipts = Vec::new();
    let imported = store
        .import_with_receipts((0..20_000).map(append), |index, receipt| receipts.push((index, receipt.seq)))
        .await
        .expect("import");
    assert_eq!((imported.commands, imported.first, imported.last), (20_000, Some(Seq(1)), Some(Seq(20_000))));
    let expected: Vec<(u64, Seq)> = (0..20_000).map(|i| (i, Seq(i + 1))).collect();
    assert_eq!(receipts, expected, "receipts come in input order, with consecutive sequence numbers");
    let entries = store.query().expect("query").entries.clone();
    assert_eq!(entries, (0..20_000).map(|i| (i + 1, i)).collect::<Vec<_>>());
    store.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_beside_other_committers_keeps_its_own_order() {
    import_beside_other_committers(Durability::Fsync).await;
}

/// Under `OsBuffered` the writer keeps a batch open for an import's next command: commits
/// queued meanwhile must still be taken, in their order, and none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsynced_import_beside_other_committers_keeps_its_own_order() {
    import_beside_other_committers(Durability::OsBuffered).await;
}

async fn import_beside_other_committers(durability: Durability) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let options = StoreOptions::default().durability(durability).max_pending_bytes(4096);
    let store: PostcardStore<SeqLog> =
        Store::open_with(PostcardSerializer, tmp.path().join("store"), options).await.expect("open");
    let mut others = Vec::new();
    for writer in 1..=3u64 {
        let store = store.clone();
        others.push(tokio::spawn(async move {
            for i in 0..300 {
                store.commit(append(writer * 1_000_000 + i)).await.expect("commit");
            }
        }));
    }
    let mut seqs = Vec::new();
    store.import_with_receipts((0..3_000).map(append), |_, r| seqs.push(r.seq)).await.expect("import");
    for task in others {
        task.await.expect("writer");
    }
    assert_eq!(seqs.len(), 3_000, "a receipt for every imported command");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "the import's sequence numbers increase");
    let entries = store.query().expect("query").entries.clone();
    let mine: Vec<u64> = entries.iter().map(|&(_, v)| v).filter(|&v| v < 1_000_000).collect();
    assert_eq!(mine, (0..3_000).collect::<Vec<_>>(), "the import's commands are applied in input order");
    for writer in 1..=3u64 {
        let theirs: Vec<u64> = entries.iter().map(|&(_, v)| v).filter(|&v| v / 1_000_000 == writer).collect();
        assert_eq!(theirs, (0..300).map(|i| writer * 1_000_000 + i).collect::<Vec<_>>(), "writer {writer}");
    }
    assert_eq!(entries.len(), 3_000 + 900);
    store.close().await.expect("close");
    let reopened: PostcardStore<SeqLog> =
        Store::open(PostcardSerializer, tmp.path().join("store")).await.expect("reopen");
    assert_eq!(reopened.query().expect("query").entries, entries, "the journal holds what was applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_command_stops_the_import_and_says_where() {
    quiet_deliberate_panics();
    let tmp = tempfile::tempdir().expect("tempdir");
    let store: PostcardStore<SeqLog> = Store::open(PostcardSerializer, tmp.path().join("store")).await.expect("open");
    let commands = (0..5_000u64).map(|i| Append { value: i, pad: Vec::new(), panic: i == 1_000 });
    match store.import(commands).await {
        Err(Error::ImportStopped { failed_at, committed, committed_after, source, .. }) => {
            assert_eq!(failed_at, 1_000);
            assert!(matches!(*source, Error::CommandPanicked { seq: Seq(1001), .. }), "{source:?}");
            // Everything before it, and exactly those after it that the error lists.
            let entries = store.query().expect("query").entries.clone();
            assert_eq!(entries.len() as u64, committed);
            let values: Vec<u64> = entries.iter().map(|&(_, v)| v).collect();
            let expected: Vec<u64> = (0..1_000).chain(committed_after.iter().flat_map(|r| r.clone())).collect();
            assert_eq!(values, expected);
            assert!(committed_after.iter().all(|r| r.start > 1_000 && r.start < r.end && r.end <= 5_000));
            assert!(committed_after.windows(2).all(|w| w[0].end < w[1].start), "{committed_after:?}");
        }
        other => panic!("expected ImportStopped, got {other:?}"),
    }
}

/// The disk fails under the import: the store is poisoned, the import stops, and what it
/// says was committed is exactly what the store holds, then and after a reopen.
#[test]
fn a_poisoned_store_stops_the_import_and_reports_how_far_it_got() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    let sim = SimStorage::new();
    let options = || StoreOptions::default().storage(Arc::new(sim.clone())).segment_size(4096);
    runtime.block_on(async {
        let store: PostcardStore<SeqLog> =
            Store::open_with(PostcardSerializer, "/sim/store", options()).await.expect("open");
        sim.fail_at(sim.ops() + 40, std::io::ErrorKind::Other);
        let (failed_at, committed, last) = match store.import((0..10_000).map(append)).await {
            Err(Error::ImportStopped { failed_at, committed, last, committed_after, source }) => {
                assert!(matches!(*source, Error::WriteFailed(_) | Error::Poisoned { .. }), "{source:?}");
                assert_eq!(committed_after, [], "a poisoned store commits nothing after the failure");
                (failed_at, committed, last)
            }
            other => panic!("expected ImportStopped, got {other:?}"),
        };
        assert_eq!(failed_at, committed, "everything before the failure was committed, nothing after it");
        assert_eq!(last, (committed > 0).then_some(Seq(committed)));
        assert_eq!(store.query().expect("query").entries.len() as u64, committed);
        assert!(matches!(store.commit(append(1)).await, Err(Error::Poisoned { .. })));
        drop(store);
        sim.clear_faults();
        let store: PostcardStore<SeqLog> =
            Store::open_with(PostcardSerializer, "/sim/store", options()).await.expect("reopen");
        let entries = store.query().expect("query").entries.clone();
        assert!(entries.len() as u64 >= committed, "every committed command is there after a reopen");
        assert_eq!(entries[..committed as usize], (0..committed).map(|i| (i + 1, i)).collect::<Vec<_>>());
    });
}

/// What [`Gated`] commands record: every value applied, in order.
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Applied {
    values: Vec<u64>,
}

/// A command whose `execute` can wait until the import has drawn later commands from its
/// input, and can panic: so that commands after a failing one are surely handed over before
/// it fails.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug)]
struct Gated {
    value: u64,
    /// Which test's count of [`DRAWN`] `hold_until_drawn` refers to.
    lane: usize,
    /// Wait in `execute` until the import has drawn this many commands from its input.
    hold_until_drawn: Option<u64>,
    panic: bool,
}

/// How many commands each test's imports have drawn from their input, one count per test
/// (a lane), with the condition variable a held command waits on.
static DRAWN: std::sync::Mutex<[u64; 2]> = std::sync::Mutex::new([0; 2]);
static DRAWN_GROWN: std::sync::Condvar = std::sync::Condvar::new();

impl airomem::State for Applied {
    type Command = Gated;
    fn execute(&mut self, command: Gated) {
        if let Some(until) = command.hold_until_drawn {
            let drawn = DRAWN.lock().expect("drawn");
            drop(DRAWN_GROWN.wait_while(drawn, |drawn| drawn[command.lane] < until).expect("drawn"));
        }
        assert!(!command.panic, "{}", airomem_workspace::DELIBERATE_PANIC);
        self.values.push(command.value);
    }
}

/// Command 100 panics, but only once the import has handed over 48 more commands, which are
/// in the writer's queue when it fails; command 110 among them panics too. The caller retries
/// from the error alone, mending the command it names, until the import succeeds: every value
/// ends up applied exactly once, in the live store and after a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_from_the_error_alone_applies_each_command_once() {
    retry_from_the_error_alone(Durability::Fsync, 0).await;
}

/// The same under `OsBuffered`, where the writer keeps a batch open for the import's next
/// command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsynced_retry_from_the_error_alone_applies_each_command_once() {
    retry_from_the_error_alone(Durability::OsBuffered, 1).await;
}

async fn retry_from_the_error_alone(durability: Durability, lane: usize) {
    quiet_deliberate_panics();
    const COMMANDS: u64 = 1_000;
    let tmp = tempfile::tempdir().expect("tempdir");
    let options = StoreOptions::default().durability(durability);
    let store: Store<Applied, PostcardSerializer> =
        Store::open_with(PostcardSerializer, tmp.path().join("store"), options).await.expect("open");
    let mut pending: Vec<Gated> = (0..COMMANDS)
        .map(|value| Gated {
            value,
            lane,
            hold_until_drawn: (value == 100).then_some(151),
            panic: value == 100 || value == 110,
        })
        .collect();
    let mut errors = Vec::new();
    loop {
        assert!(errors.len() < 3, "two failing commands stop two imports at most: {errors:#?}");
        let drawn = pending.clone().into_iter().inspect(|_| {
            DRAWN.lock().expect("drawn")[lane] += 1;
            DRAWN_GROWN.notify_all();
        });
        match store.import(drawn).await {
            Ok(imported) => {
                assert_eq!(imported.commands, pending.len() as u64);
                break;
            }
            Err(error @ Error::ImportStopped { .. }) => {
                retry(&mut pending, &error);
                errors.push(error);
            }
            Err(other) => panic!("expected ImportStopped, got {other:?}"),
        }
    }
    // When command 100 failed, the import had drawn 151 commands, so handed over the 48
    // after it up to 148 at least: all of them committed, but for 110.
    let Error::ImportStopped { failed_at: 100, committed, committed_after, .. } = &errors[0] else {
        panic!("the first import stops at command 100: {:#?}", errors[0]);
    };
    assert_eq!(committed_after[0], 101..110, "{committed_after:?}");
    assert!(committed_after[1].start == 111 && committed_after[1].end >= 149, "{committed_after:?}");
    assert_eq!(*committed, 100 + committed_after.iter().map(|r| r.end - r.start).sum::<u64>());

    let values = store.query().expect("query").values.clone();
    let mut times = vec![0u32; COMMANDS as usize];
    for &value in &values {
        times[value as usize] += 1;
    }
    let wrong: Vec<(usize, u32)> = times.into_iter().enumerate().filter(|&(_, n)| n != 1).collect();
    assert!(
        wrong.is_empty(),
        "{} values not applied exactly once (value, times), from {:?}; the first import said: {}",
        wrong.len(),
        &wrong[..wrong.len().min(5)],
        errors[0]
    );
    assert_eq!(values.len() as u64, COMMANDS);
    store.close().await.expect("close");
    let reopened: Store<Applied, PostcardSerializer> =
        Store::open(PostcardSerializer, tmp.path().join("store")).await.expect("reopen");
    assert_eq!(reopened.query().expect("query").values, values, "the journal holds what was applied");
}

/// What a caller does with `ImportStopped`, from the error alone: mends the command that
/// failed, and keeps of `pending` what is still to commit: it, and every later command the
/// error does not list as committed.
fn retry(pending: &mut Vec<Gated>, error: &Error) {
    let Error::ImportStopped { failed_at, committed_after, .. } = error else { unreachable!("matched by the caller") };
    let committed = |i: u64| committed_after.iter().any(|range| range.contains(&i));
    let rest = (0u64..).zip(std::mem::take(pending)).skip(*failed_at as usize);
    for (i, mut command) in rest {
        if i == *failed_at {
            command.panic = false;
            command.hold_until_drawn = None;
            pending.push(command);
        } else if !committed(i) {
            pending.push(command);
        }
    }
}
