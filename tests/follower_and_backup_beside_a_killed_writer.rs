//! A `Follower` and a stream of `backup::take_beside` calls beside a store whose writer
//! process is killed with SIGKILL and restarted, again and again.
//!
//! The effect of command number `i` is derived from `i` alone (its sequence number, which
//! `CommitContext::current` tells it), so the state after record `N` is a pure function of
//! `N`, whichever of the writer's committers sent which command. The writer commits atomic
//! units of random sizes from several threads at once, so that batches hold several units
//! and a kill can tear one in the middle of a batch. The follower's state must
//! equal it at its own sequence number after every step, and every backup must either fail
//! with an error or restore into exactly the state at its manifest's sequence number. A
//! kill leaves a torn batch at the end of the newest segment, which the follower must treat
//! as not written yet, and which the restarted writer cuts and writes over: the follower
//! must never report an error for it, nor show a state the store never had.
//!
//! The writer is this test binary itself, started again with `KILLED_CHILD_DIR` set. It
//! prints each acknowledgement; the parent kills it after a random number of them (zero
//! included: then the kill lands in its first commits, or in a snapshot it takes after
//! recovery). A last run stops cleanly, and the follower must then reach it.
//!
//! `AIROMEM_KILLED_WRITER_SEED` fixes the random choices (the seed is printed).
#![cfg(feature = "snapshot")]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use airomem::{Durability, Follower, PostcardSerializer, Seq, StoreOptions, backup, blocking};
use serde::{Deserialize, Serialize};

/// Keys inserted and removed, and the last command applied.
#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq, Eq)]
struct Book {
    entries: BTreeMap<u64, u64>,
    last: u64,
}

#[derive(Serialize, Deserialize, Debug)]
struct Entry {
    /// Varies the record sizes, so that some batches cross a page and a kill can tear them.
    padding: String,
}

impl airomem::State for Book {
    type Command = Entry;
    fn execute(&mut self, _: Entry) {
        // Without a context the state goes wrong visibly rather than panicking, which the
        // store would record as a cancelled command.
        apply(self, airomem::CommitContext::current().map_or(u64::MAX, |c| c.seq.0));
    }
}

/// Command number `i`'s effect.
fn apply(book: &mut Book, i: u64) {
    book.entries.insert(i, mix(i) % 1_000_003);
    // An occasional delete of an older key: a missing or repeated command shows.
    if i.is_multiple_of(5) {
        book.entries.remove(&(i / 3));
    }
    book.last = i;
}

/// splitmix64: a well-spread function of `n`.
fn mix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn entry(n: u64) -> Entry {
    Entry { padding: "x".repeat((mix(n ^ 0xabcd) % 900) as usize) }
}

const MAX_UNIT: u64 = 6;
/// Committing threads in the writer.
const COMMITTERS: u64 = 3;
/// How far past the last reported acknowledgement the journal may hold commands: each
/// committer's unit in flight, and one acknowledged but not reported before the kill.
const IN_FLIGHT: u64 = 2 * COMMITTERS * MAX_UNIT;

/// The state after commands `1..=n`.
fn expected(n: u64) -> Book {
    let mut book = Book::default();
    for i in 1..=n {
        apply(&mut book, i);
    }
    book
}

/// [`expected`] for a sequence of growing `n`, without replaying from the start each time.
struct Model {
    book: Book,
    at: u64,
}

impl Model {
    fn at(&mut self, n: u64) -> &Book {
        assert!(n >= self.at, "the model only moves forward: asked for {n} after {}", self.at);
        while self.at < n {
            self.at += 1;
            apply(&mut self.book, self.at);
        }
        &self.book
    }
}

fn options() -> StoreOptions {
    // Batches of up to ~5 KiB in 8 KiB segments: rollovers every few commits, snapshots
    // every ~40 units, and retention removing segments behind them.
    StoreOptions::default()
        .segment_size(8 * 1024)
        .durability(Durability::Fsync)
        .snapshot_every_commands(150)
        .snapshots_retained(2)
}

const CHILD_DIR: &str = "KILLED_CHILD_DIR";
/// Set for the last run: commit up to this command, then one more alone, then close.
const CHILD_STOP: &str = "KILLED_CHILD_STOP";

