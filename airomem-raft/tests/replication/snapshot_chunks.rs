//! Snapshots sent in many small chunks (4 KiB, a state of a few hundred KiB of random,
//! incompressible bytes): a follower cut off while the leader snapshots and purges past it
//! catches up chunk by chunk; a transfer cut in the middle starts again cleanly once the link
//! heals; a chunk damaged on the way fails its transfer, which is sent again. Each node's
//! storage is the real file system, watched: chunks written into received snapshot files
//! (named `incoming-<n>.part` by the state machine), reads of snapshot files on the leader.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use airomem::storage::{LockGuard, StdStorage, Storage, StorageFile, StorageReadFile};
use airomem::{PostcardSerializer, State};
use airomem_raft::{Network, ReplicatedStore};
use airomem_workspace::sim::SplitMix64;
use serde::{Deserialize, Serialize};

use crate::{config, support, wait_until};

/// The pieces snapshots travel in.
const CHUNK: u64 = 4096;
/// Each command's size: 40 of them make a snapshot of about 80 chunks.
const BLOB: usize = 8 * 1024;

/// Opaque blobs, in commit order.
#[derive(Default, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Blobs {
    blobs: Vec<Vec<u8>>,
}

impl State for Blobs {
    type Command = Vec<u8>;

    fn execute(&mut self, blob: Vec<u8>) {
        self.blobs.push(blob);
    }
}

/// Something a test does from inside a node's storage, at a chosen moment.
type Hook = Box<dyn FnOnce() + Send>;

/// What a node's storage saw, and what it does to the chunks it receives.
#[derive(Default)]
struct Watch {
    /// Writes into received snapshot files: one per chunk.
    chunks: AtomicU64,
    /// Received snapshot files created: one per transfer begun.
    transfers: AtomicU64,
    /// The largest single read of a snapshot file through a read handle.
    largest_read: AtomicUsize,
    /// Whole-file reads of published snapshots.
    whole_snapshot_reads: AtomicU64,
    /// Runs once, after the chunk with this number (from 1) is written.
    after_chunk: Mutex<Option<(u64, Hook)>>,
    /// The chunk with this number (from 1) gets a bit flipped on its way to the disk, once.
    damage_chunk: AtomicU64,
}

fn is_received(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("incoming-"))
}

fn is_snapshot(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "snapshot")
}

#[derive(Clone)]
struct Watched {
    disk: StdStorage,
    watch: Arc<Watch>,
}

impl std::fmt::Debug for Watched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched").finish_non_exhaustive()
    }
}

struct WatchedFile {
    file: Box<dyn StorageFile>,
    watch: Arc<Watch>,
}

impl StorageFile for WatchedFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all(buf)
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let number = self.watch.chunks.fetch_add(1, Ordering::SeqCst) + 1;
        let written = if self.watch.damage_chunk.compare_exchange(number, 0, Ordering::SeqCst, Ordering::SeqCst).is_ok()
        {
            let mut damaged = buf.to_vec();
            damaged[buf.len() / 2] ^= 0x10;
            self.file.write_at(offset, &damaged)
        } else {
            self.file.write_at(offset, buf)
        };
        let mut after = self.watch.after_chunk.lock().expect("not poisoned");
        if after.as_ref().is_some_and(|(at, _)| *at == number) {
            let (_, hook) = after.take().expect("checked");
            hook();
        }
        written
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
}

struct WatchedReader {
    file: Box<dyn StorageReadFile>,
    watch: Arc<Watch>,
}

impl StorageReadFile for WatchedReader {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.watch.largest_read.fetch_max(buf.len(), Ordering::SeqCst);
        self.file.read_at(offset, buf)
    }
    fn len(&self) -> io::Result<u64> {
        self.file.len()
    }
}

impl Storage for Watched {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.disk.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.disk.list(dir)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        if is_snapshot(path) {
            self.watch.whole_snapshot_reads.fetch_add(1, Ordering::SeqCst);
        }
        self.disk.read(path)
    }
    fn read_prefix(&self, path: &Path, len: usize) -> io::Result<Vec<u8>> {
        self.disk.read_prefix(path, len)
    }
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn StorageReadFile>> {
        let file = self.disk.open_read(path)?;
        Ok(Box::new(WatchedReader { file, watch: Arc::clone(&self.watch) }))
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let file = self.disk.create(path)?;
        if !is_received(path) {
            return Ok(file);
        }
        self.watch.transfers.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(WatchedFile { file, watch: Arc::clone(&self.watch) }))
    }
    fn open_write(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        self.disk.open_write(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.disk.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.disk.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.disk.sync_dir(dir)
    }
    fn lock(&self, path: &Path) -> io::Result<LockGuard> {
        self.disk.lock(path)
    }
}

