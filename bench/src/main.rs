//! `airomem-bench`: measures airomem against the disk it runs on and against its peers, in
//! one run and on one file system.
//!
//! 1. The disk's limits with plain `write` + `fdatasync` loops ([`raw_disk`]).
//! 2. Durable commits per second with 1, 16 and 64 concurrent writers ([`commits`]), for
//!    airomem and each peer ([`peers`]: airomem 0.7, prevayler-rs, SQLite, redb).
//! 3. Recovery of a data set of the same commands ([`dataset`]): airomem's `Store::open`
//!    against an in-memory replay, from the journal and from a snapshot plus a tail
//!    ([`recovery`]); the peers' own recovery; lookups and disk use on the same data.
//! 4. Commit stalls while a snapshot is written ([`snapshot_stall`]), on the plain path and
//!    the frozen ones ([`frozen_states`], [`freeze_cost`]).
//! 5. Which systems really sync, counted with strace ([`sync_probe`]).
//!
//! Every workload runs a fixed number of operations, three times (the disk and commit
//! measurements in interleaved rounds); the report ([`report`], [`comparison`]) gives
//! medians with their min–max range, as markdown, on standard output. Progress goes to
//! standard error.
//!
//! ```text
//! cargo run --release -p airomem-bench -- [--quick] [--dir DIR]
//! ```
//!
//! The scratch directory is a temporary directory created inside `DIR` (default: the
//! current directory, so that it lands on the real disk rather than a tmpfs `/tmp`) and
//! removed at the end.

mod backup_mode;
mod commit_api;
mod commits;
mod comparison;
mod dataset;
mod follower_lag;
mod freeze_cost;
mod frozen_states;
mod import_mode;
mod inspection;
mod lone_commit;
mod measure;
mod memory;
mod metrics_cost;
mod migration;
mod peers;
mod raw_disk;
mod recovery;
mod recovery_race;
mod replication;
mod report;
mod results;
mod snapshot_stall;
mod stall_figures;
mod sync_probe;
mod table;

use std::path::{Path, PathBuf};

use airomem::{Durability, PostcardSerializer, Store, StoreOptions};
use airomem_workspace::{SessionsCommand, token};
use tokio::runtime::Runtime;

use crate::commits::{CommitResult, SessionStore};
use crate::dataset::Dataset;
use crate::measure::{BoxError, REPETITIONS};
use crate::peers::{PeerCommits, PeerKind};
use crate::raw_disk::{RawDiskPlan, RawDiskResults};
use crate::results::{PeerResults, Results, Setting};

const USAGE: &str = "usage: airomem-bench [--quick] [--dir DIR]

  --quick    fewer commits, 100,000-command data sets and snapshots
  --dir DIR  create the scratch directory inside DIR (default: the current directory);
             DIR must be on the disk to measure, not a tmpfs

inspect:   airomem-bench --inspect [MEGABYTES] [--dir DIR]
             `airomem verify` and `airomem dump` over a journal of MEGABYTES (default
             1000) against reading it from the page cache, and their peak memory; build
             the tool first: cargo build --release -p airomem-cli

alone:     airomem-bench --lone-commit [--dir DIR]
             one caller committing alone through the async API (a task) and the blocking
             API (a thread), under OsBuffered and Fsync, in 7 interleaved rounds

metrics:   airomem-bench --metrics-cost [--dir DIR]
             the 64-writer (Fsync) and lone-task (Fsync, OsBuffered) commit rates with
             metrics off, on without a recorder, on with Prometheus; 30 rounds

replicas:  airomem-bench --replication [--quick] [--dir DIR]
             3 airomem-raft nodes in one process against one store: commits/s and
             latency at 1 and 64 writers, and failover over 50 leader kills (10 quick)

import:    airomem-bench --import [--dir DIR]
             `Store::import` of 1,000,000 commands from one task under OsBuffered and
             Fsync, in 5 interleaved rounds, with the commands each journal write carried

race:      airomem-bench [--quick] [--dir DIR] --recovery-race [--rounds N] [--only VARIANTS] [--keep DIR]
             [--segment-size BYTES] [--fresh]
             airomem's `Store::open` from the journal and from a snapshot against SQLite
             and redb loading the same final state into a HashMap (with and without a
             size hint) and the in-memory limit, interleaved, page cache warm; VARIANTS:
             journal,snapshot,sqlite,sqlite-hint,redb,redb-hint,memory,apply; --fresh
             runs each load from files in a process of its own

