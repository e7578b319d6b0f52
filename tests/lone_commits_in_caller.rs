//! A commit awaited alone under `Durability::OsBuffered` or `Durability::Periodic` is written
//! and applied in its caller's thread ([`StoreOptions::commit_in_caller`]), so the writer
//! thread never sees it. What the writer thread still owes such commits is tested here: the
//! periodic sync, which must come although the writer was asleep with nothing unsynced, and
//! automatic snapshots, which must come due although the writer saw no batch.

use std::sync::Arc;
use std::time::Duration;

use airomem::{Durability, PostcardSerializer, Store, StoreOptions};
use airomem_workspace::hooked::{Hooked, Hooks, Op};
use airomem_workspace::sim::SimStorage;
use airomem_workspace::{Append, SeqLog};

const DIR: &str = "/sim/store";

type LogStore = Store<SeqLog, PostcardSerializer>;

fn append(value: u64) -> Append {
    Append { value, pad: Vec::new(), panic: false }
}

/// Polls `condition` until it holds; panics after a minute, which only a bug takes.
async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(std::time::Instant::now() < deadline, "gave up waiting: {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_periodic_commit_is_synced_within_its_interval() {
    let sim = SimStorage::new();
    let options = StoreOptions::default()
        .storage(Arc::new(sim.clone()))
        .durability(Durability::Periodic(Duration::from_millis(5)));
    let store = LogStore::open_with(PostcardSerializer, DIR, options).await.expect("open");
    // Each round starts with nothing unsynced, the writer thread asleep without a timer.
    for value in 1..=3 {
        let syncs = store.stats().syncs;
        store.commit(append(value)).await.expect("commit");
        wait_until("the writer thread syncs a commit it never saw", || store.stats().syncs > syncs).await;
    }
    assert_eq!(store.stats().batches, 3);
    // The power fails: whatever was not synced may be lost, and nothing may be.
    sim.power_cut();
    for seed in 0..20 {
        let options = StoreOptions::default().storage(Arc::new(sim.crash(seed)));
        let reopened = LogStore::open_with(PostcardSerializer, DIR, options).await.expect("reopen");
        let values: Vec<u64> = reopened.query().expect("query").entries.iter().map(|&(_, value)| value).collect();
        assert_eq!(values, [1, 2, 3], "crash image {seed}");
    }
}

#[cfg(feature = "snapshot")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_come_due_for_lone_commits() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let options = StoreOptions::default().durability(Durability::OsBuffered).snapshot_every_commands(10);
    let store = LogStore::open_with(PostcardSerializer, tmp.path(), options.clone()).await.expect("open");
    for value in 1..=35 {
        store.commit(append(value)).await.expect("commit");
    }
    wait_until("an automatic snapshot of lone commits", || store.stats().snapshot_seq >= 10).await;
    store.close().await.expect("close");
    let reopened = LogStore::open_with(PostcardSerializer, tmp.path(), options).await.expect("reopen");
    let report = reopened.recovery();
    assert!(report.snapshot.is_some_and(|seq| seq.0 >= 10), "{report:?}");
    assert_eq!(reopened.query().expect("query").entries.len(), 35);
}

/// A command whose `Serialize` panics when asked to: a panic in the user's own code while the
/// command is encoded, before it reaches the store.
#[derive(Debug)]
struct Fragile {
    value: u64,
    explode: bool,
}

impl serde::Serialize for Fragile {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        assert!(!self.explode, "encoding {} exploded", self.value);
        self.value.serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for Fragile {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        u64::deserialize(deserializer).map(|value| Fragile { value, explode: false })
    }
}

#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Values(Vec<u64>);

impl airomem::State for Values {
    type Command = Fragile;
    fn execute(&mut self, command: Fragile) {
        self.0.push(command.value);
    }
}

/// The panic fails its own call, as it would in a store that committed nothing in its
/// callers' threads: the committer the command would have gone through is not poisoned, and
/// the store goes on committing, closes cleanly and reopens with the other commands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_encoding_a_lone_command_fails_only_its_own_call() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let options = StoreOptions::default().durability(Durability::OsBuffered);
    let store: Store<Values> = Store::open_with(PostcardSerializer, tmp.path(), options.clone()).await.expect("open");
    store.commit(Fragile { value: 1, explode: false }).await.expect("commit");
    let fragile = store.clone();
    let failed = tokio::spawn(async move { fragile.commit(Fragile { value: 2, explode: true }).await }).await;
    assert!(failed.expect_err("the encoding panicked").is_panic());
    store.commit(Fragile { value: 3, explode: false }).await.expect("the store goes on");
    assert_eq!(store.query().expect("query").0, [1, 3]);
    assert_eq!(store.stats().commits, 2);
    store.close().await.expect("close");
    let store: Store<Values> = Store::open_with(PostcardSerializer, tmp.path(), options).await.expect("reopen");
    assert_eq!(store.query().expect("query").0, [1, 3]);
}

/// Records which thread made each operation that waits for the disk or changes the
/// directory: syncs, creations, renames, removals, size changes.
#[derive(Default)]
struct ThreadLedger {
    seen: std::sync::Mutex<Vec<(String, String)>>,
}

impl Hooks for ThreadLedger {
    fn before(&self, op: Op, path: &std::path::Path) {
        if matches!(op, Op::SyncData | Op::SyncDir | Op::Create | Op::Rename | Op::Remove | Op::SetLen) {
            let thread = std::thread::current().name().unwrap_or("unnamed").to_owned();
            self.seen.lock().expect("ledger").push((thread, format!("{op:?} {}", path.display())));
        }
    }
}

