//! What the frozen snapshot path costs, and what it saves, per [`Variant`]:
//!
//! * [`freeze_times`]: `SnapshotInfo::freeze_time` (the writers' stall) over many snapshots
//!   at each store size, variants interleaved.
//! * [`memory`]: peak resident memory during a snapshot while a tenth of the keys change,
//!   measured in a fresh child process per variant and change pattern
//!   (`airomem-bench --frozen-memory VARIANT DIR PATTERN SESSIONS`, [`memory_child`]).
//! * [`insert_cost`]: inserts and lookups of the workload's keys in each map, outside any
//!   store or snapshot.
//! * [`recovery`]: `Store::open` from a snapshot of the 1M-command session store plus a short
//!   tail, for each state, and SQLite's load of the same data set.

use std::hint::black_box;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use airomem::{Durability, PostcardSerializer, PostcardStore, Store, StoreOptions};
use airomem_workspace::SessionsCommand;
use tokio::task::JoinSet;

use crate::commits::{SessionStore, SessionWorkload, drive, drive_from, share};
use crate::dataset::{BUILD_STREAMS, Dataset};
use crate::frozen_states::{AnyStore, SessionState, Variant, on_store, with_state};
use crate::measure::{BoxError, Summary, per_second, sync_disks};
use crate::memory::{peak, reset_peak, resident};
use crate::stall_figures::{SnapshotFigures, built_token};
use crate::table::{Table, number, range, ratio, seconds};

/// Writers that change the store between two timed snapshots.
const CHURN_WRITERS: usize = 16;
/// Commands committed between two timed snapshots.
const CHURN: u64 = 2_000;
/// First stream of the churn; far from the build's and the windows'.
const CHURN_STREAM: u64 = 1 << 18;
/// Above this size, the plain path takes [`FreezePlan::plain_large`] snapshots only.
const LARGE: u64 = 1_000_000;

/// How much the frozen-path measurements do.
#[derive(Clone, Debug)]
pub struct FreezePlan {
    /// Store sizes (sessions) of the freeze-time measurement.
    pub sizes: Vec<u64>,
    /// Snapshots per variant and size.
    pub snapshots: usize,
    /// Snapshots of the plain path at sizes above 1M.
    pub plain_large: usize,
    /// Keys inserted (and looked up) per map and repetition.
    pub inserts: u64,
    /// Repetitions of the insert measurement.
    pub insert_reps: usize,
    /// Commands in the recovery data set.
    pub recovery_records: u64,
    /// Commands after the snapshot in the recovery measurement.
    pub tail: u64,
    /// Repetitions of each open.
    pub open_reps: usize,
}

impl FreezePlan {
    /// The full run's plan; `sessions` is the size of the latency windows' store.
    pub fn full(sessions: u64) -> FreezePlan {
        let mut sizes = vec![100_000, 1_000_000, 4_000_000];
        if !sizes.contains(&sessions) {
            sizes.push(sessions);
            sizes.sort_unstable();
        }
        FreezePlan {
            sizes,
            snapshots: 20,
            plain_large: 5,
            inserts: 1_000_000,
            insert_reps: 5,
            recovery_records: 1_000_000,
            tail: 10_000,
            open_reps: 3,
        }
    }

    /// A `--quick` run's plan: one size, fewer of everything.
    pub fn quick(sessions: u64) -> FreezePlan {
        FreezePlan {
            sizes: vec![sessions],
            snapshots: 5,
            plain_large: 2,
            inserts: 200_000,
            insert_reps: 3,
            recovery_records: 100_000,
            tail: 10_000,
            open_reps: 3,
        }
    }
}

/// Everything [`crate::freeze_cost`] measured.
#[derive(Clone, Debug, Default)]
pub struct FreezeCost {
    /// Freeze times, by size then variant.
    pub times: Vec<FreezeTimes>,
    /// Peak memory during a snapshot, by variant and change pattern.
    pub memory: Vec<SnapshotMemory>,
    /// Insert and lookup cost, by variant.
    pub inserts: Vec<InsertCost>,
    /// Recovery from a snapshot.
    pub recovery: Option<RecoveryFigures>,
    /// Wall time of the whole frozen-path run (latency windows included), seconds.
    pub elapsed_secs: f64,
}