follower:  airomem-bench --follower [--dir DIR]
             a Follower beside a store committing 2,000 commands/s: lag from a commit's
             acknowledgement to the follower having applied it, and commit latency with
             and without a follower (4 interleaved 6 s rounds)

stalls:    airomem-bench --snapshot-stall [--quick] [--dir DIR] [--windows] [--variants VARIANTS]
             snapshots on the plain and the frozen paths alone: freeze times at 100k, 1M
             and 4M sessions, 16 writers' latency (closed loop and paced) during snapshots,
             peak memory, map insert cost, recovery (quick: 100k sessions, fewer rounds);
             --windows runs the latency windows alone, --variants narrows them to some of
             plain,sharded,imbl-hash,imbl-ord

backup:    airomem-bench --backup [--quick] [--dir DIR]
             `Store::backup` of a 1,000,000-command session store (100,000 quick) while
             16 writers commit under Fsync: backup time, files and bytes, and the
             writers' commit rate, p50 and p99 during the backup against 3 s before it

ratio:     airomem-bench --lone-ratio [--quick] [--dir DIR]
             the full run's lone-task loops (one task awaiting each commit, per policy)
             and the `Mutex<HashMap>` loop over the same commands, alone, 3 rounds

internal:  airomem-bench --probe SYSTEM COMMITS [--dir DIR]
             commits COMMITS commands to a fresh store of SYSTEM (airomem, airomem07,
             prevayler, sqlite, redb) and exits: what the strace check runs; SYSTEM
             airomem-buffered commits under OsBuffered, one task (for profiling)
           airomem-bench --memory DIR SEGMENT_SIZE
             opens the store in DIR, snapshots it and floods it with commits, and prints
             the resident memory each step used: what the memory measurement runs
           airomem-bench --inspect-memory DIR
             verifies the store in DIR and walks its records in a fresh process, printing
             the peak resident growth of each: what the inspection measurement runs
           airomem-bench --migration-memory DIR SEGMENT_SIZE
             opens the schema-1 store in DIR with schema-2 types (a migrating open) and
             prints the resident memory it left and its peak
           airomem-bench --frozen-memory VARIANT DIR PATTERN SESSIONS
             opens the store of SESSIONS sessions in DIR as VARIANT (plain, sharded,
             imbl-hash, imbl-ord), snapshots it while changes (skewed, uniform) go on and
             prints its resident memory: what the snapshot-stall measurement runs
           airomem-bench --frozen-open VARIANT DIR
             builds the snapshot-stall recovery store (1M commands, a snapshot, 10,000
             more) in DIR unless it is there, and opens it as VARIANT three times: a
             process to profile one state's recovery in";

/// How much work a run does.
#[derive(Clone, Copy, Debug)]
struct Plan {
    mode: &'static str,
    raw: RawDiskPlan,
    /// airomem's (writers, commits per repetition).
    commits: [(usize, u64); 3],
    /// The peers' (writers, commits per repetition): they sync every commit on its own.
    peer_commits: [(usize, u64); 3],
    /// Commands in the recovery data set.
    recovery_records: u64,
    /// Commands after the snapshot in the snapshot-recovery measurement.
    tail: u64,
    /// Journal segment size of the recovery store: the data set must fill several.
    segment_size: u64,
    /// Tokens looked up per repetition.
    lookups: usize,
    /// Sessions in the store during the snapshot-stall measurement.
    snapshot_sessions: u64,
    /// The commit-API measurements.
    commit_api: commit_api::CommitApiPlan,
    /// The replication measurements.
    replication: replication::ReplicationPlan,
}

impl Plan {
    fn quick() -> Plan {
        Plan {
            mode: "quick",
            raw: RawDiskPlan { append_records: 1_000, group_writes: 300, overwrite_records: 1_000 },
            commits: [(1, 1_000), (16, 5_000), (64, 20_000)],
            peer_commits: [(1, 300), (16, 640), (64, 1_280)],
            recovery_records: 100_000,
            tail: 10_000,
            segment_size: 1 << 20,
            lookups: 20_000,
            snapshot_sessions: 100_000,
            commit_api: commit_api::CommitApiPlan {
                lone_buffered: 50_000,
                lone_fsync: 1_000,
                import: 100_000,
                unit_commands: 64_000,
            },
            replication: replication::ReplicationPlan { lone: 500, many: 10_000, kills: 10 },
        }
    }

