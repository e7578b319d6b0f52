//! A `Follower` beside a store that keeps committing, rolling its journal over, taking
//! snapshots and removing what they cover. After every step the follower's state is exactly
//! the state a model reaches by replaying the same commands up to the follower's sequence
//! number; it never shows a command the store cancels; it reloads from a snapshot when
//! retention took the segment it was reading.
//!
//! In the test beside a busy writer, the writer is another process (this test binary started
//! again): the follower shares nothing with it but the files. It reports each commit's
//! sequence number and value after its acknowledgement, and the model replays those.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use airomem::{Follower, PostcardSerializer, Seq, Store, StoreOptions};
use serde::{Deserialize, Serialize};

/// A state whose every field depends on every command and on their order.
#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq, Eq)]
struct Tally {
    count: u64,
    sum: u64,
    /// Order-sensitive: a missing, repeated or swapped command changes it.
    mix: u64,
    /// The values that were applied, in order (only the panicking test keeps them).
    kept: Vec<u64>,
}

#[derive(Serialize, Deserialize, Debug)]
struct Add {
    value: u64,
    keep: bool,
    /// Makes a few commands fill a small segment.
    padding: String,
}

impl airomem::State for Tally {
    type Command = Add;
    fn execute(&mut self, add: Add) {
        self.count += 1;
        self.sum = self.sum.wrapping_add(add.value);
        self.mix = self.mix.rotate_left(5) ^ add.value.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        if add.keep {
            self.kept.push(add.value);
        }
        let here = PANICS_IN_THIS_THREAD.with(|v| v.get() == Some(add.value));
        assert!(!panics(add.value) && !here, "{}", airomem_workspace::DELIBERATE_PANIC);
    }
}

