//! The recovery race: every way of getting the session data set's final state into a
//! `HashMap<String, u64>`, measured in one run, interleaved, with the page cache warm.
//!
//! * airomem `Store::open` from the journal alone (every command replayed);
//! * airomem `Store::open` from a snapshot taken after the last command (today's
//!   `Store::snapshot()`; the hook for the snapshot format's own figure);
//! * SQLite and redb loading the final rows (about 800k token → user id) into a `HashMap`,
//!   once grown by the inserts (no size hint, as airomem's `Sessions` is) and once sized
//!   first from the database's row count;
//! * the in-memory limit: decoding the journal's postcard payloads from one buffer and
//!   executing them on a `Sessions`, one thread, no I/O, framing or checksums.
//!
//! Every repetition runs each variant once, in an order rotated by one each round, after
//! one untimed round that warms the page cache and the allocator. A `sync` (untimed) comes
//! before every timed load so that no write-back runs inside one. What is timed is the
//! open and the load; checking the result, closing and dropping the map are not.
//!
//! ```text
//! cargo run --release -p airomem-bench -- [--quick] [--dir DIR] --recovery-race \
//!     [--rounds N] [--only journal,snapshot,sqlite,sqlite-hint,redb,redb-hint,memory,apply]
//!     [--keep DIR] [--segment-size BYTES] [--fresh]
//! ```
//!
//! `--keep DIR` builds the stores in `DIR` (if it does not hold them yet) and leaves them
//! there, so that repeated runs and profilers skip the build. `--segment-size` sets the
//! journal's segment size (default: the bench's 8 MiB; a store's default is 64 MiB).
//! `--fresh` runs every load from files in a new process of its own (the in-memory limits
//! stay in the parent): a service recovers into a fresh heap, while loads repeated in one
//! process allocate from what the previous ones freed, on whichever thread freed it.

use std::collections::HashMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Instant;

use airomem::{Durability, PostcardSerializer, Serializer, State, Store, StoreOptions};
use airomem_workspace::{Sessions, SessionsCommand};
use tokio::runtime::Runtime;

use crate::commits::{SessionStore, drive};
use crate::dataset::{BUILD_STREAMS, Dataset};
use crate::measure::{BoxError, REPETITIONS, Summary, sync_disks};
use crate::peers::redb::Redb;
use crate::peers::sqlite::Sqlite;
use crate::peers::{Peer, SizeHint};
use crate::recovery::Payloads;
use crate::table::{Table, number, range, ratio, seconds};

/// One way of loading the final state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    Journal,
    Snapshot,
    Sqlite(SizeHint),
    Redb(SizeHint),
    Memory,
    Apply,
}

impl Variant {
    const ALL: [Variant; 8] = [
        Variant::Journal,
        Variant::Snapshot,
        Variant::Sqlite(SizeHint::None),
        Variant::Sqlite(SizeHint::Count),
        Variant::Redb(SizeHint::None),
        Variant::Redb(SizeHint::Count),
        Variant::Memory,
        Variant::Apply,
    ];

    fn id(self) -> &'static str {
        match self {
            Variant::Journal => "journal",
            Variant::Snapshot => "snapshot",
            Variant::Sqlite(SizeHint::None) => "sqlite",
            Variant::Sqlite(SizeHint::Count) => "sqlite-hint",
            Variant::Redb(SizeHint::None) => "redb",
            Variant::Redb(SizeHint::Count) => "redb-hint",
            Variant::Memory => "memory",
            Variant::Apply => "apply",
        }
    }

    fn from_id(id: &str) -> Result<Variant, String> {
        Variant::ALL.into_iter().find(|v| v.id() == id).ok_or(format!("unknown variant `{id}`"))
    }

    /// Whether `--fresh` runs it in a process of its own: the loads from files. The
    /// in-memory limits need the payloads the parent holds.
    fn reads_files(self) -> bool {
        !matches!(self, Variant::Memory | Variant::Apply)
    }

    fn name(self) -> &'static str {
        match self {
            Variant::Journal => "airomem `Store::open`, journal only",
            Variant::Snapshot => "airomem `Store::open`, snapshot (today's format) + empty tail",
            Variant::Sqlite(_) => "SQLite: open + `SELECT token, user_id` into a `HashMap`",
            Variant::Redb(_) => "redb 3: open + table scan into a `HashMap`",
            Variant::Memory => "in-memory limit: postcard decode + `Sessions::execute`, 1 thread",
            Variant::Apply => "`Sessions::execute` of commands decoded beforehand (replay's applying floor)",
        }
    }

    fn hint(self) -> &'static str {
        match self {
            Variant::Sqlite(SizeHint::Count) => "`with_capacity(COUNT(*))`",
            Variant::Redb(SizeHint::Count) => "`with_capacity(table.len())`",
            Variant::Snapshot => "serde's (capped)",
            _ => "none",
        }
    }
}

