//! A snapshot's header records where the first journal record after it starts (format
//! version 2): the segment and offset the writer stood at. With small segments, so that some
//! snapshots fall right before a rollover, every recorded position leads to the record
//! after the snapshot: at the offset in the named segment, or, when that segment ended
//! there, at the start of the segment named after the record.
#![cfg(feature = "snapshot")]

use airomem::storage::StdStorage;
use airomem::{PostcardSerializer, PostcardStore, Seq, Store, StoreOptions};
use airomem_journal::frame;
use airomem_journal::segment::{self, SEGMENT_HEADER_LEN};
use airomem_workspace::{Sessions, SessionsCommand, token};

/// A record is about 60 bytes: a segment holds a handful.
const SEGMENT_SIZE: u64 = 400;

/// The sequence number of the record at `offset` of the segment that starts at `first`, if
/// a whole record is there.
fn record_at(dir: &std::path::Path, first: Seq, offset: usize) -> Option<Seq> {
    let bytes = std::fs::read(segment::path(dir, first)).ok()?;
    (offset < bytes.len()).then(|| frame::decode(&bytes, offset).ok().map(|f| f.seq)).flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_recorded_position_leads_to_the_record_after_the_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Keep every snapshot and so every segment after the first: each position is checked
    // once the record after it exists.
    let options = StoreOptions::default().segment_size(SEGMENT_SIZE).snapshots_retained(1000);
    let store: PostcardStore<Sessions> = Store::open_with(PostcardSerializer, dir.path(), options).await.expect("open");
    let mut snapshots = Vec::new();
    let mut rolled_over_after = 0;
    for round in 0..40u64 {
        for n in 0..round % 7 {
            let command = SessionsCommand::CreateSession { token: token(round * 100 + n), user_id: n };
            store.commit(command).await.expect("commit");
        }
        snapshots.push(store.snapshot().await.expect("snapshot").seq);
    }
    store.commit(SessionsCommand::DeleteSession { token: token(0) }).await.expect("the record after the last");
    store.close().await.expect("close");

    let storage = StdStorage::default();
    for seq in snapshots {
        let header = airomem_snapshot::read_header(&storage, dir.path(), seq).expect("header");
        let position = header.next_record.unwrap_or_else(|| panic!("snapshot {seq} records no position"));
        let next = Seq(seq.0 + 1);
        match record_at(dir.path(), position.segment, position.offset as usize) {
            Some(found) => assert_eq!(found, next, "snapshot {seq}: the record at {position:?}"),
            None => {
                // The segment ended there: the next record opened a segment of its own.
                rolled_over_after += 1;
                assert_eq!(
                    record_at(dir.path(), next, SEGMENT_HEADER_LEN),
                    Some(next),
                    "snapshot {seq}: nothing at {position:?}, and no segment starts with record {next}"
                );
            }
        }
    }
    assert!(rolled_over_after > 0, "some snapshot fell right before a rollover");
}
