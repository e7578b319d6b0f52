//! A torn write at the end of the journal: for every length the newest segment can be cut to
//! inside its last record, and for the last record overwritten with zeros or garbage from
//! any byte on, reopening cuts exactly the damaged bytes, keeps them in a quarantine file,
//! recovers every earlier command, and the store goes on working across further reopens.
//! The same holds for a tear inside a batch that group commit wrote with one write: the
//! batch's intact records before the tear are kept.

mod segment_files;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use airomem::{Corruption, PostcardSerializer, PostcardStore, Seq, Store, StoreOptions, TornTail};
use airomem_workspace::{Sessions, SessionsCommand, token};
use segment_files::{
    FRAME_HEADER_LEN, LOCK_FILE, RawRecord, copy_dir, file_names, garbage, read_segment, segment_names,
};

/// Commands written before the damage; small segments so that several exist.
const COMMANDS: u64 = 41;
const SEGMENT_SIZE: u64 = 1024;

fn command(n: u64) -> SessionsCommand {
    if n % 4 == 3 {
        SessionsCommand::DeleteSession { token: token(n - 1) }
    } else {
        SessionsCommand::CreateSession { token: token(n), user_id: n + 1 }
    }
}

fn model(commands: u64) -> HashMap<String, u64> {
    let mut model = HashMap::new();
    for n in 0..commands {
        match command(n) {
            SessionsCommand::CreateSession { token, user_id } => {
                model.insert(token, user_id);
            }
            SessionsCommand::DeleteSession { token } => {
                model.remove(&token);
            }
        }
    }
    model
}

fn options() -> StoreOptions {
    StoreOptions::default().segment_size(SEGMENT_SIZE)
}

async fn open(dir: &Path) -> PostcardStore<Sessions> {
    Store::open_with(PostcardSerializer, dir, options()).await.expect("open")
}

/// A store with `COMMANDS` commands, each awaited alone so each is a batch of its own; the
/// last one creates a session, so losing it shows.
struct Original {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    newest: PathBuf,
    bytes: Vec<u8>,
    last: RawRecord,
}

async fn original() -> Original {
    assert!(matches!(command(COMMANDS - 1), SessionsCommand::CreateSession { .. }));
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("original");
    let store = open(&dir).await;
    for n in 0..COMMANDS {
        store.commit(command(n)).await.expect("commit");
    }
    store.close().await.expect("close");
    // The damage below stands for what a crash leaves.
    segment_files::as_if_crashed(&dir);
    let names = segment_names(&dir);
    assert!(names.len() >= 3, "several segments: {names:?}");
    let newest = dir.join(names.last().expect("segments"));
    let segment = read_segment(&newest);
    assert!(segment.records.len() >= 2, "the newest segment holds more than the last record");
    let last = segment.records.last().expect("records").clone();
    assert_eq!(last.seq, COMMANDS);
    let bytes = fs::read(&newest).expect("read newest");
    assert_eq!(last.end, bytes.len());
    Original { _tmp: tmp, dir, newest, bytes, last }
}

/// Copies the original store into a fresh directory and gives its newest segment `content`.
fn damaged_copy(original: &Original, scratch: &Path, case: &str, content: &[u8]) -> (PathBuf, PathBuf) {
    let dir = scratch.join(case);
    copy_dir(&original.dir, &dir);
    let newest = dir.join(original.newest.file_name().expect("name"));
    fs::write(&newest, content).expect("write damaged segment");
    (dir, newest)
}

