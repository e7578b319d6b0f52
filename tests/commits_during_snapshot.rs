//! A snapshot of a large state taken while 16 tasks keep committing: every commit is
//! acknowledged, the snapshot is a consistent cut (exactly the commands up to its sequence
//! number), and a reopen loads it and replays exactly the commands after it.
#![cfg(feature = "snapshot")]

use std::collections::HashMap;
use std::sync::Arc;

use airomem::storage::StdStorage;
use airomem::{PostcardSerializer, PostcardStore, Serializer, State, Store, StoreOptions};
use airomem_workspace::{Sessions, SessionsCommand, token};
use tokio::sync::Barrier;
use tokio::task::JoinSet;

const INITIAL: u64 = 200_000;
const LOADERS: u64 = 100;
const TASKS: u64 = 16;
const PER_TASK: u64 = 500;
/// Each task commits this many before the snapshot is requested, the rest while it runs.
const BEFORE_SNAPSHOT: u64 = 250;

fn create(n: u64) -> SessionsCommand {
    SessionsCommand::CreateSession { token: token(n), user_id: n }
}

fn options() -> StoreOptions {
    // Several segments, so that retention after the snapshot has something to remove.
    StoreOptions::default().segment_size(1 << 20)
}

fn segment_firsts(dir: &std::path::Path) -> Vec<u64> {
    let mut firsts: Vec<u64> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .filter_map(|n| n.strip_suffix(".journal").map(|d| d.parse().expect("number")))
        .collect();
    firsts.sort_unstable();
    firsts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commits_continue_while_a_snapshot_is_taken() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let store: PostcardStore<Sessions> = Store::open_with(PostcardSerializer, dir, options()).await.expect("open");

    // 200k sessions, loaded by concurrent tasks so that group commit keeps it quick.
    let mut loaders = JoinSet::new();
    for loader in 0..LOADERS {
        let store = store.clone();
        loaders.spawn(async move {
            for n in (loader..INITIAL).step_by(LOADERS as usize) {
                store.commit(create(n)).await.expect("initial commit");
            }
        });
    }
    while let Some(done) = loaders.join_next().await {
        done.expect("loader task");
    }
    let before = store.stats().last_seq;
    assert_eq!(before, INITIAL);

    // 16 committers; the snapshot is requested once each has committed its first half, so the
    // second halves run concurrently with it.
    let barrier = Arc::new(Barrier::new(TASKS as usize + 1));
    let mut committers = JoinSet::new();
    for task in 0..TASKS {
        let store = store.clone();
        let barrier = Arc::clone(&barrier);
        committers.spawn(async move {
            let mut receipts = Vec::new();
            for i in 0..PER_TASK {
                if i == BEFORE_SNAPSHOT {
                    barrier.wait().await;
                }
                let n = 1_000_000 + task * PER_TASK + i;
                let receipt = store.commit(create(n)).await.expect("concurrent commit");
                receipts.push((n, receipt.seq.get()));
            }
            receipts
        });
    }
    let snapshot = async {
        barrier.wait().await;
        store.snapshot().await.expect("snapshot")
    };
    let collect = async {
        let mut receipts = Vec::new();
        while let Some(done) = committers.join_next().await {
            receipts.extend(done.expect("committer task"));
        }
        receipts
    };
    let (info, receipts) = tokio::join!(snapshot, collect);
    let after = store.stats().last_seq;

    // Every commit was acknowledged, each with its own sequence number, all after the load.
    assert_eq!(receipts.len() as u64, TASKS * PER_TASK);
    assert_eq!(after, INITIAL + TASKS * PER_TASK);
    let mut seqs: Vec<u64> = receipts.iter().map(|&(_, seq)| seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (INITIAL + 1..=after).collect::<Vec<_>>());

    // The snapshot lies between: after every first half, no later than the last commit.
    let snap = info.seq.get();
    assert!(before + TASKS * BEFORE_SNAPSHOT <= snap && snap <= after, "{before} <= {snap} <= {after}");
    assert_eq!(info.snapshots_removed, 0);

    // The snapshot holds exactly the commands up to its sequence number: read it directly.
    let (header, image) = airomem_snapshot::load(&StdStorage::default(), dir, info.seq, PostcardSerializer::ID)
        .expect("load the snapshot file");
    assert_eq!(header.schema_version, <Sessions as State>::SCHEMA_VERSION);
    assert_eq!(image.len() as u64, info.raw_len);
    let in_snapshot: Sessions = PostcardSerializer.decode(&image).expect("decode the snapshot");
    let mut cut = Sessions::default();
    for n in 0..INITIAL {
        cut.execute(create(n));
    }
    for &(n, seq) in &receipts {
        if seq <= snap {
            cut.execute(create(n));
        }
    }
    assert_eq!(in_snapshot.tokens.len() as u64, snap);
    assert!(in_snapshot == cut, "the snapshot is the state after exactly the records up to {snap}");

    let mut model: HashMap<String, u64> = cut.tokens;
    for &(n, seq) in &receipts {
        if seq > snap {
            model.insert(token(n), n);
        }
    }
    assert_eq!(model.len() as u64, after);
    assert!(store.query().expect("query").tokens == model, "the live state holds every commit");
    drop(store);

    let segments = segment_firsts(dir);
    // The only snapshot could be damaged: until a second one exists, the whole journal stays.
    assert_eq!(segments[0], 1, "retention kept the journal behind the only snapshot: {segments:?}");

    let store: PostcardStore<Sessions> = Store::open_with(PostcardSerializer, dir, options()).await.expect("reopen");
    let report = store.recovery();
    assert_eq!(report.snapshot, Some(info.seq));
    assert!(report.snapshots_skipped.is_empty());
    assert_eq!(report.records_replayed, after - snap, "exactly the commits after the snapshot are replayed");
    assert_eq!(report.next_seq.get(), after + 1);
    assert!(store.query().expect("query").tokens == model, "every acknowledged commit survives the reopen");
}
