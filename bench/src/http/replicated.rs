//! The replicated session service (`airomem-raft/examples/replicated_sessions.rs`, three
//! processes on loopback) against the single-node one (`examples/web/session_service.rs`),
//! under the same clients ([`crate::clients`]) in the same run:
//!
//! * **Throughput**: `--clients` clients (64) creating sessions for `--seconds`, spread over
//!   the three nodes and all sent to the leader, and the same against the single-node
//!   service; then one client's sequential creates. A fresh group (or server) in fresh
//!   directories for each row and repetition.
//! * **Failover**: the leader killed with SIGKILL `kills` times while 16 clients keep
//!   creating through the nodes still up; each time from the kill to the first create sent
//!   after it and acknowledged, then the node restarted from its directory (no `--init`)
//!   and the group whole again (every node names the leader, the restarted node has applied
//!   what was committed) before the next kill. With the example's default timings, and with
//!   `--election-ms 300-600 --heartbeat-ms 50`.
//! * **Learner catch-up**: a group holding `learner_sessions` created sessions, a fourth
//!   process added through `POST /cluster/learners`; the time until its `/digest` equals the
//!   leader's.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::clients::{self, Background, Creates, Until};
use crate::cluster::{Cluster, PATIENCE};
use crate::error::BoxError;
use crate::figures::thousands;
use crate::load::Server;

/// Clients creating sessions while the leader is killed.
const FAILOVER_CLIENTS: u64 = 16;
/// A failover slower than this counts against the goal of none.
const FAILOVER_LIMIT: Duration = Duration::from_secs(10);
/// How long a learner may take to catch up before the measurement gives up.
const CATCH_UP_PATIENCE: Duration = Duration::from_secs(1800);

/// One of the measurements of this module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Row {
    /// Creates per second and latency, replicated and single-node.
    Throughput,
    /// Leader kills.
    Failover,
    /// A learner catching up.
    Learner,
}

/// What to measure, and how much.
pub struct Plan {
    /// Each throughput phase, in seconds.
    pub seconds: u64,
    /// Throughput repetitions; medians are reported.
    pub repetitions: usize,
    /// Concurrent clients of the throughput rows.
    pub clients: u64,
    /// Leader kills per failover row.
    pub kills: u64,
    /// Also the failover row with short timings.
    pub short_timings: bool,
    /// Sessions the group holds when the learner joins.
    pub learner_sessions: u64,
    /// Which measurements.
    pub rows: Vec<Row>,
}

/// The two builds it runs: `session_service` and `replicated_sessions`.
pub struct Binaries {
    /// `target/release/examples/session_service`.
    pub single: PathBuf,
    /// `target/release/examples/replicated_sessions`.
    pub replicated: PathBuf,
}

/// Where the creates of a throughput row go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Setup {
    Single,
    Spread,
    Leader,
}

impl Setup {
    fn label(self) -> &'static str {
        match self {
            Setup::Single => "single-node session service",
            Setup::Spread => "3 replicated processes, spread over all 3",
            Setup::Leader => "3 replicated processes, all to the leader",
        }
    }
}

/// One row and repetition of the throughput measurement.
struct Throughput {
    setup: Setup,
    /// One client's sequential creates.
    one: Creates,
    /// [`Plan::clients`] clients.
    many: Creates,
}

/// One failover row.
struct Failovers {
    timings: &'static str,
    args: &'static [&'static str],
    /// Kill → first acknowledged create, per kill.
    times: Vec<Duration>,
    /// Why the row stopped before its last kill, if it did.
    stopped: Option<String>,
    /// The background clients' outcomes.
    outcomes: std::collections::BTreeMap<String, u64>,
}

/// The learner measurement.
struct Learner {
    sessions: u64,
    load: Creates,
    add_returned: Duration,
    caught_up: Duration,
    learner_snapshot_index: Option<u64>,
    leader_snapshot_bytes: Option<u64>,
    count: Option<u64>,
}

