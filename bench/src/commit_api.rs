//! The commit API as applications use it, against the in-memory and on-disk limits measured
//! in the same run:
//!
//! * one task awaiting each `commit` in turn, per durability policy, against the same loop
//!   into a `Mutex<HashMap>` (and, for `Fsync`, the raw append + `fdatasync` loop);
//! * `Store::import` of the data set from one task (`OsBuffered` and `Fsync`), against the
//!   peers' single-transaction builds of the same data set (their `build_rate`);
//! * atomic units (`commit_all`) of 10 and 100 commands from 64 writers, durably.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use airomem::{Durability, PostcardSerializer, Store, StoreOptions};
use airomem_workspace::SessionsCommand;

use crate::commits::SessionStore;
use crate::dataset::commands;
use crate::measure::{BoxError, REPETITIONS, Summary, per_second};

/// How much each measurement does.
#[derive(Clone, Copy, Debug)]
pub struct CommitApiPlan {
    /// Commits of the lone-task loop under `OsBuffered` and `Periodic`.
    pub lone_buffered: u64,
    /// Commits of the lone-task loop under `Fsync`.
    pub lone_fsync: u64,
    /// Commands imported (the data set's first ones).
    pub import: u64,
    /// Commands per writer count of the unit measurement, for each unit size.
    pub unit_commands: u64,
}

/// The figures, each over [`REPETITIONS`] runs.
#[derive(Clone, Debug)]
pub struct CommitApiResult {
    /// Inserts and removes per second into a `Mutex<HashMap>`, one lock each.
    pub memory: Summary,
    /// Lone-task commits per second: `OsBuffered`, `Periodic(100 ms)`, `Fsync`.
    pub lone: [Summary; 3],
    /// Imported commands per second: `OsBuffered`, `Fsync`.
    pub import: [Summary; 2],
    /// Commands imported.
    pub imported: u64,
    /// (unit size, units per second) from 64 writers under `Fsync`.
    pub units: Vec<(u64, Summary)>,
}

/// The lone-task loop's policies, in [`CommitApiResult::lone`] order.
pub const LONE_POLICIES: [(&str, Durability); 3] = [
    ("OsBuffered", Durability::OsBuffered),
    ("Periodic(100 ms)", Durability::Periodic(Duration::from_millis(100))),
    ("Fsync", Durability::Fsync),
];

pub async fn run(dir: &Path, plan: CommitApiPlan) -> Result<CommitApiResult, BoxError> {
    eprintln!("commit API: lone task, import, atomic units, {REPETITIONS} runs each");
    let mut lone = LoneRates::default();
    let mut import: [Vec<f64>; 2] = Default::default();
    let unit_sizes = [10u64, 100];
    let mut units: Vec<Vec<f64>> = vec![Vec::new(); unit_sizes.len()];
    for rep in 0..REPETITIONS {
        lone.round(dir, plan, rep).await?;
        for (i, durability) in [Durability::OsBuffered, Durability::Fsync].into_iter().enumerate() {
            let store_dir = dir.join(format!("import-{i}-{rep}"));
            let store: SessionStore = Store::open_with(PostcardSerializer, &store_dir, options(durability)).await?;
            let started = Instant::now();
            let imported = store.import(commands(plan.import)).await?;
            // The import is durable once its last receipt is in (under Fsync); under
            // OsBuffered, as durable as the policy makes any commit.
            import[i].push(per_second(imported.commands, started.elapsed()));
            store.close().await?;
            std::fs::remove_dir_all(&store_dir)?;
        }
        for (i, &size) in unit_sizes.iter().enumerate() {
            let store_dir = dir.join(format!("units-{size}-{rep}"));
            let store: SessionStore =
                Store::open_with(PostcardSerializer, &store_dir, options(Durability::Fsync)).await?;
            let per_writer = plan.unit_commands / 64 / size;
            // Built before the clock starts: generating each writer's share inside the timed
            // region cost more than committing it.
            let mut all = commands(per_writer * size * 64);
            let shares: Vec<Vec<Vec<SessionsCommand>>> = (0..64)
                .map(|_| (0..per_writer).map(|_| all.by_ref().take(size as usize).collect()).collect())
                .collect();
            let started = Instant::now();
            let mut tasks = tokio::task::JoinSet::new();
            for share in shares {
                let store = store.clone();
                tasks.spawn(async move {
                    for unit in share {
                        store.commit_all(unit).await?;
                    }
                    Ok::<_, airomem::Error>(())
                });
            }
            while let Some(joined) = tasks.join_next().await {
                joined??;
            }
            units[i].push(per_second(per_writer * 64, started.elapsed()));
            store.close().await?;
            std::fs::remove_dir_all(&store_dir)?;
        }
    }
    let (memory, lone) = lone.summaries();
    Ok(CommitApiResult {
        memory,
        lone,
        import: import.map(Summary::of),
        imported: plan.import,
        units: unit_sizes.iter().copied().zip(units.into_iter().map(Summary::of)).collect(),
    })
}

