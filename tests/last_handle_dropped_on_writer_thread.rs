//! The last handle of a store can be dropped on the store's own writer thread: by a closure
//! passed to `commit_with` that owns it, or by the result of such a closure when its caller
//! gave up waiting. The directory must stay locked until that writer has finished with it
//! (its last batch, its closing sync and trim, the snapshot thread): a second store that
//! opened the directory earlier would append commands that the old writer's closing trim
//! then cuts away.
//!
//! Each test then opens the directory again at once, commits through the new store, closes
//! everything, reopens, and checks that every acknowledged command survived.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use airomem::{Error, PostcardSerializer, PostcardStore, Store};
use airomem_workspace::{Log, poll_once};

type LogStore = PostcardStore<Log>;

/// Commands the second store commits, numbered from here so they are told apart.
const SECOND: u64 = 1_000_000;

async fn open(dir: &Path) -> Result<LogStore, Error> {
    Store::open(PostcardSerializer, dir).await
}

/// Opens `dir` as soon as the store holding it lets go: a second store of the same process
/// either waits for a closing one or is told `Locked`, and then tries again.
async fn open_when_free(dir: &Path) -> LogStore {
    let started = std::time::Instant::now();
    loop {
        match open(dir).await {
            Ok(store) => return store,
            Err(Error::Locked { .. }) if started.elapsed() < Duration::from_secs(20) => {
                tokio::task::yield_now().await;
            }
            Err(e) => panic!("second open: {e}"),
        }
    }
}

/// Opens `dir` again, commits `count` values from `SECOND` on, and returns them with the
/// store still open.
async fn second_store(dir: &Path, count: u64) -> (LogStore, Vec<u64>) {
    let store = open_when_free(dir).await;
    let mut acked = Vec::new();
    for value in SECOND..SECOND + count {
        store.commit(value).await.expect("commit to the second store");
        acked.push(value);
    }
    (store, acked)
}

/// Opens `dir` again and commits 300 commands while the old writer is held, then lets the
/// old writer go with `release`. Returns whether the old writer had been let go when the
/// second store was open and done, that store, and what it acknowledged. The second store is
/// given a bounded time to (wrongly) finish before the release: a slow machine can only make
/// this miss the bug, never fail a correct store.
async fn open_while_the_old_writer_runs(dir: &Path, release: impl FnOnce()) -> (bool, LogStore, Vec<u64>) {
    let released = Arc::new(AtomicBool::new(false));
    let mut second = tokio::spawn({
        let dir = dir.to_path_buf();
        let released = Arc::clone(&released);
        async move {
            let (store, acked) = second_store(&dir, 300).await;
            (released.load(Ordering::SeqCst), store, acked)
        }
    });
    let early = tokio::select! {
        joined = &mut second => Some(joined.expect("second store task")),
        () = tokio::time::sleep(Duration::from_millis(500)) => None,
    };
    released.store(true, Ordering::SeqCst);
    release();
    match early {
        Some(done) => done,
        None => second.await.expect("second store task"),
    }
}

/// Reopens `dir` and checks that it holds every value of `acked`, in order, after `before`.
async fn assert_survived(dir: &Path, before: &[u64], acked: &[u64]) {
    let store = open(dir).await.unwrap_or_else(|e| panic!("reopen after both stores are gone failed: {e}"));
    let values = store.query().expect("query").values.clone();
    let tail: Vec<u64> = values.iter().copied().filter(|&v| v >= SECOND).collect();
    assert_eq!(tail, acked, "the second store's acknowledged commands");
    let head: Vec<u64> = values.iter().copied().filter(|&v| v < SECOND).collect();
    assert!(head.starts_with(before), "the first store's acknowledged commands are a prefix of what is there");
    store.close().await.expect("close");
}

