//! Crashes inside a snapshot's life, on the frozen path and on today's path, through the
//! real store and the real recovery on the simulated disk.
//!
//! Each case: concurrent writers commit to a sharded copy-on-write map ([`frozen_state`]),
//! snapshots are taken by `store.snapshot()` at random points and automatically
//! (`snapshot_every_commands`), and the power is cut (or the process killed) at one storage
//! operation inside a snapshot's life ([`Trigger`]): counted from the creation of the
//! `target`th snapshot's temporary file, either on the snapshot thread only (creating the
//! temporary file, streaming its chunks, the sync, the rename, the directory sync,
//! retention's listing, removals and sync) or on any thread (the writers' journal operations
//! while the view is being written, too); or counted from the start of a retention, or from
//! a removal. A snapshot big enough to be synced on the way (every 4 MiB) is cut at that
//! periodic sync and around it by a test of its own. The snapshot thread is slowed down: at
//! each temporary file's creation it waits until the writers have completed a few more
//! commits, so commits really happen between a freeze and the view's serialization.
//!
//! The disk a power loss leaves ([`SimStorage::crash`]) or a killed process leaves
//! ([`SimStorage::process_crash`]) is reopened. Every command records its id under
//! `LOG | seq`, so the recovered state says which command it holds at which sequence number;
//! it must hold exactly the sequence numbers `1..=L`, `L` the recovered store's last
//! (`recovery().next_seq - 1`), every acknowledged command at its acknowledged sequence
//! number, and be exactly the model state after those commands in that order.
//!
//! The broken freeze ([`frozen_state::BrokenFreeze`], whose view shares the live shards)
//! fails it: commands committed while its view waits leak into the snapshot and are replayed
//! again from the journal after it ([`frozen_state::Op::Add`] is not idempotent).
//!
//! `PROPTEST_CASES` sets the number of cases (default [`DEFAULT_CASES`]).
#![cfg(feature = "snapshot")]

#[allow(dead_code, reason = "each test binary uses a part of the shared state module")]
mod frozen_state;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use airomem::{Durability, PostcardSerializer, Store, StoreOptions};
use airomem_workspace::hooked::{Hooked, Hooks, Op as StorageOp};
use airomem_workspace::sim::{SimStorage, SplitMix64};
use frozen_state::{
    BrokenFreeze, Cmd, Frozen, Op, Plain, TestState, diff, is_snapshot_temp, log_of, model_of, on_snapshot_thread,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

const DIR: &str = "/sim/store";

/// Cases per test unless `PROPTEST_CASES` says otherwise.
const DEFAULT_CASES: u32 = 128;

/// The id of the command that fills the map before the writers start.
const FILL_ID: u64 = u64::MAX;

/// The id of the command committed after recovery.
const AFTER_ID: u64 = u64::MAX - 1;

/// Data keys of the writers' commands: few, so that adds and removes meet.
const KEYS: u64 = 512;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_CASES)
}

/// How the run ends.
#[derive(Clone, Copy, Debug)]
enum Crash {
    /// The power is lost: the disk [`SimStorage::crash`] leaves with this seed.
    PowerLoss(u64),
    /// The process is killed: its writes stay in the page cache. With `os_buffered`, the
    /// store commits under `Durability::OsBuffered` (so also in callers' threads).
    ProcessKill { os_buffered: bool },
}

/// One case.
#[derive(Clone, Debug)]
struct Case {
    writers: u64,
    per_writer: u64,
    /// Entries filled in before the writers start (a bigger view to serialize).
    fill: u64,
    segment_size: u64,
    snapshot_every: Option<u64>,
    retained: usize,
    /// Explicit snapshots, each once this many percent of the writers' commits completed.
    explicit_at: Vec<u64>,
    /// Where the power goes off.
    trigger: Trigger,
    /// Commits the snapshot thread waits for at each temporary file's creation.
    lag: u64,
    /// The snapshots' zstd level.
    level: i32,
    crash: Crash,
    seed: u64,
}