/// Three nodes holding [`Blobs`], each on a watched disk, sending snapshots in [`CHUNK`]s.
struct Group {
    network: Network,
    nodes: BTreeMap<u64, ReplicatedStore<Blobs>>,
    watches: BTreeMap<u64, Arc<Watch>>,
    root: tempfile::TempDir,
    /// Every blob committed, in order.
    committed: Vec<Vec<u8>>,
    random: SplitMix64,
}

impl Group {
    async fn start() -> Group {
        support::init_tracing();
        let root = tempfile::tempdir().expect("a temporary directory");
        let network = Network::new();
        let mut nodes = BTreeMap::new();
        let mut watches = BTreeMap::new();
        for id in 1..=3 {
            let watch = Arc::new(Watch::default());
            let storage = Watched { disk: StdStorage::default(), watch: Arc::clone(&watch) };
            // No automatic snapshots: the test says when, so that it knows which one travels.
            let config = config(id, root.path())
                .storage(Arc::new(storage))
                .snapshot_every(100_000)
                .logs_kept_after_snapshot(2)
                .snapshot_chunk_size(CHUNK);
            let node = ReplicatedStore::open(config, PostcardSerializer, &network).await.expect("the node opens");
            nodes.insert(id, node);
            watches.insert(id, watch);
        }
        nodes[&1].bootstrap(1..=3).await.expect("bootstraps");
        let group = Group { network, nodes, watches, root, committed: Vec::new(), random: SplitMix64::new(42) };
        group.leader_among(&[]).await;
        group
    }

    fn node(&self, id: u64) -> &ReplicatedStore<Blobs> {
        &self.nodes[&id]
    }

    async fn leader_among(&self, excluded: &[u64]) -> u64 {
        let mut leader = None;
        wait_until("a leader the others follow", || {
            let statuses: Vec<_> =
                self.nodes.iter().filter(|(id, _)| !excluded.contains(id)).map(|(_, n)| n.status()).collect();
            leader = support::agreed_leader(&statuses);
            leader.is_some()
        })
        .await;
        leader.expect("waited for")
    }

    fn other_than(&self, not: u64) -> u64 {
        *self.nodes.keys().find(|id| **id != not).expect("another node")
    }

    /// Commits `n` random blobs through `via`.
    async fn commit(&mut self, via: u64, n: usize) {
        for _ in 0..n {
            let blob = self.random.bytes(BLOB);
            self.nodes[&via].commit(blob.clone()).await.expect("commits");
            self.committed.push(blob);
        }
    }

    /// Every node but `lagging` snapshots, and purges its log past what `lagging` holds:
    /// whichever leads can only catch it up with a snapshot.
    async fn snapshot_past(&self, lagging: u64) {
        let behind = self.node(lagging).status().applied_index.expect("applied");
        for (&id, node) in self.nodes.iter().filter(|(id, _)| **id != lagging) {
            node.snapshot().await.expect("snapshots");
            wait_until(&format!("node {id} to purge what node {lagging} lacks"), || {
                node.status().purged_index.is_some_and(|p| p > behind + 1)
            })
            .await;
        }
    }

    /// Waits until every node holds exactly the blobs committed.
    async fn converge(&self) {
        for (&id, node) in &self.nodes {
            wait_until(&format!("node {id} to hold all {} blobs", self.committed.len()), || {
                node.query().expect("reads").blobs == self.committed
            })
            .await;
        }
    }

    fn snapshot_dir(&self, id: u64) -> PathBuf {
        self.root.path().join(format!("node-{id}")).join("snapshots")
    }

    /// The names of the files in node `id`'s snapshot directory.
    fn snapshot_files(&self, id: u64) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.snapshot_dir(id))
            .expect("lists")
            .map(|e| e.expect("an entry").file_name().into_string().expect("utf-8"))
            .collect();
        names.sort();
        names
    }

    /// The length of node `id`'s snapshot file (it keeps one).
    fn snapshot_len(&self, id: u64) -> u64 {
        let names = self.snapshot_files(id);
        let name = names.iter().find(|n| n.ends_with(".snapshot")).expect("a snapshot");
        std::fs::metadata(self.snapshot_dir(id).join(name)).expect("stat").len()
    }

    /// Asserts node `id` holds no received file, only published snapshots.
    fn assert_no_received_file(&self, id: u64) {
        let names = self.snapshot_files(id);
        assert!(names.iter().all(|n| n.ends_with(".snapshot")), "node {id} keeps {names:?}");
    }

    async fn close(self) {
        for (_, node) in self.nodes {
            node.close().await.expect("closes");
        }
    }
}

