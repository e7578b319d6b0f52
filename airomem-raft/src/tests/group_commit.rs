//! Group commit: appends queued while a sync is in flight share the next write and sync,
//! and their callbacks fire in order.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use airomem::storage::{LockGuard, Storage, StorageFile};
use airomem_workspace::sim::SimStorage;
use openraft::RaftLogReader;
use openraft::storage::RaftLogStorageExt;

use super::normal;
use crate::log::{LogOptions, LogStore};

/// A disk whose first `fdatasync` waits until the test opens the gate, and which counts
/// `fdatasync`s.
#[derive(Debug, Default)]
struct Gated {
    disk: SimStorage,
    syncs: AtomicU64,
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gated {
    fn release(&self) {
        *self.open.lock().expect("gate lock") = true;
        self.opened.notify_all();
    }
}

struct GatedFile {
    file: Box<dyn StorageFile>,
    gate: Arc<Gated>,
}

impl StorageFile for GatedFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all(buf)
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.file.write_at(offset, buf)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        let open = self.gate.open.lock().expect("gate lock");
        drop(self.gate.opened.wait_while(open, |open| !*open).expect("gate lock"));
        self.gate.syncs.fetch_add(1, Ordering::SeqCst);
        self.file.sync_data()
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
}

#[derive(Debug)]
struct GatedStorage(Arc<Gated>);

impl Storage for GatedStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.0.disk.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.0.disk.list(dir)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.0.disk.read(path)
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        Ok(Box::new(GatedFile { file: self.0.disk.create(path)?, gate: Arc::clone(&self.0) }))
    }
    fn open_write(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        Ok(Box::new(GatedFile { file: self.0.disk.open_write(path)?, gate: Arc::clone(&self.0) }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.0.disk.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.0.disk.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.0.disk.sync_dir(dir)
    }
    fn lock(&self, path: &Path) -> io::Result<LockGuard> {
        self.0.disk.lock(path)
    }
}

#[tokio::test]
async fn appends_queued_during_a_sync_share_one_write_and_one_sync() {
    let gate = Arc::new(Gated::default());
    let log = LogStore::open(Arc::new(GatedStorage(Arc::clone(&gate))), Path::new("/node/log"), LogOptions::default())
        .expect("opens");
    // Opening syncs nothing: the directory is new. From here, the first sync waits.
    let syncs_at_open = gate.syncs.load(Ordering::SeqCst);
    assert_eq!(syncs_at_open, 0);

    const APPENDS: u64 = 100;
    let mut appends: Vec<std::pin::Pin<Box<dyn Future<Output = bool> + Send>>> = Vec::new();
    for i in 1..=APPENDS {
        let mut log = log.clone();
        appends.push(Box::pin(async move { log.blocking_append([normal(1, i, i, i)]).await.is_ok() }));
    }
    // `join_all` polls its futures in order, so when this one runs, every append above has
    // been queued (each queues before its first await) and the first is held in its sync.
    let gate_for_release = Arc::clone(&gate);
    appends.push(Box::pin(async move {
        gate_for_release.release();
        true
    }));
    let outcomes = futures::future::join_all(appends).await;
    assert!(outcomes.iter().all(|ok| *ok), "every append is flushed");

    let syncs = gate.syncs.load(Ordering::SeqCst);
    // The writer may take the first append alone (then the 99 queued behind its sync share
    // the second) or, if it wakes late, all of them at once.
    assert!((1..=2).contains(&syncs), "{APPENDS} appends took {syncs} fdatasyncs");
    let mut reader = log.clone();
    assert_eq!(reader.try_get_log_entries(..).await.expect("reads").len() as u64, APPENDS);
}
