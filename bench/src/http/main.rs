//! `http-bench`: the session service under HTTP load, with its state in airomem (the
//! release build of `examples/web/session_service.rs`), in SQLite (WAL,
//! `synchronous=FULL`), and nowhere (the ceiling of the server and the load generator on
//! this machine). Same routes, same JSON, one process per variant; oha drives each from the
//! same machine.
//!
//! For each repetition and variant, a fresh server on a fresh directory gets, from
//! `--connections` connections (default 64):
//!
//! 1. `POST /sessions` for `--seconds` (default 10): durable creates.
//! 2. Sessions created through the API for the next two phases (not measured): twice as
//!    many as the creates of phase 1.
//! 3. `GET /sessions/{token}` for `--seconds`, each URL drawn at random from those sessions.
//! 4. `DELETE /sessions/{token}`, as many requests as phase 1 made creates, drawn the same
//!    way: oha draws with replacement, so about 79 % find their session (`204`) and the
//!    rest a session already deleted (`404`, answered without a write by every variant).
//!
//! Variants run in turn within each repetition; the report gives the median of each figure,
//! as markdown, on standard output. Progress goes to standard error.
//!
//! ```text
//! scripts/install-oha
//! cargo build --release -p airomem-web-examples --example session_service
//! cargo run --release -p airomem-bench --bin http-bench -- [--seconds S] [--repetitions N] [--dir DIR]
//! ```
//!
//! The scratch directory is created inside `--dir` (default: the current directory, so that
//! it lands on the real disk, not a tmpfs `/tmp`) and removed at the end.
//!
//! Then the replicated service (`airomem-raft/examples/replicated_sessions.rs`) against the
//! single-node one, driven by the bench's own clients ([`replicated`]): durable creates from
//! 64 clients and from one, failover over leader kills, and a learner's catch-up.
//! `--quick` runs everything smaller: one repetition of 5 s phases, 10 kills, a learner
//! joining 100,000 sessions.

mod backend;
mod clients;
mod cluster;
mod error;
mod figures;
mod load;
mod memory;
mod replicated;
mod serve;
mod sqlite;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use crate::error::BoxError;
use crate::figures::thousands;
use crate::load::{Phase, Server};
use crate::replicated::Row;
use crate::serve::Kind;

const USAGE: &str = "usage: http-bench [--quick] [--seconds S] [--repetitions N] [--connections C] [--dir DIR]
                  [--oha PATH] [--sqlite-writers N] [--kills K] [--learner-sessions N]
                  [--variants airomem,sqlite,memory,replicated,failover,learner]

  --quick             one repetition of 5 s phases, 10 kills, a learner joining 100,000 sessions
  --seconds S         how long the create and read phases last (default 10; 5 with --quick)
  --repetitions N     rounds over the variants; medians are reported (default 3; 1 with --quick)
  --connections C     oha's concurrent connections, and the replicated rows' clients (default 64)
  --kills K           leader kills per failover row (default $AIROMEM_KILLS, else 50; 10 with --quick)
  --learner-sessions N  sessions the group holds when the learner joins (default 1,000,000;
                      100,000 with --quick)
  --variants LIST     airomem, sqlite, memory: the session service under oha; replicated: durable
                      creates, 3 replicated processes against the single-node service; failover:
                      leader kills; learner: a learner's catch-up (default: all)
  --dir DIR           create the scratch directory inside DIR (default: .), on the disk to measure
  --oha PATH          the load generator (default: .tools/bin/oha, from scripts/install-oha)
  --sqlite-writers N  connections the SQLite variant writes through (default 1)

internal: http-bench --serve sqlite|memory --listen ADDR --dir DIR [--sqlite-writers N]
            serves one variant until SIGTERM";

/// Deletes in one delete phase, at most: bounds the sessions created for it.
const MAX_DELETES: u64 = 150_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    Airomem,
    Sqlite,
    Memory,
}

impl Variant {
    fn label(self) -> &'static str {
        match self {
            Variant::Airomem => "airomem",
            Variant::Sqlite => "SQLite (WAL, FULL)",
            Variant::Memory => "no storage (ceiling)",
        }
    }

    fn slug(self) -> &'static str {
        match self {
            Variant::Airomem => "airomem",
            Variant::Sqlite => "sqlite",
            Variant::Memory => "memory",
        }
    }
}

