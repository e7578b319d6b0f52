//! Frozen snapshots (`State::snapshot_view`) hold exactly the state at their sequence number,
//! and write the very bytes today's path writes.
//!
//! * The view sees exactly the commands up to its seq: writers commit concurrently while
//!   snapshots are taken; each snapshot thread is held (by a storage hook) at a write of its
//!   temporary file until the writers have committed more commands after the freeze, before
//!   the view is serialized or (with a state above 4 MiB) in the middle of its
//!   serialization. The snapshot file, loaded and decoded, must be exactly the model after
//!   the acknowledged commands `1..=seq`, and `shards_copied` exactly the number of shards
//!   the later commands wrote.
//! * The frozen path and today's path agree: the same commands on two stores of the same
//!   type, one frozen and one not, snapshotted at the same seq while more commands are
//!   committed; the files decode to equal states, their decompressed images are
//!   byte-identical, and reopening each gives equal states. With postcard and with JSON.
//! * Both fail for a freeze whose view shares the live data ([`BrokenFreeze`]): the
//!   `should_panic` tests keep the proof that these tests can fail.
//!
//! `PROPTEST_CASES` sets the number of cases of the property tests (default
//! [`DEFAULT_CASES`]).
#![cfg(feature = "snapshot")]

#[allow(dead_code, reason = "each test binary uses a part of the shared state module")]
mod frozen_state;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use airomem::storage::StdStorage;
use airomem::{JsonSerializer, PostcardSerializer, Seq, Serializer, SnapshotInfo, Store, StoreOptions};
use airomem_workspace::hooked::Hooked;
use airomem_workspace::sim::{SimStorage, SplitMix64};
use frozen_state::{BrokenFreeze, Cmd, Frozen, Gate, Model, Op, Plain, SHARDS, TestState, diff, model_of, touched};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use tokio::sync::mpsc;

/// Cases per property test unless `PROPTEST_CASES` says otherwise.
const DEFAULT_CASES: u32 = 16;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_CASES)
}

/// `(seq, command)` of every acknowledged command.
type History = BTreeMap<u64, Cmd>;

fn model_up_to(history: &History, seq: u64) -> Model {
    model_of(history.range(..=seq).map(|(&s, cmd)| (s, cmd)))
}

// ---------------------------------------------------------------------------------------
// The view sees exactly the commands up to its seq.
// ---------------------------------------------------------------------------------------

const WRITERS: usize = 4;
/// Snapshots per test.
const ROUNDS: usize = 3;
/// Commands handed to the writers as each snapshot is asked for: before or after its freeze.
const ALONGSIDE: usize = 16;
/// Commands committed while the snapshot thread is held: all after the freeze.
const WHILE_HELD: usize = 24;
/// Data keys of the writers' commands.
const KEYS: u64 = 4096;
/// Filled entries of the big state: 1.5 MiB in postcard, so its serialization passes the
/// first 4 MiB chunk.
const BIG_FILL: u64 = 420_000;

/// A writer's command. One in four writes the last shard, which every serialization writes
/// last: held in the middle of its serialization, a view has not written that shard yet.
fn writer_command(rng: &mut SplitMix64, id: u64) -> Cmd {
    let key = if rng.chance(1, 4) {
        rng.below(KEYS / SHARDS as u64) * SHARDS as u64 + SHARDS as u64 - 1
    } else {
        rng.below(KEYS)
    };
    let op = if rng.chance(1, 5) { Op::Remove { key } } else { Op::Add { key, delta: rng.next_u64() } };
    Cmd { id, op }
}

/// Concurrent writers fed from one queue: the test hands them commands and collects their
/// receipts.
struct Writers {
    work: Option<mpsc::UnboundedSender<Cmd>>,
    receipts: mpsc::UnboundedReceiver<(u64, Cmd)>,
    tasks: tokio::task::JoinSet<()>,
    rng: SplitMix64,
    next_id: u64,
}

