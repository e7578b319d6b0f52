//! Looking inside a large store: `airomem verify` and `airomem dump` (the real binary, built
//! by `cargo build --release -p airomem-cli`) over a journal of about 1 GB, against reading
//! the same files from the page cache in the same run; and the peak memory of verifying and
//! walking the records, measured in a fresh child process (`--inspect-memory DIR`), which
//! must stay near one segment however large the store.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use airomem::{Durability, PostcardSerializer, Seq, Store, StoreOptions};
use serde::{Deserialize, Serialize};
use tokio::runtime::Runtime;

use crate::measure::{BoxError, REPETITIONS, Summary};
use crate::memory::{peak, reset_peak, resident};

/// A state that only counts what it is given: the journal is large, the state is not.
#[derive(Serialize, Deserialize, Default)]
struct Blobs {
    count: u64,
    bytes: u64,
}

impl airomem::State for Blobs {
    type Command = Vec<u8>;

    fn execute(&mut self, blob: Vec<u8>) {
        self.count += 1;
        self.bytes += blob.len() as u64;
    }
}

/// Bytes per command payload.
const BLOB: usize = 1000;
/// The journal's segment size: the default.
const SEGMENT: u64 = 64 * 1024 * 1024;

/// Builds the store, then measures. `megabytes` sets the journal's size.
pub fn run(runtime: &Runtime, dir: &Path, megabytes: u64) -> Result<(), BoxError> {
    let cli = std::env::current_exe()?.with_file_name("airomem");
    if !cli.exists() {
        return Err(format!("{} is missing: run `cargo build --release -p airomem-cli` first", cli.display()).into());
    }
    let store_dir = dir.join("inspect");
    let commands = megabytes * 1_000_000 / (BLOB as u64 + 30);
    eprintln!("inspection: importing {commands} commands of {BLOB} bytes");
    runtime.block_on(async {
        let options = StoreOptions::default().durability(Durability::OsBuffered).segment_size(SEGMENT);
        let store: Store<Blobs, PostcardSerializer> = Store::open_with(PostcardSerializer, &store_dir, options).await?;
        store.import((0..commands).map(|i| vec![(i % 251) as u8; BLOB])).await?;
        store.close().await?;
        Ok::<_, BoxError>(())
    })?;
    let files = journal_files(&store_dir)?;
    let total: u64 = files.iter().map(|f| std::fs::metadata(f).map_or(0, |m| m.len())).sum();
    eprintln!("inspection: {} segments, {:.0} MB", files.len(), total as f64 / 1e6);

    let mut cache = Vec::new();
    let mut verify = Vec::new();
    let mut dump = Vec::new();
    for rep in 0..=REPETITIONS {
        // Round 0 warms the page cache and is not counted.
        let started = Instant::now();
        let mut read = 0u64;
        for file in &files {
            read += std::fs::read(file)?.len() as u64;
        }
        let cache_rate = read as f64 / started.elapsed().as_secs_f64() / 1e6;
        let verify_rate = time_cli(&cli, &["verify", path(&store_dir)?], total)?;
        let dump_rate = time_cli(&cli, &["dump", path(&store_dir)?], total)?;
        if rep > 0 {
            cache.push(cache_rate);
            verify.push(verify_rate);
            dump.push(dump_rate);
        }
    }
    let memory = Command::new(std::env::current_exe()?).arg("--inspect-memory").arg(&store_dir).output()?;
    if !memory.status.success() {
        return Err(format!("memory child failed: {}", String::from_utf8_lossy(&memory.stderr)).into());
    }
    let line = String::from_utf8(memory.stdout)?;
    let figures: Vec<u64> = line.split_whitespace().map(str::parse).collect::<Result<_, _>>()?;
    let [verify_peak, records_peak] = figures[..] else {
        return Err(format!("memory child printed `{line}`").into());
    };
    let (cache, verify, dump) = (Summary::of(cache), Summary::of(verify), Summary::of(dump));
    println!(
        "**Inspecting a {:.2} GB journal ({} segments of {} MiB; {REPETITIONS} runs, page cache warm)**",
        total as f64 / 1e9,
        files.len(),
        SEGMENT >> 20
    );
    println!();
    println!("| what | MB/s (median) | min–max | ÷ page-cache read |");
    println!("|---|---:|---:|---:|");
    for (what, summary) in [
        ("reading the segment files (`std::fs::read`)", &cache),
        ("`airomem verify DIR`", &verify),
        ("`airomem dump DIR > /dev/null`", &dump),
    ] {
        println!(
            "| {what} | {:.0} | {:.0}–{:.0} | {:.2}× |",
            summary.median,
            summary.min,
            summary.max,
            summary.median / cache.median
        );
    }
    println!();
    println!(
        "Peak memory above the process's start (fresh process): verify {:.1} MB, walking every record {:.1} MB; one segment is {:.1} MB.",
        verify_peak as f64 / 1e6,
        records_peak as f64 / 1e6,
        SEGMENT as f64 / 1e6
    );
    std::fs::remove_dir_all(&store_dir)?;
    Ok(())
}

/// MB/s of the airomem binary over `bytes` of store.
fn time_cli(cli: &Path, args: &[&str], bytes: u64) -> Result<f64, BoxError> {
    let started = Instant::now();
    let status = Command::new(cli).args(args).stdout(Stdio::null()).status()?;
    let elapsed = started.elapsed();
    if !status.success() {
        return Err(format!("`airomem {}` exited with {status}", args.join(" ")).into());
    }
    Ok(bytes as f64 / elapsed.as_secs_f64() / 1e6)
}

/// The child: verifies the store in `dir`, then walks its records, and prints the peak
/// resident growth of each.
pub fn memory_child(dir: &Path) -> Result<(), BoxError> {
    let base = resident()?;
    reset_peak()?;
    let found = airomem::inspect::verify(dir, &mut |_| {})?;
    if !found.problems.is_empty() {
        return Err(format!("the store does not verify: {:?}", found.problems).into());
    }
    let verify_peak = peak()?.saturating_sub(base);
    let base = resident()?;
    reset_peak()?;
    let mut payload = 0u64;
    for record in airomem::inspect::records(dir, Seq(1), None)? {
        payload += record?.payload.len() as u64;
    }
    let records_peak = peak()?.saturating_sub(base);
    println!("{verify_peak} {records_peak}");
    eprintln!("walked {payload} payload bytes");
    Ok(())
}

fn journal_files(dir: &Path) -> Result<Vec<PathBuf>, BoxError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    files.retain(|p| p.extension().is_some_and(|e| e == "journal"));
    files.sort();
    Ok(files)
}

fn path(p: &Path) -> Result<&str, BoxError> {
    p.to_str().ok_or_else(|| "the scratch directory's path is not UTF-8".into())
}