/// One variant's snapshots at one size.
#[derive(Clone, Debug)]
pub struct FreezeTimes {
    /// Sessions in the store.
    pub sessions: u64,
    /// Which state.
    pub variant: Variant,
    /// Every snapshot's `freeze_time`, sorted.
    pub freezes: Vec<Duration>,
    /// The snapshots' other figures.
    pub figures: SnapshotFigures,
}

/// Copies `base` (a store of `sessions` sessions) for each variant, opens them all
/// (OsBuffered), and takes `plan.snapshots` snapshots of each in turn (fewer of the plain
/// path above 1M sessions), with [`CHURN`] commands from [`CHURN_WRITERS`] tasks before each.
pub async fn freeze_times(
    dir: &Path,
    base: &Path,
    sessions: u64,
    plan: &FreezePlan,
) -> Result<Vec<FreezeTimes>, BoxError> {
    let mut stores = Vec::new();
    for variant in Variant::ALL {
        eprintln!("freeze times: opening the {} store of {sessions} sessions", variant.id());
        let copy = dir.join(format!("freeze-{}", variant.id()));
        crate::memory::copy_store(base, &copy)?;
        let options = StoreOptions::default().durability(Durability::OsBuffered).snapshots_retained(1);
        stores.push(AnyStore::open(variant, &copy, options).await?);
    }
    let mut infos = vec![Vec::new(); stores.len()];
    for round in 0..plan.snapshots {
        eprintln!("freeze times: {sessions} sessions, snapshot {}/{} of each state", round + 1, plan.snapshots);
        for (store, infos) in stores.iter().zip(&mut infos) {
            if !store.variant().frozen() && sessions > LARGE && round >= plan.plain_large {
                continue;
            }
            let stream = CHURN_STREAM + (round * CHURN_WRITERS) as u64;
            on_store!(store, s => churn(s, stream).await)?;
            infos.push(on_store!(store, s => s.snapshot().await)?);
        }
    }
    let mut times = Vec::new();
    for (store, infos) in stores.into_iter().zip(infos) {
        let variant = store.variant();
        store.close().await?;
        std::fs::remove_dir_all(dir.join(format!("freeze-{}", variant.id())))?;
        let mut freezes: Vec<Duration> = infos.iter().map(|i| i.freeze_time).collect();
        freezes.sort_unstable();
        times.push(FreezeTimes { sessions, variant, freezes, figures: SnapshotFigures::of(&infos) });
    }
    Ok(times)
}

