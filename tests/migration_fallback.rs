//! The snapshot that seals a migration is one file like any other: if it is damaged, the
//! state is rebuilt from what retention kept behind it (an older schema-1 snapshot and the
//! journal after it, or the whole journal) through the schema chain, to the same state.
#![cfg(feature = "snapshot")]

use std::fs;
use std::path::Path;

use airomem::{Migration, PostcardSerializer, Seq, Store, StoreOptions};
use airomem_workspace::migration::{Tagged, TaggedLog};
use airomem_workspace::{Append, SeqLog};

fn append(value: u64) -> Append {
    Append { value, pad: vec![5; (value % 30) as usize], panic: false }
}

fn options() -> StoreOptions {
    StoreOptions::default().segment_size(700)
}

/// Flips a byte in the middle of a snapshot's compressed body.
fn damage(path: &Path) {
    let mut bytes = fs::read(path).expect("read snapshot");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5A;
    fs::write(path, bytes).expect("write snapshot");
}

/// Writes 40 schema-1 commands with snapshots after those `snapshots_at` name, migrates the
/// store to schema 2 and commits two more; then damages the snapshot that sealed the
/// migration and checks the reopened state.
async fn falls_back(snapshots_at: &[u64]) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let store: Store<SeqLog, PostcardSerializer> =
        Store::open_with(PostcardSerializer, &dir, options()).await.expect("open schema 1");
    let mut entries = Vec::new();
    for value in 1..=40 {
        let receipt = store.commit(append(value)).await.expect("commit");
        entries.push((receipt.seq.0, value));
        if snapshots_at.contains(&value) {
            store.snapshot().await.expect("snapshot");
        }
    }
    store.close().await.expect("close");

    let store: Store<TaggedLog, PostcardSerializer> =
        Store::open_with(PostcardSerializer, &dir, options()).await.expect("migrate");
    let sealed = store.recovery().sealed.expect("the migration is sealed");
    assert_eq!(sealed, Seq(40));
    let mut expected = TaggedLog::from(SeqLog { entries });
    for value in [41, 42] {
        let receipt = store.commit(append(value)).await.expect("commit under schema 2");
        expected.entries.push(Tagged { seq: receipt.seq.0, value, schema: 2 });
    }
    assert_eq!(*store.query().expect("query"), expected);
    store.close().await.expect("close");

    let seal = airomem_snapshot::path(&dir, sealed);
    let header = airomem_snapshot::read_header(&airomem::storage::StdStorage::default(), &dir, sealed);
    assert_eq!(header.expect("sealing snapshot header").schema_version, 2);
    damage(&seal);

    let store: Store<TaggedLog, PostcardSerializer> =
        Store::open_with(PostcardSerializer, &dir, options()).await.expect("reopen after damage");
    let report = store.recovery();
    assert_eq!(report.snapshots_skipped.len(), 1, "{:?}", report.snapshots_skipped);
    assert!(report.snapshots_skipped[0].contains(&seal.display().to_string()));
    assert_eq!(report.migrations, vec![Migration { from: 1, to: 2, after: Seq(40) }]);
    assert_eq!(report.snapshot, snapshots_at.iter().copied().filter(|&s| s < 40).max().map(Seq));
    assert_eq!(*store.query().expect("query"), expected);
    store.close().await.expect("close");
}

#[tokio::test]
async fn a_damaged_sealing_snapshot_falls_back_to_a_schema_1_snapshot_and_the_journal() {
    falls_back(&[10, 25]).await;
}

/// The newest schema-1 snapshot sits at the last record, where the seal goes: the seal
/// replaces it, and the fallback is the older one.
#[tokio::test]
async fn a_seal_that_replaced_a_schema_1_snapshot_falls_back_to_the_one_before() {
    falls_back(&[20, 40]).await;
}

/// The only schema-1 snapshot was replaced by the seal: retention never pruned the journal
/// behind a single snapshot, so the whole journal is the fallback.
#[tokio::test]
async fn a_seal_that_replaced_the_only_snapshot_falls_back_to_the_whole_journal() {
    falls_back(&[40]).await;
}

/// No snapshot at all before the migration: the whole journal again.
#[tokio::test]
async fn a_damaged_seal_of_a_journal_only_store_falls_back_to_the_whole_journal() {
    falls_back(&[]).await;
}