thread_local! {
    /// A value whose command panics in this thread only: a follower that executes what the
    /// store executed without a panic (an `execute` that is not deterministic).
    static PANICS_IN_THIS_THREAD: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// Whether the command adding `value` panics (after changing the state: the store rolls it
/// back). Only values the panicking test commits reach this.
fn panics(value: u64) -> bool {
    value >= PANICKY && value % 7 == 3
}

const PANICKY: u64 = 1 << 40;

fn value_of(i: u64) -> u64 {
    i.wrapping_mul(2_654_435_761) % 1_000_003
}

fn command(i: u64) -> Add {
    Add { value: value_of(i), keep: false, padding: "p".repeat(40) }
}

/// The state after the first `n` records, replayed by the model from the values the writer
/// reported for each sequence number, rather than by the store.
struct Model {
    states: Vec<Tally>,
    values: BTreeMap<u64, u64>,
}

impl Model {
    fn new() -> Model {
        Model { states: vec![Tally::default()], values: BTreeMap::new() }
    }

    /// The model's state at `n`; `None` while some value up to `n` is not known yet.
    fn at(&mut self, n: u64) -> Option<&Tally> {
        while (self.states.len() as u64) <= n {
            let seq = self.states.len() as u64;
            let value = *self.values.get(&seq)?;
            let mut next = self.states.last().cloned().unwrap_or_default();
            airomem::State::execute(&mut next, Add { value, keep: false, padding: String::new() });
            self.states.push(next);
        }
        Some(&self.states[n as usize])
    }

    /// The model's state at `n`, after waiting (bounded) for the writer's reports up to it.
    fn wait_at(&mut self, n: u64, reports: &mpsc::Receiver<(u64, u64)>) -> &Tally {
        while self.at(n).is_none() {
            let (seq, value) = reports.recv_timeout(Duration::from_secs(60)).expect("the writer reports every commit");
            self.values.insert(seq, value);
        }
        self.at(n).expect("every value up to n is known")
    }
}

fn options() -> StoreOptions {
    // A 2 KiB segment holds ~25 commands: a rollover every ~12 ms at 2,000 commits/s, a
    // snapshot every 100 ms, and retention removing segments behind it.
    StoreOptions::default().segment_size(2048).snapshot_every_commands(200).snapshots_retained(2)
}

const CHILD_DIR: &str = "FOLLOW_CHILD_DIR";
const CHILD_SECS: &str = "FOLLOW_CHILD_SECS";

/// The writer process: opens the store, prints `open`, then commits at 2,000 commands/s,
/// open loop (each command sent at its time in a task of its own, so commits share syncs),
/// printing `seq value` after each acknowledgement, for the given number of seconds; then
/// one last command (which makes the one before final) and `done`.
#[test]
#[ignore = "the child process of another test in this file, which starts it with --ignored"]
fn follow_writer_child_entry() {
    let dir = std::env::var(CHILD_DIR).expect("started by the parent test, which sets the directory");
    let secs: u64 = std::env::var(CHILD_SECS).expect("seconds").parse().expect("number");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(async move {
        let store: Store<Tally, _> =
            Store::open_with(PostcardSerializer, Path::new(&dir), options()).await.expect("open");
        println!("open");
        let started = tokio::time::Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        let mut i = 0u64;
        while started.elapsed() < Duration::from_secs(secs) {
            i += 1;
            // Pacing, not synchronisation: the commit rate the test asks for.
            tokio::time::sleep_until(started + Duration::from_micros(i * 500)).await;
            let store = store.clone();
            tasks.spawn(async move {
                let value = value_of(i);
                let receipt = store.commit(Add { value, keep: false, padding: "p".repeat(40) }).await.expect("commit");
                println!("{} {value}", receipt.seq.0);
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("commit task");
        }
        let receipt = store.commit(Add { value: 0, keep: false, padding: String::new() }).await.expect("commit");
        println!("{} 0", receipt.seq.0);
        store.close().await.expect("close");
        println!("done {}", receipt.seq.0);
    });
}

/// Runs the writer process for `run` and steps a follower beside it, checking its state
/// after every step against the model; then checks it reaches the writer's last final batch.
fn follow_exactly(run: Duration) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["follow_writer_child_entry", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, &dir)
        .env(CHILD_SECS, run.as_secs().to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the writer");
    let stdout = BufReader::new(child.stdout.take().expect("piped"));
    let (open_tx, opened) = mpsc::channel();
    let (report, reports) = mpsc::channel();
    let (done_tx, done) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            // The test harness writes `test follow_writer_child_entry ... ` before the
            // child's first line, on the same line.
            let line = line.rsplit("... ").next().unwrap_or_default();
            let words: Vec<&str> = line.split_whitespace().collect();
            match words[..] {
                ["open"] => drop(open_tx.send(())),
                ["done", last] => drop(done_tx.send(last.parse::<u64>().expect("seq"))),
                [seq, value] => {
                    if let (Ok(seq), Ok(value)) = (seq.parse(), value.parse()) {
                        let _ = report.send((seq, value));
                    }
                }
                _ => {}
            }
        }
    });
    opened.recv_timeout(Duration::from_secs(120)).expect("the writer opened the store");
    let follower: Follower<Tally> = Follower::open(PostcardSerializer, &dir).expect("follower");
    let mut model = Model::new();
    let (mut steps, mut last) = (0u64, follower.seq());
    let mut check = |follower: &Follower<Tally>, model: &mut Model| {
        let seq = follower.seq();
        assert!(seq >= last, "the follower went back from {last:?} to {seq:?}");
        let expected = model.wait_at(seq.0, &reports);
        assert_eq!(*follower.query().expect("query"), *expected, "state at {seq:?}");
        last = seq;
    };
    let end = loop {
        let applied = follower.catch_up().expect("a step never fails");
        check(&follower, &mut model);
        steps += 1;
        if applied == 0
            && let Ok(end) = done.try_recv()
        {
            break end;
        }
        // Polling pace for the loop; the check above does not depend on it.
        std::thread::sleep(Duration::from_millis(2));
    };
    assert!(child.wait().expect("writer").success(), "the writer process failed");
    reader.join().expect("reader");
    // The writer's last batch waits for a batch after it, which never comes: the follower
    // reaches the one before it.
    let reached = follower.wait_for(Seq(end - 1), Duration::from_secs(60)).expect("wait");
    check(&follower, &mut model);
    assert!(reached >= Seq(end - 1), "reached {reached:?} of {end}");
    assert!(steps > 10 && end > 200, "{steps} steps beside {end} commands");
    let segments = std::fs::read_dir(&dir).expect("dir").filter(|e| e.as_ref().is_ok_and(is_segment)).count();
    // The rate is what the machine gives (2,000/s asked): reported, not asserted.
    eprintln!("{end} commands in {run:?}, {steps} follower steps, {segments} segments left");
}