/// [`CHURN`] commands of the session workload from [`CHURN_WRITERS`] tasks.
async fn churn<S: SessionState>(store: &PostcardStore<S>, first_stream: u64) -> Result<(), BoxError> {
    let mut tasks = JoinSet::new();
    for index in 0..CHURN_WRITERS {
        let store = store.clone();
        let count = share(CHURN, CHURN_WRITERS, index) as usize;
        tasks.spawn(async move {
            for command in SessionWorkload::new(first_stream + index as u64).take(count) {
                store.commit(command).await?;
            }
            Ok::<_, airomem::Error>(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    Ok(())
}

/// How the changes during the memory measurement's snapshot fall on the keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// Nine in ten changes to a hot tenth of the keys, the rest to any key.
    Skewed,
    /// Every change to any key.
    Uniform,
}

impl Pattern {
    /// Both, skewed first.
    pub const ALL: [Pattern; 2] = [Pattern::Skewed, Pattern::Uniform];

    /// The name on the command line and in the report.
    pub fn id(self) -> &'static str {
        match self {
            Pattern::Skewed => "skewed",
            Pattern::Uniform => "uniform",
        }
    }

    /// The pattern named `id`.
    pub fn from_id(id: &str) -> Option<Pattern> {
        Pattern::ALL.into_iter().find(|p| p.id() == id)
    }
}

/// What one memory child measured, bytes unless said.
#[derive(Clone, Copy, Debug)]
pub struct SnapshotMemory {
    /// Which state.
    pub variant: Variant,
    /// Which changes.
    pub pattern: Pattern,
    /// Resident set just before the snapshot (the state and the process).
    pub steady: u64,
    /// Peak resident set from the snapshot's start to its end (`VmHWM` after a reset).
    pub peak: u64,
    /// Resident set after the snapshot, its view dropped.
    pub after: u64,
    /// Shards the writers copied (`SnapshotInfo::shards_copied`).
    pub shards_copied: u64,
    /// Bytes of the serialized state.
    pub raw_len: u64,
    /// Changes committed during the snapshot.
    pub changes: u64,
    /// Seconds from the snapshot's start until the changes were all committed.
    pub changes_secs: f64,
    /// Seconds of the whole snapshot.
    pub snapshot_secs: f64,
}

/// Runs a memory child for each variant and pattern on a copy of `base` (`sessions`
/// sessions, as [`crate::snapshot_stall::build`] made it).
pub fn memory(dir: &Path, base: &Path, sessions: u64) -> Result<Vec<SnapshotMemory>, BoxError> {
    let mut figures = Vec::new();
    for pattern in Pattern::ALL {
        for variant in Variant::ALL {
            eprintln!("snapshot memory: {}, {} changes, in a fresh process", variant.id(), pattern.id());
            let copy = dir.join(format!("memory-{}", variant.id()));
            crate::memory::copy_store(base, &copy)?;
            let output = Command::new(std::env::current_exe()?)
                .arg("--frozen-memory")
                .arg(variant.id())
                .arg(&copy)
                .arg(pattern.id())
                .arg(sessions.to_string())
                .output()?;
            std::fs::remove_dir_all(&copy)?;
            if !output.status.success() {
                return Err(format!("memory child failed: {}", String::from_utf8_lossy(&output.stderr)).into());
            }
            let line = String::from_utf8(output.stdout)?;
            let n: Vec<f64> = line.split_whitespace().map(str::parse).collect::<Result<_, _>>()?;
            let [steady, peak, after, shards_copied, raw_len, changes, changes_secs, snapshot_secs] = n[..] else {
                return Err(format!("memory child printed `{line}`").into());
            };
            figures.push(SnapshotMemory {
                variant,
                pattern,
                steady: steady as u64,
                peak: peak as u64,
                after: after as u64,
                shards_copied: shards_copied as u64,
                raw_len: raw_len as u64,
                changes: changes as u64,
                changes_secs,
                snapshot_secs,
            });
        }
    }
    Ok(figures)
}

/// `--frozen-memory VARIANT DIR PATTERN SESSIONS`: opens the store in `dir` (from its
/// snapshot), commits the changes once with no snapshot (so that the import's own memory
/// is in the steady figure), then takes a snapshot and commits them again while it is
/// written; prints the figures of [`SnapshotMemory`] on one line.
pub fn memory_child(variant: Variant, dir: &Path, pattern: Pattern, sessions: u64) -> Result<(), BoxError> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    with_state!(variant, S => runtime.block_on(memory_child_of::<S>(dir, pattern, sessions)))
}

/// A tenth as many changes as there are sessions, each a `CreateSession` of an existing
/// token with a new user id: the state keeps its size.
fn changes(pattern: Pattern, sessions: u64, seed: u64) -> impl Iterator<Item = SessionsCommand> + Send + 'static {
    let hot = (sessions / 10).max(1);
    (0..sessions / 10).map(move |j| {
        let r = mix(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ j);
        let i = match pattern {
            Pattern::Skewed if j % 10 != 9 => r % hot,
            _ => r % sessions,
        };
        SessionsCommand::CreateSession { token: built_token(i, sessions), user_id: j }
    })
}

/// splitmix64's finalizer: a cheap, deterministic scatter.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

