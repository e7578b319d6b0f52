//! `--import`: `Store::import` of one million session commands from one task, under
//! `Durability::OsBuffered` and `Durability::Fsync` in interleaved rounds, with how many
//! commands each journal write carried. An import's rate is decided by how the writer cuts
//! the stream into batches, so the two figures are printed side by side.

use std::path::Path;
use std::time::Instant;

use airomem::{Durability, PostcardSerializer, Store, StoreOptions};
use tokio::runtime::Runtime;

use crate::commits::SessionStore;
use crate::dataset::commands;
use crate::measure::{BoxError, Summary, per_second, sync_disks};

/// Rounds of both measurements; the median is reported.
const ROUNDS: usize = 5;

/// Commands imported per repetition: the full bench's import size.
const COMMANDS: u64 = 1_000_000;

/// Runs the comparison in `dir` and prints it as markdown on standard output.
pub fn run(runtime: &Runtime, dir: &Path) -> Result<(), BoxError> {
    let policies = [("OsBuffered", Durability::OsBuffered), ("Fsync", Durability::Fsync)];
    let mut rates: [Vec<f64>; 2] = Default::default();
    let mut per_write: [Vec<f64>; 2] = Default::default();
    for round in 0..ROUNDS {
        // Which goes first alternates, so that neither always follows the other's writes.
        for p in [round % 2, 1 - round % 2] {
            let (name, durability) = policies[p];
            eprintln!("import: {name}, round {}/{ROUNDS}", round + 1);
            let store_dir = dir.join(format!("import-{name}-{round}"));
            let (rate, commands_per_write) = runtime.block_on(async {
                let options = StoreOptions::default().durability(durability).segment_size(64 << 20);
                let store: SessionStore = Store::open_with(PostcardSerializer, &store_dir, options).await?;
                sync_disks()?;
                let started = Instant::now();
                let imported = store.import(commands(COMMANDS)).await?;
                let rate = per_second(imported.commands, started.elapsed());
                let stats = store.stats();
                store.close().await?;
                Ok::<_, BoxError>((rate, stats.commits as f64 / stats.batches.max(1) as f64))
            })?;
            rates[p].push(rate);
            per_write[p].push(commands_per_write);
            std::fs::remove_dir_all(&store_dir)?;
        }
    }
    println!("| policy | imported commands/s | commands per journal write |");
    println!("| --- | ---: | ---: |");
    for (p, (name, _)) in policies.iter().enumerate() {
        let rate = Summary::of(rates[p].iter().copied());
        let batch = Summary::of(per_write[p].iter().copied());
        println!(
            "| {name} | {:.0}/s ({:.0}–{:.0}) | {:.1} ({:.1}–{:.1}) |",
            rate.median, rate.min, rate.max, batch.median, batch.min, batch.max
        );
    }
    println!(
        "\nMedians of {ROUNDS} interleaved rounds of {COMMANDS} commands (min–max in brackets), one task, postcard."
    );
    Ok(())
}
