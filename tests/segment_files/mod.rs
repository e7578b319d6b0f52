//! Helpers shared by the integration tests: reading segment files byte by byte without the
//! library's own decoder, copying and snapshotting store directories.
//!
//! Not every test uses every helper.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Bytes in a segment header.
pub const SEGMENT_HEADER_LEN: usize = 32;
/// Bytes in front of every record's payload.
pub const FRAME_HEADER_LEN: usize = 25;
/// The lock file every store directory holds.
pub const LOCK_FILE: &str = "airomem.lock";

/// The file name of the segment whose first record is `first_seq`.
pub fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.journal")
}

/// One record as found in a segment file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawRecord {
    /// Offset of the record in its segment.
    pub offset: usize,
    /// Offset just past it.
    pub end: usize,
    /// Payload length.
    pub len: usize,
    /// Sequence number.
    pub seq: u64,
    /// Commit time.
    pub unix_nanos: u64,
    /// Kind byte without the batch bits (1 = command, 2 = abort marker).
    pub kind: u8,
    /// Whether the batch-start bit is set.
    pub batch_start: bool,
    /// Whether the batch-end bit is set.
    pub batch_end: bool,
}

/// A segment file taken apart with the layout of the format description (not the library's
/// decoder). Panics on anything that does not parse: only for intact segments.
#[derive(Clone, Debug)]
pub struct RawSegment {
    /// Format version from the header.
    pub version: u16,
    /// Serializer id from the header.
    pub serializer: u16,
    /// Schema version from the header.
    pub schema: u32,
    /// First sequence number from the header.
    pub first_seq: u64,
    /// Every record, in file order.
    pub records: Vec<RawRecord>,
    /// Zero bytes after the last record: space prepared for records never written.
    pub zero_tail: usize,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Parses a whole, intact segment; zeros after the last record are free space.
pub fn parse_segment(bytes: &[u8]) -> RawSegment {
    assert!(bytes.len() >= SEGMENT_HEADER_LEN, "segment shorter than its header");
    assert_eq!(&bytes[0..8], b"AIROMEMJ", "segment magic");
    assert_eq!(u32_at(bytes, 28), crc32c(&bytes[0..28]), "segment header checksum");
    let mut records = Vec::new();
    let mut offset = SEGMENT_HEADER_LEN;
    while offset < bytes.len() && bytes[offset..].iter().any(|&b| b != 0) {
        assert!(offset + FRAME_HEADER_LEN <= bytes.len(), "record header cut at {offset}");
        let len = u32_at(bytes, offset) as usize;
        let end = offset + FRAME_HEADER_LEN + len;
        assert!(end <= bytes.len(), "record payload cut at {offset}");
        let kind_byte = bytes[offset + 24];
        records.push(RawRecord {
            offset,
            end,
            len,
            seq: u64_at(bytes, offset + 8),
            unix_nanos: u64_at(bytes, offset + 16),
            kind: kind_byte & 0x3f,
            batch_start: kind_byte & 0x40 != 0,
            batch_end: kind_byte & 0x80 != 0,
        });
        offset = end;
    }
    RawSegment {
        version: u16_at(bytes, 8),
        serializer: u16_at(bytes, 10),
        schema: u32_at(bytes, 12),
        first_seq: u64_at(bytes, 16),
        records,
        zero_tail: bytes.len() - offset,
    }
}

/// Parses the segment file at `path`.
pub fn read_segment(path: &Path) -> RawSegment {
    parse_segment(&fs::read(path).expect("read segment"))
}

/// Names of the segment files in `dir`, sorted (which is also by first sequence number).
pub fn segment_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = file_names(dir).into_iter().filter(|n| is_segment_name(n)).collect();
    names.sort();
    names
}

/// Whether `name` is a segment file name: twenty digits and `.journal`.
pub fn is_segment_name(name: &str) -> bool {
    name.strip_suffix(".journal").is_some_and(|d| d.len() == 20 && d.bytes().all(|b| b.is_ascii_digit()))
}

/// Every regular file name in `dir`, sorted.
pub fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("dir entry"))
        .filter(|e| e.file_type().expect("file type").is_file())
        .map(|e| e.file_name().into_string().expect("utf-8 name"))
        .collect();
    names.sort();
    names
}

/// The path of the newest segment in `dir`.
pub fn newest_segment(dir: &Path) -> PathBuf {
    dir.join(segment_names(dir).last().expect("at least one segment"))
}

/// Copies every regular file of `from` into `to` (created if needed).
pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create copy dir");
    for name in file_names(from) {
        fs::copy(from.join(&name), to.join(&name)).expect("copy file");
    }
}

/// The name and content of every regular file of `dir`.
pub fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    file_names(dir).into_iter().map(|n| (n.clone(), fs::read(dir.join(&n)).expect("read file"))).collect()
}

/// Rewrites `path` with `bytes`, keeping nothing of the old content.
pub fn write_file(path: &Path, bytes: &[u8]) {
    fs::write(path, bytes).expect("write file");
}

/// Makes the store in `dir` look as if its process had died after its last write instead of
/// closing. A clean close records in `journal.head` that every record is synced, which makes
/// damage to any of them corruption rather than a torn write; a crash leaves no such record.
/// Cutting the head to its first 20 bytes, which name the newest segment (the layout from
/// before the head held a watermark), drops it.
pub fn as_if_crashed(dir: &Path) {
    let head = dir.join("journal.head");
    let bytes = fs::read(&head).expect("read journal.head");
    fs::write(&head, &bytes[..20]).expect("write journal.head");
}

/// CRC-32C (Castagnoli), bit by bit: independent of the library's checksum code.
pub fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0x82f6_3b78 & mask);
        }
    }
    !crc
}

/// Recomputes the header checksum of a segment after its header bytes were edited.
pub fn fix_header_crc(bytes: &mut [u8]) {
    let crc = crc32c(&bytes[0..28]);
    bytes[28..32].copy_from_slice(&crc.to_le_bytes());
}

/// A deterministic pseudo-random byte stream (xorshift64*), for garbage that is the same on
/// every run.
pub fn garbage(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

/// Inode, length and modification time of every regular file of `dir`: changes when a file
/// is rewritten, replaced or appended to, even with the same bytes.
pub fn file_stamps(dir: &Path) -> BTreeMap<String, (u64, u64, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    file_names(dir)
        .into_iter()
        .map(|n| {
            let m = fs::metadata(dir.join(&n)).expect("metadata");
            (n, (m.ino(), m.len(), m.mtime(), m.mtime_nsec()))
        })
        .collect()
}