async fn memory_child_of<S: SessionState>(dir: &Path, pattern: Pattern, sessions: u64) -> Result<(), BoxError> {
    let options = StoreOptions::default().durability(Durability::OsBuffered).snapshots_retained(1);
    let store: PostcardStore<S> = Store::open_with(PostcardSerializer, dir, options).await?;
    let held = store.query()?.sessions() as u64;
    if held != sessions {
        return Err(format!("the store holds {held} sessions, {sessions} expected").into());
    }
    store.import(changes(pattern, sessions, 1)).await?;
    let steady = resident()?;
    reset_peak()?;
    let started = Instant::now();
    let snapshot = tokio::spawn({
        let store = store.clone();
        async move { (store.snapshot().await, Instant::now()) }
    });
    // The snapshot's freeze goes first: the writer takes it before the next batch.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let imported = store.import(changes(pattern, sessions, 2)).await?;
    let changes_secs = started.elapsed().as_secs_f64();
    let (info, finished) = snapshot.await?;
    let info = info?;
    let peak = peak()?;
    let after = resident()?;
    store.close().await?;
    println!(
        "{steady} {peak} {after} {} {} {} {changes_secs} {}",
        info.shards_copied,
        info.raw_len,
        imported.commands,
        (finished - started).as_secs_f64()
    );
    Ok(())
}

/// Inserts and lookups in one map, nanoseconds each.
#[derive(Clone, Copy, Debug)]
pub struct InsertCost {
    /// Which state's map.
    pub variant: Variant,
    /// Keys inserted.
    pub keys: u64,
    /// `execute(CreateSession)` of a fresh key into an empty state that grows, ns each.
    pub insert_nanos: Summary,
    /// A lookup of an existing key, in an order unrelated to insertion, ns each.
    pub lookup_nanos: Summary,
}

/// `plan.inserts` fresh keys into each state's map, through `execute`, and a lookup of each,
/// variants interleaved over `plan.insert_reps` rounds.
pub fn insert_cost(plan: &FreezePlan) -> Vec<InsertCost> {
    let commands: Vec<SessionsCommand> = SessionWorkload::new(0)
        .filter(|c| matches!(c, SessionsCommand::CreateSession { .. }))
        .take(plan.inserts as usize)
        .collect();
    let mut probes: Vec<String> = commands
        .iter()
        .filter_map(|c| match c {
            SessionsCommand::CreateSession { token, .. } => Some(token.clone()),
            SessionsCommand::DeleteSession { .. } => None,
        })
        .collect();
    probes.sort_unstable_by(|a, b| a[16..].cmp(&b[16..]));
    let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new(); Variant::ALL.len()];
    for rep in 0..plan.insert_reps {
        eprintln!("insert cost: {} keys into each map, round {}/{}", plan.inserts, rep + 1, plan.insert_reps);
        for (variant, runs) in Variant::ALL.into_iter().zip(&mut runs) {
            runs.push(with_state!(variant, S => inserts_and_lookups::<S>(commands.clone(), &probes)));
        }
    }
    Variant::ALL
        .into_iter()
        .zip(runs)
        .map(|(variant, runs)| InsertCost {
            variant,
            keys: plan.inserts,
            insert_nanos: Summary::over(&runs, |r| r.0),
            lookup_nanos: Summary::over(&runs, |r| r.1),
        })
        .collect()
}

/// Times executing `commands` (all creates) on an empty `S`, then looking up `probes`; ns
/// per insert and per lookup. Dropping the state is not timed.
fn inserts_and_lookups<S: SessionState>(commands: Vec<SessionsCommand>, probes: &[String]) -> (f64, f64) {
    let count = commands.len() as f64;
    let mut state = S::default();
    let started = Instant::now();
    for command in commands {
        state.execute(command);
    }
    let insert = started.elapsed().as_secs_f64() * 1e9 / count;
    let started = Instant::now();
    let mut found = 0u64;
    for token in probes {
        found += u64::from(state.user(token).is_some());
    }
    let lookup = started.elapsed().as_secs_f64() * 1e9 / probes.len() as f64;
    assert_eq!(black_box(found), probes.len() as u64, "every probe is a key");
    drop(black_box(state));
    (insert, lookup)
}