/// What the command line asked of the race.
struct RaceArgs {
    rounds: usize,
    only: Vec<Variant>,
    keep: Option<PathBuf>,
    segment_size: Option<u64>,
    /// Each airomem, SQLite and redb load in a fresh process.
    fresh: bool,
    /// Internal: this process is the fresh process of one load.
    child: Option<Variant>,
}

impl RaceArgs {
    fn parse(args: &[String]) -> Result<RaceArgs, String> {
        let mut parsed = RaceArgs {
            rounds: REPETITIONS,
            only: Variant::ALL.to_vec(),
            keep: None,
            segment_size: None,
            fresh: false,
            child: None,
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--rounds" => {
                    let n = args.next().and_then(|n| n.parse().ok()).ok_or("--rounds needs a number")?;
                    parsed.rounds = n;
                }
                "--only" => {
                    let names = args.next().ok_or("--only needs a list of variants")?;
                    parsed.only = names.split(',').map(Variant::from_id).collect::<Result<_, _>>()?;
                }
                "--keep" => parsed.keep = Some(args.next().ok_or("--keep needs a directory")?.into()),
                "--fresh" => parsed.fresh = true,
                "--child" => {
                    let name = args.next().ok_or("--child needs a variant")?;
                    parsed.child = Some(Variant::from_id(name)?);
                }
                "--segment-size" => {
                    let bytes = args.next().and_then(|n| n.parse().ok()).ok_or("--segment-size needs a byte count")?;
                    parsed.segment_size = Some(bytes);
                }
                other => return Err(format!("--recovery-race: unknown argument `{other}`")),
            }
        }
        if parsed.rounds == 0 {
            return Err("--rounds must be at least 1".into());
        }
        Ok(parsed)
    }
}

/// Where the race's stores live.
struct Stores {
    journal: PathBuf,
    snapshot: PathBuf,
    sqlite: PathBuf,
    redb: PathBuf,
}

impl Stores {
    fn in_dir(root: &Path) -> Stores {
        Stores {
            journal: root.join("airomem-journal"),
            snapshot: root.join("airomem-snapshot"),
            sqlite: root.join("sqlite"),
            redb: root.join("redb"),
        }
    }
}

/// Runs one load of `variant` in a new process of this binary (`--child`): a fresh heap, as
/// a service recovering at start has, rather than one that earlier loads filled and freed.
fn in_fresh_process(variant: Variant, root: &Path, scratch: &Path, expected: usize) -> Result<Timed, BoxError> {
    let output = std::process::Command::new(std::env::current_exe()?)
        .arg("--dir")
        .arg(scratch)
        .args(["--recovery-race", "--child", variant.id(), "--keep"])
        .arg(root)
        .stderr(std::process::Stdio::inherit())
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!("the {} child failed: {}", variant.id(), output.status).into());
    }
    let fields: Vec<&str> = stdout.split_whitespace().collect();
    let [wall, cpu, sessions] = fields[..] else {
        return Err(format!("the {} child printed `{stdout}`", variant.id()).into());
    };
    let sessions: usize = sessions.parse()?;
    if sessions != expected {
        return Err(format!("{} loaded {sessions} sessions in its process, not {expected}", variant.id()).into());
    }
    Ok(Timed { wall: wall.parse()?, cpu: cpu.parse()? })
}

