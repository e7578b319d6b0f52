//! A crash can leave a schema-1 journal whose last batch holds a command that panicked and
//! whose abort marker was never written. The migrating open aborts it, as any open does,
//! and its marker must land where later replays look for it: in the command's own
//! segment, before the open starts the schema-2 one. Later opens that replay that history
//! again (no sealing snapshot, or a damaged one) must skip it too.
#![cfg(feature = "snapshot")]

use std::sync::Arc;

use airomem::storage::Storage;
use airomem::{PostcardSerializer, Seq, Store, StoreOptions};
use airomem_workspace::migration::{Tagged, TaggedLog};
use airomem_workspace::sim::SimStorage;
use airomem_workspace::{Append, payload, quiet_deliberate_panics, seq_log_journal};

const DIR: &str = "/sim/store";

/// A schema-1 disk holding one synced batch of `commands` (value, panics) from seq 1, with
/// no abort marker: what a crash right after the batch's sync leaves.
fn schema_1_disk(commands: &[(u64, bool)]) -> SimStorage {
    let sim = SimStorage::new();
    let mut journal = seq_log_journal(Arc::new(sim.clone()), DIR.as_ref(), 0);
    journal.begin_batch().expect("batch");
    for &(value, panic) in commands {
        journal.push(&payload(&Append { value, pad: Vec::new(), panic })).expect("push");
    }
    journal.write_batch().expect("write");
    journal.sync().expect("sync");
    sim.power_cut();
    sim.crash(0)
}

async fn open(disk: &SimStorage) -> Store<TaggedLog, PostcardSerializer> {
    let options = StoreOptions::default().storage(Arc::new(disk.clone()));
    match Store::open_with(PostcardSerializer, DIR, options).await {
        Ok(store) => store,
        Err(e) => panic!("open under schema 2 failed: {e}"),
    }
}

#[tokio::test]
async fn a_command_aborted_by_a_migrating_open_stays_aborted_when_its_history_is_replayed_again() {
    quiet_deliberate_panics();
    let disk = schema_1_disk(&[(1, false), (2, true), (3, false)]);
    let expected =
        TaggedLog { entries: vec![Tagged { seq: 1, value: 1, schema: 1 }, Tagged { seq: 3, value: 3, schema: 1 }] };

    let store = open(&disk).await;
    assert_eq!(store.recovery().aborted_now, vec![Seq(2)]);
    assert_eq!(*store.query().expect("query"), expected);
    let sealed = store.recovery().sealed.expect("sealed");
    store.close().await.expect("close");

    // Without the sealing snapshot, the next open replays the schema-1 segment again.
    disk.remove(&airomem_snapshot::path(DIR.as_ref(), sealed)).expect("remove the seal");
    let store = open(&disk).await;
    assert!(store.recovery().aborted_now.is_empty(), "aborted once, by the marker the first open wrote");
    assert_eq!(*store.query().expect("query"), expected);
    store.close().await.expect("close");
}