/// Where in a snapshot's life the power goes off.
#[derive(Clone, Copy, Debug)]
enum Trigger {
    /// `offset` operations after the creation of the `target`th snapshot temporary file
    /// (counted over explicit and automatic snapshots alike; that creation is operation 0),
    /// counting the snapshot thread's operations only, or every thread's.
    AfterCreate { target: usize, offset: u64, any_thread: bool },
    /// `offset` operations of the snapshot thread after its `nth` (from 1) `fdatasync` of a
    /// snapshot temporary file (that sync is operation 0).
    AfterSync { nth: u64, offset: u64 },
    /// `offset` operations of the snapshot thread after the start of its `nth` (from 1)
    /// retention: its first listing of the directory (operation 0), then the second, the
    /// removals of old snapshots and covered segments, and the directory sync.
    InRetention { nth: u64, offset: u64 },
    /// `offset` operations of the snapshot thread after its `nth` (from 1) removal of an
    /// old snapshot or a covered journal segment.
    AfterRemoval { nth: u64, offset: u64 },
}

fn trigger(explicit: usize) -> impl Strategy<Value = Trigger> {
    prop_oneof![
        3 => (any::<usize>(), any::<bool>(), 0..32u64).prop_map(move |(target, any_thread, offset)| {
            Trigger::AfterCreate {
                // Each explicit snapshot creates a temporary file, so this one is reached.
                target: target % explicit,
                // The snapshot thread makes about a dozen operations per snapshot.
                offset: if any_thread { offset } else { offset / 2 },
                any_thread,
            }
        }),
        1 => (2..=6u64, 0..5u64).prop_map(|(nth, offset)| Trigger::InRetention { nth, offset }),
        1 => (1..=3u64, 0..3u64).prop_map(|(nth, offset)| Trigger::AfterRemoval { nth, offset }),
    ]
}