    fn full() -> Plan {
        Plan {
            mode: "full",
            raw: RawDiskPlan { append_records: 10_000, group_writes: 2_000, overwrite_records: 10_000 },
            commits: [(1, 10_000), (16, 50_000), (64, 200_000)],
            peer_commits: [(1, 2_000), (16, 3_200), (64, 6_400)],
            recovery_records: 1_000_000,
            tail: 10_000,
            segment_size: 8 << 20,
            lookups: 100_000,
            snapshot_sessions: 1_000_000,
            commit_api: commit_api::CommitApiPlan {
                lone_buffered: 200_000,
                lone_fsync: 3_000,
                import: 1_000_000,
                unit_commands: 256_000,
            },
            replication: replication::ReplicationPlan { lone: 2_000, many: 50_000, kills: 50 },
        }
    }
}

/// The command line.
#[derive(Debug)]
struct Args {
    quick: bool,
    dir: Option<PathBuf>,
    /// `--lone-commit`.
    lone_commit: bool,
    /// `--import`.
    import: bool,
    /// `--lone-ratio`.
    lone_ratio: bool,
    /// `--metrics-cost`.
    metrics_cost: bool,
    /// `--replication`.
    replication: bool,
    /// `--snapshot-stall`.
    snapshot_stall: bool,
    /// `--follower`.
    follower: bool,
    /// `--backup`.
    backup: bool,
    /// `--windows`: the snapshot-stall latency windows alone.
    stall_windows: bool,
    /// `--variants VARIANTS`: the states of the snapshot-stall windows.
    stall_variants: Option<String>,
    /// `--frozen-memory VARIANT DIR PATTERN SESSIONS`.
    frozen_memory: Option<(String, PathBuf, String, u64)>,
    /// `--frozen-open VARIANT DIR`.
    frozen_open: Option<(String, PathBuf)>,
    /// `--probe SYSTEM COMMITS`.
    probe: Option<(String, u64)>,
    /// `--memory DIR SEGMENT_SIZE`.
    memory: Option<(PathBuf, u64)>,
    /// `--migration-memory DIR SEGMENT_SIZE`.
    migration_memory: Option<(PathBuf, u64)>,
    /// `--inspect [MEGABYTES]`.
    inspect: Option<u64>,
    /// `--inspect-memory DIR`.
    inspect_memory: Option<PathBuf>,
    /// `--recovery-race` and the arguments after it, which are the race's own.
    race: Option<Vec<String>>,
}

impl Args {
    /// Parses the arguments; `Ok(None)` when help was asked for.
    fn parse(args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
        let mut parsed = Args {
            quick: false,
            dir: None,
            lone_commit: false,
            import: false,
            lone_ratio: false,
            metrics_cost: false,
            replication: false,
            snapshot_stall: false,
            follower: false,
            backup: false,
            stall_windows: false,
            stall_variants: None,
            frozen_memory: None,
            frozen_open: None,
            probe: None,
            memory: None,
            migration_memory: None,
            inspect: None,
            inspect_memory: None,
            race: None,
        };
        let mut args = args.peekable();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--quick" => parsed.quick = true,
                "--lone-commit" => parsed.lone_commit = true,
                "--import" => parsed.import = true,
                "--lone-ratio" => parsed.lone_ratio = true,
                "--metrics-cost" => parsed.metrics_cost = true,
                "--replication" => parsed.replication = true,
                "--snapshot-stall" => parsed.snapshot_stall = true,
                "--follower" => parsed.follower = true,
                "--backup" => parsed.backup = true,
                "--windows" => parsed.stall_windows = true,
                "--variants" => parsed.stall_variants = Some(args.next().ok_or("--variants needs a list")?),
                "--frozen-memory" => {
                    let mut next = || args.next().ok_or("--frozen-memory needs VARIANT DIR PATTERN SESSIONS");
                    let (variant, dir, pattern) = (next()?, next()?, next()?);
                    let sessions = next()?.parse().map_err(|e| format!("--frozen-memory: {e}"))?;
                    parsed.frozen_memory = Some((variant, dir.into(), pattern, sessions));
                }
                "--frozen-open" => {
                    let variant = args.next().ok_or("--frozen-open needs VARIANT DIR")?;
                    let dir = args.next().ok_or("--frozen-open needs VARIANT DIR")?;
                    parsed.frozen_open = Some((variant, dir.into()));
                }
                "--dir" => parsed.dir = Some(args.next().ok_or("--dir needs a directory")?.into()),
                "--probe" => {
                    let system = args.next().ok_or("--probe needs a system")?;
                    let commits = args.next().and_then(|n| n.parse().ok()).ok_or("--probe needs a commit count")?;
                    parsed.probe = Some((system, commits));
                }
                "--memory" => {
                    let dir = args.next().ok_or("--memory needs a store directory")?;
                    let size = args.next().and_then(|n| n.parse().ok()).ok_or("--memory needs a segment size")?;
                    parsed.memory = Some((dir.into(), size));
                }
                "--migration-memory" => {
                    let dir = args.next().ok_or("--migration-memory needs a store directory")?;
                    let size =
                        args.next().and_then(|n| n.parse().ok()).ok_or("--migration-memory needs a segment size")?;
                    parsed.migration_memory = Some((dir.into(), size));
                }
                "--inspect" => {
                    let size = args.next_if(|n| n.parse::<u64>().is_ok()).map_or(Ok(1000), |n| n.parse());
                    parsed.inspect = Some(size.map_err(|e| format!("--inspect: {e}"))?);
                }
                "--inspect-memory" => {
                    parsed.inspect_memory = Some(args.next().ok_or("--inspect-memory needs a store directory")?.into());
                }
                "--recovery-race" => parsed.race = Some(args.by_ref().collect()),
                "-h" | "--help" => return Ok(None),
                other => return Err(format!("unknown argument `{other}`\n\n{USAGE}")),
            }
        }
        Ok(Some(parsed))
    }
}

