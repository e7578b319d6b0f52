//! Damage at the end of the journal is cut as a torn write only when a crash could have
//! made it; durable evidence to the contrary makes it `Corrupt` (open fails, nothing is
//! changed):
//!
//! * a record whose checksum verifies but that fails a later check (sequence number, kind,
//!   abort marker payload) was written whole: it is not torn;
//! * a loaded snapshot at or past the damaged record proves its batch was synced;
//! * so does the last sequence number a clean close recorded in `journal.head`.
//!
//! And a torn write right after a whole batch tells which batch was the last one written:
//! if it cannot be an abort marker, it started the next batch, so the batch before it was
//! acknowledged, and a command of it that panics on replay fails the open instead of being
//! aborted.

mod segment_files;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use airomem::{Corruption, Error, JournalError, PostcardSerializer, Seq, State, Store};
use airomem_journal::frame::{self, BatchMark, FRAME_HEADER_LEN, RecordKind};
use segment_files::{crc32c, newest_segment, read_segment, snapshot};
use serde::{Deserialize, Serialize};

/// Values whose command panics from now on. A test adds one after committing it, so that
/// `execute` behaves differently on replay than it did live: a nondeterministic command.
/// Each test uses its own values, so tests running in parallel do not disturb each other.
static PANICS_ON: Mutex<BTreeSet<u64>> = Mutex::new(BTreeSet::new());

fn panics_from_now_on(value: u64) {
    PANICS_ON.lock().unwrap_or_else(PoisonError::into_inner).insert(value);
}

#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq, Eq)]
struct Values(Vec<u64>);

impl State for Values {
    type Command = u64;

    fn execute(&mut self, value: u64) {
        assert!(!PANICS_ON.lock().unwrap_or_else(PoisonError::into_inner).contains(&value), "value {value} panics now");
        self.0.push(value);
    }
}

type ValuesStore = Store<Values, PostcardSerializer>;

/// A store holding `values` (sequence numbers 1, 2, ...), each committed alone, so each is a
/// batch of its own, optionally with a snapshot of them all; closed cleanly.
async fn store_with(values: &[u64], snapshot_at_end: bool) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let store = ValuesStore::open(PostcardSerializer, &dir).await.expect("open");
    for &value in values {
        store.commit(value).await.expect("commit");
    }
    if snapshot_at_end {
        #[cfg(feature = "snapshot")]
        assert_eq!(store.snapshot().await.expect("snapshot").seq, Seq(values.len() as u64));
    }
    store.close().await.expect("close");
    (tmp, dir)
}

/// The commit time of the newest segment's last record.
fn last_nanos(dir: &Path) -> u64 {
    read_segment(&newest_segment(dir)).records.last().expect("records").unix_nanos
}

fn append(path: &Path, bytes: &[u8]) {
    let mut content = fs::read(path).expect("read segment");
    content.extend_from_slice(bytes);
    fs::write(path, content).expect("write segment");
}

/// Sets the kind byte of the record in `record` and fixes its checksum, as a writer that
/// knew that kind would have written it.
fn with_kind_byte(mut record: Vec<u8>, kind: u8) -> Vec<u8> {
    record[24] = kind;
    let covered: Vec<u8> = record[0..4].iter().chain(&record[8..]).copied().collect();
    let crc = crc32c(&covered);
    record[4..8].copy_from_slice(&crc.to_le_bytes());
    record
}

/// Opens `dir`, expecting `Corrupt` at record `seq`, byte `offset` of the newest segment,
/// with every file left exactly as it was.
async fn expect_corrupt(dir: &Path, offset: usize, seq: u64, kind_ok: impl Fn(&Corruption) -> bool) {
    let before = snapshot(dir);
    let newest = newest_segment(dir);
    match ValuesStore::open(PostcardSerializer, dir).await {
        Err(Error::Journal(e)) => match &*e {
            JournalError::Corrupt { file, offset: at, seq: due, kind } => {
                assert_eq!((file, *at, *due), (&newest, offset as u64, Seq(seq)), "where: {e}");
                assert!(kind_ok(kind), "what: {e}");
            }
            other => panic!("expected Corrupt, got {other}"),
        },
        Err(other) => panic!("expected a journal error, got {other}"),
        Ok(store) => panic!(
            "opened with {:?} instead of failing; torn tail cut: {:?}",
            store.query().expect("query").0,
            store.recovery().torn_tail
        ),
    }
    assert_eq!(snapshot(dir), before, "nothing was cut, quarantined or rewritten");
}