/// The writer: opens the store, prints `open N` (the last command it recovered), then
/// commits units of random sizes from `COMMITTERS` threads, printing `ack N` (the unit's
/// last command) after each acknowledgement, until killed; or with `KILLED_CHILD_STOP`
/// until that command, then one command alone, and `done N` after closing.
#[test]
#[ignore = "the child process of the tests in this file, which start it with --ignored"]
fn killed_writer_child_entry() {
    let dir = PathBuf::from(std::env::var(CHILD_DIR).expect("set by the parent"));
    let stop: Option<u64> = std::env::var(CHILD_STOP).ok().map(|v| v.parse().expect("a number"));
    let store: blocking::PostcardStore<Book> =
        blocking::Store::open_with(PostcardSerializer, &dir, options()).expect("child open");
    let recovered = store.query().expect("query").last;
    println!("open {recovered}");
    let committers: Vec<_> = (0..COMMITTERS)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for n in 0.. {
                    let key = mix(recovered ^ (t << 56) ^ n);
                    let count = 1 + key % MAX_UNIT;
                    let unit = store.commit_all((0..count).map(|k| entry(key ^ k))).expect("child commit_all");
                    assert_eq!(unit.last.0 - unit.first.0 + 1, count, "a unit's commands are consecutive");
                    // println! locks stdout per line: lines never interleave.
                    println!("ack {}", unit.last.0);
                    if stop.is_some_and(|stop| unit.last.0 >= stop) {
                        return;
                    }
                }
            })
        })
        .collect();
    for committer in committers {
        committer.join().expect("committer");
    }
    // Alone in its batch, so the one before it is final for the follower.
    let sentinel = store.commit(entry(0)).expect("child commit");
    store.close().expect("close");
    println!("done {}", sentinel.seq.0);
}

enum Event {
    Open(u64),
    Ack(u64),
    Done(u64),
}

/// A writer process, killed if the test fails while it runs: it never stops by itself.
struct Writer(Child);

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a writer and a thread that forwards its lines; the channel closes when it exits.
fn start_writer(dir: &Path, stop: Option<u64>) -> (Writer, mpsc::Receiver<Event>) {
    let mut command = Command::new(std::env::current_exe().expect("test binary"));
    command
        .args(["killed_writer_child_entry", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir);
    if let Some(stop) = stop {
        command.env(CHILD_STOP, stop.to_string());
    }
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawn the writer");
    let stdout = BufReader::new(child.stdout.take().expect("piped"));
    let (events, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            // The harness writes `test killed_writer_child_entry ... ` before the first line.
            let line = line.rsplit("... ").next().unwrap_or_default();
            let event = match line.split_once(' ') {
                Some(("open", n)) => n.parse().map(Event::Open),
                Some(("ack", n)) => n.parse().map(Event::Ack),
                Some(("done", n)) => n.parse().map(Event::Done),
                _ => continue,
            };
            if let Ok(event) = event
                && events.send(event).is_err()
            {
                return;
            }
        }
    });
    (Writer(child), received)
}

/// What the backup thread saw.
#[derive(Default, Debug)]
struct Backups {
    restored: u64,
    refused: BTreeMap<String, u64>,
}

/// Takes backups beside the store until `stop`, at random moments, and checks each at once.
fn back_up_until(dir: PathBuf, work: PathBuf, stop: Arc<AtomicBool>, seed: u64) -> Backups {
    let mut seen = Backups::default();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        // Pacing, not synchronisation: spreads the backups over the writer's life and kills.
        std::thread::sleep(Duration::from_micros(mix(seed ^ n) % 30_000));
        let dest = work.join(format!("backup-{n}"));
        match backup::take_beside(&dir, &dest) {
            Ok(report) => {
                check_backup(&dest, &work.join(format!("restored-{n}")), report.seq, &format!("backup {n}"));
                seen.restored += 1;
            }
            Err(e) => *seen.refused.entry(error_kind(&e)).or_default() += 1,
        }
        let _ = std::fs::remove_dir_all(&dest);
        let _ = std::fs::remove_dir_all(work.join(format!("restored-{n}")));
    }
    seen
}

/// The error's message without numbers or paths, to count errors of one kind together.
fn error_kind(e: &airomem::Error) -> String {
    let message = match e {
        airomem::Error::Backup { problem, .. } => problem.to_string(),
        other => other.to_string(),
    };
    message.chars().filter(|c| !c.is_ascii_digit()).take(100).collect()
}

/// A backup that was taken must verify, restore, and open at exactly its cut.
fn check_backup(backup_dir: &Path, target: &Path, seq: Seq, what: &str) {
    let manifest = backup::verify(backup_dir).unwrap_or_else(|e| panic!("{what}: a finished backup must verify: {e}"));
    assert_eq!(manifest.seq, seq, "{what}: the manifest's cut is the one reported");
    let restored = backup::restore(backup_dir, target, Some(<Book as airomem::State>::SCHEMA_VERSION))
        .unwrap_or_else(|e| panic!("{what}: a verified backup must restore: {e}"));
    assert_eq!(restored, manifest, "{what}");
    let store: blocking::PostcardStore<Book> = blocking::Store::open_with(PostcardSerializer, target, options())
        .unwrap_or_else(|e| panic!("{what}: the restored store must open: {e}"));
    let book = store.query().expect("query").clone();
    store.close().expect("close");
    assert!(book == expected(seq.0), "{what}: restored at #{} a state other than the one of that point", seq.0);
}

