//! One flipped byte in journal history that the newest valid snapshot already covers costs
//! only the fallback, never the store: the open skips what the snapshot covers (through the
//! position of the next record the snapshot's header holds), serves exactly the state at
//! the end of the journal, reports the lost fallback, keeps a copy of the damaged segment in
//! `damaged/` and takes a fresh snapshot. Damage in what the open must replay is still
//! refused.
#![cfg(feature = "snapshot")]

mod segment_files;

use std::fs;
use std::path::Path;

use airomem::{Error, JournalError, PostcardSerializer, PostcardStore, Seq, State, Store, StoreOptions};
use airomem_workspace::Log;
use segment_files::{read_segment, segment_names};

/// A closed store of `total` commands (values 1..=total) with one snapshot after `at`.
async fn store(dir: &Path, options: StoreOptions, total: u64, at: u64) -> Log {
    let store: PostcardStore<Log> = Store::open_with(PostcardSerializer, dir, options).await.expect("open");
    let mut model = Log::default();
    for value in 1..=total {
        store.commit(value).await.expect("commit");
        model.execute(value);
        if value == at {
            assert_eq!(store.snapshot().await.expect("snapshot").seq, Seq(at));
        }
    }
    store.close().await.expect("close");
    model
}

/// Flips a byte of record `seq`'s payload; returns the segment's name.
fn flip_record(dir: &Path, seq: u64) -> String {
    for name in segment_names(dir) {
        let path = dir.join(&name);
        if let Some(record) = read_segment(&path).records.into_iter().find(|r| r.seq == seq) {
            let mut bytes = fs::read(&path).expect("read");
            bytes[record.end - 1] ^= 0x40;
            fs::write(&path, bytes).expect("write");
            return name;
        }
    }
    panic!("no record #{seq}");
}

fn options() -> StoreOptions {
    StoreOptions::default()
}

#[tokio::test]
async fn damage_in_a_segment_the_snapshot_spans_opens_with_the_whole_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = store(dir.path(), options(), 450, 400).await;
    assert_eq!(segment_names(dir.path()).len(), 1, "one segment spans the snapshot");
    let damaged = flip_record(dir.path(), 127);

    let store: PostcardStore<Log> = Store::open_with(PostcardSerializer, dir.path(), options())
        .await
        .expect("the snapshot covers the damage and every record after it is intact");
    assert_eq!(*store.query().expect("query"), model);
    let report = store.recovery().damaged_history.clone().expect("the lost fallback is reported");
    assert_eq!(report.seq, Seq(127));
    assert_eq!(report.segment, dir.path().join(&damaged));
    let kept = report.kept.clone().expect("a copy is kept");
    assert_eq!(kept, dir.path().join("damaged").join(&damaged));
    assert_eq!(fs::read(&kept).expect("kept copy"), fs::read(dir.path().join(&damaged)).expect("segment"));
    assert_eq!(store.stats().damaged_history, Some(Seq(127)));
    let fresh = report.fresh_snapshot.expect("a fresh snapshot");
    assert_eq!(fresh, Seq(450));
    assert_eq!(store.stats().snapshot_seq, 450);

    // The store goes on: commits, and a reopen from the fresh snapshot.
    store.commit(451).await.expect("commit after the open");
    store.close().await.expect("close");
    let store: PostcardStore<Log> = Store::open_with(PostcardSerializer, dir.path(), options()).await.expect("reopen");
    let mut expected = model.clone();
    expected.execute(451);
    assert_eq!(*store.query().expect("query"), expected);
    store.close().await.expect("close");
    assert!(kept.exists(), "the evidence stays");
    let survey = airomem::inspect::survey(dir.path(), &mut |_| {}).expect("survey");
    assert_eq!(survey.damaged.iter().map(|f| f.path.clone()).collect::<Vec<_>>(), vec![kept.clone()]);
    assert!(survey.other.is_empty(), "{:?}", survey.other);
    let found = airomem::inspect::verify(dir.path(), &mut |_| {}).expect("verify");
    assert!(found.problems.iter().all(|p| !p.blocks_open), "{:#?}", found.problems);
}

#[tokio::test]
async fn damage_in_a_segment_wholly_before_the_snapshot_opens_with_the_whole_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = store(dir.path(), options().segment_size(1024), 450, 400).await;
    let segments = segment_names(dir.path());
    assert!(segments.len() > 3, "several segments: {segments:?}");
    flip_record(dir.path(), 20);

    let store: PostcardStore<Log> = Store::open_with(PostcardSerializer, dir.path(), options().segment_size(1024))
        .await
        .expect("the damaged segment is wholly covered by the snapshot");
    assert_eq!(*store.query().expect("query"), model);
    store.close().await.expect("close");
}

