//! `--metrics-cost`: what the `metrics` feature costs a commit. The same workloads as the
//! full run's 64-writer and lone-task rows, each run three ways:
//! - **off**: `StoreOptions::metrics(false)`: nothing registered, no clock read;
//! - **library**: metrics on with no recorder behind them, so every handle does nothing:
//!   what airomem itself adds (the clock reads for commit latency, the calls into the handles);
//! - **Prometheus**: metrics on, feeding `metrics-exporter-prometheus`'s recorder (made the
//!   opening thread's local recorder, so that only these stores feed it): what a user who
//!   scrapes pays, the exporter's own bookkeeping included.
//!
//! The figures are medians of per-round ratios: each round runs the three back to back,
//! rotating which goes first. A slow spell of the shared disk or of a neighbour on the host
//! lasts seconds, so it falls on the whole round and cancels in its ratios, where comparing
//! medians of long runs taken minutes apart kept a ±10 % drift that hid a cost of a few
//! percent.

use std::path::Path;

use airomem::{Durability, PostcardSerializer, StoreOptions};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
use tokio::runtime::Runtime;

use crate::commits::{SessionStore, drive};
use crate::measure::{BoxError, Summary, per_second};

/// Rounds per workload, each running every variant once.
const ROUNDS: usize = 30;

/// How a repetition's store is metered.
#[derive(Clone, Copy)]
enum Variant {
    Off,
    Library,
    Prometheus,
}

const VARIANTS: [Variant; 3] = [Variant::Off, Variant::Library, Variant::Prometheus];

/// One measured workload: its name, writers, commits per repetition and policy.
struct Workload {
    name: &'static str,
    writers: usize,
    commits: u64,
    durability: Durability,
}

const WORKLOADS: [Workload; 3] = [
    Workload { name: "64 writers, Fsync", writers: 64, commits: 8_000, durability: Durability::Fsync },
    Workload { name: "lone task, Fsync", writers: 1, commits: 600, durability: Durability::Fsync },
    Workload { name: "lone task, OsBuffered", writers: 1, commits: 40_000, durability: Durability::OsBuffered },
];

/// Runs the comparison in `dir` and prints it as markdown on standard output.
pub fn run(runtime: &Runtime, dir: &Path) -> Result<(), BoxError> {
    let prometheus = PrometheusBuilder::new().build_recorder();
    let scrape = prometheus.handle();
    // rates[workload][round] = the rate of each variant, in `VARIANTS` order.
    let mut rates: Vec<Vec<[f64; 3]>> = WORKLOADS.iter().map(|_| Vec::new()).collect();
    for round in 0..ROUNDS {
        for (w, workload) in WORKLOADS.iter().enumerate() {
            eprintln!("metrics cost: {}, round {}/{ROUNDS}", workload.name, round + 1);
            let mut rate = [0.0; 3];
            for v in (0..VARIANTS.len()).map(|i| (i + round) % VARIANTS.len()) {
                let store_dir = dir.join(format!("metrics-{w}-{round}-{v}"));
                rate[v] = repetition(runtime, &prometheus, VARIANTS[v], workload, &store_dir)?;
                std::fs::remove_dir_all(&store_dir)?;
            }
            eprintln!("  off {:.0}/s, library {:.0}/s, Prometheus {:.0}/s", rate[0], rate[1], rate[2]);
            rates[w].push(rate);
        }
    }
    let scrape = scrape.render();
    let fed = WORKLOADS.iter().map(|w| w.commits).sum::<u64>() * ROUNDS as u64;
    let line = format!("airomem_commits_total {fed}");
    if !scrape.lines().any(|l| l == line) {
        return Err(format!("the recorder did not count the {fed} commits made with it:\n{scrape}").into());
    }
    println!(
        "| workload (commits per repetition) | metrics off | library only | with Prometheus \
         | library / off | Prometheus / off |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for (workload, rounds) in WORKLOADS.iter().zip(&rates) {
        let rate = |v: usize| Summary::of(rounds.iter().map(|r| r[v]));
        let ratio = |v: usize| {
            let mut ratios: Vec<f64> = rounds.iter().map(|r| r[v] / r[0]).collect();
            ratios.sort_by(f64::total_cmp);
            let quartile = |q: usize| ratios[(ratios.len() - 1) * q / 4];
            format!("{:.3} ({:.3}–{:.3})", quartile(2), quartile(1), quartile(3))
        };
        let shown = |s: Summary| format!("{:.0}/s ({:.0}–{:.0})", s.median, s.min, s.max);
        println!(
            "| {} ({}) | {} | {} | {} | {} | {} |",
            workload.name,
            workload.commits,
            shown(rate(0)),
            shown(rate(1)),
            shown(rate(2)),
            ratio(1),
            ratio(2)
        );
    }
    println!(
        "\n{ROUNDS} rounds per workload, each running the three back to back, rotating which goes \
         first. Rates: medians (min–max); ratios: medians of the rounds' ratios (quartiles). \
         Session workload, postcard. off: StoreOptions::metrics(false); library only: metrics \
         on, no recorder; with Prometheus: metrics on, fed to metrics-exporter-prometheus."
    );
    Ok(())
}

/// One repetition: opens a fresh store in `dir` metered as `variant`, drives `workload`
/// through it, closes it and returns its commit rate.
fn repetition(
    runtime: &Runtime,
    prometheus: &PrometheusRecorder,
    variant: Variant,
    workload: &Workload,
    dir: &Path,
) -> Result<f64, BoxError> {
    let options = StoreOptions::default().durability(workload.durability);
    let open = |options| airomem::blocking::Store::open_with(PostcardSerializer, dir, options);
    // The blocking open registers the store's handles on this thread, so a local recorder
    // set around it is the one they feed for the store's life.
    let store: SessionStore = match variant {
        Variant::Off => open(options.metrics(false))?,
        Variant::Library => open(options)?,
        Variant::Prometheus => metrics::with_local_recorder(prometheus, || open(options))?,
    }
    .into_async();
    runtime.block_on(async {
        let driven = drive(&store, workload.writers, workload.commits).await?;
        store.close().await?;
        Ok(per_second(workload.commits, driven.elapsed))
    })
}