fn kill_loop(kills: u64) {
    let seed: u64 = std::env::var("AIROMEM_KILLED_WRITER_SEED").map_or_else(
        |_| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64),
        |v| v.parse().expect("a number"),
    );
    eprintln!("seed {seed} (AIROMEM_KILLED_WRITER_SEED)");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let work = tmp.path().join("backups");
    std::fs::create_dir(&work).expect("mkdir");

    let mut follower: Option<Follower<Book>> = None;
    let mut model = Model { book: Book::default(), at: 0 };
    let mut shown = 0u64;
    let mut steps = 0u64;
    let mut check = |follower: &Follower<Book>, when: &str| {
        let seq = follower.seq().0;
        assert!(seq >= shown, "seed {seed}, {when}: the follower went back from #{shown} to #{seq}");
        assert!(follower.error().is_none(), "seed {seed}, {when}: {:?}", follower.error());
        let state = follower.query().expect("query");
        if *state != *model.at(seq) {
            let wanted = model.at(seq);
            panic!(
                "seed {seed}, {when}: the follower at #{seq} shows a state the store never had there \
                 (last {}, {} entries; expected last {}, {} entries)",
                state.last,
                state.entries.len(),
                wanted.last,
                wanted.entries.len()
            );
        }
        shown = seq;
        steps += 1;
    };
    let step = |follower: &Follower<Book>, when: &str| {
        follower.catch_up().unwrap_or_else(|e| panic!("seed {seed}, {when}: a follower step failed: {e}"));
    };

    let stop_backups = Arc::new(AtomicBool::new(false));
    let mut backups = None;
    let mut acked = 0u64;
    for run in 0..kills {
        let (mut child, events) = start_writer(&dir, None);
        let target = mix(seed ^ run.wrapping_mul(0x1234_5678)) % 100;
        let mut seen = 0u64;
        let mut opened = false;
        while seen < target || !opened {
            let when = format!("run {run}");
            let next = events.recv_timeout(Duration::from_secs(120)).expect("the writer opens and commits");
            // Everything reported so far, before the next step: otherwise the parent's
            // checks fall behind the writer, and the kill comes later and later.
            let pending: Vec<Event> = std::iter::once(next).chain(events.try_iter()).collect();
            for event in pending {
                match event {
                    Event::Open(n) => {
                        opened = true;
                        assert!(
                            n >= acked && n <= acked + IN_FLIGHT,
                            "seed {seed}, {when}: the writer recovered #{n} with #{acked} acknowledged"
                        );
                        acked = n;
                        if follower.is_none() {
                            follower = Some(Follower::open(PostcardSerializer, &dir).expect("the follower opens"));
                            let (dir, work, stop) = (dir.clone(), work.clone(), Arc::clone(&stop_backups));
                            backups = Some(std::thread::spawn(move || back_up_until(dir, work, stop, seed)));
                        }
                    }
                    Event::Ack(n) => {
                        acked = acked.max(n);
                        seen += 1;
                    }
                    Event::Done(_) => unreachable!("only the last run stops by itself"),
                }
            }
            if let Some(follower) = &follower {
                step(follower, &when);
                check(follower, &when);
            }
        }
        child.0.kill().expect("SIGKILL");
        child.0.wait().expect("reap");
        // Acknowledgements written before the kill still count.
        for event in events.iter() {
            if let Event::Ack(n) = event {
                acked = acked.max(n);
            }
        }
        if let Some(follower) = &follower {
            // The torn batch the kill may have left is in the journal now, unrepaired.
            let when = format!("after kill {run}");
            step(follower, &when);
            check(follower, &when);
            assert!(
                follower.seq().0 <= acked + IN_FLIGHT,
                "seed {seed}, {when}: the follower is past what was written"
            );
        }
    }

    // The last run stops cleanly a little further on.
    let stop_at = acked + 1 + mix(seed ^ 0x5151) % 100;
    let (mut child, events) = start_writer(&dir, Some(stop_at));
    let mut done = None;
    for event in events.iter() {
        match event {
            Event::Open(n) => {
                assert!(
                    n >= acked && n <= acked + IN_FLIGHT,
                    "seed {seed}: last run recovered #{n}, #{acked} acknowledged"
                )
            }
            Event::Ack(n) => acked = acked.max(n),
            Event::Done(n) => done = Some(n),
        }
        if let Some(follower) = &follower {
            step(follower, "last run");
            check(follower, "last run");
        }
    }
    assert!(child.0.wait().expect("writer").success(), "seed {seed}: the last writer failed");
    let done = done.expect("the last writer reports its end");
    assert!(
        done > stop_at && done == acked + 1,
        "seed {seed}: done at #{done}, stop at #{stop_at}, #{acked} acknowledged"
    );
    stop_backups.store(true, Ordering::Relaxed);
    let backups = backups.expect("started at the first open").join().expect("the backup thread");

    let follower = follower.expect("opened at the first open");
    // The sentinel's batch waits for a batch after it, which never comes: the follower shows
    // everything up to the last acknowledged unit.
    let reached = follower.wait_for(Seq(acked), Duration::from_secs(60)).expect("a step never fails");
    check(&follower, "at the end");
    assert!(reached >= Seq(acked), "seed {seed}: the follower reached #{} of #{acked}", reached.0);

    // A backup of the stopped store cuts at its last record.
    let report = backup::take_beside(&dir, &work.join("final")).expect("a backup of a stopped store");
    assert_eq!(report.seq, Seq(done), "seed {seed}");
    check_backup(&work.join("final"), &work.join("final-restored"), report.seq, "the final backup");

    eprintln!(
        "{kills} kills, {done} commands; follower: {steps} steps; \
         backups: {} restored exactly, refused {:?}",
        backups.restored, backups.refused
    );
    assert!(backups.restored > 0, "seed {seed}: no backup finished: {:?}", backups.refused);
}

