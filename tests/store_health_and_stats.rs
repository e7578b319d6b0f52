//! What a store reports about itself when things go wrong, and what it costs when nothing
//! happens: a writer thread that panics, a snapshot that is ahead of its journal, automatic
//! snapshots that keep failing, the only snapshot damaged, and `stats()` right after a reopen.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use airomem::storage::StdStorage;
use airomem::{Error, PostcardSerializer, PostcardStore, Store, StoreOptions};
use airomem_workspace::Log;
use airomem_workspace::hooked::{Hooked, PanicOnWrite};
use serde::{Deserialize, Serialize};

type LogStore = PostcardStore<Log>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_on_the_writer_thread_marks_the_store_broken_for_reads_and_commits() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let switch = Arc::new(PanicOnWrite::default());
    let options = StoreOptions::default().storage(Arc::new(Hooked::new(Arc::clone(&switch))));
    let store: LogStore = Store::open_with(PostcardSerializer, &dir, options).await.expect("open");
    for value in 0..10 {
        store.commit(value).await.expect("commit");
    }
    switch.arm();
    match store.commit(10).await {
        // The first callers may hear of it while the thread still unwinds, before its message
        // is known.
        Err(Error::WriterPanicked { message }) => {
            assert!(message.contains("storage bug") || message.contains("writer thread panicked"), "{message}")
        }
        other => panic!("the commit that met the panic got {other:?}"),
    }
    assert!(matches!(store.commit(11).await, Err(Error::WriterPanicked { .. })), "later commits");
    assert!(matches!(store.query(), Err(Error::WriterPanicked { .. })), "reads");
    drop(store);

    let store: LogStore = Store::open(PostcardSerializer, &dir).await.expect("reopen after the writer panicked");
    let values = store.query().expect("query").values.clone();
    assert_eq!(&values[..10], &(0..10).collect::<Vec<_>>()[..], "every acknowledged command");
    assert!(values.len() <= 11, "nothing but the unacknowledged command may follow: {values:?}");
}

/// The journal is cut back behind a snapshot (a restore of an older journal backup): the
/// error names the snapshot, the last record the journal holds and its newest segment.
#[cfg(feature = "snapshot")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_behind_its_snapshot_is_named_as_such() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let store: LogStore = Store::open(PostcardSerializer, &dir).await.expect("open");
    for value in 0..20 {
        store.commit(value).await.expect("commit");
    }
    let segment = dir.join(format!("{:020}.journal", 1));
    let journal_at_10 = {
        // The journal as a backup taken after command 10 would hold it.
        let bytes = std::fs::read(&segment).expect("read the segment");
        let scan = airomem_journal::scan::SegmentScan::read(&segment, &bytes).expect("scan");
        let end = scan.frames(&bytes).nth(9).map(|f| f.payload.end).expect("ten records");
        bytes[..end].to_vec()
    };
    let snapshot = store.snapshot().await.expect("snapshot");
    store.close().await.expect("close");
    std::fs::write(&segment, journal_at_10).expect("restore the older journal");

    match Store::<Log, PostcardSerializer>::open(PostcardSerializer, &dir).await {
        Err(e @ Error::JournalBehindSnapshot { .. }) => {
            let Error::JournalBehindSnapshot { snapshot: file, snapshot_seq, journal_ends, newest_segment } = &e else {
                unreachable!()
            };
            assert_eq!(file, &snapshot.path);
            assert_eq!((snapshot_seq.get(), journal_ends.get()), (20, 10));
            assert_eq!(newest_segment.as_deref(), Some(segment.as_path()));
            let text = e.to_string();
            assert!(text.contains("behind its snapshot") && text.contains("#20") && text.contains("#10"), "{text}");
        }
        other => panic!("expected JournalBehindSnapshot, got {:?}", other.map(|_| "an open store")),
    }
}

/// A state whose every encoding fails, counting the attempts.
#[derive(Default, Debug, Deserialize)]
struct Unencodable {
    count: u64,
}

static ENCODE_ATTEMPTS: AtomicU64 = AtomicU64::new(0);