fn main() -> Result<(), BoxError> {
    let Some(args) = Args::parse(std::env::args().skip(1))? else {
        println!("{USAGE}");
        return Ok(());
    };
    let plan = if args.quick { Plan::quick() } else { Plan::full() };
    if let Some((dir, segment_size)) = &args.memory {
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        return memory::child(&runtime, dir, *segment_size);
    }
    if let Some((variant, dir, pattern, sessions)) = &args.frozen_memory {
        let variant = frozen_states::Variant::from_id(variant).ok_or("--frozen-memory: unknown variant")?;
        let pattern = freeze_cost::Pattern::from_id(pattern).ok_or("--frozen-memory: unknown pattern")?;
        return freeze_cost::memory_child(variant, dir, pattern, *sessions);
    }
    if let Some((variant, dir)) = &args.frozen_open {
        let variant = frozen_states::Variant::from_id(variant).ok_or("--frozen-open: unknown variant")?;
        return freeze_cost::open_child(variant, dir);
    }
    if let Some(dir) = &args.inspect_memory {
        return inspection::memory_child(dir);
    }
    if let Some((dir, segment_size)) = &args.migration_memory {
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        return migration::child(&runtime, dir, *segment_size);
    }
    let parent = match args.dir {
        Some(dir) => dir,
        None => std::env::current_dir()?,
    };
    std::fs::create_dir_all(&parent)?;
    let scratch = tempfile::Builder::new().prefix("airomem-bench-").tempdir_in(&parent)?;
    let dir = scratch.path();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    if let Some(megabytes) = args.inspect {
        inspection::run(&runtime, dir, megabytes)?;
        drop(runtime);
        scratch.close()?;
        return Ok(());
    }
    if let Some(race) = &args.race {
        recovery_race::run(&runtime, dir, plan.recovery_records, plan.segment_size, race)?;
        drop(runtime);
        scratch.close()?;
        return Ok(());
    }
    if args.follower {
        follower_lag::run(&runtime, dir)?;
        drop(runtime);
        scratch.close()?;
        return Ok(());
    }
    if args.lone_commit {
        lone_commit::run(&runtime, dir)?;
        drop(runtime);
        scratch.close()?;
        return Ok(());
    }
    if args.metrics_cost {
        metrics_cost::run(&runtime, dir)?;
        drop(runtime);
        scratch.close()?;
        return Ok(());
    }
    if args.backup {
        eprintln!("scratch directory {}; the machine's other load shows in every figure", dir.display());
        backup_mode::run(&runtime, dir, if args.quick { 100_000 } else { 1_000_000 })?;
        drop(runtime);
        scratch.close()?;
        return Ok(());
    }
    if args.replication {
        let result = runtime.block_on(replication::run(dir, plan.replication))?;
        report::replication_table(&result).print();
        drop(runtime);
        scratch.close()?;
        return Ok(());
    }
    let mut stall_plan = snapshot_stall::StallPlan::new(plan.snapshot_sessions, args.quick);
    stall_plan.windows_only = args.stall_windows;
    if let Some(list) = &args.stall_variants {
        stall_plan.variants = list
            .split(',')
            .map(|id| frozen_states::Variant::from_id(id).ok_or_else(|| format!("--variants: unknown state `{id}`")))
            .collect::<Result<_, _>>()?;
    }
    if args.snapshot_stall {
        eprintln!("scratch directory {}; the machine's other load shows in every figure", dir.display());
        let stall = runtime.block_on(snapshot_stall::run(dir, &stall_plan))?;
        snapshot_stall::print(&stall);
        drop(runtime);
        scratch.close()?;
        return Ok(());
    }
    if args.lone_ratio {
        let (memory, lone) = runtime.block_on(commit_api::lone_only(dir, plan.commit_api))?;
        report::lone_table(memory, &lone, plan.commit_api.lone_buffered).print();
        drop(runtime);
        scratch.close()?;
        return Ok(());
    }
    if args.import {
        import_mode::run(&runtime, dir)?;
        drop(runtime);
        scratch.close()?;
        return Ok(());
    }
    if let Some((system, commits)) = args.probe {
        probe(&runtime, dir, &system, commits)?;
        drop(runtime);
        scratch.close()?;
        return Ok(());
    }

    let setting = Setting {
        mode: plan.mode,
        dir: dir.display().to_string(),
        filesystem: filesystem_of(dir),
        cores: std::thread::available_parallelism().map_or(1, usize::from),
    };
    eprintln!("scratch directory {} on {}", setting.dir, setting.filesystem);

    let (raw, commits, peer_commits) = disk_and_commits(&runtime, dir, &plan)?;
    eprintln!("dataset: {} commands", plan.recovery_records);
    let data = Dataset::new(plan.recovery_records, plan.lookups);
    let recovery = runtime.block_on(recovery::run(dir, &data, plan.tail, plan.segment_size))?;
    // Before the memory child, which snapshots and commits into the store it is given.
    let migration = migration::run(&runtime, &dir.join("recovery-journal"), dir, plan.segment_size)?;
    let memory = memory::measure(&dir.join("recovery-journal"), plan.segment_size)?;
    std::fs::remove_dir_all(dir.join("recovery"))?;
    std::fs::remove_dir_all(dir.join("recovery-journal"))?;
    let mut peers = Vec::with_capacity(PeerKind::ALL.len());
    for (kind, commits) in PeerKind::ALL.into_iter().zip(peer_commits) {
        let recovery = kind.recovery(dir, runtime.handle(), &data, plan.tail)?;
        peers.push(PeerResults { kind, commits, recovery });
        remove_peer_dirs(dir, kind)?;
    }
    drop(data);
    let stall = runtime.block_on(snapshot_stall::run(dir, &stall_plan))?;
    let commit_api = runtime.block_on(commit_api::run(dir, plan.commit_api))?;
    let replication = runtime.block_on(replication::run(dir, plan.replication))?;
    drop(runtime);
    eprintln!("sync check: strace on {} commits of each system", sync_probe::PROBE_COMMITS);
    let syncs = sync_probe::systems().into_iter().map(|system| (system, sync_probe::probe(dir, system))).collect();

    report::print(
        &setting,
        &Results {
            raw,
            commits,
            recovery,
            peers,
            stall,
            memory,
            migration,
            commit_api,
            replication,
            lookups: plan.lookups,
            syncs,
        },
    );
    scratch.close()?;
    Ok(())
}

