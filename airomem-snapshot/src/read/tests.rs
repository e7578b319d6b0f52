use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use airomem_core::storage::{LockGuard, StdStorage, StorageFile};

use super::*;
use crate::format::{CHUNK_RAW, FOOTER_LEN, FORMAT_VERSION, RecordPosition};
use crate::{write, write_streamed};

const ID: SerializerId = SerializerId(1);

fn header(seq: u64) -> SnapshotHeader {
    SnapshotHeader::new(ID, 3, Seq(seq))
}

fn publish(dir: &Path, seq: u64, image: &[u8]) -> Vec<u8> {
    let published = write(&StdStorage::default(), dir, header(seq), image, 3).expect("write");
    assert_eq!(published.raw_len, image.len() as u64);
    let bytes = std::fs::read(&published.path).expect("read back");
    assert_eq!(published.file_len, bytes.len() as u64);
    bytes
}

/// Bytes that barely compress, from a fixed xorshift.
fn noise(len: usize, mut x: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn footer_of(bytes: &[u8]) -> Footer {
    Footer::decode(Path::new("f"), bytes).expect("footer")
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .collect();
    names.sort();
    names
}

#[test]
fn round_trip_and_listing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image: Vec<u8> = (0..100_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
    let bytes = publish(dir.path(), 42, &image);
    assert!(bytes.len() < image.len() / 10, "repetitive data compresses");
    assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), FORMAT_VERSION);
    publish(dir.path(), 7, b"");
    let storage = StdStorage::default();
    assert_eq!(list(&storage, dir.path()).expect("list"), vec![Seq(7), Seq(42)]);
    let (header, loaded) = load(&storage, dir.path(), Seq(42), ID).expect("load");
    assert_eq!((header.schema_version, header.seq, header.next_record, loaded), (3, Seq(42), None, image));
    assert_eq!(load(&storage, dir.path(), Seq(7), ID).expect("load").1, b"");
    assert_eq!(read_header(&storage, dir.path(), Seq(42)).expect("header"), header);
    assert!(matches!(
        load(&storage, dir.path(), Seq(42), SerializerId(2)),
        Err(SnapshotError::SerializerMismatch { .. })
    ));
}

#[test]
fn chunks_are_cut_at_chunk_raw_and_the_last_is_shorter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = StdStorage::default();
    for (seq, len, chunks) in
        [(1, 0, 0), (2, 1, 1), (3, CHUNK_RAW, 1), (4, 2 * CHUNK_RAW, 2), (5, 3 * CHUNK_RAW + 17, 4)]
    {
        let image = noise(len, seq);
        let bytes = publish(dir.path(), seq, &image);
        let footer = footer_of(&bytes);
        assert_eq!((footer.raw_len, footer.chunks, footer.version), (len as u64, chunks, 2), "{len} bytes");
        assert_eq!(bytes.len(), HEADER_LEN + FOOTER_LEN + footer.body_len as usize);
        let file = crate::path(dir.path(), Seq(seq));
        for threads in [1, 2] {
            let (_, loaded) = verify_with(&file, &bytes, Seq(seq), ID, threads).expect("verify");
            assert!(loaded == image, "{len} bytes on {threads} threads");
        }
        assert!(load(&storage, dir.path(), Seq(seq), ID).expect("load").1 == image);
    }
}

#[test]
fn the_next_record_position_survives_the_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = StdStorage::default();
    let next = RecordPosition { segment: Seq(40), offset: 1234 };
    let header = header(41).with_next_record(next);
    write(&storage, dir.path(), header, b"state", 3).expect("write");
    assert_eq!(read_header(&storage, dir.path(), Seq(41)).expect("header"), header);
    assert_eq!(load(&storage, dir.path(), Seq(41), ID).expect("load"), (header, b"state".to_vec()));
    // Segment 0 offset 0 is how "unknown" is stored.
    let zero = SnapshotHeader { next_record: Some(RecordPosition { segment: Seq(0), offset: 0 }), ..header };
    let decoded = SnapshotHeader::decode_alone(Path::new("f"), &zero.encode()).expect("decode");
    assert_eq!(decoded.next_record, None);
}