/// The operations of the ledger made by any thread but the store's own.
fn in_callers_threads(seen: &std::sync::Mutex<Vec<(String, String)>>) -> Vec<String> {
    let seen = seen.lock().expect("ledger");
    seen.iter()
        .filter(|(thread, _)| !thread.starts_with("airomem-"))
        .map(|(thread, op)| format!("{thread}: {op}"))
        .collect()
}

/// A lone commit in its caller's thread only writes into the page cache: the journal's
/// rollovers (a sync of the old segment, a new segment, a new head, each synced) and the
/// rollback of a panicking command (its abort marker's sync, a rebuild from the files) are
/// the writer thread's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_thread_never_waits_for_the_disk() {
    airomem_workspace::quiet_deliberate_panics();
    let tmp = tempfile::tempdir().expect("tempdir");
    let ledger = Arc::new(ThreadLedger::default());
    let seen = &ledger.seen;
    let options = StoreOptions::default()
        .storage(Arc::new(Hooked::new(Arc::clone(&ledger))))
        .durability(Durability::OsBuffered)
        .segment_size(4096);
    let store = LogStore::open_with(PostcardSerializer, tmp.path(), options.clone()).await.expect("open");
    // Opening is the caller's own wait: only what comes after counts.
    seen.lock().expect("ledger").clear();
    let mut expected = Vec::new();
    for value in 0..40 {
        let panic = value % 10 == 5;
        let outcome = store.commit(Append { value, pad: vec![7; 500], panic }).await;
        assert_eq!(outcome.is_err(), panic, "#{value}");
        if !panic {
            expected.push(value);
        }
    }
    let values: Vec<u64> = store.query().expect("query").entries.iter().map(|&(_, value)| value).collect();
    assert_eq!(values, expected);
    let stats = store.stats();
    assert!(stats.segments_created >= 4, "the commits rolled the journal over: {stats:?}");
    let waits = in_callers_threads(seen);
    assert!(waits.is_empty(), "{} disk waits in callers' threads, first: {:?}", waits.len(), waits.first());
    store.close().await.expect("close");
    let store = LogStore::open_with(PostcardSerializer, tmp.path(), options).await.expect("reopen");
    let values: Vec<u64> = store.query().expect("query").entries.iter().map(|&(_, value)| value).collect();
    assert_eq!(values, expected);
}

/// Holds the writer thread at its next write once armed, until the test lets it go.
#[derive(Default)]
struct WriterGate {
    armed: std::sync::atomic::AtomicBool,
    /// Whether the writer is held, and whether it may go on.
    state: std::sync::Mutex<(bool, bool)>,
    changed: std::sync::Condvar,
}

impl Hooks for WriterGate {
    fn before(&self, op: Op, _path: &std::path::Path) {
        let writer = std::thread::current().name() == Some("airomem-writer");
        if op == Op::WriteAt && writer && self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            let mut state = self.state.lock().expect("gate");
            state.0 = true;
            self.changed.notify_all();
            while !state.1 {
                state = self.changed.wait(state).expect("gate");
            }
        }
    }
}

/// The process dies after a command panicked in its caller's thread and its caller was told,
/// but before the writer thread journaled the abort marker: the files (as a crashed process
/// leaves them, page cache included) hold the command and no marker. The next open aborts
/// it, and the state is the one its caller was promised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_a_callers_panic_and_its_rollback_aborts_the_command_at_open() {
    airomem_workspace::quiet_deliberate_panics();
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dir, crashed) = (tmp.path().join("store"), tmp.path().join("crashed"));
    let gate = Arc::new(WriterGate::default());
    let options =
        StoreOptions::default().storage(Arc::new(Hooked::new(Arc::clone(&gate)))).durability(Durability::OsBuffered);
    let store = LogStore::open_with(PostcardSerializer, &dir, options).await.expect("open");
    for value in [1, 2] {
        store.commit(Append { value, pad: Vec::new(), panic: false }).await.expect("commit");
    }
    gate.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    let failed = store.commit(Append { value: 3, pad: Vec::new(), panic: true }).await;
    let Err(airomem::Error::CommandPanicked { seq, .. }) = failed else { panic!("{failed:?}") };
    // The writer thread is at the abort marker's write: copy the files as a crash leaves them.
    tokio::task::spawn_blocking({
        let gate = Arc::clone(&gate);
        move || {
            let mut state = gate.state.lock().expect("gate");
            while !state.0 {
                state = gate.changed.wait(state).expect("gate");
            }
        }
    })
    .await
    .expect("the writer reached the marker");
    std::fs::create_dir(&crashed).expect("mkdir");
    for entry in std::fs::read_dir(&dir).expect("list") {
        let path = entry.expect("entry").path();
        std::fs::copy(&path, crashed.join(path.file_name().expect("name"))).expect("copy");
    }
    gate.state.lock().expect("gate").1 = true;
    gate.changed.notify_all();
    store.close().await.expect("close");

    let values = |store: &LogStore| -> Vec<u64> {
        store.query().expect("query").entries.iter().map(|&(_, value)| value).collect()
    };
    let reopened = LogStore::open(PostcardSerializer, &crashed).await.expect("open the crash image");
    assert_eq!(reopened.recovery().aborted_now, vec![seq], "the command is aborted at open");
    assert_eq!(values(&reopened), [1, 2]);
    reopened.close().await.expect("close");
    let reopened = LogStore::open(PostcardSerializer, &dir).await.expect("reopen");
    assert!(reopened.recovery().aborted_now.is_empty(), "the marker was journaled before the close");
    assert_eq!(values(&reopened), [1, 2]);
}
