//! Every durability policy commits and reopens to the exact state; `OsBuffered` issues no
//! `fdatasync` for commits (only when a segment is closed by rollover); `Periodic` with an
//! interval longer than the test issues none either; `Fsync` issues one per batch; `close()`
//! returns Ok and leaves other clones with `Error::Closed`.

mod segment_files;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use airomem::{Durability, Error, PostcardSerializer, PostcardStore, Store, StoreOptions};
use airomem_workspace::{Sessions, SessionsCommand, token};
use tokio::sync::Barrier;

const COMMANDS: u64 = 400;

fn command(n: u64) -> SessionsCommand {
    if n % 4 == 3 {
        SessionsCommand::DeleteSession { token: token(n - 2) }
    } else {
        SessionsCommand::CreateSession { token: token(n), user_id: n }
    }
}

fn apply(model: &mut HashMap<String, u64>, command: &SessionsCommand) {
    match command {
        SessionsCommand::CreateSession { token, user_id } => {
            model.insert(token.clone(), *user_id);
        }
        SessionsCommand::DeleteSession { token } => {
            model.remove(token);
        }
    }
}

async fn open(dir: &Path, options: StoreOptions) -> PostcardStore<Sessions> {
    Store::open_with(PostcardSerializer, dir, options).await.expect("open")
}

/// Commits `COMMANDS` commands one at a time, checks the state, closes, reopens and checks
/// again. Returns the stats taken after the last commit.
async fn commit_close_reopen(dir: &Path, options: StoreOptions) -> airomem::Stats {
    let store = open(dir, options.clone()).await;
    let mut model = HashMap::new();
    for n in 0..COMMANDS {
        let cmd = command(n);
        apply(&mut model, &cmd);
        let committed = store.commit(cmd).await.expect("commit");
        assert_eq!(committed.seq.0, n + 1);
    }
    assert_eq!(store.query().expect("query").tokens, model);
    let stats = store.stats();
    let other = store.clone();
    store.close().await.expect("close returns Ok");
    assert!(matches!(other.commit(command(0)).await, Err(Error::Closed)), "a clone cannot commit after close");
    assert_eq!(other.query().expect("reads still work").tokens, model);
    drop(other);

    let store = open(dir, options).await;
    assert_eq!(store.recovery().records_replayed, COMMANDS);
    assert!(store.recovery().torn_tail.is_none());
    assert_eq!(store.query().expect("query").tokens, model, "reopened to the exact state");
    stats
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn os_buffered_commits_without_syncing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let stats = commit_close_reopen(tmp.path(), StoreOptions::default().durability(Durability::OsBuffered)).await;
    assert_eq!(stats.syncs, 0, "OsBuffered never syncs a commit: {stats:?}");
    assert_eq!(stats.segments_created, 1);
    assert_eq!(stats.commits, COMMANDS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn os_buffered_syncs_only_segments_it_closes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let options = StoreOptions::default().durability(Durability::OsBuffered).segment_size(2048);
    let stats = commit_close_reopen(tmp.path(), options).await;
    let segments = segment_files::segment_names(tmp.path()).len() as u64;
    assert!(segments > 3, "rolled over");
    assert_eq!(stats.syncs, stats.segments_created - 1, "one sync per closed segment: {stats:?}");
    assert_eq!(stats.segments_created, segments);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_commits_and_reopens_exactly() {
    for interval in [Duration::from_millis(1), Duration::from_millis(50)] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let options = StoreOptions::default().durability(Durability::Periodic(interval)).segment_size(4096);
        let stats = commit_close_reopen(tmp.path(), options).await;
        assert!(stats.syncs <= stats.batches + stats.segments_created, "{stats:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_with_a_long_interval_does_not_sync_commits() {
    // The interval is far longer than the test can run, so no sync is due.
    let tmp = tempfile::tempdir().expect("tempdir");
    let options = StoreOptions::default().durability(Durability::Periodic(Duration::from_secs(24 * 3600)));
    let stats = commit_close_reopen(tmp.path(), options).await;
    assert_eq!(stats.syncs, 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsync_syncs_every_batch() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let stats = commit_close_reopen(tmp.path(), StoreOptions::default().durability(Durability::Fsync)).await;
    assert_eq!(stats.batches, COMMANDS, "awaited commits are batches of one");
    assert_eq!(stats.syncs, stats.batches, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_policy_keeps_concurrent_commits() {
    for durability in [Durability::OsBuffered, Durability::Periodic(Duration::from_millis(5)), Durability::Fsync] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let options = StoreOptions::default().durability(durability).segment_size(8192);
        let store = open(tmp.path(), options.clone()).await;
        let barrier = Arc::new(Barrier::new(8));
        let mut handles = Vec::new();
        for t in 0..8u64 {
            let store = store.clone();
            let barrier = Arc::clone(&barrier);
            handles.push(tokio::spawn(async move {
                barrier.wait().await;
                for i in 0..50 {
                    let cmd = SessionsCommand::CreateSession { token: token(t * 100 + i), user_id: t };
                    store.commit(cmd).await.expect("commit");
                }
            }));
        }
        for handle in handles {
            handle.await.expect("task");
        }
        let expected: HashMap<String, u64> =
            (0..8u64).flat_map(|t| (0..50).map(move |i| (token(t * 100 + i), t))).collect();
        assert_eq!(store.query().expect("query").tokens, expected, "{durability:?}");
        store.close().await.expect("close");
        let store = open(tmp.path(), options).await;
        assert_eq!(store.query().expect("query").tokens, expected, "{durability:?} after reopen");
        assert_eq!(store.recovery().records_replayed, 400);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_twice_reports_closed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = open(tmp.path(), StoreOptions::default().durability(Durability::OsBuffered)).await;
    store.commit(command(0)).await.expect("commit");
    let other = store.clone();
    store.close().await.expect("first close");
    assert!(matches!(other.close().await, Err(Error::Closed)), "the second close reports Closed");
    let store = open(tmp.path(), StoreOptions::default()).await;
    assert_eq!(store.recovery().records_replayed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_keeps_every_commit_it_acknowledged() {
    for durability in [Durability::OsBuffered, Durability::Periodic(Duration::from_millis(5)), Durability::Fsync] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let options = StoreOptions::default().durability(durability);
        let store = open(tmp.path(), options.clone()).await;
        let barrier = Arc::new(Barrier::new(9));
        let mut handles = Vec::new();
        for t in 0..8u64 {
            let store = store.clone();
            let barrier = Arc::clone(&barrier);
            handles.push(tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                for i in 0..40u64 {
                    if i == 5 {
                        barrier.wait().await;
                    }
                    let cmd = SessionsCommand::CreateSession { token: token(t * 100 + i), user_id: t };
                    match store.commit(cmd).await {
                        Ok(_) => acknowledged.push(t * 100 + i),
                        Err(Error::Closed) => break,
                        Err(other) => panic!("{durability:?}: a commit racing close fails only with Closed: {other}"),
                    }
                }
                acknowledged
            }));
        }
        // Close while the tasks are still committing.
        barrier.wait().await;
        store.close().await.expect("close returns Ok");
        let mut expected = HashMap::new();
        for handle in handles {
            for n in handle.await.expect("task") {
                expected.insert(token(n), n / 100);
            }
        }
        assert!(expected.len() >= 40, "{durability:?}: commits before the barrier were acknowledged");
        let store = open(tmp.path(), options).await;
        assert_eq!(store.query().expect("query").tokens, expected, "{durability:?}: exactly the acknowledged commits");
        assert_eq!(store.recovery().records_replayed, expected.len() as u64, "{durability:?}");
    }
}