/// Runs `plan` with scratch directories under `scratch`; the report, as markdown.
pub fn run(plan: &Plan, binaries: &Binaries, scratch: &Path) -> Result<String, BoxError> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut out = String::new();
    if plan.rows.contains(&Row::Throughput) {
        let mut runs = Vec::new();
        for repetition in 1..=plan.repetitions {
            for setup in [Setup::Single, Setup::Spread, Setup::Leader] {
                eprintln!("{}: repetition {repetition}/{}", setup.label(), plan.repetitions);
                let dir = scratch.join(format!("throughput-{repetition}-{setup:?}"));
                runs.push(throughput(&runtime, plan, binaries, setup, &dir)?);
                std::fs::remove_dir_all(&dir).ok();
            }
        }
        report_throughput(&mut out, plan, &runs);
    }
    if plan.rows.contains(&Row::Failover) {
        let mut rows = vec![("election 800–1600 ms, heartbeat 100 ms (the example's defaults)", &[][..])];
        if plan.short_timings {
            rows.push((
                "election 300–600 ms, heartbeat 50 ms",
                &["--election-ms", "300-600", "--heartbeat-ms", "50"][..],
            ));
        }
        let mut failovers = Vec::new();
        for (timings, args) in rows {
            let dir = scratch.join(format!("failover-{}", failovers.len()));
            failovers.push(failover(&runtime, plan, binaries, timings, args, &dir)?);
            std::fs::remove_dir_all(&dir).ok();
        }
        report_failovers(&mut out, &failovers);
    }
    if plan.rows.contains(&Row::Learner) {
        let dir = scratch.join("learner");
        let learner = learner(&runtime, plan, binaries, &dir)?;
        std::fs::remove_dir_all(&dir).ok();
        report_learner(&mut out, &learner);
    }
    Ok(out)
}

/// Starts each server on a quiet disk, not during the write-back of the previous one's.
fn sync() -> Result<(), BoxError> {
    let synced = Command::new("sync").status()?;
    if synced.success() { Ok(()) } else { Err(format!("sync: {synced}").into()) }
}

fn throughput(
    runtime: &tokio::runtime::Runtime,
    plan: &Plan,
    binaries: &Binaries,
    setup: Setup,
    dir: &Path,
) -> Result<Throughput, BoxError> {
    sync()?;
    let client = clients::client()?;
    let one_client = Until::Elapsed(Duration::from_secs((plan.seconds / 3).max(2)));
    let many = Until::Elapsed(Duration::from_secs(plan.seconds));
    if setup == Setup::Single {
        let mut command = Command::new(&binaries.single);
        command.args(["--listen", "127.0.0.1:0", "--dir"]).arg(dir);
        let server = Server::start(command)?;
        let targets = [server.base.clone()];
        let (one, many) = runtime.block_on(async {
            let one = clients::creates(&client, &targets, 1, one_client).await?;
            let many = clients::creates(&client, &targets, plan.clients, many).await?;
            Ok::<_, BoxError>((one, many))
        })?;
        server.stop()?;
        return Ok(Throughput { setup, one, many });
    }
    let cluster = Cluster::start(&binaries.replicated, dir, 3, &[])?;
    let (one, many) = runtime.block_on(async {
        let leader = cluster.leader().await?;
        let targets = if setup == Setup::Leader { vec![cluster.base(leader).to_string()] } else { cluster.bases() };
        let one = clients::creates(&client, &targets, 1, one_client).await?;
        let many = clients::creates(&client, &targets, plan.clients, many).await?;
        Ok::<_, BoxError>((one, many))
    })?;
    Ok(Throughput { setup, one, many })
}

fn failover(
    runtime: &tokio::runtime::Runtime,
    plan: &Plan,
    binaries: &Binaries,
    timings: &'static str,
    args: &'static [&'static str],
    dir: &Path,
) -> Result<Failovers, BoxError> {
    sync()?;
    let mut cluster = Cluster::start(&binaries.replicated, dir, 3, args)?;
    let client = clients::client()?;
    runtime.block_on(async {
        cluster.leader().await?;
        let load = Background::start(&client, &cluster.bases(), FAILOVER_CLIENTS);
        load.first_sent_after(Instant::now(), PATIENCE).await?;
        let mut times = Vec::new();
        let mut stopped = None;
        for kill in 1..=plan.kills {
            let outcome = async {
                let leader = cluster.leader().await?;
                let index = usize::try_from(leader - 1)?;
                load.set_up(index, false);
                load.forget();
                let killed = Instant::now();
                tokio::task::block_in_place(|| cluster.kill(leader))?;
                let acked = load.first_sent_after(killed, PATIENCE).await?;
                let took = acked - killed;
                eprintln!(
                    "failover {kill}/{}: node {leader} killed, first create acknowledged after {took:.2?}",
                    plan.kills
                );
                times.push(took);
                tokio::task::block_in_place(|| cluster.restart(leader))?;
                load.set_up(index, true);
                cluster.whole(leader).await
            };
            if let Err(e) = outcome.await {
                eprintln!("failover {kill}/{}: {e}", plan.kills);
                stopped = Some(format!("stopped at kill {kill}: {e}"));
                break;
            }
        }
        let outcomes = load.stop().await?;
        Ok(Failovers { timings, args, times, stopped, outcomes })
    })
}

