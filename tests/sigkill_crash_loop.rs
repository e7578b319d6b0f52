//! Crash loop with real processes on the real file system: a child process opens the store
//! (recovering whatever the previous child left), commits from several writers at once and
//! reports each commit on stdout only after `commit` returned; the parent kills it with
//! SIGKILL after a delay between 0 and 50 ms (landing during open and recovery, during
//! commits, and with the `snapshot` feature during snapshot writing), then reopens the store
//! and checks that no acknowledged command was lost and that what survived is exactly a
//! prefix of each writer's sequence. Half the writers commit atomic units of
//! [`UNIT`] commands ([`Store::commit_all`]): each must survive whole or not at all.
//!
//! A second loop does the same with one committer alone under `Durability::OsBuffered`,
//! whose commits are written and applied in the committing thread itself
//! ([`StoreOptions::commit_in_caller`]), automatic snapshots included: a process crash keeps
//! the page cache, so a kill must not lose what it acknowledged either. Each cycle's one
//! writer alternates between committing single commands and atomic units.
//!
//! `AIROMEM_CRASH_CYCLES` sets the number of cycles (default 1,000; 300 for the lone loop).
//!
//! The child is this test binary itself, started again with `CRASH_CHILD_DIR` set; the
//! `crash_child_entry` test then plays the child instead of running as a test.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use airomem::{Durability, PostcardSerializer, PostcardStore, Store, StoreOptions};
use airomem_workspace::Log;

const CHILD_DIR: &str = "CRASH_CHILD_DIR";
const CHILD_CYCLE: &str = "CRASH_CHILD_CYCLE";
/// Set for the lone loop's children.
const CHILD_LONE: &str = "CRASH_CHILD_LONE";
const WRITERS: u64 = 4;
/// Values encode who wrote them: cycle, writer, and the writer's own counter.
const CYCLE_STRIDE: u64 = 1 << 40;
const WRITER_STRIDE: u64 = 1 << 32;
/// Commands per atomic unit of the writers that commit units (the odd ones).
const UNIT: u64 = 4;

/// How many commands writer `writer` commits at once: one, or a unit.
fn unit_of(writer: u64) -> u64 {
    if writer % 2 == 1 { UNIT } else { 1 }
}

fn options(lone: bool) -> StoreOptions {
    let durability = if lone { Durability::OsBuffered } else { Durability::Fsync };
    let options = StoreOptions::default().segment_size(16 * 1024).durability(durability);
    #[cfg(feature = "snapshot")]
    let options = options.snapshot_every_commands(40).snapshots_retained(2);
    options
}

/// The child: open, then commit forever from `WRITERS` tasks, printing `value` after each
/// acknowledgement. It never exits by itself; the parent kills it.
#[test]
#[ignore = "the child process of another test in this file, which starts it with --ignored"]
fn crash_child_entry() {
    let dir = std::env::var(CHILD_DIR).expect("started by the parent test, which sets the directory");
    let cycle: u64 = std::env::var(CHILD_CYCLE).expect("cycle").parse().expect("number");
    let lone = std::env::var_os(CHILD_LONE).is_some();
    // Alone, one writer per cycle: a unit writer every other cycle.
    let writers = if lone { cycle % 2..cycle % 2 + 1 } else { 0..WRITERS };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(async move {
        let store: PostcardStore<Log> =
            Store::open_with(PostcardSerializer, Path::new(&dir), options(lone)).await.expect("child open");
        println!("open");
        let mut tasks = Vec::new();
        for writer in writers {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let unit = unit_of(writer);
                for i in (0..).step_by(unit as usize) {
                    let first = cycle * CYCLE_STRIDE + writer * WRITER_STRIDE + i;
                    if unit == 1 {
                        store.commit(first).await.expect("child commit");
                    } else {
                        store.commit_all(first..first + unit).await.expect("child commit_all");
                    }
                    // println! locks stdout per line, so lines from writers never interleave.
                    for value in first..first + unit {
                        println!("{value}");
                    }
                }
            }));
        }
        for task in tasks {
            task.await.expect("writer");
        }
    });
}

