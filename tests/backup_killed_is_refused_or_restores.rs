//! `kill -9` of a process in the middle of `Store::backup`, at random instants, while its
//! writer commits at full speed: every backup it left is either refused by `verify` and
//! `restore` (no manifest yet, or not whole) or restores into a store that opens with
//! exactly the state at the manifest's sequence number. None restores wrong. Every backup
//! the child reported finished must verify.
//!
//! The short version runs in the normal suite (8 kills, a 2,000-command store). The issue's
//! full run is the ignored `fifty_kills_during_backups_of_a_million_command_store`
//! (`cargo test --release -p airomem-workspace --test backup_killed_is_refused_or_restores
//! -- --ignored fifty`); `AIROMEM_BACKUP_KILL_RUNS`, `AIROMEM_BACKUP_KILL_COMMANDS` and
//! `AIROMEM_BACKUP_KILL_WINDOW_MS` override either's runs, store size and kill window.
//!
//! The child is this test binary itself, started again with `BACKUP_CHILD_DIR` set.
#![cfg(feature = "snapshot")]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use airomem::{Durability, Error, PostcardSerializer, PostcardStore, Store, StoreOptions, backup};
use airomem_workspace::Log;

const CHILD_DIR: &str = "BACKUP_CHILD_DIR";
const CHILD_DEST: &str = "BACKUP_CHILD_DEST";

fn options() -> StoreOptions {
    StoreOptions::default()
        .segment_size(256 * 1024)
        .durability(Durability::Fsync)
        .snapshot_every_commands(20_000)
        .snapshots_retained(2)
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).map_or(default, |v| v.parse().expect("a number"))
}

/// The child: open the store, commit `n - 1` as command `n` at full speed from one task,
/// and take backups into `DEST/0`, `DEST/1`, … one after another, printing `open` once and
/// `done i` after each backup returned. It never exits by itself; the parent kills it.
#[test]
#[ignore = "the child process of the tests in this file, which start it with --ignored"]
fn backup_child_entry() {
    let dir = PathBuf::from(std::env::var(CHILD_DIR).expect("set by the parent"));
    let dest = PathBuf::from(std::env::var(CHILD_DEST).expect("set by the parent"));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(async move {
        let store: PostcardStore<Log> = Store::open_with(PostcardSerializer, &dir, options()).await.expect("open");
        let writer = {
            let store = store.clone();
            tokio::spawn(async move {
                let mut value = store.query().expect("query").values.len() as u64;
                loop {
                    store.commit(value).await.expect("commit");
                    value += 1;
                }
            })
        };
        println!("open");
        for i in 0.. {
            store.backup(dest.join(i.to_string())).await.expect("backup");
            println!("done {i}");
        }
        writer.abort();
    });
}

/// A deterministic delay in `0..window` for run `n` (splitmix64).
fn kill_delay(n: u64, window: Duration) -> Duration {
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    Duration::from_micros((z ^ (z >> 31)) % window.as_micros().max(1) as u64)
}

/// Fills a new store with `commands` commands (`n - 1` as command `n`), in units.
async fn fill(dir: &Path, commands: u64) {
    let store: PostcardStore<Log> = Store::open_with(PostcardSerializer, dir, options()).await.expect("open");
    let mut next = 0;
    while next < commands {
        let end = (next + 1_000).min(commands);
        store.commit_all(next..end).await.expect("commit_all");
        next = end;
    }
    store.snapshot().await.expect("snapshot");
    store.close().await.expect("close");
}