/// One timed load from files, in this process, and the sessions it loaded; for `--child`.
fn load(runtime: &Runtime, variant: Variant, stores: &Stores) -> Result<(Timed, usize), BoxError> {
    match variant {
        Variant::Journal | Variant::Snapshot => {
            let dir = if variant == Variant::Journal { &stores.journal } else { &stores.snapshot };
            let span = Span::start();
            let store: SessionStore = runtime.block_on(Store::open(PostcardSerializer, dir))?;
            let timed = span.stop();
            let sessions = store.query()?.tokens.len();
            runtime.block_on(store.close())?;
            Ok((timed, sessions))
        }
        Variant::Sqlite(hint) => {
            let span = Span::start();
            let peer = Sqlite::load(&stores.sqlite, hint)?;
            let timed = span.stop();
            Ok((timed, peer.loaded().len()))
        }
        Variant::Redb(hint) => {
            let span = Span::start();
            let peer = Redb::load(&stores.redb, hint)?;
            let timed = span.stop();
            Ok((timed, peer.loaded().len()))
        }
        Variant::Memory | Variant::Apply => Err(format!("{} has no files to load", variant.id()).into()),
    }
}

/// Runs the race over a data set of `records` commands with journal segments of
/// `segment_size` bytes, in `scratch` (or in `--keep DIR`), and prints its table.
pub fn run(
    runtime: &Runtime,
    scratch: &Path,
    records: u64,
    segment_size: u64,
    args: &[String],
) -> Result<(), BoxError> {
    let args = RaceArgs::parse(args)?;
    let segment_size = args.segment_size.unwrap_or(segment_size);
    let root = args.keep.clone().unwrap_or_else(|| scratch.join("race"));
    let stores = Stores::in_dir(&root);
    if let Some(variant) = args.child {
        let (timed, sessions) = load(runtime, variant, &stores)?;
        println!("{} {} {sessions}", timed.wall, timed.cpu);
        return Ok(());
    }
    eprintln!("recovery race: data set of {records} commands");
    let data = Dataset::new(records, 1);
    build(runtime, &root, &stores, &data, segment_size)?;
    let payloads = Payloads::encode(records)?;
    let load_before = load_average();

    let variants = &args.only;
    let mut runs: Vec<Vec<Timed>> = variants.iter().map(|_| Vec::with_capacity(args.rounds)).collect();
    // Round 0 warms the page cache and the allocator and is not counted.
    for round in 0..=args.rounds {
        for i in 0..variants.len() {
            let index = (i + round) % variants.len();
            let variant = variants[index];
            eprintln!("recovery race: round {round}/{}: {}", args.rounds, variant.id());
            sync_disks()?;
            let timed = if args.fresh && variant.reads_files() {
                in_fresh_process(variant, &root, scratch, data.expected.len())?
            } else {
                measure(runtime, variant, &stores, &data, &payloads)?
            };
            if round > 0 {
                runs[index].push(timed);
            }
        }
    }
    let load_after = load_average();

    let summaries: Vec<(Variant, Summary, Summary)> = variants
        .iter()
        .zip(&runs)
        .map(|(&v, runs)| (v, Summary::over(runs, |t| t.wall), Summary::over(runs, |t| t.cpu)))
        .collect();
    let find = |v: Variant| summaries.iter().find(|(w, _, _)| *w == v).map(|(_, s, _)| *s);
    let journal = find(Variant::Journal);
    let mut table = Table::new(
        &format!(
            "Recovery race: {} commands → {} live sessions, {} MiB journal segments, page cache warm, {} \
             interleaved rounds (medians){}",
            number(records as f64),
            number(data.expected.len() as f64),
            segment_size >> 20,
            args.rounds,
            if args.fresh { ", each load from files in a fresh process" } else { "" }
        ),
        &["load", "size hint", "median", "range", "CPU (all threads)", "records/s", "airomem journal ÷ this"],
    );
    for &(variant, s, cpu) in &summaries {
        table.row(vec![
            variant.name().into(),
            variant.hint().into(),
            seconds(s.median),
            range(s, seconds),
            seconds(cpu.median),
            number(records as f64 / s.median),
            journal.map_or("—".into(), |j| ratio(j.median / s.median)),
        ]);
    }
    table.print();
    if let Some(j) = journal {
        for peer in [
            Variant::Sqlite(SizeHint::None),
            Variant::Redb(SizeHint::None),
            Variant::Sqlite(SizeHint::Count),
            Variant::Redb(SizeHint::Count),
        ] {
            if let Some(p) = find(peer) {
                println!(
                    "airomem journal / {} ({} size hint): {} (median {} vs {})",
                    peer.id(),
                    if peer.hint() == "none" { "no" } else { "with a" },
                    ratio(j.median / p.median),
                    seconds(j.median),
                    seconds(p.median),
                );
            }
        }
        println!();
    }
    println!(
        "load average before / after: {load_before} / {load_after} (the machine is shared: figures vary run to run)"
    );
    if args.keep.is_none() {
        std::fs::remove_dir_all(&root)?;
    }
    Ok(())
}