/// A `commit_with` closure drops the last handle and keeps the writer thread busy afterwards.
/// A second open must not succeed while it is still running: the old writer has not closed
/// its journal yet. (The test waits a bounded time for a wrongly succeeding open; a slow
/// machine can only make it miss the bug, never fail a correct store.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_handle_dropped_inside_a_commit_with_closure() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let store = open(&dir).await.expect("open");
    for value in 0..100 {
        store.commit(value).await.expect("commit");
    }
    let before: Vec<u64> = (0..100).collect();

    let (running_tx, running_rx) = tokio::sync::oneshot::channel();
    let (dropped_tx, dropped_rx) = tokio::sync::oneshot::channel();
    let (drop_tx, drop_rx) = std::sync::mpsc::channel::<()>();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let last = store.clone();
    let caller = store.clone();
    let call = tokio::spawn(async move {
        caller
            .commit_with(100, move |_| {
                let _ = running_tx.send(());
                let _ = drop_rx.recv();
                drop(last);
                let _ = dropped_tx.send(());
                // The writer thread stays busy after the handle is gone.
                let _ = go_rx.recv();
            })
            .await
    });
    running_rx.await.expect("the closure runs");
    // Everything but the closure's handle goes away while the closure runs: its caller gives
    // up waiting and the test drops its own handle.
    drop(store);
    call.abort();
    drop(call.await);
    drop_tx.send(()).expect("the closure waits");
    dropped_rx.await.expect("the closure dropped the last handle");

    let (released_when_opened, second_store, acked) =
        open_while_the_old_writer_runs(&dir, || go_tx.send(()).expect("the old writer waits for the go")).await;
    assert!(
        released_when_opened,
        "a second store opened the directory and committed while the old writer was still running"
    );
    second_store.close().await.expect("close the second store");
    assert_survived(&dir, &before, &acked).await;
}

/// The closure returns a handle as its result, and its caller gave up waiting: the result,
/// and with it the last handle, is dropped on the writer thread when the outcome cannot be
/// delivered. A later batch holds a closure that keeps the writer busy after that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_handle_dropped_with_an_abandoned_result() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let store = open(&dir).await.expect("open");
    for value in 0..10 {
        store.commit(value).await.expect("commit");
    }
    let before: Vec<u64> = (0..10).collect();

    let (running_tx, running_rx) = tokio::sync::oneshot::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let last = store.clone();
    let caller = store.clone();
    let call = tokio::spawn(async move {
        caller
            .commit_with(10, move |_| {
                let _ = running_tx.send(());
                let _ = go_rx.recv();
                last
            })
            .await
    });
    running_rx.await.expect("the closure runs");
    // Queued while the writer is held inside the first closure, so it is the next batch.
    let (busy_tx, busy_rx) = tokio::sync::oneshot::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let (queued_tx, queued_rx) = tokio::sync::oneshot::channel();
    let queued_caller = store.clone();
    let queued = tokio::spawn(async move {
        let commit = queued_caller.commit_with(11, move |_| {
            let _ = busy_tx.send(());
            let _ = release_rx.recv();
        });
        let mut commit = std::pin::pin!(commit);
        // Polled once: the command is in the writer's queue.
        assert!(poll_once(commit.as_mut()).await.is_none(), "the writer is held");
        let _ = queued_tx.send(());
        commit.await
    });
    queued_rx.await.expect("the second command is queued");
    call.abort();
    drop(call.await);
    queued.abort();
    drop(queued.await);
    drop(store);
    go_tx.send(()).expect("the first closure waits for the go");
    busy_rx.await.expect("the writer runs the second closure after dropping the last handle");

    let (released_when_opened, second_store, acked) =
        open_while_the_old_writer_runs(&dir, || release_tx.send(()).expect("the old writer waits for the release"))
            .await;
    second_store.close().await.expect("close the second store");
    assert_survived(&dir, &before, &acked).await;
    assert!(
        released_when_opened,
        "a second store opened the directory and committed while the old writer was still running"
    );
}