async fn kill_loop(default_runs: u64, default_commands: u64, default_window_ms: u64) {
    let runs = env_or("AIROMEM_BACKUP_KILL_RUNS", default_runs);
    let commands = env_or("AIROMEM_BACKUP_KILL_COMMANDS", default_commands);
    let window = Duration::from_millis(env_or("AIROMEM_BACKUP_KILL_WINDOW_MS", default_window_ms));
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    fill(&dir, commands).await;
    let exe = std::env::current_exe().expect("test binary");
    let (mut restored, mut refused, mut finished) = (0u64, 0u64, 0u64);
    for run in 0..runs {
        let dest = tmp.path().join(format!("run-{run}"));
        std::fs::create_dir(&dest).expect("mkdir");
        let mut child = Command::new(&exe)
            .args(["backup_child_entry", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, &dir)
            .env(CHILD_DEST, &dest)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the child");
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        // Wait for the open on the pipe: the kill must land in the backups, not in recovery.
        loop {
            let line = lines.next().expect("the child reports its open").expect("utf-8");
            // The harness prints the test's name on the same line first.
            if line.ends_with("open") {
                break;
            }
        }
        // The delay is when to kill, not a way to wait for something.
        std::thread::sleep(kill_delay(run, window));
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        let done: Vec<u64> = lines
            .map_while(Result::ok)
            .filter_map(|l| l.rsplit_once("done ").and_then(|(_, i)| i.parse().ok()))
            .collect();
        let mut backups: Vec<(u64, PathBuf)> = std::fs::read_dir(&dest)
            .expect("list")
            .map(|e| {
                let path = e.expect("entry").path();
                (path.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse().ok()).expect("numbered"), path)
            })
            .collect();
        backups.sort();
        for (i, backup_dir) in backups {
            let target = tmp.path().join(format!("restored-{run}-{i}"));
            let verified = backup::verify(&backup_dir);
            let restore = backup::restore(&backup_dir, &target, Some(1));
            match (verified, restore) {
                (Ok(manifest), Ok(restored_manifest)) => {
                    assert_eq!(manifest, restored_manifest);
                    let store: PostcardStore<Log> = Store::open_with(PostcardSerializer, &target, options())
                        .await
                        .expect("the restored store opens");
                    let values = store.query().expect("query").values.clone();
                    assert!(
                        values.len() as u64 == manifest.seq.0 && values.iter().enumerate().all(|(n, &v)| v == n as u64),
                        "run {run}, backup {i}: restored {} values, not exactly the {} of #{}",
                        values.len(),
                        manifest.seq.0,
                        manifest.seq.0
                    );
                    store.close().await.expect("close");
                    std::fs::remove_dir_all(&target).expect("clean up");
                    restored += 1;
                    finished += u64::from(done.contains(&i));
                }
                (Err(Error::Backup { .. }), Err(Error::Backup { .. })) => {
                    assert!(!done.contains(&i), "run {run}: backup {i} was reported finished but is refused");
                    // The manifest is written last: a backup that has one finished, and must
                    // restore. Only one killed before it may be refused.
                    assert!(
                        !backup_dir.join(backup::MANIFEST_FILE).exists(),
                        "run {run}: backup {i} has a manifest but is refused"
                    );
                    assert!(!target.exists(), "a refused restore left its target");
                    refused += 1;
                }
                (verified, restore) => {
                    panic!("run {run}, backup {i}: verify and restore disagree: {verified:?} / {restore:?}")
                }
            }
        }
        std::fs::remove_dir_all(&dest).expect("clean up");
    }
    eprintln!(
        "{runs} kills: {restored} backups restored exactly ({finished} reported finished), {refused} refused as unfinished"
    );
    // The store the backups were taken from still opens, with every command in order.
    let store: PostcardStore<Log> = Store::open_with(PostcardSerializer, &dir, options()).await.expect("reopen");
    let values = &store.query().expect("query").values;
    assert!(values.len() as u64 >= commands && values.iter().enumerate().all(|(n, &v)| v == n as u64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_during_backups_leave_refused_or_exact_backups() {
    kill_loop(8, 2_000, 60).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the issue's full run: 50 kills on a 1M-command store; minutes in release"]
async fn fifty_kills_during_backups_of_a_million_command_store() {
    kill_loop(50, 1_000_000, 3_000).await;
}