/// Appends `record` (which verifies, but is wrong) after the last record and expects
/// `Corrupt` with `kind_ok`.
async fn verified_but_wrong(record: Vec<u8>, kind_ok: impl Fn(&Corruption) -> bool) {
    let (_tmp, dir) = store_with(&[1, 2, 3, 4, 5], false).await;
    let newest = newest_segment(&dir);
    let end = fs::read(&newest).expect("read").len();
    append(&newest, &record);
    expect_corrupt(&dir, end, 6, kind_ok).await;
}

fn record(seq: u64, nanos: u64, kind: RecordKind, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    frame::encode(&mut bytes, Seq(seq), nanos, kind, BatchMark::ALONE, payload);
    bytes
}

#[tokio::test]
async fn a_verified_record_out_of_sequence_is_corrupt_not_torn() {
    let record = record(7, 1, RecordKind::Command, &[6]);
    verified_but_wrong(record, |k| *k == Corruption::SequenceOutOfOrder { found: Seq(7) }).await;
}

#[tokio::test]
async fn a_verified_record_of_unknown_kind_is_corrupt_not_torn() {
    let record = with_kind_byte(record(6, 1, RecordKind::Command, &[6]), 0xc0 | 0x17);
    verified_but_wrong(record, |k| *k == Corruption::UnknownKind(0xd7)).await;
}

#[tokio::test]
async fn a_verified_abort_marker_without_a_target_is_corrupt_not_torn() {
    let record = record(6, 1, RecordKind::Abort, &[5, 0, 0, 0]);
    verified_but_wrong(record, |k| *k == Corruption::BadAbortMarker).await;
}

/// Flips the last payload byte of the newest segment's last record: its checksum fails.
fn damage_last_record(dir: &Path) -> (usize, u64) {
    let newest = newest_segment(dir);
    let last = read_segment(&newest).records.last().expect("records").clone();
    let mut bytes = fs::read(&newest).expect("read");
    bytes[last.end - 1] ^= 0x01;
    fs::write(&newest, bytes).expect("write");
    (last.offset, last.seq)
}

#[cfg(feature = "snapshot")]
#[tokio::test]
async fn damage_covered_by_a_loaded_snapshot_is_corrupt() {
    let (_tmp, dir) = store_with(&[11, 12, 13, 14, 15], true).await;
    // Without the head, only the snapshot shows that record 5 was synced. Without the
    // snapshot's next-record position (a version-1 snapshot), the open cannot pass over it.
    fs::remove_file(dir.join("journal.head")).expect("remove head");
    forget_next_record(&dir.join(format!("{:020}.snapshot", 5)));
    let (offset, seq) = damage_last_record(&dir);
    expect_corrupt(&dir, offset, seq, |k| matches!(k, Corruption::Checksum { .. })).await;
}

/// With the position, the same damage is history the snapshot covers: passed over and
/// reported, never cut as a torn write.
#[cfg(feature = "snapshot")]
#[tokio::test]
async fn damage_covered_by_a_loaded_snapshot_with_its_next_record_is_passed_over_not_cut() {
    let (_tmp, dir) = store_with(&[16, 17, 18, 19, 20], true).await;
    fs::remove_file(dir.join("journal.head")).expect("remove head");
    let (offset, seq) = damage_last_record(&dir);
    let newest = newest_segment(&dir);
    let damaged = fs::read(&newest).expect("read");
    let store = ValuesStore::open(PostcardSerializer, &dir).await.expect("open");
    assert_eq!(store.query().expect("query").0, vec![16, 17, 18, 19, 20]);
    assert!(store.recovery().torn_tail.is_none(), "covered damage is never a torn write");
    let found = store.recovery().damaged_history.clone().expect("reported");
    assert_eq!((found.offset, found.seq), (offset as u64, Seq(seq)));
    store.close().await.expect("close");
    assert_eq!(fs::read(&newest).expect("read"), damaged, "the segment is not cut");
}

/// Zeros the next-record position of a snapshot header and fixes its checksum.
#[cfg(feature = "snapshot")]
fn forget_next_record(snapshot: &Path) {
    let mut bytes = fs::read(snapshot).expect("read snapshot");
    bytes[24..40].fill(0);
    let crc = crc32c(&bytes[..44]);
    bytes[44..48].copy_from_slice(&crc.to_le_bytes());
    fs::write(snapshot, bytes).expect("write snapshot");
}

#[tokio::test]
async fn damage_at_or_before_the_last_record_of_a_clean_close_is_corrupt() {
    let (_tmp, dir) = store_with(&[21, 22, 23, 24, 25], false).await;
    let (offset, seq) = damage_last_record(&dir);
    expect_corrupt(&dir, offset, seq, |k| matches!(k, Corruption::Checksum { .. })).await;
}

