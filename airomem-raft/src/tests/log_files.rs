//! The Raft log on the real file system: what a reopen gives back, and how damage is judged.

use std::path::Path;
use std::sync::Arc;

use airomem::storage::StdStorage;
use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::{RaftLogReader, Vote};

use super::{blank, membership, normal};
use crate::Error;
use crate::log::{LogOptions, LogStore};
use crate::types::{Entry, log_id};

fn open(dir: &Path, max_segment_bytes: u64) -> Result<LogStore, Error> {
    LogStore::open(Arc::new(StdStorage::default()), dir, LogOptions { max_segment_bytes })
}

async fn all(log: &mut LogStore) -> Vec<Entry> {
    log.try_get_log_entries(..).await.expect("reads from memory")
}

fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("lists")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "raftlog"))
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn reopen_gives_back_appends_truncation_purge_vote_and_commit_point() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut expected = Vec::new();
    {
        let mut log = open(dir.path(), 300).expect("opens");
        let first: Vec<Entry> = (1..=6).map(|i| normal(1, i, i * 10, i * 1000)).collect();
        log.blocking_append(first.clone()).await.expect("appends");
        log.blocking_append([membership(1, 7, &[1, 2, 3]), blank(1, 8)]).await.expect("appends");
        log.truncate(log_id(1, 1, 7)).await.expect("truncates");
        let second = vec![blank(2, 7), normal(2, 8, 80, 9000), normal(2, 9, 90, 9500)];
        log.blocking_append(second.clone()).await.expect("appends");
        log.purge(log_id(1, 1, 2)).await.expect("purges");
        log.save_vote(&Vote::new(2, 3)).await.expect("votes");
        log.save_committed(Some(log_id(2, 1, 8))).await.expect("records the commit point");
        expected.extend(first.into_iter().skip(2));
        expected.extend(second);
        assert_eq!(all(&mut log).await, expected);
    }
    assert!(segments(dir.path()).len() > 1, "the test crosses segments");
    let mut log = open(dir.path(), 300).expect("reopens");
    assert_eq!(all(&mut log).await, expected);
    let state = log.get_log_state().await.expect("state");
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 2)));
    assert_eq!(state.last_log_id, Some(log_id(2, 1, 9)));
    assert_eq!(log.read_vote().await.expect("vote"), Some(Vote::new(2, 3)));
    assert_eq!(log.read_committed().await.expect("committed"), Some(log_id(2, 1, 8)));
}

#[tokio::test]
async fn second_open_of_the_same_directory_is_refused_until_the_first_is_dropped() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let log = open(dir.path(), 1 << 20).expect("opens");
    assert!(matches!(open(dir.path(), 1 << 20), Err(Error::Io { op: "lock", .. })));
    drop(log);
    open(dir.path(), 1 << 20).expect("reopens once the first handle is gone");
}

/// Bytes of the segment header and the frames of `entries`.
fn written_len(entries: &[Entry]) -> u64 {
    let mut frames = Vec::new();
    for entry in entries {
        crate::log::encode_for_test(entry, &mut frames);
    }
    crate::log::segment::HEADER_LEN as u64 + frames.len() as u64
}

#[tokio::test]
async fn torn_tail_of_the_newest_segment_is_cut() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let entries: Vec<Entry> = (1..=4).map(|i| normal(1, i, i, i)).collect();
    {
        let mut log = open(dir.path(), 1 << 20).expect("opens");
        log.blocking_append(entries.clone()).await.expect("appends");
    }
    let file = segments(dir.path()).pop().expect("a segment");
    let intact = written_len(&entries);
    // Half a frame where the next write goes, over the prepared zeros, as a crash during
    // that write leaves it.
    let mut next = Vec::new();
    crate::log::encode_for_test(&normal(1, 5, 5, 5), &mut next);
    let mut bytes = std::fs::read(&file).expect("reads");
    assert!(bytes.len() as u64 > intact + next.len() as u64, "space is prepared past the entries");
    bytes[intact as usize..intact as usize + next.len() / 2].copy_from_slice(&next[..next.len() / 2]);
    std::fs::write(&file, &bytes).expect("writes");

    let mut log = open(dir.path(), 1 << 20).expect("reopens over a torn tail");
    assert_eq!(all(&mut log).await, entries);
    assert_eq!(std::fs::metadata(&file).expect("metadata").len(), intact, "the torn bytes are cut");
    log.blocking_append([normal(1, 5, 5, 5)]).await.expect("appends after the cut");
    drop(log);
    let mut log = open(dir.path(), 1 << 20).expect("reopens");
    assert_eq!(all(&mut log).await.len(), 5);
}