impl Writers {
    fn start<T: TestState>(store: &Store<T, PostcardSerializer>, first_id: u64) -> Writers {
        let (work, queue) = mpsc::unbounded_channel::<Cmd>();
        let queue = Arc::new(tokio::sync::Mutex::new(queue));
        let (done, receipts) = mpsc::unbounded_channel();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..WRITERS {
            let (store, queue, done) = (store.clone(), Arc::clone(&queue), done.clone());
            tasks.spawn(async move {
                loop {
                    let next = queue.lock().await.recv().await;
                    let Some(cmd) = next else { break };
                    let committed = store.commit(cmd.clone()).await.expect("commit");
                    done.send((committed.seq.0, cmd)).expect("the test collects receipts");
                }
            });
        }
        Writers { work: Some(work), receipts, tasks, rng: SplitMix64::new(0x5eed), next_id: first_id }
    }

    /// Hands the writers `count` new commands.
    fn hand(&mut self, count: usize) {
        for _ in 0..count {
            let cmd = writer_command(&mut self.rng, self.next_id);
            self.next_id += 1;
            self.work.as_ref().expect("writers running").send(cmd).expect("writers running");
        }
    }

    /// Waits for `count` receipts and records them.
    async fn collect(&mut self, count: usize, history: &mut History) {
        for _ in 0..count {
            let (seq, cmd) = self.receipts.recv().await.expect("a writer's receipt");
            assert!(history.insert(seq, cmd).is_none(), "seq {seq} acknowledged twice");
        }
    }

    async fn stop(mut self) {
        self.work = None;
        while let Some(done) = self.tasks.join_next().await {
            done.expect("writer task");
        }
    }
}

/// Asks for a snapshot, held at its temporary file's `hold_at`th write, and commits
/// [`WHILE_HELD`] commands while it is held ([`ALONGSIDE`] more race its freeze). Returns once
/// it is written; nothing is committed after the snapshot thread is let go.
async fn snapshot_with_commits_while_held<T: TestState>(
    store: &Store<T, PostcardSerializer>,
    gate: &Arc<Gate>,
    hold_at: u32,
    writers: &mut Writers,
    history: &mut History,
) -> SnapshotInfo {
    writers.hand(ALONGSIDE);
    gate.arm(hold_at);
    let snapshot = tokio::spawn({
        let store = store.clone();
        async move { store.snapshot().await }
    });
    let held = Arc::clone(gate);
    tokio::task::spawn_blocking(move || held.wait_held()).await.expect("the snapshot thread is held");
    writers.collect(ALONGSIDE, history).await;
    writers.hand(WHILE_HELD);
    writers.collect(WHILE_HELD, history).await;
    gate.release();
    snapshot.await.expect("snapshot task").expect("snapshot")
}

/// The snapshot file of `seq` in `dir`, decoded as `T`.
fn load_snapshot<T: TestState>(dir: &Path, info: &SnapshotInfo) -> T {
    let (header, image) =
        airomem_snapshot::load(&StdStorage::default(), dir, info.seq, PostcardSerializer::ID).expect("load");
    assert_eq!(header.seq, info.seq);
    assert_eq!(image.len() as u64, info.raw_len, "the image is as long as the snapshot said");
    PostcardSerializer.decode(&image).expect("decode the snapshot as the state type")
}