#[test]
fn a_fill_writing_one_byte_at_a_time_loads_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = StdStorage::default();
    let image = noise(CHUNK_RAW + CHUNK_RAW / 3, 9);
    let published = write_streamed(&storage, dir.path(), header(3), 3, |out| {
        for byte in &image {
            out.write_all(std::slice::from_ref(byte))?;
        }
        Ok(())
    })
    .expect("write");
    assert_eq!(published.raw_len, image.len() as u64);
    let bytes = std::fs::read(&published.path).expect("read");
    assert_eq!(footer_of(&bytes).chunks, 2);
    assert!(load(&storage, dir.path(), Seq(3), ID).expect("load").1 == image);
    // The same image in one write makes the same file: chunks are cut by size alone.
    let other = tempfile::tempdir().expect("tempdir");
    assert_eq!(publish(other.path(), 3, &image), bytes);
}

#[derive(Debug, thiserror::Error)]
#[error("the serializer gave up")]
struct GaveUp;

#[test]
fn a_failing_fill_publishes_nothing_and_leaves_no_temp_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = StdStorage::default();
    let result = write_streamed(&storage, dir.path(), header(5), 3, |out| {
        out.write_all(&noise(CHUNK_RAW + 10, 1))?;
        Err(GaveUp.into())
    });
    let Err(e @ SnapshotError::Source { .. }) = result else { panic!("expected Source, got {result:?}") };
    assert_eq!(e.to_string(), "the snapshot's image could not be produced: the serializer gave up");
    assert!(std::error::Error::source(&e).is_some_and(|s| s.is::<GaveUp>()));
    assert!(!e.is_storage_full());
    assert_eq!(names(dir.path()), Vec::<String>::new());

    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        write_streamed(&storage, dir.path(), header(6), 3, |out| {
            out.write_all(b"half an image")?;
            panic!("the serializer panicked");
        })
    }));
    assert!(panicked.is_err());
    assert_eq!(names(dir.path()), Vec::<String>::new(), "a panic in fill removes the temp file too");
}

/// The real file system, except that the snapshot file fails every write once `limit`
/// bytes are in it, as a full disk does.
#[derive(Debug)]
struct FullAfter {
    inner: StdStorage,
    limit: u64,
    removed: Mutex<Vec<PathBuf>>,
}

struct LimitedFile {
    inner: Box<dyn StorageFile>,
    left: Arc<AtomicU64>,
}

impl StorageFile for LimitedFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let left = self.left.load(Ordering::Relaxed);
        if buf.len() as u64 > left {
            return Err(io::Error::new(io::ErrorKind::StorageFull, "no space left on device"));
        }
        self.left.store(left - buf.len() as u64, Ordering::Relaxed);
        self.inner.write_all(buf)
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.inner.write_at(offset, buf)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.inner.sync_data()
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
}

impl Storage for FullAfter {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list(dir)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.inner.read(path)
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let inner = self.inner.create(path)?;
        Ok(Box::new(LimitedFile { inner, left: Arc::new(AtomicU64::new(self.limit)) }))
    }
    fn open_write(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        self.inner.open_write(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.removed.lock().expect("lock").push(path.to_path_buf());
        self.inner.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.sync_dir(dir)
    }
    fn lock(&self, path: &Path) -> io::Result<LockGuard> {
        self.inner.lock(path)
    }
}

#[test]
fn a_full_disk_is_reported_as_such_whatever_fill_returns() {
    let image = noise(2 * CHUNK_RAW + 100, 4);
    // Full in the header, in the first chunk, in the second, and at the footer.
    let body = publish(tempfile::tempdir().expect("tempdir").path(), 8, &image).len() as u64 - FOOTER_LEN as u64;
    for limit in [10, HEADER_LEN as u64 + 100, HEADER_LEN as u64 + 2 * CHUNK_RAW as u64 + 50, body] {
        // fill: passes the error on / swallows it and reports its own / swallows it and succeeds.
        for mode in 0..3 {
            let dir = tempfile::tempdir().expect("tempdir");
            let storage = FullAfter { inner: StdStorage::default(), limit, removed: Mutex::default() };
            let result = write_streamed(&storage, dir.path(), header(8), 3, |out| {
                for piece in image.chunks(4096) {
                    match (out.write_all(piece), mode) {
                        (Err(e), 0) => return Err(e.into()),
                        (Err(_), 1) => return Err(GaveUp.into()),
                        _ => {}
                    }
                }
                Ok(())
            });
            let e = result.expect_err("the disk is full");
            assert!(e.is_storage_full(), "limit {limit}, mode {mode}: {e:?}");
            assert!(matches!(e, SnapshotError::Io { op: "write", .. }), "{e:?}");
            assert_eq!(names(dir.path()), Vec::<String>::new(), "limit {limit}, mode {mode}");
            assert_eq!(storage.removed.lock().expect("lock").len(), 1);
        }
    }
}