/// `Store::open` of the recovery store from its snapshot and tail, by state, and SQLite's
/// load of the data set.
#[derive(Clone, Debug)]
pub struct RecoveryFigures {
    /// Commands before the snapshot.
    pub records: u64,
    /// Commands after it.
    pub tail: u64,
    /// Live sessions after the tail.
    pub sessions: u64,
    /// Bytes of the snapshot file.
    pub file_len: u64,
    /// Wall time of `Store::open`, seconds, by variant.
    pub opens: Vec<(Variant, Summary)>,
    /// SQLite: reading every row of the data set's table into a `HashMap` (the peers'
    /// recovery), seconds.
    pub sqlite: Summary,
}

/// Builds the recovery data set's store (as [`crate::recovery`] does), snapshots it, commits
/// `plan.tail` more commands, then opens it with each state in turn, `plan.open_reps` rounds;
/// then SQLite's recovery of the data set.
pub async fn recovery(dir: &Path, plan: &FreezePlan) -> Result<RecoveryFigures, BoxError> {
    let records = plan.recovery_records;
    let store_dir = dir.join("frozen-recovery");
    let (data, info, sessions) = build_recovery_store(&store_dir, records, plan.tail).await?;

    let mut opens: Vec<Vec<f64>> = vec![Vec::new(); Variant::ALL.len()];
    for rep in 0..plan.open_reps {
        for (variant, opens) in Variant::ALL.into_iter().zip(&mut opens) {
            eprintln!("frozen recovery: Store::open as {}, round {}/{}", variant.id(), rep + 1, plan.open_reps);
            sync_disks()?;
            let started = Instant::now();
            let store = AnyStore::open(variant, &store_dir, StoreOptions::default()).await?;
            let elapsed = started.elapsed().as_secs_f64();
            let (held, report) = on_store!(&store, s => (s.query()?.sessions() as u64, s.recovery().clone()));
            store.close().await?;
            if held != sessions || report.snapshot != Some(info.seq) || report.records_replayed != plan.tail {
                return Err(format!(
                    "{} opened {held} sessions from {:?} + {} records; expected {sessions} from {:?} + {}",
                    variant.id(),
                    report.snapshot,
                    report.records_replayed,
                    info.seq,
                    plan.tail
                )
                .into());
            }
            opens.push(elapsed);
        }
    }
    std::fs::remove_dir_all(&store_dir)?;
    let handle = tokio::runtime::Handle::current();
    let sqlite = crate::peers::PeerKind::Sqlite.recovery(dir, &handle, &data, plan.tail)?;
    remove_prefixed(dir, "sqlite-")?;
    Ok(RecoveryFigures {
        records,
        tail: plan.tail,
        sessions,
        file_len: info.file_len,
        opens: Variant::ALL.into_iter().zip(opens).map(|(v, o)| (v, Summary::of(o))).collect(),
        sqlite: sqlite.recover_secs,
    })
}

/// The recovery measurement's store in `store_dir`: `records` session commands, a snapshot,
/// `tail` more. Returns the data set, the snapshot and the sessions held at the end.
async fn build_recovery_store(
    store_dir: &Path,
    records: u64,
    tail: u64,
) -> Result<(Dataset, airomem::SnapshotInfo, u64), BoxError> {
    eprintln!("frozen recovery: building a store of {records} commands, a snapshot, {tail} more");
    let data = Dataset::new(records, 1_000);
    let options = StoreOptions::default().durability(Durability::OsBuffered).snapshots_retained(1);
    let store: SessionStore = Store::open_with(PostcardSerializer, store_dir, options).await?;
    drive(&store, BUILD_STREAMS, records).await?;
    let info = store.snapshot().await?;
    let tail = drive_from(&store, BUILD_STREAMS as u64, BUILD_STREAMS, tail).await?;
    let sessions = (data.expected.len() + tail.expected_sessions) as u64;
    store.close().await?;
    Ok((data, info, sessions))
}