fn is_segment(entry: &std::fs::DirEntry) -> bool {
    entry.file_name().to_string_lossy().ends_with(".journal")
}

#[test]
fn a_follower_beside_a_writer_at_2000_commits_per_second_is_always_exact() {
    follow_exactly(Duration::from_secs(5));
}

#[test]
#[ignore = "30 s; run with --ignored"]
fn a_follower_beside_a_writer_at_2000_commits_per_second_for_30_s_is_always_exact() {
    follow_exactly(Duration::from_secs(30));
}

/// Commits values `PANICKY..`, one in seven panicking, from a thread while a following thread
/// catches up beside it: the state is always the values that succeeded, in order, and
/// never holds one that panicked, although the store's abort marker comes after its batch.
#[test]
fn a_follower_never_shows_a_command_the_store_cancels() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    airomem_workspace::quiet_deliberate_panics();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("rt");
    let store: Store<Tally, _> = runtime.block_on(Store::open_with(PostcardSerializer, &dir, options())).expect("open");
    let follower: Follower<Tally> =
        Follower::follow(PostcardSerializer, &dir, Duration::from_millis(1)).expect("follower");
    let succeeded: Vec<u64> = (PANICKY..PANICKY + 700).filter(|&v| !panics(v)).collect();
    let mut last = Seq(0);
    for value in PANICKY..PANICKY + 700 {
        let outcome = runtime.block_on(store.commit(Add { value, keep: true, padding: String::new() }));
        assert_eq!(outcome.is_err(), panics(value), "{value}: {outcome:?}");
        if let Ok(receipt) = outcome {
            last = receipt.seq;
        }
        let kept = follower.query().expect("query").kept.clone();
        assert_eq!(kept[..], succeeded[..kept.len()], "the follower shows exactly a prefix of what succeeded");
    }
    // One more batch makes the last one final.
    runtime.block_on(store.commit(Add { value: 0, keep: false, padding: String::new() })).expect("commit");
    assert!(follower.wait_for(last, Duration::from_secs(30)).expect("wait") >= last);
    assert_eq!(follower.query().expect("query").kept, succeeded);
    assert!(follower.error().is_none());
    runtime.block_on(store.close()).expect("close");
}

/// The follower stands still while the store commits far past it, takes two snapshots and
/// removes the segment the follower was reading; its next step reloads from the newest
/// snapshot and is exact.
#[test]
fn a_follower_behind_retention_reloads_from_the_snapshot() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
    let store: Store<Tally, _> = runtime.block_on(Store::open_with(PostcardSerializer, &dir, options())).expect("open");
    for i in 1..=30 {
        runtime.block_on(store.commit(command(i))).expect("commit");
    }
    let follower: Follower<Tally> = Follower::open(PostcardSerializer, &dir).expect("follower");
    let mut model = Model::new();
    model.values.extend((1..=1_002).map(|i| (i, value_of(i))));
    assert_eq!(Some(&*follower.query().expect("query")), model.at(follower.seq().0));
    let reading = segments(&dir);
    for i in 31..=1_000 {
        runtime.block_on(store.commit(command(i))).expect("commit");
    }
    runtime.block_on(store.snapshot()).expect("snapshot");
    let after = segments(&dir);
    assert!(!after.contains(reading.last().expect("a segment")), "retention removed the follower's segment");
    runtime.block_on(store.commit(command(1_001))).expect("commit");
    follower.catch_up().expect("reload");
    assert_eq!(follower.seq(), Seq(1_000), "every final batch, from the snapshot on");
    assert_eq!(Some(&*follower.query().expect("query")), model.at(1_000));
    runtime.block_on(store.commit(command(1_002))).expect("commit");
    assert_eq!(follower.catch_up().expect("step"), 1);
    assert_eq!(Some(&*follower.query().expect("query")), model.at(1_001));
    runtime.block_on(store.close()).expect("close");
}

