//! `--metrics-cost`: what the `metrics` feature costs a commit. The same workloads as the
//! full run's 64-writer and lone-task rows, each repeated with the store's metrics on (the
//! Prometheus recorder installed in this process, every series fed) and off
//! (`StoreOptions::metrics(false)`: nothing registered, no clock read), on and off
//! alternating which goes first, so that the shared disk's slow spells fall on both.

use std::path::Path;

use airomem::{Durability, PostcardSerializer, Store, StoreOptions};
use metrics_exporter_prometheus::PrometheusBuilder;
use tokio::runtime::Runtime;

use crate::commits::{SessionStore, drive};
use crate::measure::{BoxError, Summary, per_second};

/// On/off pairs per workload; the medians are compared.
const ROUNDS: usize = 5;

/// One measured workload: its name, writers, commits per repetition and policy.
struct Workload {
    name: &'static str,
    writers: usize,
    commits: u64,
    durability: Durability,
}

const WORKLOADS: [Workload; 3] = [
    Workload { name: "64 writers, Fsync", writers: 64, commits: 20_000, durability: Durability::Fsync },
    Workload { name: "lone task, Fsync", writers: 1, commits: 2_000, durability: Durability::Fsync },
    Workload { name: "lone task, OsBuffered", writers: 1, commits: 100_000, durability: Durability::OsBuffered },
];

/// Runs the comparison in `dir` and prints it as markdown on standard output.
pub fn run(runtime: &Runtime, dir: &Path) -> Result<(), BoxError> {
    // One recorder per process, installed before any store opens. Its scrape is rendered
    // once at the end, so that the series are known to have been fed.
    let prometheus = PrometheusBuilder::new().install_recorder()?;
    let mut rates: Vec<[Vec<f64>; 2]> = WORKLOADS.iter().map(|_| [Vec::new(), Vec::new()]).collect();
    for round in 0..ROUNDS {
        for (w, workload) in WORKLOADS.iter().enumerate() {
            eprintln!("metrics cost: {}, round {}/{ROUNDS}", workload.name, round + 1);
            for on in [round % 2 == 0, round % 2 != 0] {
                let store_dir = dir.join(format!("metrics-{w}-{round}-{on}"));
                let options = StoreOptions::default().durability(workload.durability).metrics(on);
                let rate = runtime.block_on(async {
                    let store: SessionStore = Store::open_with(PostcardSerializer, &store_dir, options).await?;
                    let driven = drive(&store, workload.writers, workload.commits).await?;
                    store.close().await?;
                    Ok::<_, BoxError>(per_second(workload.commits, driven.elapsed))
                })?;
                eprintln!("  metrics {}: {rate:.0} commits/s", if on { "on" } else { "off" });
                rates[w][usize::from(on)].push(rate);
                std::fs::remove_dir_all(&store_dir)?;
            }
        }
    }
    let scrape = prometheus.render();
    let fed = WORKLOADS.iter().map(|w| w.commits).sum::<u64>() * ROUNDS as u64;
    let line = format!("airomem_commits_total {fed}");
    if !scrape.lines().any(|l| l == line) {
        return Err(format!("the recorder did not count the {fed} commits made with metrics on:\n{scrape}").into());
    }
    println!("| workload (commits per repetition) | metrics off | metrics on | on / off |");
    println!("| --- | ---: | ---: | ---: |");
    for (workload, [off, on]) in WORKLOADS.iter().zip(&rates) {
        let (off, on) = (Summary::of(off.iter().copied()), Summary::of(on.iter().copied()));
        println!(
            "| {} ({}) | {:.0}/s ({:.0}–{:.0}) | {:.0}/s ({:.0}–{:.0}) | {:.3} |",
            workload.name,
            workload.commits,
            off.median,
            off.min,
            off.max,
            on.median,
            on.min,
            on.max,
            on.median / off.median
        );
    }
    println!(
        "\nMedians of {ROUNDS} interleaved on/off rounds (min–max in brackets), session workload, postcard; \
         on: the Prometheus recorder installed, off: StoreOptions::metrics(false)."
    );
    Ok(())
}