/// Opens a damaged copy whose last record no longer verifies and checks everything the
/// cut must do. Returns the torn tail.
async fn expect_torn_tail(original: &Original, dir: &Path, newest: &Path, damaged: &[u8]) -> TornTail {
    let before = file_names(dir);
    let store = open(dir).await;
    let report = store.recovery().clone();
    let start = original.last.offset;
    let tail = report.torn_tail.clone().expect("a torn tail is reported");
    assert_eq!(tail.segment, newest, "the newest segment is the one cut");
    assert_eq!(tail.offset, start as u64, "cut where the last record starts");
    assert_eq!(tail.bytes, (damaged.len() - start) as u64, "every byte from there on is cut");
    assert_eq!(tail.quarantine.parent(), Some(dir), "quarantine file sits in the store directory");
    let quarantine_name = tail.quarantine.file_name().and_then(|n| n.to_str()).expect("quarantine name");
    let prefix = format!("{}.torn-at-{start}-", newest.file_name().and_then(|n| n.to_str()).expect("name"));
    let stamp = quarantine_name.strip_prefix(&prefix).expect("quarantine named <segment>.torn-at-<offset>-<nanos>");
    assert!(!stamp.is_empty() && stamp.bytes().all(|b| b.is_ascii_digit()), "nanos stamp: {quarantine_name}");
    assert_eq!(fs::read(&tail.quarantine).expect("quarantine"), &damaged[start..], "quarantine holds the cut bytes");
    assert_eq!(fs::read(newest).expect("newest"), &original.bytes[..start], "segment cut to its intact records");
    let mut after = before.clone();
    after.push(quarantine_name.to_string());
    after.sort();
    assert_eq!(file_names(dir), after, "nothing but the quarantine file was added, nothing removed");

    assert_eq!(report.records_replayed, COMMANDS - 1);
    assert_eq!(report.next_seq, Seq(COMMANDS), "the lost record's seq is due again");
    assert_eq!(store.query().expect("query").tokens, model(COMMANDS - 1), "state is the model minus the last command");

    go_on(store, dir).await;
    tail
}

/// A further commit lands, and survives two more reopens, which find nothing to repair.
async fn go_on(store: PostcardStore<Sessions>, dir: &Path) {
    let seq = store.recovery().next_seq;
    let extra = SessionsCommand::CreateSession { token: "after-repair".into(), user_id: 7 };
    assert_eq!(store.commit(extra).await.expect("commit after repair").seq, seq);
    let mut expected = model(seq.0 - 1);
    expected.insert("after-repair".into(), 7);
    store.close().await.expect("close");
    for _ in 0..2 {
        let store = open(dir).await;
        assert!(store.recovery().torn_tail.is_none(), "the repaired journal is clean");
        assert_eq!(store.recovery().records_replayed, seq.0);
        assert_eq!(store.recovery().next_seq, Seq(seq.0 + 1));
        assert_eq!(store.query().expect("query").tokens, expected);
    }
}

#[tokio::test]
async fn every_truncation_inside_the_last_record_is_cut() {
    let original = original().await;
    let scratch = tempfile::tempdir().expect("scratch");
    let start = original.last.offset;
    let end = original.last.end;
    for cut in start..=end {
        let damaged = &original.bytes[..cut];
        let (dir, newest) = damaged_copy(&original, scratch.path(), &format!("cut-{cut}"), damaged);
        if cut == start || cut == end {
            // At a record boundary there is nothing torn: the journal simply ends there.
            let store = open(&dir).await;
            assert!(store.recovery().torn_tail.is_none(), "cut {cut}: nothing to repair at a boundary");
            let kept = if cut == end { COMMANDS } else { COMMANDS - 1 };
            assert_eq!(store.recovery().records_replayed, kept);
            assert_eq!(store.recovery().next_seq, Seq(kept + 1));
            assert_eq!(store.query().expect("query").tokens, model(kept), "cut {cut}");
            let mut names = segment_names(&original.dir);
            names.push(LOCK_FILE.into());
            names.push("journal.head".into());
            names.sort();
            assert_eq!(file_names(&dir), names, "cut {cut}: no quarantine file");
            go_on(store, &dir).await;
            continue;
        }
        let tail = expect_torn_tail(&original, &dir, &newest, damaged).await;
        let available = (cut - start) as u64;
        let needed = if cut - start < FRAME_HEADER_LEN {
            FRAME_HEADER_LEN as u64
        } else {
            (FRAME_HEADER_LEN + original.last.len) as u64
        };
        assert_eq!(tail.reason, Corruption::Truncated { needed, available }, "cut {cut}");
    }
}