/// A command that panics in the follower but not in the store: the step fails and shows the
/// state as it was before that command, and the next steps, once it no longer panics, bring
/// the follower to exactly the store's state: no command after it is skipped.
#[test]
fn a_step_that_failed_skips_nothing_when_following_resumes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    airomem_workspace::quiet_deliberate_panics();
    // Commits run on the runtime's own thread, never on this one, where the panic is armed.
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("rt");
    let store: Store<Tally, _> = runtime.block_on(Store::open_with(PostcardSerializer, &dir, options())).expect("open");
    let commit = |i: u64| {
        let store = store.clone();
        runtime.block_on(runtime.spawn(async move { store.commit(command(i)).await })).expect("join").expect("commit");
    };
    for i in 1..=3 {
        commit(i);
    }
    let follower: Follower<Tally> = Follower::open(PostcardSerializer, &dir).expect("follower");
    let mut model = Model::new();
    model.values.extend((1..=22).map(|i| (i, value_of(i))));
    for i in 4..=21 {
        commit(i);
    }
    PANICS_IN_THIS_THREAD.with(|v| v.set(Some(value_of(8))));
    let failed = follower.catch_up();
    assert!(matches!(failed, Err(airomem::Error::ReplayPanicked { .. })), "{failed:?}");
    assert_eq!(Some(&*follower.query().expect("query")), model.at(follower.seq().0));
    assert!(follower.seq() < Seq(8));
    PANICS_IN_THIS_THREAD.with(|v| v.set(None));
    commit(22);
    while follower.seq() < Seq(21) {
        follower.catch_up().expect("step");
        assert_eq!(Some(&*follower.query().expect("query")), model.at(follower.seq().0), "at {:?}", follower.seq());
        assert!(follower.seq() > Seq(0));
    }
    runtime.block_on(store.close()).expect("close");
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> =
        std::fs::read_dir(dir).expect("dir").filter_map(Result::ok).filter(is_segment).map(|e| e.path()).collect();
    found.sort();
    found
}

/// A record that does not verify at the end of the segment being written is one still
/// being written: the follower waits for it. The same in a sealed segment is damage, and
/// the step says so.
#[test]
fn a_follower_waits_for_a_record_being_written_and_reports_damage_in_a_sealed_segment() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
    // No snapshots: retention must not take the damaged segment away.
    let options = StoreOptions::default().segment_size(2048);
    let store: Store<Tally, _> = runtime.block_on(Store::open_with(PostcardSerializer, &dir, options)).expect("open");
    runtime.block_on(store.commit(command(1))).expect("commit");
    runtime.block_on(store.commit(command(2))).expect("commit");
    let follower: Follower<Tally> = Follower::open(PostcardSerializer, &dir).expect("follower");
    assert_eq!(follower.seq(), Seq(1));
    for i in 3..=200 {
        runtime.block_on(store.commit(command(i))).expect("commit");
    }
    runtime.block_on(store.close()).expect("close");
    let all = segments(&dir);
    assert!(all.len() > 3, "the journal rolled over");
    // Half a record at the end of the newest segment: a batch being written.
    let newest = all.last().expect("a segment");
    let mut bytes = std::fs::read(newest).expect("read");
    bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3]);
    std::fs::write(newest, &bytes).expect("write");
    // A flipped byte in the middle of the first segment, which is sealed, after the
    // follower's cursor.
    let first = &all[0];
    let mut bytes = std::fs::read(first).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(first, &bytes).expect("write");
    match follower.catch_up() {
        Err(airomem::Error::Journal(e)) => {
            assert!(matches!(*e, airomem::JournalError::Corrupt { .. }), "{e}");
        }
        other => panic!("damage in a sealed segment is reported: {other:?}"),
    }
    let mut model = Model::new();
    model.values.extend((1..=200).map(|i| (i, value_of(i))));
    let at = follower.seq().0;
    assert!(at < 200, "nothing past the damage");
    assert_eq!(Some(&*follower.query().expect("query")), model.at(at), "exact up to before the damage");

    // A fresh follower of an intact copy of the journal waits at the half-written record.
    std::fs::write(first, {
        bytes[middle] ^= 0x40;
        &bytes
    })
    .expect("write");
    let follower: Follower<Tally> = Follower::open(PostcardSerializer, &dir).expect("follower");
    assert_eq!(follower.catch_up().expect("a record being written is no error"), 0);
    assert_eq!(follower.seq(), Seq(199), "the last batch waits for a next one");
    assert_eq!(Some(&*follower.query().expect("query")), model.at(199));
}