#[test]
fn a_follower_and_backups_beside_a_writer_killed_8_times_are_always_exact() {
    kill_loop(8);
}

#[test]
#[ignore = "300 kills, 75 to 100 s in debug; run with --ignored"]
fn a_follower_and_backups_beside_a_writer_killed_300_times_are_always_exact() {
    kill_loop(300);
}

/// The real file system, except that the first length asked of `target`'s open file once
/// `armed` is set cuts `cut` bytes from its end right after measuring it: the restarted
/// writer's repair of a torn tail, landing between the follower's length and its read.
#[derive(Debug)]
struct CutAfterLength {
    inner: airomem::storage::StdStorage,
    target: PathBuf,
    cut: u64,
    armed: Arc<AtomicBool>,
}

struct CuttingFile {
    inner: Box<dyn airomem::storage::StorageReadFile>,
    path: PathBuf,
    cut: u64,
    armed: Arc<AtomicBool>,
}

impl airomem::storage::StorageReadFile for CuttingFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read_at(offset, buf)
    }

    fn len(&self) -> std::io::Result<u64> {
        let len = self.inner.len()?;
        if self.armed.swap(false, Ordering::SeqCst) {
            std::fs::OpenOptions::new().write(true).open(&self.path)?.set_len(len - self.cut)?;
        }
        Ok(len)
    }
}