/// Appends within the space prepared past the entries change no file size (so their
/// `fdatasync` need not write the inode); a reopen reads those zeros as free space, not as a
/// torn tail, and appends go on over them.
#[tokio::test]
async fn appends_fill_prepared_space_which_a_reopen_keeps() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut expected: Vec<Entry> = Vec::new();
    let size = |dir: &Path| std::fs::metadata(segments(dir).pop().expect("a segment")).expect("metadata").len();
    let prepared;
    {
        let mut log = open(dir.path(), 1 << 30).expect("opens");
        log.blocking_append([normal(1, 1, 1, 1)]).await.expect("appends");
        expected.push(normal(1, 1, 1, 1));
        prepared = size(dir.path());
        assert!(prepared > written_len(&expected), "space is prepared past the entries");
        for i in 2..=50 {
            log.blocking_append([normal(1, i, i, i)]).await.expect("appends");
            expected.push(normal(1, i, i, i));
        }
        assert_eq!(size(dir.path()), prepared, "the appends stayed within the prepared space");
    }
    for round in 0..2 {
        let mut log = open(dir.path(), 1 << 30).expect("reopens");
        assert_eq!(all(&mut log).await, expected, "round {round}");
        // A torn tail would have been cut, prepared space and all.
        assert_eq!(size(dir.path()), prepared, "round {round}: a reopen keeps the prepared space");
        let next = expected.len() as u64 + 1;
        log.blocking_append([normal(1, next, next, next)]).await.expect("appends over the zeros");
        expected.push(normal(1, next, next, next));
    }
}

/// A segment is trimmed to its entries before a newer one is created, so zeros past the
/// entries of an older segment are damage, not prepared space. (Prepared space never passes
/// the segment size, so a segment full enough to roll over has some left only when the log
/// was written with larger segments than it is reopened with.)
#[tokio::test]
async fn rollover_trims_the_prepared_space_and_zeros_in_an_older_segment_are_corruption() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut expected: Vec<Entry> = Vec::new();
    {
        let mut log = open(dir.path(), 1 << 20).expect("opens");
        for i in 1..=4 {
            log.blocking_append([normal(1, i, i, i)]).await.expect("appends");
            expected.push(normal(1, i, i, i));
        }
        assert!(
            std::fs::metadata(&segments(dir.path())[0]).expect("metadata").len() > written_len(&expected),
            "space is prepared past the entries"
        );
    }
    {
        let mut log = open(dir.path(), 200).expect("reopens with smaller segments");
        for i in 5..=6 {
            log.blocking_append([normal(1, i, i, i)]).await.expect("appends");
            expected.push(normal(1, i, i, i));
        }
    }
    let files = segments(dir.path());
    assert!(files.len() > 1, "the test crosses segments");
    for older in &files[..files.len() - 1] {
        let bytes = std::fs::read(older).expect("reads");
        assert_ne!(bytes.last(), Some(&0), "{}: trimmed to its entries", older.display());
    }
    let first = std::fs::metadata(&files[0]).expect("metadata").len();
    assert_eq!(first, written_len(&expected[..4]), "the first segment holds its four entries and nothing more");
    let mut log = open(dir.path(), 200).expect("reopens");
    assert_eq!(all(&mut log).await, expected);
    drop(log);
    let older = &files[0];
    let mut bytes = std::fs::read(older).expect("reads");
    let len = bytes.len();
    bytes.resize(len + 4096, 0);
    std::fs::write(older, &bytes).expect("writes");
    match open(dir.path(), 200) {
        Err(Error::Corrupt { offset, .. }) => assert_eq!(offset, len as u64),
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[tokio::test]
async fn damage_before_a_later_durable_write_or_in_an_older_segment_is_corruption() {
    for older_segment in [false, true] {
        let dir = tempfile::tempdir().expect("a temporary directory");
        {
            let mut log = open(dir.path(), if older_segment { 200 } else { 1 << 20 }).expect("opens");
            for i in 1..=6 {
                log.blocking_append([normal(1, i, i, i)]).await.expect("appends");
            }
        }
        let files = segments(dir.path());
        assert_eq!(files.len() > 1, older_segment);
        let file = &files[0];
        let mut bytes = std::fs::read(file).expect("reads");
        // Inside the first entry's payload (header 32 bytes, frame header 48).
        bytes[32 + 48] ^= 0xff;
        std::fs::write(file, &bytes).expect("writes");
        let before = std::fs::read(file).expect("reads");
        match open(dir.path(), 1 << 20) {
            Err(Error::Corrupt { offset, .. }) => assert_eq!(offset, 32),
            other => panic!("expected corruption, got {other:?}"),
        }
        assert_eq!(std::fs::read(file).expect("reads"), before, "a refused open changes nothing");
    }
}

#[tokio::test]
async fn appends_that_leave_a_hole_are_refused() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut log = open(dir.path(), 1 << 20).expect("opens");
    log.blocking_append([blank(1, 1), blank(1, 2)]).await.expect("appends");
    assert!(log.blocking_append([blank(1, 4)]).await.is_err());
    assert_eq!(all(&mut log).await.len(), 2);
}