struct Options {
    seconds: u64,
    repetitions: usize,
    connections: u32,
    dir: PathBuf,
    oha: PathBuf,
    sqlite_writers: u32,
    variants: Vec<Variant>,
    /// The replicated rows, and how much they do.
    replicated: replicated::Plan,
}

/// One variant's phases in one repetition.
struct Run {
    create: Phase,
    read: Phase,
    delete: Phase,
    /// airomem's commands per `fdatasync` over the whole run.
    average_batch: Option<f64>,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome =
        if args.first().map(String::as_str) == Some("--serve") { serve_main(&args[1..]) } else { bench_main(&args) };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("http-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--serve KIND --listen ADDR --dir DIR [--sqlite-writers N]`.
fn serve_main(args: &[String]) -> Result<(), BoxError> {
    let (mut listen, mut dir, mut writers) = (None, None, 1);
    let kind = args.first().ok_or(USAGE)?.clone();
    let mut rest = args[1..].iter();
    while let Some(flag) = rest.next() {
        let value = rest.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => listen = Some(value.parse::<SocketAddr>()?),
            "--dir" => dir = Some(PathBuf::from(value)),
            "--sqlite-writers" => writers = value.parse()?,
            _ => return Err(format!("unknown argument {flag}\n{USAGE}").into()),
        }
    }
    let kind = match kind.as_str() {
        "sqlite" => Kind::Sqlite { writers },
        "memory" => Kind::Memory,
        other => return Err(format!("no variant {other}\n{USAGE}").into()),
    };
    serve::run(kind, listen.ok_or("--listen")?, dir.ok_or("--dir")?, 3600)
}

fn bench_main(args: &[String]) -> Result<(), BoxError> {
    let options = parse(args)?;
    let exe = std::env::current_exe()?;
    let example = example_binary(&exe, SINGLE)?;
    let replicated_example =
        if options.replicated.rows.is_empty() { None } else { Some(example_binary(&exe, REPLICATED)?) };
    let version = if options.variants.is_empty() {
        String::new()
    } else {
        load::oha_version(&options.oha)
            .map_err(|e| format!("cannot run {} ({e}): run scripts/install-oha", options.oha.display()))?
    };
    let scratch = tempfile::Builder::new().prefix("airomem-bench-http-").tempdir_in(&options.dir)?;

    let mut runs: Vec<(Variant, Run)> = Vec::new();
    for repetition in 1..=options.repetitions {
        for &variant in &options.variants {
            eprintln!("{}: repetition {repetition}/{}", variant.label(), options.repetitions);
            let dir = scratch.path().join(format!("{}-{repetition}", variant.slug()));
            let command = match variant {
                Variant::Airomem => {
                    let mut command = Command::new(&example);
                    command.args(["--listen", "127.0.0.1:0", "--dir"]).arg(&dir);
                    command
                }
                Variant::Sqlite | Variant::Memory => {
                    let mut command = Command::new(&exe);
                    command.args(["--serve", variant.slug(), "--listen", "127.0.0.1:0", "--dir"]).arg(&dir);
                    command.args(["--sqlite-writers", &options.sqlite_writers.to_string()]);
                    command
                }
            };
            let run = measure(&options, command, scratch.path(), variant == Variant::Airomem)?;
            std::fs::remove_dir_all(&dir).ok();
            runs.push((variant, run));
        }
    }
    if !runs.is_empty() {
        print!("{}", report(&options, &version, &runs));
    }
    if let Some(replicated) = replicated_example {
        let binaries = replicated::Binaries { single: example, replicated };
        print!("{}", replicated::run(&options.replicated, &binaries, scratch.path())?);
    }
    Ok(())
}

fn measure(options: &Options, command: Command, scratch: &Path, airomem: bool) -> Result<Run, BoxError> {
    // Start each server on a quiet disk, not during the write-back of the previous one's.
    let synced = Command::new("sync").status()?;
    if !synced.success() {
        return Err(format!("sync: {synced}").into());
    }
    let server = Server::start(command)?;
    let seconds = format!("{}s", options.seconds);
    let url = format!("{}/sessions", server.base);
    let create_args = ["-z", &seconds, "-w", "-m", "POST", "-T", "application/json", "-d", r#"{"user_id":7}"#, &url];
    let create = load::oha(&options.oha, options.connections, &create_args.map(String::from))?;

    let deletes = ((create.requests_per_sec * options.seconds as f64) as u64).clamp(1_000, MAX_DELETES);
    let tokens = load::create_sessions(&server.base, 2 * deletes, options.connections.into())?;
    let urls = scratch.join("urls.txt");
    let lines: String = tokens.iter().map(|token| format!("{}/sessions/{token}\n", server.base)).collect();
    std::fs::write(&urls, lines)?;
    let urls = urls.to_str().ok_or("a UTF-8 scratch path")?.to_string();
    let read_args = ["-z", &seconds, "-w", "--urls-from-file", &urls];
    let read = load::oha(&options.oha, options.connections, &read_args.map(String::from))?;
    let delete_args = ["-n", &deletes.to_string(), "-m", "DELETE", "--urls-from-file", &urls];
    let delete = load::oha(&options.oha, options.connections, &delete_args.map(String::from))?;

    let average_batch = if airomem { load::stats(&server.base)?["store"]["average_batch"].as_f64() } else { None };
    server.stop()?;
    Ok(Run { create, read, delete, average_batch })
}

fn parse(args: &[String]) -> Result<Options, BoxError> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().ok_or("the repository root")?;
    let quick = args.iter().any(|arg| arg == "--quick");
    let kills = std::env::var("AIROMEM_KILLS").ok().and_then(|v| v.parse().ok());
    let mut options = Options {
        seconds: if quick { 5 } else { 10 },
        repetitions: if quick { 1 } else { 3 },
        connections: 64,
        dir: PathBuf::from("."),
        oha: root.join(".tools/bin/oha"),
        sqlite_writers: 1,
        variants: vec![Variant::Airomem, Variant::Sqlite, Variant::Memory],
        replicated: replicated::Plan {
            seconds: 0,
            repetitions: 0,
            clients: 0,
            kills: kills.unwrap_or(if quick { 10 } else { 50 }),
            short_timings: true,
            learner_sessions: if quick { 100_000 } else { 1_000_000 },
            rows: vec![Row::Throughput, Row::Failover, Row::Learner],
        },
    };
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"));
        match flag.as_str() {
            "--quick" => {}
            "--kills" => options.replicated.kills = value()?.parse()?,
            "--learner-sessions" => options.replicated.learner_sessions = value()?.parse()?,
            "--seconds" => options.seconds = value()?.parse()?,
            "--repetitions" => options.repetitions = value()?.parse()?,
            "--connections" => options.connections = value()?.parse()?,
            "--dir" => options.dir = value()?.into(),
            "--oha" => options.oha = value()?.into(),
            "--sqlite-writers" => options.sqlite_writers = value()?.parse()?,
            "--variants" => {
                options.variants.clear();
                options.replicated.rows.clear();
                for name in value()?.split(',') {
                    match name {
                        "airomem" => options.variants.push(Variant::Airomem),
                        "sqlite" => options.variants.push(Variant::Sqlite),
                        "memory" => options.variants.push(Variant::Memory),
                        "replicated" => options.replicated.rows.push(Row::Throughput),
                        "failover" => options.replicated.rows.push(Row::Failover),
                        "learner" => options.replicated.rows.push(Row::Learner),
                        other => return Err(format!("no variant {other}").into()),
                    }
                }
            }
            "--help" | "-h" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other}\n{USAGE}").into()),
        }
    }
    let nothing = options.variants.is_empty() && options.replicated.rows.is_empty();
    if options.seconds == 0 || options.repetitions == 0 || options.connections == 0 || nothing {
        return Err(format!("nothing to measure\n{USAGE}").into());
    }
    options.replicated.seconds = options.seconds;
    options.replicated.repetitions = options.repetitions;
    options.replicated.clients = options.connections.into();
    Ok(options)
}