/// Every way of damaging `bytes`, a snapshot of `seq`, must be refused without a panic.
fn assert_all_damage_is_detected(bytes: &[u8], seq: Seq, every_bit: bool) {
    let file = crate::path(Path::new("dir"), seq);
    verify(&file, bytes, seq, ID).expect("the undamaged file verifies");
    for len in 0..bytes.len() {
        let result = verify(&file, &bytes[..len], seq, ID);
        assert!(matches!(result, Err(SnapshotError::Damaged { .. })), "truncated to {len} bytes: {result:?}");
    }
    let step = if every_bit { 1 } else { 7 };
    for bit in (0..bytes.len() * 8).step_by(step) {
        let mut flipped = bytes.to_vec();
        flipped[bit / 8] ^= 1 << (bit % 8);
        let result = verify(&file, &flipped, seq, ID);
        assert!(matches!(result, Err(SnapshotError::Damaged { .. })), "bit {bit} flipped: {result:?}");
    }
    let mut longer = bytes.to_vec();
    longer.extend_from_slice(b"garbage");
    assert!(matches!(verify(&file, &longer, seq, ID), Err(SnapshotError::Damaged { .. })));
}

#[test]
fn every_truncation_and_many_bit_flips_are_detected() {
    let dir = tempfile::tempdir().expect("tempdir");
    // One chunk of data that compresses a little, and four chunks (the last short) of data
    // that compresses a lot, so that the file is small enough to flip every bit of it.
    let one: Vec<u8> = (0..2_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let many: Vec<u8> = (0..(3 * CHUNK_RAW + 999) as u32).map(|i| (i % 7) as u8).collect();
    for (seq, image, every_bit) in [(5, one, false), (6, many, true), (7, Vec::new(), true)] {
        let bytes = publish(dir.path(), seq, &image);
        assert_all_damage_is_detected(&bytes, Seq(seq), every_bit);
    }
    // Through the file system too, for one damage.
    let file = crate::path(dir.path(), Seq(6));
    let mut bytes = std::fs::read(&file).expect("read");
    bytes.pop();
    std::fs::write(&file, &bytes).expect("truncate");
    assert!(matches!(load(&StdStorage::default(), dir.path(), Seq(6), ID), Err(SnapshotError::Damaged { .. })));
}

#[test]
fn every_truncation_and_many_bit_flips_of_a_version_1_file_are_detected() {
    let bytes = include_bytes!("../../tests/golden/v1/00000000000000000042.snapshot");
    assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), 1);
    assert_all_damage_is_detected(bytes, Seq(42), true);
}

/// Recomputes the body and footer checksums of a version 2 file after its body was edited,
/// as a crafted file would.
fn reseal(bytes: &mut [u8]) {
    let end = bytes.len() - FOOTER_LEN;
    let crc = crc32c::crc32c(&bytes[HEADER_LEN..end]);
    bytes[end + 20..end + 24].copy_from_slice(&crc.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[end..end + 28]);
    bytes[end + 28..end + 32].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn chunk_lengths_are_checked_even_where_the_checksums_agree() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image: Vec<u8> = (0..(2 * CHUNK_RAW + 5) as u32).map(|i| (i % 13) as u8).collect();
    let bytes = publish(dir.path(), 3, &image);
    let file = crate::path(dir.path(), Seq(3));
    let end = bytes.len() - FOOTER_LEN;
    let first_frame = u32::from_le_bytes(bytes[HEADER_LEN..HEADER_LEN + 4].try_into().expect("4")) as usize;
    let put_u32 = |at: usize, v: u32| move |b: &mut Vec<u8>| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    let add_raw_len = |delta: u64| {
        move |b: &mut Vec<u8>| {
            let raw = u64::from_le_bytes(b[end..end + 8].try_into().expect("8")).wrapping_add(delta);
            b[end..end + 8].copy_from_slice(&raw.to_le_bytes());
        }
    };
    let second = HEADER_LEN + 8 + first_frame;
    type Edit<'a> = Box<dyn Fn(&mut Vec<u8>) + 'a>;
    let edits: Vec<(&str, Edit)> = vec![
        ("raw length one more", Box::new(put_u32(HEADER_LEN + 4, CHUNK_RAW as u32 + 1))),
        ("raw length one less", Box::new(put_u32(HEADER_LEN + 4, CHUNK_RAW as u32 - 1))),
        ("raw length one less, footer agrees", {
            let (a, b) = (put_u32(HEADER_LEN + 4, CHUNK_RAW as u32 - 1), add_raw_len(u64::MAX));
            Box::new(move |x: &mut Vec<u8>| {
                a(x);
                b(x)
            })
        }),
        ("raw length one more, footer agrees", {
            let (a, b) = (put_u32(HEADER_LEN + 4, CHUNK_RAW as u32 + 1), add_raw_len(1));
            Box::new(move |x: &mut Vec<u8>| {
                a(x);
                b(x)
            })
        }),
        ("second chunk claims 4 GiB", Box::new(put_u32(second + 4, u32::MAX))),
        ("zero raw length", Box::new(put_u32(HEADER_LEN + 4, 0))),
        ("frame length past the body", Box::new(put_u32(HEADER_LEN, u32::MAX))),
        ("frame length one less", Box::new(put_u32(HEADER_LEN, first_frame as u32 - 1))),
        ("zero frame length", Box::new(put_u32(HEADER_LEN, 0))),
        ("one chunk more in the footer", Box::new(put_u32(end + 16, 4))),
        ("one chunk fewer in the footer", Box::new(put_u32(end + 16, 2))),
        ("a frame byte changed", Box::new(|b: &mut Vec<u8>| b[HEADER_LEN + 8 + first_frame / 2] ^= 0x10)),
    ];
    for (what, edit) in edits {
        let mut damaged = bytes.clone();
        edit(&mut damaged);
        reseal(&mut damaged);
        for threads in [1, 2] {
            let result = verify_with(&file, &damaged, Seq(3), ID, threads);
            assert!(matches!(result, Err(SnapshotError::Damaged { .. })), "{what}: {result:?}");
        }
    }
}

