//! `airomem-bench`: measures airomem against the disk it runs on, in one run and on one
//! file system.
//!
//! 1. The disk's limits with plain `write` + `fdatasync` loops ([`raw_disk`]).
//! 2. Durable commits per second with 1, 16 and 64 concurrent writers ([`commits`]).
//! 3. Recovery speed of `Store::open` against an in-memory replay ([`recovery`]).
//!
//! Every workload runs a fixed number of operations, three times (the disk and commit
//! measurements in interleaved rounds); the report ([`report`]) gives medians with their
//! min–max range, as markdown, on standard output. Progress goes to standard error.
//!
//! ```text
//! cargo run --release -p airomem-bench -- [--quick] [--dir DIR]
//! ```
//!
//! The scratch directory is a temporary directory created inside `DIR` (default: the
//! current directory, so that it lands on the real disk rather than a tmpfs `/tmp`) and
//! removed at the end.

mod commits;
mod measure;
mod raw_disk;
mod recovery;
mod report;

use std::error::Error;
use std::path::{Path, PathBuf};

use crate::commits::CommitResult;
use crate::measure::REPETITIONS;
use crate::raw_disk::{RawDiskPlan, RawDiskResults};
use crate::report::{Results, Setting};

const USAGE: &str = "usage: airomem-bench [--quick] [--dir DIR]

  --quick    fewer commits and a 100,000-command recovery (under a minute)
  --dir DIR  create the scratch directory inside DIR (default: the current directory);
             DIR must be on the disk to measure, not a tmpfs";

/// How much work a run does.
#[derive(Clone, Copy, Debug)]
struct Plan {
    mode: &'static str,
    raw: RawDiskPlan,
    /// (writers, commits per repetition).
    commits: [(usize, u64); 3],
    recovery_records: u64,
}

impl Plan {
    fn quick() -> Plan {
        Plan {
            mode: "quick",
            raw: RawDiskPlan { append_records: 1_000, group_writes: 300, overwrite_records: 1_000 },
            commits: [(1, 1_000), (16, 5_000), (64, 20_000)],
            recovery_records: 100_000,
        }
    }

    fn full() -> Plan {
        Plan {
            mode: "full",
            raw: RawDiskPlan { append_records: 10_000, group_writes: 2_000, overwrite_records: 10_000 },
            commits: [(1, 10_000), (16, 50_000), (64, 200_000)],
            recovery_records: 1_000_000,
        }
    }
}

/// The command line.
#[derive(Debug)]
struct Args {
    quick: bool,
    dir: Option<PathBuf>,
}

impl Args {
    /// Parses the arguments; `Ok(None)` when help was asked for.
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
        let mut parsed = Args { quick: false, dir: None };
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--quick" => parsed.quick = true,
                "--dir" => parsed.dir = Some(args.next().ok_or("--dir needs a directory")?.into()),
                "-h" | "--help" => return Ok(None),
                other => return Err(format!("unknown argument `{other}`\n\n{USAGE}")),
            }
        }
        Ok(Some(parsed))
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let Some(args) = Args::parse(std::env::args().skip(1))? else {
        println!("{USAGE}");
        return Ok(());
    };
    let plan = if args.quick { Plan::quick() } else { Plan::full() };
    let parent = match args.dir {
        Some(dir) => dir,
        None => std::env::current_dir()?,
    };
    std::fs::create_dir_all(&parent)?;
    let scratch = tempfile::Builder::new().prefix("airomem-bench-").tempdir_in(&parent)?;
    let dir = scratch.path();
    let setting = Setting {
        mode: plan.mode,
        dir: dir.display().to_string(),
        filesystem: filesystem_of(dir),
        cores: std::thread::available_parallelism().map_or(1, usize::from),
    };
    eprintln!("scratch directory {} on {}", setting.dir, setting.filesystem);

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (raw, commits) = disk_and_commits(&runtime, dir, &plan)?;
    let recovery = runtime.block_on(recovery::run(dir, plan.recovery_records))?;
    drop(runtime);

    report::print(&setting, &Results { raw, commits, recovery });
    scratch.close()?;
    Ok(())
}

/// Measures the disk's limits and the durable commit rates in rounds: each round runs one
/// repetition of every measurement, so that a slow spell of a shared disk shows in the
/// ranges of all figures rather than skewing the ratios between them.
fn disk_and_commits(
    runtime: &tokio::runtime::Runtime,
    dir: &Path,
    plan: &Plan,
) -> Result<(RawDiskResults, Vec<CommitResult>), Box<dyn Error>> {
    let mut raw = Vec::with_capacity(REPETITIONS);
    let mut runs: Vec<Vec<commits::Run>> = plan.commits.iter().map(|_| Vec::with_capacity(REPETITIONS)).collect();
    for rep in 0..REPETITIONS {
        raw.push(raw_disk::run_once(dir, &plan.raw, rep)?);
        for (&(writers, count), runs) in plan.commits.iter().zip(&mut runs) {
            runs.push(runtime.block_on(commits::run_once(dir, writers, count, rep))?);
        }
    }
    let commits =
        plan.commits.iter().zip(&runs).map(|(&(writers, count), runs)| commits::summarise(writers, count, runs));
    Ok((raw_disk::summarise(&raw), commits.collect()))
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
        assert!(parse(&["--help"]).expect("valid").is_none());
        assert!(parse(&["--dir"]).is_err());
        assert!(parse(&["--fast"]).is_err());
    }
}