#[tokio::test]
async fn a_journal_ending_before_the_last_record_of_a_clean_close_is_corrupt() {
    let (_tmp, dir) = store_with(&[31, 32, 33, 34, 35], false).await;
    let newest = newest_segment(&dir);
    let last = read_segment(&newest).records.last().expect("records").clone();
    // Zeros over the whole last record read like space prepared for a record never written.
    let mut bytes = fs::read(&newest).expect("read");
    bytes[last.offset..].fill(0);
    fs::write(&newest, bytes).expect("write");
    expect_corrupt(&dir, last.offset, last.seq, |_| true).await;
}

/// Opens `dir` after the command with value `panicking` (the last one, seq 5) was made to
/// panic, expecting the open to fail with `ReplayPanicked`: it was acknowledged.
async fn expect_replay_panicked(dir: &Path, panicking: u64) {
    panics_from_now_on(panicking);
    match ValuesStore::open(PostcardSerializer, dir).await {
        Err(Error::ReplayPanicked { seq, .. }) => assert_eq!(seq, Seq(5)),
        Err(other) => panic!("expected ReplayPanicked, got {other}"),
        Ok(store) => panic!(
            "opened with {:?}: the acknowledged command {:?} was aborted silently; torn tail: {:?}",
            store.query().expect("query").0,
            store.recovery().aborted_now,
            store.recovery().torn_tail
        ),
    }
}

/// Opens `dir` expecting the command with value `panicking` (seq 5) to be aborted: the torn
/// write after its batch may be its abort marker, so no caller heard of it.
async fn expect_aborted(dir: &Path, panicking: u64, kept: &[u64], case: &str) {
    panics_from_now_on(panicking);
    let store = match ValuesStore::open(PostcardSerializer, dir).await {
        Ok(store) => store,
        Err(e) => panic!("{case}: open failed: {e}"),
    };
    assert_eq!(store.recovery().aborted_now, vec![Seq(5)], "{case}");
    assert!(store.recovery().torn_tail.is_some(), "{case}: the torn marker was cut");
    assert_eq!(store.query().expect("query").0, kept, "{case}");
}

#[tokio::test]
async fn a_torn_next_batch_leaves_the_batch_before_it_acknowledged() {
    let (_tmp, dir) = store_with(&[41, 42, 43, 44, 45], false).await;
    let newest = newest_segment(&dir);
    // The next batch's first record, longer than an abort marker, with its last byte lost.
    let mut torn = record(6, last_nanos(&dir), RecordKind::Command, &[0x5a; 60]);
    let last = torn.len() - 1;
    torn[last] = 0;
    append(&newest, &torn);
    expect_replay_panicked(&dir, 45).await;
}

#[tokio::test]
async fn a_torn_next_batch_as_short_as_an_abort_marker_is_told_apart_by_its_bytes() {
    let (_tmp, dir) = store_with(&[51, 52, 53, 54, 55], false).await;
    let newest = newest_segment(&dir);
    // A one-command batch of an abort marker's length: 30 of its bytes landed over space
    // the writer had prepared. Its checksum and kind differ from any abort marker's.
    let whole = record(6, last_nanos(&dir), RecordKind::Command, &[0x5a; 8]);
    assert_eq!(whole.len(), FRAME_HEADER_LEN + 8);
    let mut torn = whole[..30].to_vec();
    torn.resize(4096, 0);
    append(&newest, &torn);
    expect_replay_panicked(&dir, 55).await;
}

#[tokio::test]
async fn a_torn_abort_marker_after_its_batch_still_aborts_the_command() {
    for (case, landed, fill) in [("prefix over prepared zeros", 20, 4096), ("prefix then garbage at the end", 20, 0)] {
        let base = 60 + if fill > 0 { 0 } else { 10 };
        let values: Vec<u64> = (base + 1..=base + 5).collect();
        let (_tmp, dir) = store_with(&values, false).await;
        let newest = newest_segment(&dir);
        let marker = record(6, last_nanos(&dir), RecordKind::Abort, &5u64.to_le_bytes());
        let mut torn = marker[..landed].to_vec();
        if fill > 0 {
            torn.resize(fill, 0);
        } else {
            // An append torn short: the rest of its range reads as junk.
            torn.extend((landed..marker.len()).map(|i| (i as u8).wrapping_mul(37) | 1));
        }
        append(&newest, &torn);
        expect_aborted(&dir, base + 5, &values[..4], case).await;
    }
}