#[test]
fn unknown_versions_are_unsupported_and_damaged_versions_are_damage() {
    let path = Path::new("f");
    let mut bytes = header(1).encode().to_vec();
    bytes[8..10].copy_from_slice(&3u16.to_le_bytes());
    assert!(matches!(SnapshotHeader::decode_alone(path, &bytes), Err(SnapshotError::Damaged { .. })));
    let crc = crc32c::crc32c(&bytes[0..44]);
    bytes[44..48].copy_from_slice(&crc.to_le_bytes());
    let result = SnapshotHeader::decode_alone(path, &bytes);
    assert!(matches!(result, Err(SnapshotError::UnsupportedVersion { found: 3, supported: 2, .. })), "{result:?}");
}

#[test]
fn file_frames_of_both_versions_verify_in_pieces() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = StdStorage::default();
    let image = noise(2 * CHUNK_RAW + 3, 2);
    publish(dir.path(), 4, &image);
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/v1/00000000000000000042.snapshot");
    for (file, version, chunks) in [(crate::path(dir.path(), Seq(4)), 2, 3), (golden, 1, 1)] {
        let reader = storage.open_read(&file).expect("open");
        let (header, footer) = verify_file_frame(&file, reader.as_ref()).expect("verifies");
        assert_eq!((footer.version, footer.chunks), (version, chunks));
        assert_eq!(header, SnapshotHeader::decode_alone(&file, &std::fs::read(&file).expect("read")).expect("header"));
        let bytes = std::fs::read(&file).expect("read");
        let cut = dir.path().join("cut");
        for len in [0, 9, 47, 48, bytes.len() / 2, bytes.len() - 1] {
            std::fs::write(&cut, &bytes[..len]).expect("write");
            let reader = storage.open_read(&cut).expect("open");
            let result = verify_file_frame(&cut, reader.as_ref());
            assert!(matches!(result, Err(SnapshotError::Damaged { .. })), "{len} bytes: {result:?}");
        }
        let mut tail = [0u8; FOOTER_LEN];
        tail.copy_from_slice(&bytes[bytes.len() - FOOTER_LEN..]);
        assert_eq!(Footer::decode_alone(&file, &tail).expect("footer alone"), footer);
    }
}

#[test]
fn temp_files_are_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("00000000000000000009.snapshot.tmp"), b"partial").expect("write");
    std::fs::write(dir.path().join("unrelated.tmp"), b"x").expect("write");
    let storage = StdStorage::default();
    assert_eq!(remove_temp_files(&storage, dir.path()).expect("clean"), 1);
    assert!(dir.path().join("unrelated.tmp").exists());
    assert!(list(&storage, dir.path()).expect("list").is_empty());
}