/// A group where `lagging` holds the first blob only, is cut off, and every other node has
/// snapshotted and purged 40 blobs (about 80 chunks) past it.
async fn lagging_behind_a_snapshot() -> (Group, u64) {
    let mut group = Group::start().await;
    let leader = group.leader_among(&[]).await;
    let lagging = group.other_than(leader);
    group.commit(leader, 1).await;
    group.converge().await;
    group.network.isolate(lagging);
    // The leader may change while `lagging` is cut off; `commit` follows it.
    let writer = group.other_than(lagging);
    group.commit(writer, 40).await;
    group.snapshot_past(lagging).await;
    assert_eq!(group.node(lagging).query().expect("reads").blobs.len(), 1);
    (group, lagging)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_follower_catches_up_through_many_small_chunks() {
    let (group, lagging) = lagging_behind_a_snapshot().await;
    let leader = group.leader_among(&[lagging]).await;
    let whole_reads = group.watches[&leader].whole_snapshot_reads.load(Ordering::SeqCst);
    let file_len = group.snapshot_len(leader);
    assert!(file_len > 60 * CHUNK, "random blobs do not compress: {file_len} bytes");

    group.network.heal();
    group.converge().await;
    assert_eq!(group.node(lagging).query().expect("reads").blobs, group.node(leader).query().expect("reads").blobs);
    let watch = &group.watches[&lagging];
    let chunks = watch.chunks.load(Ordering::SeqCst);
    assert!(chunks >= file_len / CHUNK, "{chunks} chunks for a {file_len} byte snapshot");
    let leader_watch = &group.watches[&group.leader_among(&[]).await];
    let largest = leader_watch.largest_read.load(Ordering::SeqCst);
    assert!(largest as u64 <= CHUNK, "the leader read {largest} bytes at once");
    assert_eq!(group.watches[&leader].whole_snapshot_reads.load(Ordering::SeqCst), whole_reads, "a whole read");
    group.assert_no_received_file(lagging);
    group.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_cut_in_the_middle_starts_again_cleanly_and_leaves_no_received_file() {
    let (mut group, lagging) = lagging_behind_a_snapshot().await;
    let cut = Arc::new(AtomicBool::new(false));
    {
        let (network, cut) = (group.network.clone(), Arc::clone(&cut));
        *group.watches[&lagging].after_chunk.lock().expect("not poisoned") = Some((
            10,
            Box::new(move || {
                network.isolate(lagging);
                cut.store(true, Ordering::SeqCst);
            }),
        ));
    }
    group.network.heal();
    wait_until("the transfer to be cut after 10 chunks", || cut.load(Ordering::SeqCst)).await;
    assert_eq!(group.node(lagging).query().expect("reads").blobs.len(), 1, "nothing installed from a cut transfer");
    assert!(
        group.snapshot_files(lagging).iter().any(|n| n.starts_with("incoming-")),
        "the cut transfer's file is there: {:?}",
        group.snapshot_files(lagging)
    );

    // While it is cut off, the others move on to a newer snapshot: the transfer that
    // resumes is of another snapshot, and the cut one's file must go.
    let writer = group.other_than(lagging);
    group.commit(writer, 5).await;
    group.snapshot_past(lagging).await;
    group.network.heal();
    group.converge().await;
    let watch = &group.watches[&lagging];
    assert!(watch.transfers.load(Ordering::SeqCst) >= 2, "the transfer started again");
    assert!(watch.chunks.load(Ordering::SeqCst) > 10 + group.snapshot_len(writer) / CHUNK);
    group.assert_no_received_file(lagging);
    group.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_damaged_on_the_way_fails_its_transfer_which_is_sent_again() {
    let (group, lagging) = lagging_behind_a_snapshot().await;
    group.watches[&lagging].damage_chunk.store(5, Ordering::SeqCst);
    group.network.heal();
    // The follower stays up (a damaged install would have stopped it) and catches up.
    group.converge().await;
    let watch = &group.watches[&lagging];
    assert_eq!(watch.damage_chunk.load(Ordering::SeqCst), 0, "the chunk was damaged");
    assert!(watch.transfers.load(Ordering::SeqCst) >= 2, "the damaged transfer was refused and sent again");
    group.assert_no_received_file(lagging);
    group.close().await;
}
