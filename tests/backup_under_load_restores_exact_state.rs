//! `Store::backup` while a writer commits at full speed: every backup verifies, restores
//! into a store that opens with exactly the state at the manifest's sequence number (a
//! model built from the same commands), and the live store goes on undisturbed. Snapshots
//! and retention run automatically meanwhile, and segments roll over, so the cut crosses
//! sealed (linked) segments and the one being appended to (copied).
#![cfg(feature = "snapshot")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use airomem::{Durability, PostcardSerializer, PostcardStore, Store, StoreOptions, backup};
use airomem_workspace::Log;

fn options() -> StoreOptions {
    StoreOptions::default()
        .segment_size(16 * 1024)
        .durability(Durability::Fsync)
        .snapshot_every_commands(300)
        .snapshots_retained(2)
}

/// The state after the commands numbered 1..=seq: the writer commits `n - 1` as command `n`.
fn model(seq: u64) -> Vec<u64> {
    (0..seq).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_under_load_restore_exactly_the_state_at_their_seq() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let store: PostcardStore<Log> = Store::open_with(PostcardSerializer, &dir, options()).await.expect("open");
    let stop = Arc::new(AtomicBool::new(false));
    // Several tasks commit, each waiting for its receipt, but the values are handed out in
    // one order under a lock so that command n carries n - 1 whatever the interleaving.
    let next = Arc::new(tokio::sync::Mutex::new(0u64));
    let mut writers = Vec::new();
    for _ in 0..4 {
        let (store, stop, next) = (store.clone(), Arc::clone(&stop), Arc::clone(&next));
        writers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let mut value = next.lock().await;
                let committed = store.commit(*value).await.expect("commit");
                assert_eq!(committed.seq.0, *value + 1, "command n carries n - 1");
                *value += 1;
            }
        }));
    }
    let mut seqs = Vec::new();
    for round in 0..4u64 {
        // Let the writers get ahead before each backup: a wait on a count, not on time.
        while store.stats().commits < 400 * (round + 1) {
            tokio::task::yield_now().await;
        }
        let dest = tmp.path().join(format!("backup-{round}"));
        let report = store.backup(&dest).await.expect("backup");
        assert!(
            report.snapshot.is_some_and(|s| s <= report.seq),
            "a backup starts from a snapshot at or before its cut"
        );
        let manifest = backup::verify(&dest).expect("a finished backup verifies");
        assert_eq!(manifest.seq, report.seq);
        assert_eq!(manifest.files, report.files);
        seqs.push(report);
    }
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.expect("writer");
    }
    let live_last = store.stats().last_seq;
    store.close().await.expect("close");
    assert!(seqs.iter().any(|r| r.linked > 0), "some sealed segment or snapshot was hard-linked");

    for (i, report) in seqs.iter().enumerate() {
        let restored = tmp.path().join(format!("restored-{i}"));
        let manifest = backup::restore(&report.dest, &restored, Some(1)).expect("restore");
        assert_eq!(manifest.seq, report.seq);
        let store: PostcardStore<Log> =
            Store::open_with(PostcardSerializer, &restored, options()).await.expect("the restored store opens");
        assert_eq!(store.query().expect("query").values, model(report.seq.0), "backup {i} at #{}", report.seq.0);
        // The restored store takes commits after the cut, numbered on from it.
        let committed = store.commit(report.seq.0).await.expect("commit on the restored store");
        assert_eq!(committed.seq.0, report.seq.0 + 1);
        store.close().await.expect("close");
        // The backup did not change with the store restored from it.
        backup::verify(&report.dest).expect("the backup still verifies after its restore was written to");
    }
    let live: PostcardStore<Log> = Store::open_with(PostcardSerializer, &dir, options()).await.expect("reopen");
    assert_eq!(live.query().expect("query").values, model(live_last), "the live store lost nothing to the backups");
}