/// Overwrites the last record from `from` on with `fill`, as a crash that extended the file
/// but did not write its blocks (zeros) or wrote junk (garbage) can leave it. Zeros over
/// the whole record read as prepared space (see [`expect_prepared_space`]).
async fn overwritten_tail(fill: impl Fn(usize, usize) -> Vec<u8>, what: &str) {
    let original = original().await;
    let scratch = tempfile::tempdir().expect("scratch");
    let start = original.last.offset;
    let end = original.last.end;
    let mut torn = 0;
    for from in start..end {
        let mut damaged = original.bytes.clone();
        damaged[from..].copy_from_slice(&fill(from, end - from));
        let (dir, newest) = damaged_copy(&original, scratch.path(), &format!("{what}-{from}"), &damaged);
        if damaged == original.bytes {
            // The fill happened to equal what was there: nothing is damaged.
            let store = open(&dir).await;
            assert!(store.recovery().torn_tail.is_none(), "{what} from {from}: intact");
            assert_eq!(store.query().expect("query").tokens, model(COMMANDS));
            continue;
        }
        if damaged[start..].iter().all(|&b| b == 0) {
            expect_prepared_space(&dir).await;
            continue;
        }
        expect_torn_tail(&original, &dir, &newest, &damaged).await;
        torn += 1;
    }
    assert!(torn > (end - start) / 2, "{what}: most fills damage the record");
}

#[tokio::test]
async fn zero_filled_last_record_is_cut() {
    overwritten_tail(|_, len| vec![0; len], "zeros").await;
}

#[tokio::test]
async fn garbage_filled_last_record_is_cut() {
    overwritten_tail(|from, len| garbage(from as u64 * 7919 + 1, len), "garbage").await;
}

/// Zeros from the start of the last record to the end of the file are what the writer
/// prepares ahead of its records (a crash before any of the record's sectors were written
/// leaves exactly this): the journal ends before them, nothing is torn, and the next
/// commit is written over them.
async fn expect_prepared_space(dir: &Path) {
    let store = open(dir).await;
    assert!(store.recovery().torn_tail.is_none(), "zeros are prepared space, not a torn write");
    assert_eq!(store.recovery().records_replayed, COMMANDS - 1);
    assert_eq!(store.query().expect("query").tokens, model(COMMANDS - 1));
    go_on(store, dir).await;
}

#[tokio::test]
async fn whole_last_record_zeroed_reads_as_prepared_space() {
    let original = original().await;
    let scratch = tempfile::tempdir().expect("scratch");
    let start = original.last.offset;
    for extra in [0, 1, 4096] {
        let mut damaged = original.bytes.clone();
        damaged[start..].fill(0);
        damaged.resize(damaged.len() + extra, 0);
        let (dir, _) = damaged_copy(&original, scratch.path(), &format!("zeroed-{extra}"), &damaged);
        expect_prepared_space(&dir).await;
    }
    // One non-zero byte anywhere in those zeros makes them a torn write again.
    let mut damaged = original.bytes.clone();
    damaged[start..].fill(0);
    *damaged.last_mut().expect("bytes") = 1;
    let (dir, newest) = damaged_copy(&original, scratch.path(), "zeroed-but-one", &damaged);
    let tail = expect_torn_tail(&original, &dir, &newest, &damaged).await;
    // A zero length with a zero checksum: the header is complete but does not verify.
    assert!(matches!(tail.reason, Corruption::Checksum { stored: 0, .. }), "{:?}", tail.reason);
}

#[tokio::test]
async fn junk_appended_after_the_last_record_is_cut() {
    let original = original().await;
    let scratch = tempfile::tempdir().expect("scratch");
    for len in [1usize, 24, 25, 26, 200] {
        let mut damaged = original.bytes.clone();
        damaged.extend_from_slice(&garbage(len as u64, len));
        let (dir, newest) = damaged_copy(&original, scratch.path(), &format!("junk-{len}"), &damaged);
        let store = open(&dir).await;
        let tail = store.recovery().torn_tail.clone().expect("junk after the last record is a torn tail");
        assert_eq!(tail.segment, newest);
        assert_eq!(tail.offset, original.bytes.len() as u64);
        assert_eq!(tail.bytes, len as u64);
        assert_eq!(fs::read(&tail.quarantine).expect("quarantine"), &damaged[original.bytes.len()..]);
        assert_eq!(fs::read(&newest).expect("newest"), original.bytes);
        assert_eq!(store.recovery().records_replayed, COMMANDS);
        assert_eq!(store.query().expect("query").tokens, model(COMMANDS), "junk {len}: nothing acknowledged is lost");
        go_on(store, &dir).await;
    }
}