fn crash() -> impl Strategy<Value = Crash> {
    prop_oneof![
        2 => any::<u64>().prop_map(Crash::PowerLoss),
        1 => any::<bool>().prop_map(|os_buffered| Crash::ProcessKill { os_buffered }),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    let workload = (
        1..=3u64,
        6..=20u64,
        prop_oneof![Just(0u64), 1..3000u64],
        256..2048u64,
        proptest::option::of(2..10u64),
        2..=3usize,
        vec(0..100u64, 1..8),
    );
    workload
        .prop_flat_map(|workload| {
            let explicit = workload.6.len();
            (Just(workload), trigger(explicit), 1..=4u64, crash(), any::<u64>())
        })
        .prop_map(
            |(
                (writers, per_writer, fill, segment_size, snapshot_every, retained, mut explicit_at),
                trigger,
                lag,
                crash,
                seed,
            )| {
                explicit_at.sort_unstable();
                Case {
                    writers,
                    per_writer,
                    fill,
                    segment_size,
                    snapshot_every,
                    retained,
                    explicit_at,
                    trigger,
                    lag,
                    level: 3,
                    crash,
                    seed,
                }
            },
        )
}

impl Case {
    fn options(&self, storage: Arc<dyn airomem::storage::Storage>) -> StoreOptions {
        let durability = match self.crash {
            Crash::ProcessKill { os_buffered: true } => Durability::OsBuffered,
            _ => Durability::Fsync,
        };
        let options = StoreOptions::default()
            .storage(storage)
            .segment_size(self.segment_size)
            .durability(durability)
            .snapshots_retained(self.retained)
            .snapshot_compression_level(self.level);
        match self.snapshot_every {
            Some(n) => options.snapshot_every_commands(n),
            None => options,
        }
    }

    fn total(&self) -> u64 {
        self.writers * self.per_writer
    }

    /// Writer `writer`'s commands, in order: ids `writer << 32 | i`.
    fn commands(&self, writer: u64) -> Vec<Cmd> {
        let mut rng = SplitMix64::new(self.seed ^ writer.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        (0..self.per_writer)
            .map(|i| {
                let key = rng.below(KEYS);
                let op = if rng.chance(1, 4) { Op::Remove { key } } else { Op::Add { key, delta: rng.next_u64() } };
                Cmd { id: (writer << 32) | i, op }
            })
            .collect()
    }
}

/// The storage hook: cuts the power at the chosen operation, slows each snapshot down until
/// the writers have completed `lag` more commits, and records where the cut fell.
struct CrashPoint {
    sim: SimStorage,
    trigger: Trigger,
    lag: u64,
    state: Mutex<Progress>,
    changed: Condvar,
}

#[derive(Default)]
struct Progress {
    /// Snapshot temporary files created so far.
    temp_files: usize,
    /// `fdatasync`s of snapshot temporary files so far.
    temp_syncs: u64,
    /// A snapshot was renamed into place and its retention has not listed the directory yet.
    published: bool,
    /// Retentions started so far.
    retentions: u64,
    /// Old snapshots and covered segments retention removed so far.
    removals: u64,
    /// Operations counted since the trigger's first operation.
    counted: Option<u64>,
    /// The operation the power was cut at.
    cut: Option<(StorageOp, String)>,
    /// Commits completed (acknowledged or failed).
    completed: u64,
    /// No more commits will complete.
    writers_done: bool,
}

impl CrashPoint {
    fn new(sim: &SimStorage, case: &Case) -> CrashPoint {
        CrashPoint {
            sim: sim.clone(),
            trigger: case.trigger,
            lag: case.lag,
            state: Mutex::default(),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn completed(&self) {
        self.lock().completed += 1;
        self.changed.notify_all();
    }

    fn writers_done(&self) {
        self.lock().writers_done = true;
        self.changed.notify_all();
    }

    /// Waits (blocking) until `count` commits have completed or the writers are done.
    fn wait_for_commits(&self, count: u64) {
        let mut progress = self.lock();
        while progress.completed < count && !progress.writers_done {
            progress = self.changed.wait(progress).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl Hooks for CrashPoint {
    fn before(&self, op: StorageOp, path: &Path) {
        let snapshot_thread = on_snapshot_thread();
        let creates_temp = snapshot_thread && op == StorageOp::Create && is_snapshot_temp(path);
        let syncs_temp = snapshot_thread && op == StorageOp::SyncData && is_snapshot_temp(path);
        let publishes = snapshot_thread && op == StorageOp::Rename && is_snapshot_temp(path);
        let lists = snapshot_thread && op == StorageOp::List;
        let removes = snapshot_thread && op == StorageOp::Remove && !is_snapshot_temp(path);
        let mut progress = self.lock();
        if creates_temp {
            if let Trigger::AfterCreate { target, .. } = self.trigger
                && progress.temp_files == target
            {
                progress.counted = Some(0);
            }
            progress.temp_files += 1;
        }
        if syncs_temp {
            progress.temp_syncs += 1;
            if let Trigger::AfterSync { nth, .. } = self.trigger
                && progress.temp_syncs == nth
            {
                progress.counted = Some(0);
            }
        }
        if publishes {
            progress.published = true;
        }
        // Retention lists the directory once or twice (snapshots, then segments): the first
        // listing after a snapshot is published starts it.
        if lists && std::mem::take(&mut progress.published) {
            progress.retentions += 1;
            if let Trigger::InRetention { nth, .. } = self.trigger
                && progress.retentions == nth
            {
                progress.counted = Some(0);
            }
        }
        if removes {
            progress.removals += 1;
            if let Trigger::AfterRemoval { nth, .. } = self.trigger
                && progress.removals == nth
            {
                progress.counted = Some(0);
            }
        }
        let (offset, any_thread) = match self.trigger {
            Trigger::AfterCreate { offset, any_thread, .. } => (offset, any_thread),
            Trigger::AfterSync { offset, .. }
            | Trigger::InRetention { offset, .. }
            | Trigger::AfterRemoval { offset, .. } => (offset, false),
        };
        if let Some(counted) = progress.counted
            && progress.cut.is_none()
            && (any_thread || snapshot_thread)
        {
            if counted == offset {
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                progress.cut = Some((op, name));
                self.sim.power_cut();
            }
            progress.counted = Some(counted + 1);
        }
        if creates_temp && progress.cut.is_none() {
            // The view (or image) waits while the writers go on.
            let until = progress.completed + self.lag;
            while progress.completed < until && !progress.writers_done {
                progress = self.changed.wait(progress).unwrap_or_else(PoisonError::into_inner);
            }
        }
    }
}

/// What the run told its callers.
#[derive(Default)]
struct Outcome {
    submitted: HashMap<u64, Cmd>,
    /// Acknowledged commands: sequence number to id.
    acked: BTreeMap<u64, u64>,
}

/// Runs the case's workload on `sim` until the crash point (or a clean close).
async fn run<T: TestState>(case: &Case, sim: &SimStorage, hook: &Arc<CrashPoint>) -> Result<Outcome, String> {
    let storage = Arc::new(Hooked::over(sim.clone(), Arc::clone(hook)));
    let store: Store<T, PostcardSerializer> = Store::open_with(PostcardSerializer, DIR, case.options(storage))
        .await
        .map_err(|e| format!("open of the empty disk: {e}"))?;
    let mut outcome = Outcome::default();
    if case.fill > 0 {
        let fill = Cmd { id: FILL_ID, op: Op::Fill { from: 0, count: case.fill } };
        let seq = store.commit(fill.clone()).await.map_err(|e| format!("the fill: {e}"))?.seq.0;
        outcome.acked.insert(seq, FILL_ID);
        outcome.submitted.insert(FILL_ID, fill);
    }

    let mut writers = Vec::new();
    for writer in 0..case.writers {
        let commands = case.commands(writer);
        outcome.submitted.extend(commands.iter().map(|c| (c.id, c.clone())));
        let (store, hook, sim) = (store.clone(), Arc::clone(hook), sim.clone());
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for cmd in commands {
                let id = cmd.id;
                let result = store.commit(cmd).await;
                hook.completed();
                match result {
                    Ok(committed) => acked.push((committed.seq.0, id)),
                    Err(e) if !sim.is_frozen() => return Err(format!("commit {id:#x} failed with the power on: {e}")),
                    Err(_) => {}
                }
            }
            Ok(acked)
        }));
    }
    let snapshots = {
        let (store, hook, sim) = (store.clone(), Arc::clone(hook), sim.clone());
        let at: Vec<u64> = case.explicit_at.iter().map(|percent| case.total() * percent / 100).collect();
        tokio::spawn(async move {
            for count in at {
                let hook = Arc::clone(&hook);
                tokio::task::spawn_blocking(move || hook.wait_for_commits(count)).await.expect("waiting for commits");
                match store.snapshot().await {
                    Err(e) if !sim.is_frozen() => return Err(format!("snapshot failed with the power on: {e}")),
                    _ => {}
                }
            }
            Ok(())
        })
    };
    let mut failure = None;
    for writer in writers {
        match writer.await.map_err(|e| format!("writer task: {e}"))? {
            Ok(acked) => {
                for (seq, id) in acked {
                    if outcome.acked.insert(seq, id).is_some() {
                        failure.get_or_insert(format!("seq {seq} acknowledged twice"));
                    }
                }
            }
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
    hook.writers_done();
    if let Err(e) = snapshots.await.map_err(|e| format!("snapshot task: {e}"))? {
        failure.get_or_insert(e);
    }
    if let Err(e) = store.close().await
        && !sim.is_frozen()
    {
        failure.get_or_insert(format!("close failed with the power on: {e}"));
    }
    match failure {
        Some(failure) => Err(failure),
        None => Ok(outcome),
    }
}

/// Reopens the crash image and checks the recovered state against the model.
async fn recover_and_check<T: TestState>(case: &Case, image: &SimStorage, outcome: &Outcome) -> Result<(), String> {
    let store: Store<T, PostcardSerializer> =
        Store::open_with(PostcardSerializer, DIR, case.options(Arc::new(image.clone())))
            .await
            .map_err(|e| format!("open after the crash: {e}"))?;
    let report = store.recovery().clone();
    if !report.snapshots_skipped.is_empty() {
        return Err(format!("a published snapshot did not load: {:?}", report.snapshots_skipped));
    }
    let last = report.next_seq.0 - 1;
    let map = store.query().map_err(|e| format!("query: {e}"))?.to_map();
    let log = log_of(&map);
    if !log.keys().copied().eq(1..=last) {
        let missing: Vec<u64> = (1..=last).filter(|s| !log.contains_key(s)).take(5).collect();
        let extra: Vec<u64> = log.keys().copied().filter(|&s| s == 0 || s > last).take(5).collect();
        return Err(format!(
            "the recovered state's commands are not exactly seqs 1..={last}: missing {missing:?}, beyond {extra:?}"
        ));
    }
    if let Some((&seq, &id)) = outcome.acked.iter().find(|&(&seq, &id)| log.get(&seq) != Some(&id)) {
        return Err(format!(
            "acknowledged seq {seq} (command {id:#x}) lost: recovered up to seq {last}, holding {:?} there \
             (snapshot {:?}, {} records replayed)",
            log.get(&seq),
            report.snapshot,
            report.records_replayed
        ));
    }
    let mut seen = BTreeSet::new();
    let mut last_of_writer: BTreeMap<u64, u64> = BTreeMap::new();
    let mut commands = Vec::new();
    for (&seq, &id) in &log {
        let cmd = outcome.submitted.get(&id).ok_or_else(|| format!("seq {seq} holds {id:#x}, never submitted"))?;
        if !seen.insert(id) {
            return Err(format!("command {id:#x} recovered twice (again at seq {seq})"));
        }
        if id != FILL_ID {
            let (writer, i) = (id >> 32, id & 0xffff_ffff);
            if last_of_writer.insert(writer, i).is_some_and(|previous| previous > i) {
                return Err(format!("seq {seq}: writer {writer}'s command {i} recovered after a later one"));
            }
        }
        commands.push((seq, cmd));
    }
    let model = model_of(commands.iter().map(|&(seq, cmd)| (seq, cmd)));
    if let Some(difference) = diff(&map, &model) {
        return Err(format!(
            "the recovered state is not the model state at its last seq {last} (snapshot {:?}, {} records \
             replayed): {difference}",
            report.snapshot, report.records_replayed
        ));
    }
    // The store goes on from there.
    let next = store
        .commit(Cmd { id: AFTER_ID, op: Op::Add { key: 0, delta: 1 } })
        .await
        .map_err(|e| format!("commit after recovery: {e}"))?;
    if next.seq.0 != last + 1 {
        return Err(format!("the first commit after recovering up to seq {last} got seq {}", next.seq.0));
    }
    store.close().await.map_err(|e| format!("close after recovery: {e}"))
}

/// Where the cuts of a test's cases fell, by operation: printed, for a look at the coverage.
type Coverage = Mutex<BTreeMap<String, u64>>;

/// Runs one case and checks its recovery; returns where the power went off.
fn one_case<T: TestState>(case: &Case, coverage: &Coverage) -> Result<Option<(StorageOp, String)>, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let sim = SimStorage::new();
    let hook = Arc::new(CrashPoint::new(&sim, case));
    let outcome = runtime.block_on(run::<T>(case, &sim, &hook))?;
    let cut = hook.lock().cut.take();
    let what = match &cut {
        Some((op, name)) => {
            // Files are named as created: a journal segment is prepared under a temporary name.
            let kind = if name.contains(".journal") {
                "journal segment"
            } else if name.ends_with(".snapshot.tmp") {
                "snapshot temp file"
            } else if name.ends_with(".snapshot") {
                "snapshot"
            } else if name.contains(".head") {
                "journal head"
            } else {
                "directory"
            };
            format!("{op:?} {kind}")
        }
        None => "no cut (clean close)".to_string(),
    };
    *coverage.lock().unwrap_or_else(PoisonError::into_inner).entry(what).or_default() += 1;
    sim.power_cut();
    let image = match case.crash {
        Crash::PowerLoss(seed) => sim.crash(seed),
        Crash::ProcessKill { .. } => sim.process_crash(),
    };
    runtime.block_on(recover_and_check::<T>(case, &image, &outcome)).map_err(|e| format!("{e} [cut at {cut:?}]"))?;
    Ok(cut)
}

/// Runs the property for one build of the state; panics with the first failure.
fn crash_points<T: TestState>(name: &str, shrink: bool) {
    let config = Config {
        cases: cases(),
        failure_persistence: None,
        max_shrink_iters: if shrink { 64 } else { 0 },
        ..Config::default()
    };
    let coverage = Coverage::default();
    let result = TestRunner::new(config)
        .run(&case(), |case| one_case::<T>(&case, &coverage).map(drop).map_err(TestCaseError::fail));
    eprintln!("{name}: cuts by operation: {:?}", coverage.lock().unwrap_or_else(PoisonError::into_inner));
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
}

#[test]
fn crashes_inside_frozen_snapshots_recover_the_model_state() {
    crash_points::<Frozen>("frozen path", true);
}

#[test]
fn crashes_inside_plain_snapshots_recover_the_model_state() {
    crash_points::<Plain>("plain path", true);
}

/// The same property fails for a freeze whose view shares the live shards.
#[test]
#[should_panic(expected = "the recovered state is not the model state at its last seq")]
fn crashes_inside_snapshots_of_a_broken_freeze_are_caught() {
    crash_points::<BrokenFreeze>("broken freeze", false);
}

/// Filled entries of the big state: 13 bytes each in postcard, so its snapshot body (stored
/// uncompressed at zstd level -5) passes 4 MiB and the snapshot thread syncs the temporary
/// file once on the way (every 4 MiB written), before its final sync.
const BIG_FILL: u64 = 340_000;

/// A crash at the periodic sync of a snapshot bigger than 4 MiB, at the chunk write after it,
/// at the final sync and at the directory sync after the rename, with writers committing
/// while the view is written.
fn big_snapshot_crash_points<T: TestState>() {
    let coverage = Coverage::default();
    let kill = Crash::ProcessKill { os_buffered: false };
    let points = [
        // The periodic sync; the chunk written after it.
        (Trigger::AfterSync { nth: 1, offset: 0 }, Crash::PowerLoss(1)),
        (Trigger::AfterSync { nth: 1, offset: 1 }, kill),
        // The final sync (reached only if the first was a periodic one); the directory sync
        // after the rename (the killed process leaves the snapshot published).
        (Trigger::AfterSync { nth: 2, offset: 0 }, Crash::PowerLoss(2)),
        (Trigger::AfterSync { nth: 2, offset: 2 }, kill),
    ];
    for (trigger, crash) in points {
        let case = Case {
            writers: 2,
            per_writer: 8,
            fill: BIG_FILL,
            segment_size: 1 << 20,
            snapshot_every: None,
            retained: 2,
            explicit_at: vec![0],
            trigger,
            lag: 4,
            level: -5,
            crash,
            seed: 7,
        };
        let cut = one_case::<T>(&case, &coverage).unwrap_or_else(|e| panic!("{trigger:?}, {crash:?}: {e}"));
        assert!(cut.is_some(), "{trigger:?}: the snapshot never got there: {coverage:?}");
    }
    eprintln!("cuts by operation: {:?}", coverage.lock().unwrap_or_else(PoisonError::into_inner));
}

#[test]
fn crashes_inside_a_big_frozen_snapshot_recover_the_model_state() {
    big_snapshot_crash_points::<Frozen>();
}