fn learner(
    runtime: &tokio::runtime::Runtime,
    plan: &Plan,
    binaries: &Binaries,
    dir: &Path,
) -> Result<Learner, BoxError> {
    sync()?;
    let mut cluster = Cluster::start(&binaries.replicated, dir, 3, &[])?;
    let client = clients::client()?;
    let leader = runtime.block_on(cluster.leader())?;
    eprintln!("learner: creating {} sessions through node {leader}", plan.learner_sessions);
    let leader_base = vec![cluster.base(leader).to_string()];
    let load = runtime.block_on(clients::creates(&client, &leader_base, 64, Until::Sent(plan.learner_sessions)))?;
    let digest = "/digest?consistency=local";
    let expected = runtime.block_on(cluster.get(leader, digest)).ok_or("the leader's digest")?;
    cluster.start_new_node(4)?;
    eprintln!("learner: node 4 joins a group holding {expected}");
    runtime.block_on(async {
        let started = Instant::now();
        cluster.add_learner(leader, 4).await?;
        let add_returned = started.elapsed();
        loop {
            if cluster.get(4, digest).await.as_ref() == Some(&expected) {
                break;
            }
            if started.elapsed() > CATCH_UP_PATIENCE {
                return Err(format!("node 4 did not catch up within {CATCH_UP_PATIENCE:?}").into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let caught_up = started.elapsed();
        let status = cluster.get(4, "/cluster").await;
        Ok(Learner {
            sessions: plan.learner_sessions,
            load,
            add_returned,
            caught_up,
            learner_snapshot_index: status.and_then(|s| s["snapshot_index"].as_u64()),
            leader_snapshot_bytes: cluster.snapshot_bytes(leader),
            count: expected["count"].as_u64(),
        })
    })
}

/// The median of `figure` over `setup`'s runs.
fn median(runs: &[Throughput], setup: Setup, figure: impl Fn(&Throughput) -> f64) -> f64 {
    let mut values: Vec<f64> = runs.iter().filter(|run| run.setup == setup).map(figure).collect();
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

fn report_throughput(out: &mut String, plan: &Plan, runs: &[Throughput]) {
    let _ = writeln!(
        out,
        "\n## Replicated: durable creates\n\n`POST /sessions` from {} clients of the bench's own (closed loop, reqwest) for \
         {} s, then 1 client's sequential creates for {} s; a fresh group of 3 `replicated_sessions` processes on \
         loopback (example's default timings) or a fresh single-node `session_service` for each row; median of {} \
         repetition(s). Stretch goal: hiqlite's published 24,500/s (faster hardware); etcd on 2 vCPUs made about \
         4,000/s at 256 clients.\n",
        plan.clients,
        plan.seconds,
        (plan.seconds / 3).max(2),
        plan.repetitions
    );
    let _ =
        writeln!(out, "| {} clients to | durable creates/s | p50 | p99 | max | × single node | goal |", plan.clients);
    let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: | ---: | --- |");
    let single = median(runs, Setup::Single, |run| run.many.per_sec);
    for setup in [Setup::Spread, Setup::Leader, Setup::Single] {
        let rate = median(runs, setup, |run| run.many.per_sec);
        let ratio = rate / single;
        let goal = if setup == Setup::Single {
            String::new()
        } else {
            format!("≥ 0.25× single node: {}; stretch ≥ 24,500/s: {}", met(ratio >= 0.25), met(rate >= 24_500.0))
        };
        let _ = writeln!(
            out,
            "| {} | {} | {:.2} ms | {:.2} ms | {:.1} ms | {ratio:.2}× | {goal} |",
            setup.label(),
            thousands(rate),
            median(runs, setup, |run| run.many.p50_ms),
            median(runs, setup, |run| run.many.p99_ms),
            median(runs, setup, |run| run.many.max_ms),
        );
    }
    let _ = writeln!(out, "\n| 1 client to | creates/s | p50 | p99 | × single node's p50 |");
    let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: |");
    let single_p50 = median(runs, Setup::Single, |run| run.one.p50_ms);
    for setup in [Setup::Spread, Setup::Leader, Setup::Single] {
        let p50 = median(runs, setup, |run| run.one.p50_ms);
        let _ = writeln!(
            out,
            "| {} | {} | {p50:.2} ms | {:.2} ms | {:.2}× |",
            setup.label(),
            thousands(median(runs, setup, |run| run.one.per_sec)),
            median(runs, setup, |run| run.one.p99_ms),
            p50 / single_p50
        );
    }
    let _ = writeln!(
        out,
        "\nEvery repetition (creates/s, {} clients; 1 client; requests not answered 201):\n",
        plan.clients
    );
    for run in runs {
        let _ = writeln!(
            out,
            "- {}: {}; {}; {:?} {:?}",
            run.setup.label(),
            thousands(run.many.per_sec),
            thousands(run.one.per_sec),
            run.many.failed,
            run.one.failed
        );
    }
}

fn report_failovers(out: &mut String, rows: &[Failovers]) {
    let _ = writeln!(
        out,
        "\n## Replicated: failover\n\n3 `replicated_sessions` processes on loopback; {FAILOVER_CLIENTS} clients keep \
         creating sessions through the nodes still up. Each time the leader gets SIGKILL; measured from the kill to the \
         acknowledgement of the first create sent after it; the node is restarted from its directory (no `--init`) and \
         the group is whole again before the next kill.\n"
    );
    let _ = writeln!(out, "| timings | kills | p50 | max | over 10 s | goal: p50 < 1 s, max < 3 s, none over 10 s |");
    let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: | --- |");
    for row in rows {
        let mut times = row.times.clone();
        times.sort_unstable();
        let p50 = times.get(times.len().saturating_sub(1) / 2).copied().unwrap_or_default();
        let max = times.last().copied().unwrap_or_default();
        let over = times.iter().filter(|&&t| t > FAILOVER_LIMIT).count() + usize::from(row.stopped.is_some());
        let flags = if row.args.is_empty() { String::new() } else { format!(" (`{}`)", row.args.join(" ")) };
        let _ = writeln!(
            out,
            "| {}{flags} | {} | {:.2} s | {:.2} s | {over} | p50 {}, max {}, none over 10 s {} |",
            row.timings,
            times.len(),
            p50.as_secs_f64(),
            max.as_secs_f64(),
            met(p50 < Duration::from_secs(1)),
            met(max < Duration::from_secs(3)),
            met(over == 0),
        );
    }
    let _ = writeln!(out);
    for row in rows {
        let _ = writeln!(out, "- {}: clients' outcomes {:?}", row.timings, row.outcomes);
        if let Some(stopped) = &row.stopped {
            let _ = writeln!(out, "  {stopped}");
        }
    }
}

fn report_learner(out: &mut String, learner: &Learner) {
    let _ = writeln!(
        out,
        "\n## Replicated: learner catch-up\n\nA group of 3 (the example's defaults: a snapshot every 5,000 log entries, \
         1,000 entries kept behind it) holding {} created sessions (made by 64 clients through the leader at {}/s; \
         {:?} not answered 201); a fourth process started empty and added with `POST /cluster/learners`; time until \
         its `/digest?consistency=local` equals the leader's, polled every 50 ms.\n",
        thousands(learner.sessions as f64),
        thousands(learner.load.per_sec),
        learner.load.failed,
    );
    let _ = writeln!(
        out,
        "| sessions held | `POST /cluster/learners` returned | digest equal after | learner's snapshot index | leader's snapshot file |"
    );
    let _ = writeln!(out, "| ---: | ---: | ---: | ---: | ---: |");
    let size = learner.leader_snapshot_bytes.map_or("none".to_string(), |b| format!("{:.1} MB", b as f64 / 1e6));
    let _ = writeln!(
        out,
        "| {} | {:.2} s | {:.2} s | {} | {size} |",
        learner.count.map_or("?".to_string(), |c| thousands(c as f64)),
        learner.add_returned.as_secs_f64(),
        learner.caught_up.as_secs_f64(),
        learner.learner_snapshot_index.map_or("?".to_string(), |i| i.to_string()),
    );
}