/// Removes what a peer's recovery measurement left in `dir`.
fn remove_peer_dirs(dir: &Path, kind: PeerKind) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.starts_with(&format!("{}-", kind.id())) {
            std::fs::remove_dir_all(&path)?;
        }
    }
    Ok(())
}

/// `--probe`: commits `commits` commands to a fresh store of `system` in `dir`, one at a
/// time, and closes it.
fn probe(runtime: &Runtime, dir: &Path, system: &str, commits: u64) -> Result<(), BoxError> {
    let store_dir = dir.join("probe");
    if let Some(durability) = match system {
        "airomem" => Some(Durability::Fsync),
        "airomem-buffered" => Some(Durability::OsBuffered),
        _ => None,
    } {
        return runtime.block_on(async {
            let options = StoreOptions::default().durability(durability);
            let store: SessionStore = Store::open_with(PostcardSerializer, &store_dir, options).await?;
            for n in 0..commits {
                store.commit(SessionsCommand::CreateSession { token: token(n), user_id: n }).await?;
            }
            store.close().await?;
            Ok(())
        });
    }
    let kind = PeerKind::from_id(system).ok_or_else(|| format!("unknown system `{system}`\n\n{USAGE}"))?;
    std::fs::create_dir_all(&store_dir)?;
    kind.probe(&store_dir, runtime.handle(), commits)
}