/// `--frozen-open VARIANT DIR`: builds the recovery measurement's store in `dir` (1M
/// commands, a snapshot, 10,000 more) unless it is there, then opens it as `VARIANT` three
/// times, printing each open's time: a process to profile one state's recovery in.
pub fn open_child(variant: Variant, dir: &Path) -> Result<(), BoxError> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        if !dir.exists() {
            build_recovery_store(dir, 1_000_000, 10_000).await?;
        }
        for _ in 0..3 {
            let started = Instant::now();
            let store = AnyStore::open(variant, dir, StoreOptions::default()).await?;
            let elapsed = started.elapsed();
            let report = on_store!(&store, s => s.recovery().clone());
            store.close().await?;
            println!(
                "{}: Store::open {:.1} ms (recovery {:.1} ms, {} records replayed)",
                variant.id(),
                elapsed.as_secs_f64() * 1e3,
                report.duration.as_secs_f64() * 1e3,
                report.records_replayed
            );
        }
        Ok(())
    })
}

/// Removes the directories in `dir` whose name starts with `prefix`.
fn remove_prefixed(dir: &Path, prefix: &str) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with(prefix)) {
            std::fs::remove_dir_all(&path)?;
        }
    }
    Ok(())
}

/// Prints the tables of [`FreezeCost`].
pub fn print(cost: &FreezeCost) {
    freeze_table(cost).print();
    memory_table(cost).print();
    insert_table(cost).print();
    if let Some(recovery) = &cost.recovery {
        recovery_table(recovery).print();
    }
    println!("(the frozen-snapshot measurements took {:.0} s in all)", cost.elapsed_secs);
    println!();
}

fn freeze_table(cost: &FreezeCost) -> Table {
    let mut table = Table::new(
        "Writers' stall per snapshot (`SnapshotInfo::freeze_time`), OsBuffered store, 2,000 commits between \
         snapshots; target for the frozen paths: max ≤ 1 ms",
        &["sessions", "state", "snapshots", "median", "max", "plain median ÷ this", "serialize (median)", "raw → file"],
    );
    for t in &cost.times {
        let plain = cost.times.iter().find(|p| p.sessions == t.sessions && !p.variant.frozen());
        let median = crate::measure::percentile(&t.freezes, 50.0).as_secs_f64();
        let max = crate::measure::percentile(&t.freezes, 100.0).as_secs_f64();
        let against = plain.map_or("—".into(), |p| {
            format!("{}×", number(crate::measure::percentile(&p.freezes, 50.0).as_secs_f64() / median))
        });
        let verdict = if !t.variant.frozen() {
            ""
        } else if max <= 1e-3 {
            " (met)"
        } else {
            " (missed)"
        };
        let f = &t.figures;
        table.row(vec![
            number(t.sessions as f64),
            t.variant.name().into(),
            t.freezes.len().to_string(),
            seconds(median),
            format!("{}{verdict}", seconds(max)),
            against,
            seconds(f.serialize_secs.median),
            format!("{:.1} → {:.1} MB", f.raw_len.median / 1e6, f.file_len.median / 1e6),
        ]);
    }
    table
}

fn memory_table(cost: &FreezeCost) -> Table {
    let raw = cost.memory.first().map_or(0, |m| m.raw_len);
    let title = format!(
        "Peak resident memory during a snapshot ({:.1} MB serialized) while a tenth as many changes as keys are \
         committed (updates of existing keys, OsBuffered), one fresh process each; targets: skewed peak ≤ 1.25× \
         steady, uniform ≤ 2×",
        raw as f64 / 1e6
    );
    let mut table = Table::new(
        &title,
        &[
            "changes",
            "state",
            "steady RSS",
            "peak RSS",
            "peak ÷ steady",
            "after",
            "shards copied",
            "changes done / snapshot done",
        ],
    );
    let mb = |b: u64| format!("{:.1} MB", b as f64 / 1e6);
    for m in &cost.memory {
        let limit = if m.pattern == Pattern::Skewed { 1.25 } else { 2.0 };
        let r = m.peak as f64 / m.steady as f64;
        let verdict = if !m.variant.frozen() {
            ""
        } else if r <= limit {
            " (met)"
        } else {
            " (missed)"
        };
        table.row(vec![
            format!("{} {}", number(m.changes as f64), m.pattern.id()),
            m.variant.name().into(),
            mb(m.steady),
            mb(m.peak),
            format!("{}{verdict}", ratio(r)),
            mb(m.after),
            crate::stall_figures::copied(m.variant, Summary::of([m.shards_copied as f64])),
            format!("{} / {}", seconds(m.changes_secs), seconds(m.snapshot_secs)),
        ]);
    }
    table
}