#[tokio::test]
async fn damage_after_the_snapshot_is_still_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    store(dir.path(), options(), 450, 400).await;
    flip_record(dir.path(), 420);
    let before = segment_files::snapshot(dir.path());
    let refused = Store::<Log, PostcardSerializer>::open_with(PostcardSerializer, dir.path(), options()).await;
    match refused {
        Err(Error::Journal(e)) => {
            assert!(matches!(*e, JournalError::Corrupt { seq: Seq(420), .. }), "{e}");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("opened over damage it must replay"),
    }
    assert_eq!(segment_files::snapshot(dir.path()), before, "a refused open changes nothing");
    assert!(!dir.path().join("damaged").exists());
}

#[tokio::test]
async fn without_a_next_record_position_damage_in_the_spanning_segment_is_refused() {
    // A snapshot without the position (as format version 1 and `tool::import` write) gives
    // the open no safe place to resume: today's refusal stands.
    let dir = tempfile::tempdir().expect("tempdir");
    store(dir.path(), options(), 450, 400).await;
    let snapshot = dir.path().join(format!("{:020}.snapshot", 400));
    let mut bytes = fs::read(&snapshot).expect("snapshot");
    bytes[24..40].fill(0);
    let crc = segment_files::crc32c(&bytes[..44]);
    bytes[44..48].copy_from_slice(&crc.to_le_bytes());
    fs::write(&snapshot, bytes).expect("write");
    flip_record(dir.path(), 127);
    let refused = Store::<Log, PostcardSerializer>::open_with(PostcardSerializer, dir.path(), options()).await;
    assert!(matches!(&refused, Err(Error::Journal(e)) if matches!(**e, JournalError::Corrupt { seq: Seq(127), .. })));
}

/// `verify` reports one damage once, and says whether it blocks an open.
#[tokio::test]
async fn verify_reports_one_damage_once_and_whether_it_blocks_an_open() {
    use airomem::inspect::verify;

    // Damage mid-journal in an older segment, no snapshot: one problem, blocking.
    let dir = tempfile::tempdir().expect("tempdir");
    store(dir.path(), options().segment_size(1024), 200, 0).await;
    let damaged = flip_record(dir.path(), 20);
    let found = verify(dir.path(), &mut |_| {}).expect("verify");
    assert_eq!(found.problems.len(), 1, "the knock-on is not a second damage: {:#?}", found.problems);
    assert_eq!(found.problems[0].file, dir.path().join(&damaged));
    assert_eq!(found.problems[0].seq, Some(Seq(20)));
    assert!(found.problems[0].blocks_open);

    // Damage under the snapshot, in a segment wholly before it: history only.
    let dir = tempfile::tempdir().expect("tempdir");
    store(dir.path(), options().segment_size(1024), 450, 400).await;
    flip_record(dir.path(), 20);
    let found = verify(dir.path(), &mut |_| {}).expect("verify");
    assert_eq!(found.problems.len(), 1, "{:#?}", found.problems);
    assert!(!found.problems[0].blocks_open, "{}", found.problems[0]);

    // Damage under the snapshot in the segment that spans it: history only.
    let dir = tempfile::tempdir().expect("tempdir");
    store(dir.path(), options(), 450, 400).await;
    flip_record(dir.path(), 127);
    let found = verify(dir.path(), &mut |_| {}).expect("verify");
    assert_eq!(found.problems.len(), 1, "{:#?}", found.problems);
    assert_eq!(found.problems[0].seq, Some(Seq(127)));
    assert!(!found.problems[0].blocks_open, "{}", found.problems[0]);
}

/// A copy into `damaged/` that a crash interrupted leaves a temporary file; the next open
/// starts the copy afresh instead of giving up on the evidence.
#[tokio::test]
async fn a_leftover_temporary_copy_does_not_stop_the_evidence_being_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    store(dir.path(), options(), 450, 400).await;
    let damaged = flip_record(dir.path(), 127);
    fs::create_dir(dir.path().join("damaged")).expect("mkdir");
    fs::write(dir.path().join("damaged").join(format!("{damaged}.tmp")), b"half a copy").expect("leftover");
    let store: PostcardStore<Log> = Store::open_with(PostcardSerializer, dir.path(), options()).await.expect("open");
    let kept = store.recovery().damaged_history.clone().and_then(|d| d.kept).expect("kept");
    store.close().await.expect("close");
    let (copy, segment) = (fs::read(&kept).expect("copy"), fs::read(dir.path().join(&damaged)).expect("segment"));
    let data = copy.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    assert!(segment.starts_with(&copy[..data]), "the copy is of the damaged segment");
    assert!(!dir.path().join("damaged").join(format!("{damaged}.tmp")).exists());
}