/// One timed load of `variant`, checked against the data set.
fn measure(
    runtime: &Runtime,
    variant: Variant,
    stores: &Stores,
    data: &Dataset,
    payloads: &Payloads,
) -> Result<Timed, BoxError> {
    let check = |what: &str, loaded: &HashMap<String, u64>| -> Result<(), BoxError> {
        if *loaded == data.expected {
            Ok(())
        } else {
            Err(format!("{what} loaded {} sessions, not the {} expected", loaded.len(), data.expected.len()).into())
        }
    };
    match variant {
        Variant::Journal | Variant::Snapshot => {
            let dir = if variant == Variant::Journal { &stores.journal } else { &stores.snapshot };
            let span = Span::start();
            let store: SessionStore = runtime.block_on(Store::open(PostcardSerializer, dir))?;
            let elapsed = span.stop();
            let report = store.recovery();
            let from_snapshot = report.snapshot.is_some();
            if from_snapshot != (variant == Variant::Snapshot) {
                return Err(format!("{}: recovered from a snapshot: {from_snapshot}", variant.id()).into());
            }
            check(variant.id(), &store.query()?.tokens)?;
            runtime.block_on(store.close())?;
            // The state is freed on the store's writer thread as it ends, after `close`
            // returns: that must not overlap the next timed load.
            wait_for_store_threads()?;
            Ok(elapsed)
        }
        Variant::Sqlite(hint) => {
            let span = Span::start();
            let peer = Sqlite::load(&stores.sqlite, hint)?;
            let elapsed = span.stop();
            check(variant.id(), peer.loaded())?;
            peer.close()?;
            Ok(elapsed)
        }
        Variant::Redb(hint) => {
            let span = Span::start();
            let peer = Redb::load(&stores.redb, hint)?;
            let elapsed = span.stop();
            check(variant.id(), peer.loaded())?;
            peer.close()?;
            Ok(elapsed)
        }
        Variant::Memory => {
            let span = Span::start();
            let mut state = Sessions::default();
            for payload in payloads.each() {
                state.execute(PostcardSerializer.decode::<SessionsCommand>(payload)?);
            }
            let state = black_box(state);
            let elapsed = span.stop();
            check(variant.id(), &state.tokens)?;
            Ok(elapsed)
        }
        Variant::Apply => {
            let commands = payloads
                .each()
                .map(|p| PostcardSerializer.decode::<SessionsCommand>(p))
                .collect::<Result<Vec<_>, _>>()?;
            let span = Span::start();
            let mut state = Sessions::default();
            for command in commands {
                state.execute(command);
            }
            let state = black_box(state);
            let elapsed = span.stop();
            check(variant.id(), &state.tokens)?;
            Ok(elapsed)
        }
    }
}

