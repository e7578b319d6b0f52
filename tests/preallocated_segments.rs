//! Preallocated journal space: under `Durability::Fsync` the writer keeps zeroed space ahead
//! of its records and writes over it, so a running store's newest segment is longer than its
//! records. A copy taken while the store runs (what a crash leaves) must open to exactly the
//! committed state, keep writing in place, and a closed store must hold nothing but its
//! records. Under the other policies, zeroed space found at open is given back first, since
//! they leave several batches unsynced and so must append.

mod segment_files;

use std::path::Path;

use airomem::{Durability, PostcardSerializer, PostcardStore, Store, StoreOptions};
use airomem_workspace::{Sessions, SessionsCommand, token};
use segment_files::{copy_dir, newest_segment, parse_segment};

const PREALLOCATE: u64 = 64 * 1024;

fn options() -> StoreOptions {
    StoreOptions::default().preallocate(PREALLOCATE)
}

async fn open(dir: &Path, options: StoreOptions) -> PostcardStore<Sessions> {
    Store::open_with(PostcardSerializer, dir, options).await.expect("open")
}

async fn create(store: &PostcardStore<Sessions>, range: std::ops::Range<u64>) {
    for n in range {
        store.commit(SessionsCommand::CreateSession { token: token(n), user_id: n }).await.expect("commit");
    }
}

fn sessions(store: &PostcardStore<Sessions>) -> Vec<u64> {
    let mut ids: Vec<u64> = store.query().expect("query").tokens.values().copied().collect();
    ids.sort_unstable();
    ids
}

/// The newest segment: its file length and where its records end.
fn newest(dir: &Path) -> (usize, usize) {
    let bytes = std::fs::read(newest_segment(dir)).expect("read segment");
    let parsed = parse_segment(&bytes);
    (bytes.len(), bytes.len() - parsed.zero_tail)
}

#[tokio::test]
async fn a_running_store_writes_over_prepared_zeros_and_a_closed_one_keeps_only_records() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let store = open(&dir, options()).await;
    create(&store, 0..100).await;
    let (file_len, records_end) = newest(&dir);
    assert_eq!(file_len as u64, PREALLOCATE, "the first chunk of zeros was prepared");
    assert!(records_end < file_len, "records end at {records_end}, inside the prepared space");
    assert_eq!(parse_segment(&std::fs::read(newest_segment(&dir)).expect("read")).records.len(), 100);

    // Past the first chunk, the next one is prepared.
    create(&store, 100..1500).await;
    let (file_len, records_end) = newest(&dir);
    assert!(records_end as u64 > PREALLOCATE, "the records outgrew the first chunk");
    assert_eq!(file_len as u64, 2 * PREALLOCATE, "one more chunk, not one per commit");

    store.close().await.expect("close");
    let (file_len, records_end) = newest(&dir);
    assert_eq!(file_len, records_end, "close gives the zeroed space back");
    let reopened = open(&dir, options()).await;
    assert_eq!(sessions(&reopened), (0..1500).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_copy_taken_while_running_opens_exactly_and_goes_on_writing_in_place() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let store = open(&dir, options()).await;
    create(&store, 0..300).await;
    // Every acknowledged commit is synced: a copy now is what a crash would leave.
    let crashed = tmp.path().join("crashed");
    copy_dir(&dir, &crashed);
    let (file_len, records_end) = newest(&crashed);
    assert!(records_end < file_len, "the copy carries the prepared zeros");

    let recovered = open(&crashed, options()).await;
    assert_eq!(sessions(&recovered), (0..300).collect::<Vec<_>>());
    assert!(recovered.recovery().torn_tail.is_none(), "prepared zeros are not a torn write");
    create(&recovered, 300..400).await;
    let (len_after, records_after) = newest(&crashed);
    assert_eq!(len_after, file_len, "new records went into the prepared space");
    assert!(records_after > records_end);
    drop(recovered);
    let reopened = open(&crashed, options()).await;
    assert_eq!(sessions(&reopened), (0..400).collect::<Vec<_>>());
    store.close().await.expect("close");
}

#[tokio::test]
async fn other_policies_give_prepared_zeros_back_before_appending() {
    for durability in [Durability::OsBuffered, Durability::Periodic(std::time::Duration::from_millis(5))] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("store");
        let store = open(&dir, options()).await;
        create(&store, 0..50).await;
        let crashed = tmp.path().join("crashed");
        copy_dir(&dir, &crashed);
        drop(store);
        let (file_len, records_end) = newest(&crashed);
        assert!(records_end < file_len);

        let appending = open(&crashed, options().durability(durability)).await;
        let (len_at_open, records_at_open) = newest(&crashed);
        assert_eq!((len_at_open, records_at_open), (records_end, records_end), "{durability:?}: trimmed at open");
        create(&appending, 50..80).await;
        appending.close().await.expect("close");
        let (len, records) = newest(&crashed);
        assert_eq!(len, records, "{durability:?}: appended, no zeros");
        let reopened = open(&crashed, options()).await;
        assert_eq!(sessions(&reopened), (0..80).collect::<Vec<_>>(), "{durability:?}");
    }
}

#[tokio::test]
async fn no_preallocation_appends_only() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let store = open(&dir, options().preallocate(0)).await;
    create(&store, 0..50).await;
    let (file_len, records_end) = newest(&dir);
    assert_eq!(file_len, records_end, "nothing prepared");
    store.close().await.expect("close");
}
