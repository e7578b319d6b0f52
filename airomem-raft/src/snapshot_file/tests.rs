//! Tests of chunked snapshot files: what a leader reads, what a follower writes, who removes
//! what (a file of their own, so that the module imports nothing of the Raft types).
use std::sync::atomic::AtomicUsize;

use airomem::storage::StdStorage;
use airomem::{Seq, SerializerId};
use airomem_workspace::hooked::{Hooked, Hooks, Op};
use airomem_workspace::sim::SplitMix64;
use openraft::network::snapshot_transport::Streaming;
use openraft::raft::InstallSnapshotRequest;
use openraft::{SnapshotMeta, Vote};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::*;
use crate::types::{TypeConfig, log_id};

/// What the real file system was asked to read: the largest single positioned read, and how
/// many whole files.
#[derive(Debug, Default)]
struct Counts {
    largest_read: AtomicUsize,
    whole_reads: AtomicUsize,
}

impl Hooks for Counts {
    fn before(&self, op: Op, _path: &Path) {
        if op == Op::Read {
            self.whole_reads.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn before_read_at(&self, _path: &Path, len: usize) {
        self.largest_read.fetch_max(len, Ordering::SeqCst);
    }
}

const CHUNK: usize = 4096;

/// A published snapshot of `len` random (incompressible) bytes of image in `dir`.
fn published(storage: &dyn Storage, dir: &Path, len: usize) -> PathBuf {
    storage.create_dir_all(dir).expect("mkdir");
    let image = SplitMix64::new(7).bytes(len);
    let header = airomem_snapshot::SnapshotHeader {
        serializer: SerializerId(1),
        schema_version: 1,
        seq: Seq(9),
        next_record: None,
    };
    airomem_snapshot::write(storage, dir, header, &image, 3).expect("publishes").path
}

fn request(
    meta: &SnapshotMeta<u64, openraft::BasicNode>,
    offset: u64,
    data: Vec<u8>,
    done: bool,
) -> InstallSnapshotRequest<TypeConfig> {
    InstallSnapshotRequest { vote: Vote::new(1, 1), meta: meta.clone(), offset, data, done }
}

/// The chunk at `offset`, read as openraft's replication reads it: a seek, then reads into
/// a buffer of one chunk's capacity until it is full or the file ends.
async fn chunk_at(data: &mut SnapshotFile, offset: u64) -> Vec<u8> {
    data.seek(SeekFrom::Start(offset)).await.expect("seeks");
    let mut buf = Vec::with_capacity(CHUNK);
    while buf.capacity() > buf.len() {
        if data.read_buf(&mut buf).await.expect("reads") == 0 {
            break;
        }
    }
    buf
}

/// A leader's snapshot goes out chunk by chunk, through openraft's own receiving code,
/// with a chunk sent twice (its answer lost) and the transfer restarted from the start
/// halfway (the leader gave up and began again): the follower's file is the leader's,
/// byte for byte, and no read on the leader was larger than a chunk or read the whole
/// file.
#[tokio::test]
async fn a_snapshot_is_sent_in_chunks_never_read_whole_and_arrives_exact() {
    let root = tempfile::tempdir().expect("a temporary directory");
    let counts = Arc::new(Counts::default());
    let leader = Arc::new(Hooked::new(Arc::clone(&counts)));
    let path = published(leader.as_ref(), &root.path().join("leader"), 300 * 1024);
    let original = std::fs::read(&path).expect("reads");
    assert!(original.len() > 50 * CHUNK, "random bytes do not compress: {} bytes", original.len());
    let leader_dir = SnapshotDir::new(leader.clone(), &root.path().join("leader"));
    let follower_path = root.path().join("follower");
    let follower = Arc::new(SnapshotDir::new(Arc::new(StdStorage::default()), &follower_path));
    std::fs::create_dir_all(&follower_path).expect("mkdir");
    let whole_reads_before = counts.whole_reads.load(Ordering::SeqCst);

    let meta = SnapshotMeta {
        last_log_id: Some(log_id(1, 1, 8)),
        last_membership: Default::default(),
        snapshot_id: "s".into(),
    };
    let mut sending = leader_dir.open_published(&path).expect("opens");
    let end = sending.seek(SeekFrom::End(0)).await.expect("seeks");
    assert_eq!(end, original.len() as u64);
    let mut streaming = Streaming::<TypeConfig>::new("s".into(), Box::new(follower.receive()));
    let mut offset = 0;
    let mut restarted = false;
    let mut chunks = 0;
    loop {
        let data = chunk_at(&mut sending, offset).await;
        let done = offset + data.len() as u64 == end;
        let n = data.len() as u64;
        chunks += 1;
        if chunks == 3 {
            streaming.receive(request(&meta, offset, data.clone(), false)).await.expect("receives a repeat");
        }
        streaming.receive(request(&meta, offset, data, done)).await.expect("receives");
        if done {
            break;
        }
        offset += n;
        if !restarted && offset > end / 2 {
            restarted = true;
            offset = 0;
        }
    }
    let mut received = streaming.into_snapshot_data();
    received.shutdown().await.expect("the transfer checks out");

    assert!(chunks > 75, "{chunks} chunks");
    assert!(counts.largest_read.load(Ordering::SeqCst) <= CHUNK, "a read larger than a chunk");
    assert_eq!(counts.whole_reads.load(Ordering::SeqCst), whole_reads_before, "a whole file was read");
    let incoming = received.into_finished(&follower).expect("finished");
    assert_eq!(std::fs::read(incoming.path()).expect("reads"), original);
}

/// A transfer restarted from the start over a longer one of the same snapshot id leaves
/// no stale tail: the end of the last chunk is the end of the file.
#[tokio::test]
async fn a_restart_over_a_longer_partial_transfer_is_cut_to_its_end() {
    let root = tempfile::tempdir().expect("a temporary directory");
    let storage: Arc<dyn Storage> = Arc::new(StdStorage::default());
    let path = published(storage.as_ref(), &root.path().join("a"), 10 * 1024);
    let original = std::fs::read(&path).expect("reads");
    let dir = Arc::new(SnapshotDir::new(storage, &root.path().join("a")));
    let mut received = dir.receive();
    received.write_all(&vec![0xAB; original.len() + 5000]).await.expect("writes");
    received.seek(SeekFrom::Start(0)).await.expect("seeks");
    received.write_all(&original).await.expect("writes");
    received.shutdown().await.expect("checks out");
    let incoming = received.into_finished(&dir).expect("finished");
    assert_eq!(std::fs::read(incoming.path()).expect("reads"), original);
}

fn incoming_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("lists")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .filter(|n| parse_incoming(n).is_some())
        .collect();
    names.sort();
    names
}

/// Who removes a received file: its receiver when dropped unpublished, a new transfer (or
/// an open) when a killed process left it; never a live receiver's file, never a
/// published one, and nothing once the node is halted.
#[tokio::test]
async fn received_files_are_removed_by_their_receiver_or_as_leftovers() {
    let root = tempfile::tempdir().expect("a temporary directory");
    let storage: Arc<dyn Storage> = Arc::new(StdStorage::default());
    let path = root.path();
    std::fs::write(path.join("incoming-99.part"), b"left by a killed process").expect("writes");
    std::fs::write(path.join("incoming-x.part"), b"not ours").expect("writes");
    let dir = Arc::new(SnapshotDir::new(Arc::clone(&storage), path));

    let mut first = dir.receive();
    assert_eq!(incoming_files(path), Vec::<String>::new(), "the leftover is removed, nothing created yet");
    first.write_all(b"some chunk").await.expect("writes");
    assert_eq!(incoming_files(path), ["incoming-0.part"]);
    let mut second = dir.receive();
    assert_eq!(incoming_files(path), ["incoming-0.part"], "a live receiver's file stays");
    drop(first);
    assert_eq!(incoming_files(path), Vec::<String>::new(), "an abandoned transfer removes its file");

    second.write_all(b"another").await.expect("writes");
    let Ok(mut incoming) = second.into_incoming() else { panic!("a receiver") };
    incoming.publish_as(&path.join("published")).expect("renames");
    drop(incoming);
    assert!(path.join("published").exists(), "a published file is not the receiver's any more");

    let mut third = dir.receive();
    third.write_all(b"cut off").await.expect("writes");
    dir.halt();
    assert!(third.write_all(b"more").await.is_err(), "a halted node writes nothing");
    drop(third);
    assert_eq!(incoming_files(path), ["incoming-2.part"], "a killed process removes nothing");
    let reopened = SnapshotDir::new(storage, path);
    assert_eq!(reopened.remove_leftovers().expect("removes"), 1);
    assert_eq!(incoming_files(path), Vec::<String>::new());
    assert!(path.join("incoming-x.part").exists(), "only receivers' names are recognised");
}