/// The view-sees-exactly-its-seq property for state `T`; with `big`, the state passes 4 MiB
/// and each snapshot is held in the middle of its serialization, after its first chunk.
async fn snapshots_hold_exactly_their_commands<T: TestState>(big: bool) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let gate = Arc::new(Gate::default());
    let options = StoreOptions::default().storage(Arc::new(Hooked::new(Arc::clone(&gate))));
    let store: Store<T, PostcardSerializer> = Store::open_with(PostcardSerializer, &dir, options).await.expect("open");
    let mut history = History::new();
    if big {
        let fill = Cmd { id: u64::MAX, op: Op::Fill { from: 0, count: BIG_FILL } };
        let seq = store.commit(fill.clone()).await.expect("fill").seq.0;
        history.insert(seq, fill);
    }
    let hold_at = if big { 2 } else { 1 };
    let mut writers = Writers::start(&store, 0);
    let mut last = None;
    for round in 0..ROUNDS {
        let info = snapshot_with_commits_while_held(&store, &gate, hold_at, &mut writers, &mut history).await;
        let seq = info.seq.0;
        let newest = *history.keys().next_back().expect("commands");
        assert!(history.keys().copied().eq(1..=newest), "round {round}: every commit acknowledged, no gaps");
        let later: Vec<(u64, &Cmd)> = history.range(seq + 1..).map(|(&s, c)| (s, c)).collect();
        assert!(
            later.len() >= WHILE_HELD,
            "round {round}: only {} commands after the snapshot's seq {seq}, though {WHILE_HELD} were \
             committed while it was held",
            later.len()
        );
        if big {
            assert!(
                info.raw_len > airomem_snapshot::format::CHUNK_RAW as u64,
                "round {round}: the state passes the first chunk: {}",
                info.raw_len
            );
        }

        let loaded = load_snapshot::<T>(&dir, &info);
        if let Some(difference) = diff(&loaded.to_map(), &model_up_to(&history, seq)) {
            panic!(
                "round {round}: the snapshot at seq {seq} is not the state after exactly the commands 1..={seq} \
                 ({} more were committed after its freeze): {difference}",
                later.len()
            );
        }
        assert_eq!(info.frozen, T::FROZEN, "round {round}: the path the snapshot took");
        let copied: BTreeSet<usize> = later.iter().flat_map(|&(s, cmd)| touched(s, cmd)).collect();
        let expected = if T::FROZEN { copied.len() as u64 } else { 0 };
        assert_eq!(
            info.shards_copied, expected,
            "round {round}: the commands after seq {seq} wrote shards {copied:?} while the view held them"
        );
        assert!(expected < SHARDS as u64 || !T::FROZEN, "some shards stayed shared: {copied:?}");
        let stats = store.stats();
        assert_eq!((stats.snapshot_seq, stats.last_snapshot_shards_copied), (seq, info.shards_copied));
        let live = store.query().expect("query").to_map();
        assert!(diff(&live, &model_up_to(&history, newest)).is_none(), "round {round}: the live state");
        last = Some((seq, newest));
    }
    writers.stop().await;
    store.close().await.expect("close");

    let (snapshot, newest) = last.expect("rounds");
    let store: Store<T, PostcardSerializer> =
        Store::open_with(PostcardSerializer, &dir, StoreOptions::default()).await.expect("reopen");
    let report = store.recovery();
    assert_eq!(report.snapshot, Some(Seq(snapshot)));
    assert_eq!(report.records_replayed, newest - snapshot);
    let reopened = store.query().expect("query").to_map();
    if let Some(difference) = diff(&reopened, &model_up_to(&history, newest)) {
        panic!("reopened from the snapshot at seq {snapshot} and the journal after it: {difference}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_view_holds_exactly_the_commands_up_to_its_seq() {
    snapshots_hold_exactly_their_commands::<Frozen>(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_view_held_mid_serialization_holds_exactly_the_commands_up_to_its_seq() {
    snapshots_hold_exactly_their_commands::<Frozen>(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_snapshot_holds_exactly_the_commands_up_to_its_seq() {
    snapshots_hold_exactly_their_commands::<Plain>(false).await;
    snapshots_hold_exactly_their_commands::<Plain>(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "round 0: the snapshot at seq")]
async fn a_broken_freeze_leaks_later_commands_into_its_snapshot() {
    snapshots_hold_exactly_their_commands::<BrokenFreeze>(false).await;
}

// No mid-serialization variant for the broken freeze: its view holds every shard's lock
// while it is serialized, so a snapshot held there would stop every writer.

// ---------------------------------------------------------------------------------------
// The frozen path and today's path produce the same snapshots.
// ---------------------------------------------------------------------------------------

const DIR: &str = "/sim/store";

/// What the comparison runs.
#[derive(Clone, Debug)]
enum Step {
    /// One command, committed on both stores.
    Command(Op),
    /// A snapshot on both stores, each held (before its view is serialized) while these
    /// commands are committed.
    Snapshot(Vec<Op>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..256u64, any::<u64>()).prop_map(|(key, delta)| Op::Add { key, delta }),
        2 => (0..256u64).prop_map(|key| Op::Remove { key }),
        1 => (0..4000u64, 0..3000u64).prop_map(|(from, count)| Op::Fill { from, count }),
    ]
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        8 => op().prop_map(Step::Command),
        1 => vec(op(), 0..6).prop_map(Step::Snapshot),
    ];
    // Always a last snapshot with commands committed while it waits.
    (vec(step, 0..40), vec(op(), 1..6)).prop_map(|(mut steps, last)| {
        steps.push(Step::Snapshot(last));
        steps
    })
}

/// One store on its own simulated disk, with a gate on its snapshot thread.
struct Subject<T: TestState, Z: Serializer> {
    sim: SimStorage,
    gate: Arc<Gate>,
    serializer: Z,
    store: Option<Store<T, Z>>,
}

impl<T: TestState, Z: Serializer + Copy> Subject<T, Z> {
    async fn open(serializer: Z) -> Subject<T, Z> {
        let sim = SimStorage::new();
        let gate = Arc::new(Gate::default());
        let mut subject = Subject { sim, gate, serializer, store: None };
        subject.reopen().await;
        subject
    }

    fn options(&self) -> StoreOptions {
        // Small segments: snapshots' retention removes some.
        StoreOptions::default()
            .storage(Arc::new(Hooked::over(self.sim.clone(), Arc::clone(&self.gate))))
            .segment_size(4096)
    }

    fn store(&self) -> &Store<T, Z> {
        self.store.as_ref().expect("open")
    }

    async fn reopen(&mut self) -> Model {
        if let Some(store) = self.store.take() {
            store.close().await.expect("close");
        }
        let store: Store<T, Z> = Store::open_with(self.serializer, DIR, self.options()).await.expect("open");
        let state = store.query().expect("query").to_map();
        self.store = Some(store);
        state
    }

    async fn commit(&self, cmd: Cmd) -> u64 {
        self.store().commit(cmd).await.expect("commit").seq.0
    }

    /// A snapshot held at its header (the view is taken, not yet serialized) while `during`
    /// are committed one by one.
    async fn snapshot_during(&self, during: &[Cmd]) -> (SnapshotInfo, Vec<u64>) {
        self.gate.arm(1);
        let snapshot = tokio::spawn({
            let store = self.store().clone();
            async move { store.snapshot().await }
        });
        let held = Arc::clone(&self.gate);
        tokio::task::spawn_blocking(move || held.wait_held()).await.expect("the snapshot thread is held");
        let mut seqs = Vec::new();
        for cmd in during {
            seqs.push(self.commit(cmd.clone()).await);
        }
        self.gate.release();
        (snapshot.await.expect("snapshot task").expect("snapshot"), seqs)
    }

    /// The decompressed image of the snapshot of `seq`.
    fn image(&self, seq: Seq) -> Vec<u8> {
        let (header, image) = airomem_snapshot::load(&self.sim, Path::new(DIR), seq, Z::ID).expect("load");
        assert_eq!(header.seq, seq);
        image
    }
}

/// Runs `steps` on a store of `F` and one of [`Plain`], both written with `serializer`.
async fn frozen_and_plain_agree<F: TestState, Z: Serializer + Copy>(
    serializer: Z,
    steps: &[Step],
) -> Result<(), String> {
    let mut frozen = Subject::<F, Z>::open(serializer).await;
    let mut plain = Subject::<Plain, Z>::open(serializer).await;
    let mut history = History::new();
    let mut next_id = 0;
    let mut command = |op: &Op| {
        next_id += 1;
        Cmd { id: next_id, op: op.clone() }
    };
    for step in steps {
        let expected_seq = history.len() as u64 + 1;
        match step {
            Step::Command(op) => {
                let cmd = command(op);
                let seqs = (frozen.commit(cmd.clone()).await, plain.commit(cmd.clone()).await);
                if seqs != (expected_seq, expected_seq) {
                    return Err(format!("commits got seqs {seqs:?}, expected {expected_seq}"));
                }
                history.insert(expected_seq, cmd);
            }
            Step::Snapshot(ops) => {
                let during: Vec<Cmd> = ops.iter().map(&mut command).collect();
                let seq = history.len() as u64;
                let (frozen_info, frozen_seqs) = frozen.snapshot_during(&during).await;
                let (plain_info, plain_seqs) = plain.snapshot_during(&during).await;
                let later: Vec<u64> = (seq + 1..=seq + during.len() as u64).collect();
                if (frozen_info.seq.0, plain_info.seq.0) != (seq, seq) || frozen_seqs != later || plain_seqs != later {
                    return Err(format!(
                        "snapshots at {:?} and {:?} with later commits at {frozen_seqs:?} and {plain_seqs:?}, \
                         expected {seq} and {later:?}",
                        frozen_info.seq, plain_info.seq
                    ));
                }
                history.extend(later.into_iter().zip(during));
                if (frozen_info.frozen, plain_info.frozen) != (F::FROZEN, false) {
                    return Err(format!("paths taken: {} and {}", frozen_info.frozen, plain_info.frozen));
                }
                let (frozen_image, plain_image) = (frozen.image(frozen_info.seq), plain.image(plain_info.seq));
                let decoded: F = serializer.decode(&frozen_image).map_err(|e| format!("decode: {e}"))?;
                let plain_decoded: Plain = serializer.decode(&plain_image).map_err(|e| format!("decode: {e}"))?;
                if let Some(difference) = diff(&decoded.to_map(), &plain_decoded.to_map()) {
                    return Err(format!(
                        "the frozen path's and today's path's snapshots at seq {seq} decode to different states \
                         (commands committed after the freeze: {}): {difference}",
                        ops.len()
                    ));
                }
                if frozen_image != plain_image {
                    return Err(format!(
                        "the snapshots at seq {seq} decode to equal states, but their images differ ({} and {} bytes)",
                        frozen_image.len(),
                        plain_image.len()
                    ));
                }
                if let Some(difference) = diff(&decoded.to_map(), &model_up_to(&history, seq)) {
                    return Err(format!("the snapshots at seq {seq} are not the model: {difference}"));
                }
            }
        }
    }
    let (frozen_state, plain_state) = (frozen.reopen().await, plain.reopen().await);
    if let Some(difference) = diff(&frozen_state, &plain_state) {
        return Err(format!("reopened, the two stores differ: {difference}"));
    }
    let newest = history.len() as u64;
    if let Some(difference) = diff(&frozen_state, &model_up_to(&history, newest)) {
        return Err(format!("reopened, the stores are not the model: {difference}"));
    }
    frozen.store.take().expect("open").close().await.map_err(|e| format!("close: {e}"))?;
    plain.store.take().expect("open").close().await.map_err(|e| format!("close: {e}"))
}

/// The agreement property for `F` against [`Plain`] with `serializer`; panics with the first
/// failure.
fn agreement<F: TestState, Z: Serializer + Copy>(serializer: Z, shrink: bool) {
    let config = Config {
        cases: cases(),
        failure_persistence: None,
        max_shrink_iters: if shrink { 256 } else { 0 },
        ..Config::default()
    };
    let result = TestRunner::new(config).run(&steps(), |steps| {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        runtime.block_on(frozen_and_plain_agree::<F, Z>(serializer, &steps)).map_err(TestCaseError::fail)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn frozen_and_plain_snapshots_are_the_same_bytes_postcard() {
    agreement::<Frozen, _>(PostcardSerializer, true);
}

#[test]
fn frozen_and_plain_snapshots_are_the_same_bytes_json() {
    agreement::<Frozen, _>(JsonSerializer, true);
}

/// A state of more than one 4 MiB chunk, in both formats (an entry takes about 13 bytes in
/// postcard and 30 in JSON).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_and_plain_snapshots_of_several_chunks_are_the_same_bytes() {
    let steps = |fill: u64| {
        [
            Step::Command(Op::Fill { from: 0, count: fill }),
            Step::Command(Op::Add { key: 7, delta: 3 }),
            Step::Snapshot(vec![Op::Add { key: 7, delta: 1 }, Op::Remove { key: fill - 1 }]),
            Step::Command(Op::Remove { key: 3 }),
            Step::Snapshot(vec![Op::Fill { from: fill, count: 1000 }]),
        ]
    };
    frozen_and_plain_agree::<Frozen, _>(PostcardSerializer, &steps(400_000)).await.expect("postcard");
    frozen_and_plain_agree::<Frozen, _>(JsonSerializer, &steps(180_000)).await.expect("json");
}

#[test]
#[should_panic(expected = "the frozen path's and today's path's snapshots at seq")]
fn a_broken_freeze_and_plain_snapshots_differ_postcard() {
    agreement::<BrokenFreeze, _>(PostcardSerializer, false);
}

#[test]
#[should_panic(expected = "the frozen path's and today's path's snapshots at seq")]
fn a_broken_freeze_and_plain_snapshots_differ_json() {
    agreement::<BrokenFreeze, _>(JsonSerializer, false);
}