/// airomem's commits, then each peer's at each writer count.
type CommitFigures = (RawDiskResults, Vec<CommitResult>, Vec<Vec<PeerCommits>>);

/// Measures the disk's limits and the durable commit rates in rounds: each round runs one
/// repetition of every measurement, so that a slow spell of a shared disk shows in the
/// ranges of all figures rather than skewing the ratios between them.
fn disk_and_commits(runtime: &Runtime, dir: &Path, plan: &Plan) -> Result<CommitFigures, BoxError> {
    let mut raw = Vec::with_capacity(REPETITIONS);
    let mut runs: Vec<Vec<commits::Run>> = plan.commits.iter().map(|_| Vec::with_capacity(REPETITIONS)).collect();
    // By peer, then by writer count, then by repetition.
    let mut peer_runs: Vec<Vec<Vec<commits::Driven>>> =
        PeerKind::ALL.iter().map(|_| plan.peer_commits.iter().map(|_| Vec::new()).collect()).collect();
    for rep in 0..REPETITIONS {
        raw.push(raw_disk::run_once(dir, &plan.raw, rep)?);
        for (&(writers, count), runs) in plan.commits.iter().zip(&mut runs) {
            runs.push(runtime.block_on(commits::run_once(dir, writers, count, rep))?);
        }
        for (kind, by_writers) in PeerKind::ALL.into_iter().zip(&mut peer_runs) {
            for (&(writers, count), runs) in plan.peer_commits.iter().zip(by_writers) {
                runs.push(kind.commits_once(dir, runtime.handle(), writers, count, rep)?);
            }
        }
    }
    let commits =
        plan.commits.iter().zip(&runs).map(|(&(writers, count), runs)| commits::summarise(writers, count, runs));
    let peers = peer_runs
        .iter()
        .map(|by_writers| {
            let summaries = plan.peer_commits.iter().zip(by_writers);
            summaries.map(|(&(writers, count), runs)| PeerCommits::summarise(writers, count, runs)).collect()
        })
        .collect();
    Ok((raw_disk::summarise(&raw), commits.collect(), peers))
}

/// "device (type, mounted at /point)" for the mount that holds `path`, from
/// `/proc/self/mounts`; "unknown file system" where that cannot be read.
fn filesystem_of(path: &Path) -> String {
    let Ok(path) = path.canonicalize() else { return "unknown file system".into() };
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else { return "unknown file system".into() };
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (device, point, kind) = (fields.next()?, fields.next()?, fields.next()?);
            path.starts_with(point).then(|| (point.len(), format!("{device} ({kind}, mounted at {point})")))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "unknown file system".into(), |(_, description)| description)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Args>, String> {
        Args::parse(args.iter().map(|a| (*a).to_string()))
    }

    #[test]
    fn arguments_parse() {
        let args = parse(&["--quick", "--dir", "/data"]).expect("valid").expect("not help");
        assert!(args.quick);
        assert_eq!(args.dir, Some(PathBuf::from("/data")));
        let args = parse(&["--probe", "sqlite", "200"]).expect("valid").expect("not help");
        assert_eq!(args.probe, Some(("sqlite".to_string(), 200)));
        assert!(parse(&["--probe", "sqlite"]).is_err());
        assert!(parse(&["--help"]).expect("valid").is_none());
        assert!(parse(&["--dir"]).is_err());
        assert!(parse(&["--fast"]).is_err());
        let args = parse(&["--snapshot-stall", "--quick"]).expect("valid").expect("not help");
        assert!(args.snapshot_stall && args.quick);
        let args = parse(&["--frozen-memory", "sharded", "/s", "skewed", "1000"]).expect("valid").expect("not help");
        assert_eq!(args.frozen_memory, Some(("sharded".into(), PathBuf::from("/s"), "skewed".into(), 1000)));
        assert!(parse(&["--frozen-memory", "sharded", "/s", "skewed"]).is_err());
    }
}