impl Serialize for Unencodable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        ENCODE_ATTEMPTS.fetch_add(1, Ordering::SeqCst);
        Err(serde::ser::Error::custom("this state never encodes"))
    }
}

impl airomem::State for Unencodable {
    type Command = u64;
    fn execute(&mut self, _: u64) {
        self.count += 1;
    }
}

/// An automatic snapshot every command, and the state never encodes: each failure doubles
/// the trigger, so 100 commits cost a handful of attempts, not one full serialization each.
#[cfg(feature = "snapshot")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_automatic_snapshots_back_off() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let options = StoreOptions::default().snapshot_every_commands(1);
    let store: PostcardStore<Unencodable> =
        Store::open_with(PostcardSerializer, tmp.path(), options).await.expect("open");
    for value in 0..100 {
        store.commit(value).await.expect("commits go on while snapshots fail");
    }
    let attempts = ENCODE_ATTEMPTS.load(Ordering::SeqCst);
    // Triggers after 1, 2, 4, ..., 64 commands since the last attempt: 1+2+4+8+16+32+64 > 100.
    assert!((1..=7).contains(&attempts), "{attempts} encode attempts for 100 commits");
    assert_eq!(store.query().expect("query").count, 100);
}

/// The first snapshot must not take the only other way to rebuild the state with it: with a
/// single snapshot, no segment is removed, and a damaged snapshot falls back to the journal.
#[cfg(feature = "snapshot")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_only_snapshot_falls_back_to_the_whole_journal() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let options = || StoreOptions::default().segment_size(4096);
    let store: LogStore = Store::open_with(PostcardSerializer, &dir, options()).await.expect("open");
    for value in 0..2000 {
        store.commit(value).await.expect("commit");
    }
    let info = store.snapshot().await.expect("the first snapshot");
    assert_eq!(info.segments_removed, 0, "the journal is the only fallback of the only snapshot");
    store.close().await.expect("close");

    let mut bytes = std::fs::read(&info.path).expect("read the snapshot");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&info.path, bytes).expect("damage the snapshot");

    let store: LogStore = Store::open_with(PostcardSerializer, &dir, options()).await.expect("reopen");
    assert_eq!(store.recovery().snapshots_skipped.len(), 1, "the damaged snapshot was passed over");
    assert_eq!(store.recovery().snapshot, None);
    assert_eq!(store.query().expect("query").values, (0..2000).collect::<Vec<_>>());
}

/// `stats()` describes the store, not just this open: after a reopen, the last sequence
/// number, the segments in the directory and the newest snapshot are the store's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_after_a_reopen_describe_the_store() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let options = || StoreOptions::default().segment_size(4096);
    let store: LogStore = Store::open_with(PostcardSerializer, &dir, options()).await.expect("open");
    for value in 0..1000 {
        store.commit(value).await.expect("commit");
    }
    #[cfg(feature = "snapshot")]
    let snapshot_seq = store.snapshot().await.expect("snapshot").seq.get();
    #[cfg(not(feature = "snapshot"))]
    let snapshot_seq = 0;
    let segments = store.stats().segments;
    store.close().await.expect("close");
    let on_disk = std::fs::read_dir(&dir)
        .expect("list")
        .filter(|e| e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".journal")))
        .count() as u64;
    assert_eq!(segments, on_disk, "segments before closing");

    let store: LogStore = Store::open_with(PostcardSerializer, &dir, options()).await.expect("reopen");
    let stats = store.stats();
    assert_eq!(stats.last_seq, 1000);
    assert_eq!(stats.commits, 0, "counters of this open start at zero");
    assert_eq!(stats.segments, on_disk);
    assert_eq!(stats.snapshot_seq, snapshot_seq);
    assert_eq!(stats.records_since_snapshot(), 1000 - snapshot_seq);
}

