//! `airomem backup`, `restore` and `verify` on a backup, run as processes beside a store
//! whose writer commits at full speed in this process: the backup restores into a store
//! that opens with exactly the state at the manifest's sequence number; `verify` refuses a
//! damaged or unfinished backup (exit 1); `restore` refuses an existing store and a damaged
//! backup and leaves nothing behind; a backup process killed with SIGKILL leaves a backup
//! that is refused or restores exactly.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use airomem::{Durability, PostcardSerializer, PostcardStore, Store, StoreOptions};
use serde::{Deserialize, Serialize};

mod common;

#[derive(Serialize, Deserialize, Default)]
struct Numbers {
    values: Vec<u64>,
}

impl airomem::State for Numbers {
    type Command = u64;
    fn execute(&mut self, value: u64) {
        self.values.push(value);
    }
}

/// [`common::run`], with standard output and error as one text.
fn run(args: &[&str]) -> (i32, String) {
    let (code, stdout, stderr) = common::run(args);
    (code, format!("{stdout}{stderr}"))
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A task committing 0, 1, 2, … as fast as the store takes them, until stopped.
struct Writer {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    fn start(store: &PostcardStore<Numbers>) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let (store, flag) = (store.clone(), Arc::clone(&stop));
        let task = tokio::spawn(async move {
            let mut value = 0u64;
            while !flag.load(Ordering::Relaxed) {
                store.commit(value).await.expect("commit");
                value += 1;
            }
        });
        Writer { stop, task }
    }

    /// Stops the task and waits for its last commit.
    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("writer");
    }
}

fn options() -> StoreOptions {
    StoreOptions::default().segment_size(16 * 1024).durability(Durability::Fsync).snapshot_every_commands(300)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_beside_a_running_writer_restores_the_state_at_its_seq() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let store: PostcardStore<Numbers> = Store::open_with(PostcardSerializer, &dir, options()).await.expect("open");
    let writer = Writer::start(&store);
    while store.stats().commits < 1_000 {
        tokio::task::yield_now().await;
    }
    let backups: Vec<_> = (0..3).map(|i| tmp.path().join(format!("backup-{i}"))).collect();
    for dest in &backups {
        let (dir, dest) = (dir.clone(), dest.clone());
        let (code, out) =
            tokio::task::spawn_blocking(move || run(&["backup", path(&dir), path(&dest)])).await.expect("join");
        assert_eq!(code, 0, "{out}");
    }
    writer.stop().await;
    store.close().await.expect("close");

    for (i, dest) in backups.iter().enumerate() {
        let (code, out) = run(&["verify", path(dest), "--json"]);
        assert_eq!(code, 0, "{out}");
        let report: serde_json::Value = serde_json::from_str(&out).expect("json");
        let seq = report["seq"].as_u64().expect("seq");
        let restored = tmp.path().join(format!("restored-{i}"));
        let (code, out) = run(&["restore", path(dest), path(&restored), "--max-schema", "1"]);
        assert_eq!(code, 0, "{out}");
        let store: PostcardStore<Numbers> =
            Store::open_with(PostcardSerializer, &restored, options()).await.expect("the restored store opens");
        assert_eq!(store.query().expect("query").values, (0..seq).collect::<Vec<_>>(), "backup {i} at #{seq}");
        store.close().await.expect("close");
    }

    // An existing store is refused (usage: exit 2) and unchanged.
    let before = std::fs::read_dir(&dir).expect("list").count();
    let (code, out) = run(&["restore", path(&backups[0]), path(&dir)]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("not empty"), "{out}");
    assert_eq!(std::fs::read_dir(&dir).expect("list").count(), before);

    // A damaged backup: verify and restore say so (exit 1); nothing is restored.
    let damaged = &backups[1];
    let victim = std::fs::read_dir(damaged)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .find(|p| p.extension().is_some_and(|e| e == "journal"))
        .expect("a segment");
    let mut bytes = std::fs::read(&victim).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&victim, bytes).expect("write");
    let (code, out) = run(&["verify", path(damaged)]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("DAMAGE"), "{out}");
    let target = tmp.path().join("never");
    let (code, out) = run(&["restore", path(damaged), path(&target)]);
    assert_eq!(code, 1, "{out}");
    assert!(!target.exists());

    // An unfinished backup (no manifest) is refused when asked to check it as one.
    std::fs::remove_file(backups[2].join(airomem::backup::MANIFEST_FILE)).expect("remove");
    let (code, out) = run(&["verify", "--backup", path(&backups[2])]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no manifest"), "{out}");
}

/// A deterministic delay in `0..window_us` µs for run `n` (splitmix64).
fn kill_delay(n: u64, window_us: u64) -> std::time::Duration {
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    std::time::Duration::from_micros((z ^ (z >> 31)) % window_us)
}

/// `kill -9` of `airomem backup` at random instants beside a running writer: each backup it
/// leaves is refused by `verify` and `restore` (exit 1, nothing restored) or restores into
/// a store with exactly the state at its manifest's sequence number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_cli_backup_is_refused_or_restores_exactly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let store: PostcardStore<Numbers> = Store::open_with(PostcardSerializer, &dir, options()).await.expect("open");
    let writer = Writer::start(&store);
    while store.stats().commits < 2_000 {
        tokio::task::yield_now().await;
    }
    let mut dests = Vec::new();
    for run in 0..8u64 {
        let dest = tmp.path().join(format!("killed-{run}"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_airomem"))
            .args(["backup", path(&dir), path(&dest)])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        // The delay is when to kill, not a way to wait for something.
        let delay = kill_delay(run, 20_000);
        tokio::task::spawn_blocking(move || {
            std::thread::sleep(delay);
            drop(child.kill());
            child.wait().expect("reap");
        })
        .await
        .expect("join");
        dests.push(dest);
    }
    writer.stop().await;
    store.close().await.expect("close");

    let (mut restored_count, mut refused) = (0, 0);
    for (n, dest) in dests.iter().enumerate() {
        if !dest.exists() {
            refused += 1; // killed before it created its directory: nothing to restore
            continue;
        }
        let target = tmp.path().join(format!("restored-{n}"));
        let (verified, out) = run(&["verify", "--backup", "--json", path(dest)]);
        let (restored, restore_out) = run(&["restore", path(dest), path(&target)]);
        match (verified, restored) {
            (0, 0) => {
                let report: serde_json::Value = serde_json::from_str(&out).expect("json");
                let seq = report["seq"].as_u64().expect("seq");
                let store: PostcardStore<Numbers> =
                    Store::open_with(PostcardSerializer, &target, options()).await.expect("open");
                assert_eq!(store.query().expect("query").values, (0..seq).collect::<Vec<_>>(), "run {n}");
                store.close().await.expect("close");
                restored_count += 1;
            }
            (1, 1) => {
                assert!(!target.exists(), "run {n}: a refused restore left its target");
                // The manifest is written last: a backup that has one finished, and must restore.
                assert!(!dest.join(airomem::backup::MANIFEST_FILE).exists(), "run {n}: a finished backup is refused");
                refused += 1;
            }
            other => panic!("run {n}: verify and restore disagree {other:?}: {out} / {restore_out}"),
        }
    }
    eprintln!("8 kills: {restored_count} restored exactly, {refused} refused or never started");
}
