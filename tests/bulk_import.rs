//! `Store::import`: one task's commands committed in order, pipelined, under back-pressure
//! and beside other committers; the first failure stops it and says how far it got.

use std::sync::Arc;

use airomem::{Durability, Error, PostcardSerializer, PostcardStore, Seq, Store, StoreOptions};
use airomem_workspace::sim::SimStorage;
use airomem_workspace::{Append, SeqLog, quiet_deliberate_panics};

fn append(value: u64) -> Append {
    Append { value, pad: vec![4; (value % 17) as usize], panic: false }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_under_back_pressure_commits_everything_in_order() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // A queue of a few commands at most: the import waits on back-pressure all the time.
    let options = StoreOptions::default().max_pending_bytes(600).segment_size(64 * 1024);
    let store: PostcardStore<SeqLog> =
        Store::open_with(PostcardSerializer, tmp.path().join("store"), options).await.expect("open");
    let mut receipts = Vec::new();
    let imported = store
        .import_with_receipts((0..20_000).map(append), |index, receipt| receipts.push((index, receipt.seq)))
        .await
        .expect("import");
    assert_eq!((imported.commands, imported.first, imported.last), (20_000, Some(Seq(1)), Some(Seq(20_000))));
    let expected: Vec<(u64, Seq)> = (0..20_000).map(|i| (i, Seq(i + 1))).collect();
    assert_eq!(receipts, expected, "receipts come in input order, with consecutive sequence numbers");
    let entries = store.query().expect("query").entries.clone();
    assert_eq!(entries, (0..20_000).map(|i| (i + 1, i)).collect::<Vec<_>>());
    store.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_beside_other_committers_keeps_its_own_order() {
    import_beside_other_committers(Durability::Fsync).await;
}

/// Under `OsBuffered` the writer keeps a batch open for an import's next command: commits
/// queued meanwhile must still be taken, in their order, and none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsynced_import_beside_other_committers_keeps_its_own_order() {
    import_beside_other_committers(Durability::OsBuffered).await;
}

async fn import_beside_other_committers(durability: Durability) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let options = StoreOptions::default().durability(durability).max_pending_bytes(4096);
    let store: PostcardStore<SeqLog> =
        Store::open_with(PostcardSerializer, tmp.path().join("store"), options).await.expect("open");
    let mut others = Vec::new();
    for writer in 1..=3u64 {
        let store = store.clone();
        others.push(tokio::spawn(async move {
            for i in 0..300 {
                store.commit(append(writer * 1_000_000 + i)).await.expect("commit");
            }
        }));
    }
    let mut seqs = Vec::new();
    store.import_with_receipts((0..3_000).map(append), |_, r| seqs.push(r.seq)).await.expect("import");
    for task in others {
        task.await.expect("writer");
    }
    assert_eq!(seqs.len(), 3_000, "a receipt for every imported command");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "the import's sequence numbers increase");
    let entries = store.query().expect("query").entries.clone();
    let mine: Vec<u64> = entries.iter().map(|&(_, v)| v).filter(|&v| v < 1_000_000).collect();
    assert_eq!(mine, (0..3_000).collect::<Vec<_>>(), "the import's commands are applied in input order");
    for writer in 1..=3u64 {
        let theirs: Vec<u64> = entries.iter().map(|&(_, v)| v).filter(|&v| v / 1_000_000 == writer).collect();
        assert_eq!(theirs, (0..300).map(|i| writer * 1_000_000 + i).collect::<Vec<_>>(), "writer {writer}");
    }
    assert_eq!(entries.len(), 3_000 + 900);
    store.close().await.expect("close");
    let reopened: PostcardStore<SeqLog> =
        Store::open(PostcardSerializer, tmp.path().join("store")).await.expect("reopen");
    assert_eq!(reopened.query().expect("query").entries, entries, "the journal holds what was applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_command_stops_the_import_and_says_where() {
    quiet_deliberate_panics();
    let tmp = tempfile::tempdir().expect("tempdir");
    let store: PostcardStore<SeqLog> = Store::open(PostcardSerializer, tmp.path().join("store")).await.expect("open");
    let commands = (0..5_000u64).map(|i| Append { value: i, pad: Vec::new(), panic: i == 1_000 });
    match store.import(commands).await {
        Err(Error::ImportStopped { failed_at, committed, source, .. }) => {
            assert_eq!(failed_at, 1_000);
            assert!(matches!(*source, Error::CommandPanicked { seq: Seq(1001), .. }), "{source:?}");
            // Everything before it, and whatever was already handed over after it.
            let entries = store.query().expect("query").entries.clone();
            assert_eq!(entries.len() as u64, committed);
            assert!((1_000..5_000).contains(&committed), "{committed}");
            let values: Vec<u64> = entries.iter().map(|&(_, v)| v).collect();
            let expected: Vec<u64> = (0..=committed).filter(|&v| v != 1_000).collect();
            assert_eq!(values, expected);
        }
        other => panic!("expected ImportStopped, got {other:?}"),
    }
}

/// The disk fails under the import: the store is poisoned, the import stops, and what it
/// says was committed is exactly what the store holds, then and after a reopen.
#[test]
fn a_poisoned_store_stops_the_import_and_reports_how_far_it_got() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    let sim = SimStorage::new();
    let options = || StoreOptions::default().storage(Arc::new(sim.clone())).segment_size(4096);
    runtime.block_on(async {
        let store: PostcardStore<SeqLog> =
            Store::open_with(PostcardSerializer, "/sim/store", options()).await.expect("open");
        sim.fail_at(sim.ops() + 40, std::io::ErrorKind::Other);
        let (failed_at, committed, last) = match store.import((0..10_000).map(append)).await {
            Err(Error::ImportStopped { failed_at, committed, last, source }) => {
                assert!(matches!(*source, Error::WriteFailed(_) | Error::Poisoned { .. }), "{source:?}");
                (failed_at, committed, last)
            }
            other => panic!("expected ImportStopped, got {other:?}"),
        };
        assert_eq!(failed_at, committed, "everything before the failure was committed, nothing after it");
        assert_eq!(last, (committed > 0).then_some(Seq(committed)));
        assert_eq!(store.query().expect("query").entries.len() as u64, committed);
        assert!(matches!(store.commit(append(1)).await, Err(Error::Poisoned { .. })));
        drop(store);
        sim.clear_faults();
        let store: PostcardStore<SeqLog> =
            Store::open_with(PostcardSerializer, "/sim/store", options()).await.expect("reopen");
        let entries = store.query().expect("query").entries.clone();
        assert!(entries.len() as u64 >= committed, "every committed command is there after a reopen");
        assert_eq!(entries[..committed as usize], (0..committed).map(|i| (i + 1, i)).collect::<Vec<_>>());
    });
}