/// About 40 MB shaped like a postcard image of many records: a varint length and a random
/// 32 character token, then a few varints.
fn postcard_like(len: usize) -> Vec<u8> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_";
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = Vec::with_capacity(len + 64);
    let varint = |out: &mut Vec<u8>, mut v: u64| {
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    };
    let mut id = 0u64;
    while out.len() < len {
        id += 1;
        varint(&mut out, id);
        varint(&mut out, 32);
        for _ in 0..32 {
            out.push(ALPHABET[(next() % 64) as usize]);
        }
        varint(&mut out, next() % 1000);
        varint(&mut out, 1_700_000_000 + next() % 100_000_000);
        out.push((next() % 2) as u8);
    }
    out.truncate(len);
    out
}

/// The same records, but with tokens drawn from 4096 distinct ones: a state with repeated
/// values, which compresses well and so costs zstd more per byte of file.
fn postcard_like_repeating(len: usize) -> Vec<u8> {
    let tokens = postcard_like(4096 * 40);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(len + 64);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let at = (x % 4096) as usize * 40;
        out.extend_from_slice(&tokens[at..at + 40]);
    }
    out.truncate(len);
    out
}

/// CPU time of the calling thread so far, from Linux's schedstat; `None` elsewhere.
fn thread_cpu() -> Option<std::time::Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    stat.split_whitespace().next()?.parse().ok().map(std::time::Duration::from_nanos)
}

fn best_of(runs: usize, mut f: impl FnMut()) -> std::time::Duration {
    (0..runs)
        .map(|_| {
            let started = std::time::Instant::now();
            f();
            started.elapsed()
        })
        .min()
        .expect("runs")
}

/// Prints load times on one and two threads:
/// `cargo test --release -p airomem-snapshot -- --ignored --nocapture load_time`.
#[test]
#[ignore = "a measurement, meaningful only in release mode"]
fn load_time_on_one_and_two_threads() {
    for (what, image) in
        [("random tokens", postcard_like(40_000_000)), ("tokens from 4096", postcard_like_repeating(40_000_000))]
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let started = std::time::Instant::now();
        let bytes = publish(dir.path(), 1, &image);
        let written = started.elapsed();
        let single_frame = zstd::bulk::compress(&image, 3).expect("compress").len();
        let footer = footer_of(&bytes);
        eprintln!(
            "{what}: image {} bytes; file {} bytes in {} chunks (one zstd frame of the whole image: \
             {single_frame} bytes); written in {written:?}",
            image.len(),
            bytes.len(),
            footer.chunks,
        );
        let file = crate::path(dir.path(), Seq(1));
        let body = &bytes[HEADER_LEN..bytes.len() - FOOTER_LEN];
        let chunks = walk_chunks(&file, &footer, |at| {
            Ok(body[at as usize..at as usize + CHUNK_HEADER_LEN].try_into().expect("8 bytes"))
        })
        .expect("walk");
        let crc = best_of(9, || assert_eq!(crc32c::crc32c(body), footer.body_crc));
        let alloc = best_of(9, || {
            let mut v = vec![0u8; image.len()];
            // Touch every page, as decompression does.
            for i in (0..v.len()).step_by(4096) {
                v[i] = 1;
            }
            assert_eq!(v[0], 1);
        });
        eprintln!("  body crc32c {crc:?}; allocating and touching the output {alloc:?}");
        // CPU time of each half on this thread alone: what two threads take at best on two
        // idle cores (the wall times below also count waiting for a busy machine).
        let split = chunks.partition_point(|c| c.raw_at < footer.raw_len / 2);
        for (name, half) in [("first half", &chunks[..split]), ("second half", &chunks[split..])] {
            let len: usize = half.iter().map(|c| c.raw_len as usize).sum();
            let mut out = vec![0u8; len];
            let cpu = (0..5)
                .map(|_| {
                    let before = thread_cpu();
                    decompress_into(&file, body, half, &mut out).expect("decompress");
                    thread_cpu().zip(before).map(|(after, before)| after - before)
                })
                .min()
                .flatten();
            eprintln!("  {name} ({} chunks, {len} bytes, output already touched): CPU {cpu:?}", half.len());
        }
        for threads in [1, 2, 1, 2] {
            let decompress = best_of(9, || {
                let out = decompress_chunks(&file, body, &chunks, footer.raw_len, threads).expect("decompress");
                assert!(out.len() == image.len());
            });
            let verify = best_of(9, || {
                let (_, out) = verify_with(&file, &bytes, Seq(1), ID, threads).expect("verify");
                assert!(out.len() == image.len());
            });
            eprintln!("  {threads} thread(s): decompress_chunks best {decompress:?}, whole verify best {verify:?}");
        }
    }
}