/// A failed `fdatasync` leaves the command's outcome unknown (its `write` may have landed),
/// and the error says so instead of "not committed"; a reopen may indeed replay it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sync_says_the_outcome_is_unknown() {
    use airomem_workspace::sim::SimStorage;
    let sim = SimStorage::new();
    let options = || StoreOptions::default().storage(Arc::new(sim.clone()));
    let store: LogStore = Store::open_with(PostcardSerializer, "/sim/store", options()).await.expect("open");
    store.commit(1).await.expect("commit");
    // The next operations are the batch's write, then its fdatasync: fail the sync.
    sim.trace();
    let before = sim.ops();
    sim.fail_at(before + 1, io::ErrorKind::Other);
    let error = store.commit(2).await.expect_err("the sync failed");
    let traced = sim.traced();
    assert!(traced.iter().any(|op| op.contains("sync_data") && op.contains("injected fault")), "{traced:?}");
    assert!(matches!(error, Error::WriteFailed(_)), "{error:?}");
    let text = error.to_string();
    assert!(text.contains("outcome is unknown") && !text.contains("not committed"), "{text}");
    drop(store);
    sim.clear_faults();
    // The write landed (only the sync failed): the reopened store replays the command.
    let store: LogStore = Store::open_with(PostcardSerializer, "/sim/store", options()).await.expect("reopen");
    assert_eq!(store.query().expect("query").values, vec![1, 2], "the unacknowledged command is there");
}

/// Dropping the last handle inside a single-threaded runtime returns at once, even while the
/// writer is busy (here: held inside a `commit_with` closure until after the drop): the
/// writer finishes on its own, and `close().await` is the way to wait for it.
#[test]
fn dropping_the_last_handle_never_waits_for_the_writer() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let store: LogStore = runtime.block_on(Store::open(PostcardSerializer, &dir)).expect("open");
    let (running_tx, running_rx) = tokio::sync::oneshot::channel::<()>();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let (dropped_tx, dropped_rx) = std::sync::mpsc::channel::<()>();
    // Releases the writer once the drop returned; if the drop blocks instead, it gives up
    // after a while (so the test ends) and reports that the drop never returned on its own.
    let releaser = std::thread::spawn(move || {
        let returned = dropped_rx.recv_timeout(std::time::Duration::from_secs(10)).is_ok();
        let _ = go_tx.send(());
        returned
    });
    runtime.block_on(async {
        let caller = store.clone();
        let pending = tokio::spawn(async move {
            caller
                .commit_with(1, move |_| {
                    let _ = running_tx.send(());
                    let _ = go_rx.recv();
                })
                .await
        });
        running_rx.await.expect("the writer runs the closure");
        pending.abort();
        let _ = pending.await;
    });
    drop(store);
    let _ = dropped_tx.send(());
    assert!(releaser.join().expect("releaser"), "dropping the last handle blocked until the writer was released");
    // The writer finishes and releases the directory; an open waits for that.
    let store: LogStore = runtime.block_on(Store::open(PostcardSerializer, &dir)).expect("reopen");
    assert_eq!(store.query().expect("query").values, vec![1]);
}

/// Every directory an open creates is made durable (its parent synced), outermost first;
/// and a zero segment size is raised to the least that works, like every other size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_syncs_every_directory_it_creates() {
    use airomem_workspace::sim::SimStorage;
    let sim = SimStorage::new();
    sim.trace();
    let options = StoreOptions::default().storage(Arc::new(sim.clone())).segment_size(0);
    let store: LogStore = Store::open_with(PostcardSerializer, "/sim/a/b/store", options).await.expect("open");
    for value in 0..3 {
        store.commit(value).await.expect("commit with segment_size(0)");
    }
    store.close().await.expect("close");
    let synced: Vec<String> = sim
        .traced()
        .iter()
        .filter_map(|op| op.split_once(' ').map(|(_, rest)| rest.to_string()))
        .filter_map(|op| op.strip_prefix("sync_dir ").map(str::to_string))
        .take(4)
        .collect();
    assert_eq!(synced, ["/", "/sim", "/sim/a", "/sim/a/b"], "the parents of the created directories, outermost first");
}