fn insert_table(cost: &FreezeCost) -> Table {
    let keys = cost.inserts.first().map_or(0, |i| i.keys);
    let title = format!(
        "Map cost outside snapshots: {} fresh 32-character keys inserted through `execute` into an empty state, \
         then each looked up (ns each, median of rounds, min–max); target: ShardedMap inserts ≤ 1.5× HashMap",
        number(keys as f64)
    );
    let mut table = Table::new(&title, &["state", "insert", "÷ HashMap", "lookup", "÷ HashMap"]);
    let base = cost.inserts.iter().find(|i| !i.variant.frozen());
    let nanos = |s: Summary| format!("{:.0} ({})", s.median, range(s, |v| format!("{v:.0}")));
    for i in &cost.inserts {
        let (insert, lookup) = base.map_or((1.0, 1.0), |b| (b.insert_nanos.median, b.lookup_nanos.median));
        table.row(vec![
            i.variant.name().into(),
            nanos(i.insert_nanos),
            ratio(i.insert_nanos.median / insert),
            nanos(i.lookup_nanos),
            ratio(i.lookup_nanos.median / lookup),
        ]);
    }
    table
}

fn recovery_table(r: &RecoveryFigures) -> Table {
    let title = format!(
        "Recovery: `Store::open` from a snapshot of the {}-command session store ({} MB file) + a {}-command tail, \
         {} sessions, by state; SQLite's recovery of the same data set (without the tail) for comparison",
        number(r.records as f64),
        format_args!("{:.1}", r.file_len as f64 / 1e6),
        number(r.tail as f64),
        number(r.sessions as f64)
    );
    let mut table = Table::new(&title, &["load", "time", "min–max", "sessions/s", "÷ HashMap"]);
    let base = r.opens.iter().find(|(v, _)| !v.frozen()).map_or(1.0, |(_, s)| s.median);
    for (variant, s) in &r.opens {
        table.row(vec![
            format!("`Store::open`, {}", variant.name()),
            seconds(s.median),
            range(*s, seconds),
            number(per_second(r.sessions, Duration::from_secs_f64(s.median))),
            ratio(s.median / base),
        ]);
    }
    table.row(vec![
        "SQLite: every row into a `HashMap` (the peers' recovery)".into(),
        seconds(r.sqlite.median),
        range(r.sqlite, seconds),
        number(per_second(r.sessions, Duration::from_secs_f64(r.sqlite.median))),
        ratio(r.sqlite.median / base),
    ]);
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skewed_changes_mostly_hit_the_hot_tenth() {
        let sessions = 10_000;
        let hot: std::collections::HashSet<String> = (0..sessions / 10).map(|i| built_token(i, sessions)).collect();
        let commands: Vec<_> = changes(Pattern::Skewed, sessions, 1).collect();
        assert_eq!(commands.len() as u64, sessions / 10);
        let on_hot = commands
            .iter()
            .filter(|c| matches!(c, SessionsCommand::CreateSession { token, .. } if hot.contains(token)))
            .count();
        // 90% by construction, plus the uniform tenth's share of the hot keys.
        assert!((900..=920).contains(&on_hot), "{on_hot} of 1000 on the hot keys");
        let uniform = changes(Pattern::Uniform, sessions, 1)
            .filter(|c| matches!(c, SessionsCommand::CreateSession { token, .. } if hot.contains(token)))
            .count();
        assert!(uniform < 200, "{uniform} of 1000 uniform changes on the hot keys");
    }

    #[test]
    fn patterns_round_trip_their_ids() {
        for p in Pattern::ALL {
            assert_eq!(Pattern::from_id(p.id()), Some(p));
        }
    }
}