/// An example the bench runs: its name, its package, its source from the repository root.
struct Example {
    name: &'static str,
    package: &'static str,
    source: &'static str,
}

const SINGLE: Example =
    Example { name: "session_service", package: "airomem-web-examples", source: "examples/web/session_service.rs" };
const REPLICATED: Example = Example {
    name: "replicated_sessions",
    package: "airomem-raft",
    source: "airomem-raft/examples/replicated_sessions.rs",
};

/// The release build of an example, beside this binary: `target/release/http-bench` →
/// `target/release/examples/session_service`.
fn example_binary(exe: &Path, example: Example) -> Result<PathBuf, BoxError> {
    let binary = exe.parent().ok_or("this binary's directory")?.join("examples").join(example.name);
    let build = format!("run `cargo build --release -p {} --example {}` first", example.package, example.name);
    let built = std::fs::metadata(&binary)
        .and_then(|m| m.modified())
        .map_err(|e| format!("{} ({e}): {build}", binary.display()))?;
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(example.source);
    if std::fs::metadata(source)?.modified()? > built {
        return Err(format!("{} is older than its source: {build}", binary.display()).into());
    }
    Ok(binary)
}

/// The median of `figure` over `variant`'s runs.
fn median(runs: &[(Variant, Run)], variant: Variant, figure: impl Fn(&Run) -> f64) -> Option<f64> {
    let mut values: Vec<f64> = runs.iter().filter(|(v, _)| *v == variant).map(|(_, run)| figure(run)).collect();
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    match values.len() {
        0 => None,
        n if n % 2 == 1 => Some(values[mid]),
        _ => Some((values[mid - 1] + values[mid]) / 2.0),
    }
}