/// The lone-task loops and the `Mutex<HashMap>` loop only, over [`REPETITIONS`] rounds
/// (`--lone-ratio`): the baseline and the three policies, as in the full run.
pub async fn lone_only(dir: &Path, plan: CommitApiPlan) -> Result<(Summary, [Summary; 3]), BoxError> {
    let mut lone = LoneRates::default();
    for rep in 0..REPETITIONS {
        lone.round(dir, plan, rep).await?;
    }
    Ok(lone.summaries())
}

/// The rates of the lone-task rounds run so far: the `Mutex<HashMap>` loop's, and each
/// policy's in [`LONE_POLICIES`] order.
#[derive(Default)]
struct LoneRates {
    memory: Vec<f64>,
    lone: [Vec<f64>; 3],
}

impl LoneRates {
    async fn round(&mut self, dir: &Path, plan: CommitApiPlan, rep: usize) -> Result<(), BoxError> {
        let (rate, rates) = lone_round(dir, plan, rep).await?;
        self.memory.push(rate);
        for (rates, rate) in self.lone.iter_mut().zip(rates) {
            rates.push(rate);
        }
        Ok(())
    }

    fn summaries(self) -> (Summary, [Summary; 3]) {
        (Summary::of(self.memory), self.lone.map(Summary::of))
    }
}

/// One round of the lone-task loops, one store per policy, then the `Mutex<HashMap>` loop
/// over the same commands: (the loop's rate, each policy's rate).
async fn lone_round(dir: &Path, plan: CommitApiPlan, rep: usize) -> Result<(f64, [f64; 3]), BoxError> {
    let mut rates = [0.0; 3];
    for (i, (_, durability)) in LONE_POLICIES.iter().enumerate() {
        let count = if *durability == Durability::Fsync { plan.lone_fsync } else { plan.lone_buffered };
        let store_dir = dir.join(format!("lone-{i}-{rep}"));
        let store: SessionStore = Store::open_with(PostcardSerializer, &store_dir, options(*durability)).await?;
        // Built before the clock starts, as the `Mutex<HashMap>` loop's are: generating a
        // session token is a `format!`, a good part of a buffered commit's time.
        let batch: Vec<SessionsCommand> = commands(count).collect();
        let started = Instant::now();
        for command in batch {
            store.commit(command).await?;
        }
        rates[i] = per_second(count, started.elapsed());
        store.close().await?;
        std::fs::remove_dir_all(&store_dir)?;
    }
    // The same commands as the buffered store loops, so that both maps grow to the same
    // size (a larger map makes each insert slower, and the ratio kinder to the store).
    // After the store loops: run before them, its set and map, freed just before, cut the
    // OsBuffered loop that followed to a tenth (page faults, allocator).
    Ok((memory_loop(plan.lone_buffered), rates))
}

fn options(durability: Durability) -> StoreOptions {
    StoreOptions::default().durability(durability).segment_size(64 << 20)
}

/// The lone-task loop with no store: the data set's commands applied to a
/// `Mutex<HashMap>`, one lock each, in commands per second.
fn memory_loop(count: u64) -> f64 {
    let map: Mutex<HashMap<String, u64>> = Mutex::new(HashMap::new());
    let commands: Vec<SessionsCommand> = commands(count).collect();
    let started = Instant::now();
    for command in commands {
        let mut map = map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match command {
            SessionsCommand::CreateSession { token, user_id } => {
                map.insert(token, user_id);
            }
            SessionsCommand::DeleteSession { token } => {
                map.remove(&token);
            }
        }
    }
    let rate = per_second(count, started.elapsed());
    std::hint::black_box(map);
    rate
}