impl airomem::storage::Storage for CutAfterLength {
    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        self.inner.list(dir)
    }
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        self.inner.read(path)
    }
    fn open_read(&self, path: &Path) -> std::io::Result<Box<dyn airomem::storage::StorageReadFile>> {
        let inner = self.inner.open_read(path)?;
        if path == self.target {
            let (path, cut, armed) = (path.to_path_buf(), self.cut, Arc::clone(&self.armed));
            return Ok(Box::new(CuttingFile { inner, path, cut, armed }));
        }
        Ok(inner)
    }
    fn create(&self, path: &Path) -> std::io::Result<Box<dyn airomem::storage::StorageFile>> {
        self.inner.create(path)
    }
    fn open_write(&self, path: &Path) -> std::io::Result<Box<dyn airomem::storage::StorageFile>> {
        self.inner.open_write(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove(&self, path: &Path) -> std::io::Result<()> {
        self.inner.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        self.inner.sync_dir(dir)
    }
    fn lock(&self, path: &Path) -> std::io::Result<airomem::storage::LockGuard> {
        self.inner.lock(path)
    }
}

/// The kill loop above reaches this moment only by chance (a repair cuts a torn tail once
/// per restart, and the follower's length and read are microseconds apart); here it is
/// made to happen: the newest segment ends in a torn batch, the follower measures it, the
/// repair cuts the torn bytes, the follower reads. The cut bytes were never there for it.
#[test]
fn a_torn_tail_cut_between_the_followers_length_and_its_read_is_no_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let store: blocking::PostcardStore<Book> =
        blocking::Store::open_with(PostcardSerializer, &dir, StoreOptions::default()).expect("open");
    for n in 1..=5 {
        store.commit(entry(n)).expect("commit");
    }
    store.close().expect("close");
    let newest = std::fs::read_dir(&dir)
        .expect("dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "journal"))
        .max()
        .expect("a segment");
    let torn = [200u8, 0, 0, 0, 1, 2, 3];
    let mut bytes = std::fs::read(&newest).expect("read");
    bytes.extend_from_slice(&torn);
    std::fs::write(&newest, &bytes).expect("write");

    let armed = Arc::new(AtomicBool::new(false));
    let storage = CutAfterLength {
        inner: airomem::storage::StdStorage::default(),
        target: newest.clone(),
        cut: torn.len() as u64,
        armed: Arc::clone(&armed),
    };
    let options = StoreOptions::default().storage(Arc::new(storage));
    let follower: Follower<Book> = Follower::open_with(PostcardSerializer, &dir, &options).expect("follower");
    assert_eq!(follower.seq(), Seq(4), "the last batch waits for a next one");
    armed.store(true, Ordering::SeqCst);
    let step = follower.catch_up();
    assert!(!armed.load(Ordering::SeqCst), "the step measured the segment");
    assert_eq!(std::fs::metadata(&newest).expect("stat").len(), (bytes.len() - torn.len()) as u64);
    assert_eq!(step.expect("a torn tail cut under the follower is not there yet, not an error"), 0);
    assert_eq!(follower.seq(), Seq(4));
    assert!(*follower.query().expect("query") == expected(4));
}

/// What a restarted writer leaves when the kill tore a batch of several atomic units after
/// its first units were whole, and the segment is too full for the new writer's first batch:
/// the repair cuts only the unfinished unit (the whole units before it stay, as recovery
/// applies them), so the segment ends in a batch without its end mark, and the writer rolls
/// over before writing. The store reads this journal whole; so must the follower.
#[test]
fn a_segment_sealed_after_a_repair_that_kept_part_of_a_batch_is_no_error() {
    use airomem_journal::frame::{self, BatchMark, RecordKind};
    use airomem_journal::segment::{self, SEGMENT_HEADER_LEN, SegmentHeader};

    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let store: blocking::PostcardStore<Book> =
        blocking::Store::open_with(PostcardSerializer, &dir, StoreOptions::default()).expect("open");
    store.commit(Entry { padding: String::new() }).expect("commit");
    store.close().expect("close");
    let first = segment::path(&dir, Seq(1));
    let mut bytes = std::fs::read(&first).expect("read");
    let record = frame::decode(&bytes, SEGMENT_HEADER_LEN).expect("record 1");
    assert_eq!(record.end(), bytes.len(), "one record, no prepared space");
    let (payload, nanos) = (bytes[record.payload.clone()].to_vec(), record.unix_nanos);
    // Records 2 and 3: two whole one-command units that began a batch whose third unit the
    // kill tore and the repair cut.
    frame::encode(&mut bytes, Seq(2), nanos, RecordKind::Command, BatchMark { start: true, end: false }, &payload);
    frame::encode(&mut bytes, Seq(3), nanos, RecordKind::Command, BatchMark { start: false, end: false }, &payload);
    std::fs::write(&first, &bytes).expect("write");

    let follower: Follower<Book> = Follower::open(PostcardSerializer, &dir).expect("follower");
    assert_eq!(follower.seq(), Seq(1), "the batch of 2 and 3 is not final while its segment is the newest");

    // The restarted writer rolled over and wrote two batches: 4, then 5.
    let header = SegmentHeader::decode(&first, &bytes).expect("header");
    let mut second = SegmentHeader { first_seq: Seq(4), ..header }.encode().to_vec();
    frame::encode(&mut second, Seq(4), nanos, RecordKind::Command, BatchMark { start: true, end: true }, &payload);
    frame::encode(&mut second, Seq(5), nanos, RecordKind::Command, BatchMark { start: true, end: true }, &payload);
    std::fs::write(segment::path(&dir, Seq(4)), &second).expect("write");

    let step = follower.catch_up();
    assert!(step.is_ok(), "the follower refuses what the store reads: {step:?}");
    assert_eq!(follower.seq(), Seq(4), "everything but the newest batch");
    assert!(*follower.query().expect("query") == expected(4));
    let past: airomem::Past<Book> = airomem::Past::open(PostcardSerializer, &dir, airomem::At::Latest).expect("past");
    assert!(past.seq() >= Seq(4), "the store's own read goes past the cut batch: {:?}", past.seq());
}