/// Splits a value into (cycle, writer, counter).
fn owner(value: u64) -> (u64, u64, u64) {
    (value / CYCLE_STRIDE, (value % CYCLE_STRIDE) / WRITER_STRIDE, value % WRITER_STRIDE)
}

/// A deterministic delay between 0 and 50 ms for cycle `n`.
fn kill_delay(n: u64) -> Duration {
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    Duration::from_micros((z ^ (z >> 31)) % 50_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_instants_loses_no_acknowledged_command() {
    crash_loop(false, 1_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_a_lone_os_buffered_committer_loses_no_acknowledged_command() {
    crash_loop(true, 300).await;
}

/// Runs `cycles` kill-and-reopen cycles (or `AIROMEM_CRASH_CYCLES`), of several writers
/// under `Fsync`, or of one writer alone under `OsBuffered`.
async fn crash_loop(lone: bool, default_cycles: u64) {
    let cycles: u64 = std::env::var("AIROMEM_CRASH_CYCLES").map_or(default_cycles, |v| v.parse().expect("cycle count"));
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let exe = std::env::current_exe().expect("test binary");
    let mut survived: Vec<u64> = Vec::new();
    let (mut acknowledged_total, mut kills_before_open) = (0u64, 0u64);

    for cycle in 0..cycles {
        let mut child = Command::new(&exe);
        child
            .args(["crash_child_entry", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, &dir)
            .env(CHILD_CYCLE, cycle.to_string());
        if lone {
            child.env(CHILD_LONE, "1");
        }
        let mut child = child.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawn child");
        // The delay is when to kill, not a way to wait for something: the outcome is
        // checked whatever the child managed to do in it.
        std::thread::sleep(kill_delay(cycle));
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        let stdout = child.stdout.take().expect("stdout");
        let mut opened = false;
        let mut acked: BTreeMap<u64, u64> = BTreeMap::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("utf-8 line");
            // The harness prints "test crash_child_entry ... " without a newline first.
            if line.ends_with("open") {
                opened = true;
            } else if let Ok(value) = line.parse::<u64>() {
                let (c, writer, i) = owner(value);
                assert_eq!(c, cycle, "cycle {cycle}: a value from another cycle was acknowledged");
                let count = acked.entry(writer).or_default();
                assert_eq!(*count, i, "cycle {cycle}: writer {writer} acknowledged out of order");
                *count += 1;
            }
            // Anything else is the test harness's own output.
        }
        kills_before_open += u64::from(!opened);
        acknowledged_total += acked.values().sum::<u64>();

        let store: PostcardStore<Log> = Store::open_with(PostcardSerializer, &dir, options(lone))
            .await
            .unwrap_or_else(|e| panic!("cycle {cycle}: reopen after SIGKILL failed: {e}"));
        let log = store.query().expect("query").values.clone();
        drop(store);

        assert!(
            log.len() >= survived.len() && log[..survived.len()] == survived[..],
            "cycle {cycle}: what survived earlier crashes changed"
        );
        let mut written: BTreeMap<u64, u64> = BTreeMap::new();
        for &value in &log[survived.len()..] {
            let (c, writer, i) = owner(value);
            assert_eq!(c, cycle, "cycle {cycle}: unexpected value {value}");
            let count = written.entry(writer).or_default();
            assert_eq!(*count, i, "cycle {cycle}: writer {writer}'s commands are not a prefix");
            *count += 1;
        }
        for (writer, &present) in &written {
            let unit = unit_of(*writer);
            assert_eq!(present % unit, 0, "cycle {cycle}: writer {writer}'s last unit survived in part: {present}");
        }
        for (writer, &acked) in &acked {
            let present = written.get(writer).copied().unwrap_or(0);
            // Each writer has at most one command (or unit) in flight beyond what it saw
            // acknowledged.
            assert!(
                present >= acked && present <= acked + unit_of(*writer),
                "cycle {cycle}: writer {writer} had {acked} acknowledged, {present} recovered"
            );
        }
        survived = log;
    }
    eprintln!(
        "{cycles} SIGKILL cycles (lone: {lone}): {acknowledged_total} acknowledged commands, all recovered; \
         {kills_before_open} kills landed before the store was open; {} values in the final log",
        survived.len()
    );
    assert!(acknowledged_total > 0, "the children never got to commit: the kill delays are too short");
}