/// Builds (or, with a marker from an earlier build of the same size, reuses) the stores.
fn build(runtime: &Runtime, root: &Path, stores: &Stores, data: &Dataset, segment_size: u64) -> Result<(), BoxError> {
    let marker = root.join(format!("built-{}-{segment_size}", data.records));
    if marker.exists() {
        eprintln!("recovery race: reusing the stores in {}", root.display());
        return Ok(());
    }
    if root.exists() {
        std::fs::remove_dir_all(root)?;
    }
    std::fs::create_dir_all(root)?;
    eprintln!("recovery race: building airomem's journal ({BUILD_STREAMS} writers, OsBuffered)");
    let options = StoreOptions::default().durability(Durability::OsBuffered).segment_size(segment_size);
    let store: SessionStore = runtime.block_on(Store::open_with(PostcardSerializer, &stores.journal, options))?;
    let built = runtime.block_on(drive(&store, BUILD_STREAMS, data.records))?;
    runtime.block_on(store.close())?;
    if built.expected_sessions != data.expected.len() {
        return Err("the data set does not match the committed workload".into());
    }
    eprintln!("recovery race: airomem snapshot of the same store");
    crate::memory::copy_store(&stores.journal, &stores.snapshot)?;
    let options = StoreOptions::default().segment_size(segment_size);
    let store: SessionStore = runtime.block_on(Store::open_with(PostcardSerializer, &stores.snapshot, options))?;
    runtime.block_on(store.snapshot())?;
    runtime.block_on(store.close())?;
    for (dir, name) in [(&stores.sqlite, "SQLite"), (&stores.redb, "redb")] {
        eprintln!("recovery race: building {name}");
        std::fs::create_dir_all(dir)?;
        if name == "SQLite" {
            Sqlite::build(dir, runtime.handle(), Box::new(data.commands()))?;
        } else {
            Redb::build(dir, runtime.handle(), Box::new(data.commands()))?;
        }
    }
    sync_disks()?;
    std::fs::write(&marker, b"")?;
    Ok(())
}

/// Wall and CPU seconds of one load.
#[derive(Clone, Copy, Debug)]
struct Timed {
    wall: f64,
    /// CPU seconds of the whole process (every thread) over the load: more than `wall`
    /// where a second thread worked alongside.
    cpu: f64,
}

/// A wall clock and the process's CPU clock, started together.
struct Span {
    started: Instant,
    cpu: Option<f64>,
}

impl Span {
    fn start() -> Span {
        Span { cpu: cpu_seconds(), started: Instant::now() }
    }

    fn stop(self) -> Timed {
        let wall = self.started.elapsed().as_secs_f64();
        let cpu = match (self.cpu, cpu_seconds()) {
            (Some(before), Some(after)) => after - before,
            _ => f64::NAN,
        };
        Timed { wall, cpu }
    }
}

/// User + system CPU seconds of this process so far, every thread included (ended ones
/// too), from `/proc/self/stat`, in clock ticks of 10 ms.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let (utime, stime): (u64, u64) = (fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?);
    Some((utime + stime) as f64 / 100.0)
}

/// Waits until no thread of this process is named `airomem-*`, for at most 60 s.
fn wait_for_store_threads() -> Result<(), BoxError> {
    let started = Instant::now();
    loop {
        let mut running = false;
        for task in std::fs::read_dir("/proc/self/task")? {
            // A thread that ended since the listing has no `comm` any more.
            let comm = std::fs::read_to_string(task?.path().join("comm")).unwrap_or_default();
            running |= comm.starts_with("airomem-");
        }
        if !running {
            return Ok(());
        }
        if started.elapsed().as_secs() >= 60 {
            return Err("a store thread is still running 60 s after close".into());
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// `/proc/loadavg`'s first three fields, or "unknown".
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn race_arguments_parse() {
        let args = |a: &[&str]| a.iter().map(|s| (*s).to_string()).collect::<Vec<_>>();
        let parsed = RaceArgs::parse(&args(&["--rounds", "5", "--only", "journal,redb-hint"])).expect("valid");
        assert_eq!(parsed.rounds, 5);
        assert_eq!(parsed.only, vec![Variant::Journal, Variant::Redb(SizeHint::Count)]);
        assert!(RaceArgs::parse(&args(&["--only", "mysql"])).is_err());
        assert!(RaceArgs::parse(&args(&["--rounds", "0"])).is_err());
        assert_eq!(RaceArgs::parse(&[]).expect("defaults").only.len(), Variant::ALL.len());
    }
}