/// A command panics, and the state cannot be rebuilt (the disk fails the rebuild's first
/// read): the commands after it in the same batch are not executed on the half-applied state
/// and their callers get `Broken`, as does every later reader; a reopen has every command.
#[cfg(feature = "snapshot")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failed_rollback_the_rest_of_the_batch_is_refused() {
    use airomem_workspace::sim::SimStorage;
    use airomem_workspace::{Append, SeqLog, quiet_deliberate_panics};
    quiet_deliberate_panics();
    let sim = SimStorage::new();
    let options = || StoreOptions::default().storage(Arc::new(sim.clone()));
    let store: PostcardStore<SeqLog> =
        Store::open_with(PostcardSerializer, "/sim/store", options()).await.expect("open");
    let append = |value, panic| Append { value, pad: Vec::new(), panic };
    store.commit(append(1, false)).await.expect("commit");

    // Hold the writer inside a closure while two more commands queue: they form one batch.
    let (running_tx, running_rx) = tokio::sync::oneshot::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let holder = store.clone();
    let held = tokio::spawn(async move {
        holder
            .commit_with(append(2, false), move |_| {
                let _ = running_tx.send(());
                let _ = go_rx.recv();
            })
            .await
    });
    running_rx.await.expect("the writer is held");
    // Polled once each, in order: a first poll encodes the command and hands it to the
    // writer's queue (the permits are free), so both wait behind the held batch, together.
    {
        let (first, second) = (store.clone(), store.clone());
        let mut panicking = std::pin::pin!(first.commit(append(3, true)));
        let mut after = std::pin::pin!(second.commit_with(append(4, false), |state: &SeqLog| state.entries.len()));
        assert!(airomem_workspace::poll_once(panicking.as_mut()).await.is_none(), "the writer is held");
        assert!(airomem_workspace::poll_once(after.as_mut()).await.is_none(), "the writer is held");
        // The next batch: write, fdatasync, the abort marker's write and fdatasync, then the
        // rebuild's first operation (listing snapshots) fails.
        sim.trace();
        sim.fail_at(sim.ops() + 4, io::ErrorKind::Other);
        go_tx.send(()).expect("release the writer");
        held.await.expect("task").expect("the held commit");
        assert!(matches!(panicking.await, Err(Error::CommandPanicked { .. })));
        let traced = sim.traced();
        assert!(
            traced.iter().any(|op| op.starts_with("#") && op.contains("list") && op.contains("injected")),
            "{traced:#?}"
        );
        match after.await {
            Err(Error::Broken { .. }) => {}
            other => panic!("a command after the failed rollback in its batch got {other:?}"),
        }
        assert!(matches!(store.query(), Err(Error::Broken { .. })), "reads are refused");
    }
    drop(store);
    sim.clear_faults();
    let store: PostcardStore<SeqLog> =
        Store::open_with(PostcardSerializer, "/sim/store", options()).await.expect("reopen");
    let values: Vec<u64> = store.query().expect("query").entries.iter().map(|&(_, v)| v).collect();
    assert_eq!(values, vec![1, 2, 4], "the panicking command stays aborted; the refused one is durable");
}

/// A snapshot that verifies but claims a sequence number no journal can reach (`u64::MAX`,
/// a crafted or corrupted file) is passed over as damaged, not trusted: trusting it made the
/// open overflow computing the record after it.
#[cfg(feature = "snapshot")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_claiming_the_last_possible_sequence_number_is_passed_over() {
    use airomem::Serializer;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let store: LogStore = Store::open(PostcardSerializer, &dir).await.expect("open");
    for value in 0..10 {
        store.commit(value).await.expect("commit");
    }
    let mut image = Vec::new();
    PostcardSerializer.encode(&*store.query().expect("query"), &mut image).expect("encode");
    store.close().await.expect("close");
    let header = airomem_snapshot::SnapshotHeader {
        serializer: PostcardSerializer::ID,
        schema_version: <Log as airomem::State>::SCHEMA_VERSION,
        seq: airomem::Seq(u64::MAX),
        next_record: None,
    };
    airomem_snapshot::write(&StdStorage::default(), &dir, header, &image, 3).expect("write the crafted snapshot");

    let store: LogStore = Store::open(PostcardSerializer, &dir).await.expect("open past the crafted snapshot");
    let skipped = &store.recovery().snapshots_skipped;
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(skipped[0].contains("out of range"), "{skipped:?}");
    assert_eq!(store.query().expect("query").values, (0..10).collect::<Vec<_>>());
}
