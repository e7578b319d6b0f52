//! The writer thread panics (a bug in a storage implementation, met on that thread) while a
//! snapshot is being written by the snapshot thread. The old store must let go of the
//! directory only once nothing of it can change a file any more: a second store that opens
//! the directory must never see the first one publish a snapshot or remove files under it.

#![cfg(feature = "snapshot")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use airomem::{Error, PostcardSerializer, Store, StoreOptions};
use airomem_workspace::hooked::{Hooked, Hooks, Op};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Default)]
struct Log {
    values: Vec<u64>,
}

impl airomem::State for Log {
    type Command = u64;
    fn execute(&mut self, value: u64) {
        self.values.push(value);
    }
}

/// Holds the snapshot thread at its first file creation until the test lets it go, and
/// makes the next journal write panic once armed.
#[derive(Default)]
struct Controls {
    armed: AtomicBool,
    /// Whether the snapshot thread reached its file creation, and whether it may go on.
    held: Mutex<(bool, bool)>,
    changed: Condvar,
}

impl Controls {
    fn hold_snapshot(&self) {
        let mut held = self.held.lock().expect("held");
        held.0 = true;
        self.changed.notify_all();
        while !held.1 {
            held = self.changed.wait(held).expect("held");
        }
    }

    fn wait_for_snapshot(&self) {
        let mut held = self.held.lock().expect("held");
        while !held.0 {
            held = self.changed.wait(held).expect("held");
        }
    }

    fn release_snapshot(&self) {
        self.held.lock().expect("held").1 = true;
        self.changed.notify_all();
    }
}

impl Hooks for Controls {
    fn before(&self, op: Op, _path: &Path) {
        match op {
            Op::Create if std::thread::current().name() == Some("airomem-snapshot") => self.hold_snapshot(),
            Op::WriteAt => assert!(!self.armed.swap(false, Ordering::SeqCst), "a storage bug, on the writer thread"),
            _ => {}
        }
    }
}

/// Every file in `dir` with its bytes.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    std::fs::read_dir(dir)
        .expect("list")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.is_file())
        .map(|path| {
            let bytes = std::fs::read(&path).expect("read");
            (path, bytes)
        })
        .collect()
}

type LogStore = Store<Log, PostcardSerializer>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_writer_keeps_the_directory_until_its_snapshot_thread_is_done() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let controls = Arc::new(Controls::default());
    let options = StoreOptions::default().storage(Arc::new(Hooked::new(Arc::clone(&controls))));
    let store: LogStore = Store::open_with(PostcardSerializer, &dir, options).await.expect("open");
    for value in 0..10 {
        store.commit(value).await.expect("commit");
    }
    let snapshot = tokio::spawn({
        let store = store.clone();
        async move { store.snapshot().await }
    });
    tokio::task::spawn_blocking({
        let controls = Arc::clone(&controls);
        move || controls.wait_for_snapshot()
    })
    .await
    .expect("the snapshot thread is at work");

    controls.armed.store(true, Ordering::SeqCst);
    let failed = store.commit(10).await;
    assert!(matches!(failed, Err(Error::WriterPanicked { .. })), "{failed:?}");

    // While the snapshot thread is held, the directory must stay taken. Trying for a while is
    // the only way to see that nothing releases it; a store that does release it early is
    // caught on the first attempts.
    let trying = Instant::now();
    let early = loop {
        match Store::<Log, _>::open(PostcardSerializer, &dir).await {
            Ok(second) => break Some(second),
            Err(Error::Locked { .. }) if trying.elapsed() < Duration::from_secs(2) => tokio::task::yield_now().await,
            Err(Error::Locked { .. }) => break None,
            Err(e) => panic!("second open: {e}"),
        }
    };
    controls.release_snapshot();
    let second = match early {
        Some(second) => second,
        None => loop {
            match Store::<Log, _>::open(PostcardSerializer, &dir).await {
                Ok(second) => break second,
                Err(Error::Locked { .. }) => tokio::task::yield_now().await,
                Err(e) => panic!("second open: {e}"),
            }
        },
    };
    let seen_at_open = files(&dir);
    // The old store's snapshot is over (published or refused) by the time this returns.
    let _outcome = snapshot.await.expect("snapshot task");
    drop(store);
    assert_eq!(
        files(&dir).keys().collect::<Vec<_>>(),
        seen_at_open.keys().collect::<Vec<_>>(),
        "the old store changed the directory after the second store opened it"
    );
    assert!(files(&dir) == seen_at_open, "the old store changed a file after the second store opened it");
    assert_eq!(&second.query().expect("query").values[..10], &(0..10).collect::<Vec<_>>()[..]);
    second.close().await.expect("close");
}