/// A crash can tear a batch that group commit wrote with one write: the batch's records
/// before the tear are intact and kept, the torn one and everything after it are cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncation_inside_a_group_committed_batch_keeps_its_intact_records() {
    const TASKS: u64 = 16;
    const PER_TASK: u64 = 12;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("original");
    let store: PostcardStore<Sessions> = Store::open(PostcardSerializer, &dir).await.expect("open");
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(TASKS as usize));
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let store = store.clone();
        let barrier = std::sync::Arc::clone(&barrier);
        handles.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut receipts = Vec::new();
            for i in 0..PER_TASK {
                let cmd = if i % 3 == 2 {
                    SessionsCommand::DeleteSession { token: token(t * 100 + i - 1) }
                } else {
                    SessionsCommand::CreateSession { token: token(t * 100 + i), user_id: t }
                };
                let seq = store.commit(cmd.clone()).await.expect("commit").seq;
                receipts.push((seq.0, cmd));
            }
            receipts
        }));
    }
    let mut by_seq = std::collections::BTreeMap::new();
    for handle in handles {
        by_seq.extend(handle.await.expect("task"));
    }
    store.close().await.expect("close");
    segment_files::as_if_crashed(&dir);
    let model_before = |seq: u64| {
        let mut model = HashMap::new();
        for cmd in by_seq.range(..seq).map(|(_, c)| c) {
            match cmd {
                SessionsCommand::CreateSession { token, user_id } => {
                    model.insert(token.clone(), *user_id);
                }
                SessionsCommand::DeleteSession { token } => {
                    model.remove(token);
                }
            }
        }
        model
    };

    // The largest batch on disk.
    let segment_path = dir.join(&segment_names(&dir)[0]);
    let records = read_segment(&segment_path).records;
    let mut batches: Vec<Vec<RawRecord>> = vec![Vec::new()];
    for record in records {
        let end = record.batch_end;
        batches.last_mut().expect("batch").push(record);
        if end {
            batches.push(Vec::new());
        }
    }
    let batch = batches.into_iter().max_by_key(Vec::len).expect("batches");
    assert!(batch.len() >= 2, "concurrent commits were grouped into a batch of {}", batch.len());
    let bytes = fs::read(&segment_path).expect("read");

    let scratch = tempfile::tempdir().expect("scratch");
    for record in batch.iter().skip(1) {
        // At the record's start (a clean end), just inside it, in its header, in its payload.
        for cut in [record.offset, record.offset + 1, record.offset + 24, record.end - 1] {
            let copy = scratch.path().join(format!("cut-{cut}"));
            copy_dir(&dir, &copy);
            let segment = copy.join(segment_path.file_name().expect("name"));
            fs::write(&segment, &bytes[..cut]).expect("truncate");
            let store: PostcardStore<Sessions> = Store::open(PostcardSerializer, &copy).await.expect("open");
            let report = store.recovery().clone();
            if cut == record.offset {
                assert!(report.torn_tail.is_none(), "cut {cut}");
            } else {
                let tail = report.torn_tail.expect("torn tail");
                assert_eq!((tail.offset, tail.bytes), (record.offset as u64, (cut - record.offset) as u64));
                assert_eq!(fs::read(&tail.quarantine).expect("quarantine"), &bytes[record.offset..cut]);
            }
            assert_eq!(report.next_seq, Seq(record.seq), "cut {cut}");
            assert_eq!(report.records_replayed, record.seq - 1, "cut {cut}: the batch's intact records are kept");
            assert_eq!(store.query().expect("query").tokens, model_before(record.seq), "cut {cut}");
            let seq = store.commit(SessionsCommand::DeleteSession { token: token(0) }).await.expect("commit").seq;
            assert_eq!(seq, Seq(record.seq));
            store.close().await.expect("close");
            let store: PostcardStore<Sessions> = Store::open(PostcardSerializer, &copy).await.expect("reopen");
            let mut expected = model_before(record.seq);
            expected.remove(&token(0));
            assert_eq!(store.query().expect("query").tokens, expected, "cut {cut}, after a further commit");
        }
    }
}