fn report(options: &Options, version: &str, runs: &[(Variant, Run)]) -> String {
    let mut out = String::new();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let _ = writeln!(
        out,
        "{version}, {} connections, server and load generator on the same {cores}-core machine; \
         create and read phases {} s each; median of {} repetitions.\n",
        options.connections, options.seconds, options.repetitions
    );
    let _ = writeln!(out, "| route | variant | requests/s | p50 | p99 | max | × SQLite | × no storage |");
    let _ = writeln!(out, "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    type Pick = fn(&Run) -> &Phase;
    let routes: [(&str, Pick); 3] = [
        ("`POST /sessions` (durable create)", |run| &run.create),
        ("`GET /sessions/{token}`", |run| &run.read),
        ("`DELETE /sessions/{token}`", |run| &run.delete),
    ];
    for (route, pick) in routes {
        let rate = |variant| median(runs, variant, |run| pick(run).requests_per_sec);
        for &variant in &options.variants {
            let Some(requests_per_sec) = rate(variant) else { continue };
            let ms = |figure: fn(&Phase) -> f64| median(runs, variant, |run| figure(pick(run))).unwrap_or(f64::NAN);
            let ratio =
                |against| rate(against).map_or("".to_string(), |other| format!("{:.2}×", requests_per_sec / other));
            let _ = writeln!(
                out,
                "| {route} | {} | {} | {:.2} ms | {:.2} ms | {:.1} ms | {} | {} |",
                variant.label(),
                thousands(requests_per_sec),
                ms(|phase| phase.p50_ms),
                ms(|phase| phase.p99_ms),
                ms(|phase| phase.max_ms),
                ratio(Variant::Sqlite),
                ratio(Variant::Memory),
            );
        }
    }
    let _ = writeln!(out, "\nEvery repetition (requests/s; statuses; requests that got no answer):\n");
    for (variant, run) in runs {
        let _ = write!(out, "- {}:", variant.label());
        for (name, phase) in [("create", &run.create), ("read", &run.read), ("delete", &run.delete)] {
            let _ = write!(out, " {name} {} {:?}", thousands(phase.requests_per_sec), phase.statuses);
            if !phase.errors.is_empty() {
                let _ = write!(out, " errors {:?}", phase.errors);
            }
            if name == "delete" {
                let _ = write!(out, " ({:.0} % 204)", 100.0 * phase.share("204"));
            }
            let _ = write!(out, ";");
        }
        if let Some(batch) = run.average_batch {
            let _ = write!(out, " {batch:.1} commands per fdatasync");
        }
        let _ = writeln!(out);
    }
    out
}
