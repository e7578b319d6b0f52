//! The snapshot container. The body is streamed, so its lengths and checksum follow it in
//! a footer. All integers are little-endian.
//!
//! Version 2, written by this build:
//!
//! ```text
//! header, 48 bytes
//!  0     8    magic "AIROMEMS"
//!  8     2    format version, u16 (2)
//! 10     2    serializer id, u16
//! 12     4    State::SCHEMA_VERSION, u32
//! 16     8    sequence number of the last record included, u64
//! 24     8    next record: first sequence number (the name) of the journal segment that
//!             holds record seq+1, u64
//! 32     8    next record: byte offset of record seq+1 in that segment, u64
//!             (24..40 all zero: the position is unknown)
//! 40     4    reserved, zero
//! 44     4    crc32c of bytes 0..44
//! body: chunks, one after the other, each compressing its piece of the image on its own
//! (this build cuts pieces of CHUNK_RAW = 4 MiB, the last one shorter; MAX_CHUNK_RAW = 64 MiB)
//!  0     4    compressed length c, u32, at least 1
//!  4     4    raw length r, u32, 1..=MAX_CHUNK_RAW and at most 32768 * c
//!  8     c    one zstd frame (with zstd's content checksum) of those r bytes
//! footer, 32 bytes
//!  0     8    length of the serialized state, u64 (the sum of the chunks' raw lengths)
//!  8     8    length of the body, u64
//! 16     4    number of chunks, u32 (0 for an empty image)
//! 20     4    crc32c of the body (chunk headers and frames)
//! 24     2    format version, u16 (2): a footer read on its own tells its layout
//! 26     2    reserved, zero
//! 28     4    crc32c of footer bytes 0..28
//! ```
//!
//! Version 1 (read, no longer written):
//!
//! ```text
//! header, 40 bytes
//!  0     8    magic "AIROMEMS"
//!  8     2    format version, u16 (1)
//! 10     2    serializer id, u16
//! 12     4    State::SCHEMA_VERSION, u32
//! 16     8    sequence number of the last record included, u64
//! 24    12    reserved, zero
//! 36     4    crc32c of bytes 0..36
//! body: one zstd frame (with zstd's own content checksum) of the serialized state
//! footer, 24 bytes
//!  0     8    length of the serialized state, u64
//!  8     8    length of the body, u64
//! 16     4    crc32c of the body
//! 20     4    crc32c of footer bytes 0..20
//! ```
//!
//! Versions after 2 keep the version at byte 8 and a crc32c of bytes 0..44 at byte 44: that
//! is how this build tells a newer file ([`SnapshotError::UnsupportedVersion`], which stops
//! recovery) from a damaged one ([`SnapshotError::Damaged`], which recovery passes over).
//! Builds that read only version 1 check the checksum at byte 36 before the version, so
//! they take a version 2 file for a damaged one.
//!
//! Chunks are independent so that a reader can find them all from their headers alone and
//! decompress them in parallel; a reader checks the body's crc32c before it decompresses
//! anything, and each chunk's length claims against the body and the footer.

use std::path::Path;

use airomem_core::{Seq, SerializerId};

use crate::SnapshotError;

/// Bytes before the body, in the version this build writes.
pub const HEADER_LEN: usize = 48;
/// Bytes after the body, in the version this build writes.
pub const FOOTER_LEN: usize = 32;
/// Bytes before the body of a version 1 file.
pub const V1_HEADER_LEN: usize = 40;
/// Bytes after the body of a version 1 file.
pub const V1_FOOTER_LEN: usize = 24;
/// The shortest file any readable version can have (a version 1 file of an empty image is
/// longer, since its body holds a zstd frame).
pub const MIN_FILE_LEN: usize = V1_HEADER_LEN + V1_FOOTER_LEN;
/// The snapshot format this build writes; it reads this one and every earlier one.
pub const FORMAT_VERSION: u16 = 2;
/// Bytes of each chunk's header in a version 2 body.
pub const CHUNK_HEADER_LEN: usize = 8;
/// The serialized bytes this build puts in each version 2 chunk (the last one holds the
/// rest).
///
/// 4 MiB. Every chunk starts compressing afresh, so what repeats across the image (the
/// same strings in many records) is paid for once per chunk: on 40 MB of postcard-like
/// records with tokens drawn from 4096 distinct ones, zstd level 3 made 2.6 MB of one frame,
/// 7.8 MB of 1 MiB chunks, 5.2 MB of 2 MiB, 3.9 MB of 4 MiB, 3.2 MB of 8 MiB (random tokens:
/// 35.0 MB for all of them). Larger chunks cost the writer memory (one raw chunk and its
/// frame) and the loader balance (its two halves differ by up to one chunk); 4 MiB keeps the
/// writer near 8 MiB and a 40 MB image in 10 chunks, and images under 8 MiB, which load in
/// milliseconds anyway, on one thread.
pub const CHUNK_RAW: usize = 4 * 1024 * 1024;
/// The most serialized bytes a version 2 chunk may hold: more than this build writes, so
/// that a later writer may choose larger chunks without a new format version.
pub const MAX_CHUNK_RAW: usize = 64 * 1024 * 1024;

const MAGIC: &[u8; 8] = b"AIROMEMS";

/// The most any zstd frame expands its own bytes: an RLE block of 4 bytes (3 of header, 1 of
/// content) stands for at most 128 KiB. No chunk may claim more, which bounds the output
/// allocated for a file by 32768 times its size, checksums or no.
const ZSTD_MAX_RATIO: u64 = 128 * 1024 / 4;

/// Where a journal record is: the segment holding it, and its byte offset in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordPosition {
    /// The segment's first sequence number (its file name).
    pub segment: Seq,
    /// The record's byte offset in the segment file.
    pub offset: u64,
}

/// What a snapshot header records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotHeader {
    /// Serializer of the state image.
    pub serializer: SerializerId,
    /// The user's schema version.
    pub schema_version: u32,
    /// The last journal record the image includes.
    pub seq: Seq,
    /// Where record `seq + 1` is (or will be) in the journal, so recovery can start reading
    /// there without scanning; `None` if the writer did not know. Version 1 files have none,
    /// and a position of segment 0 offset 0 is stored as `None` (it is the encoding of
    /// "unknown"; no journal segment is named 0).
    pub next_record: Option<RecordPosition>,
}

/// The highest sequence number a snapshot may include: half the `u64` range, the same bound
/// the journal puts on segment headers.
pub const MAX_SEQ: u64 = u64::MAX / 2;

/// The header length of format `version`, or `None` if this build does not know it.
pub fn header_len(version: u16) -> Option<usize> {
    match version {
        1 => Some(V1_HEADER_LEN),
        2 => Some(HEADER_LEN),
        _ => None,
    }
}

/// The footer length of format `version`, or `None` if this build does not know it.
pub fn footer_len(version: u16) -> Option<usize> {
    match version {
        1 => Some(V1_FOOTER_LEN),
        2 => Some(FOOTER_LEN),
        _ => None,
    }
}

fn damaged(file: &Path, reason: impl Into<String>) -> SnapshotError {
    SnapshotError::Damaged { file: file.to_path_buf(), reason: reason.into() }
}

/// The format version a file claims, from its first bytes, after checking the magic: the
/// claim is not verified yet (the header checksum's place depends on it).
pub(crate) fn claimed_version(file: &Path, bytes: &[u8]) -> Result<u16, SnapshotError> {
    if bytes.len() < 10 {
        return Err(damaged(file, "file is shorter than a header"));
    }
    if &bytes[0..8] != MAGIC {
        return Err(damaged(file, "wrong magic bytes"));
    }
    Ok(u16::from_le_bytes([bytes[8], bytes[9]]))
}

impl SnapshotHeader {
    /// A header with no journal position. Callers that build headers with this rather than
    /// a struct literal keep compiling when a field is added.
    pub fn new(serializer: SerializerId, schema_version: u32, seq: Seq) -> SnapshotHeader {
        SnapshotHeader { serializer, schema_version, seq, next_record: None }
    }

    /// The header with `next` as the position of record `seq + 1`.
    pub fn with_next_record(self, next: RecordPosition) -> SnapshotHeader {
        SnapshotHeader { next_record: Some(next), ..self }
    }

    /// The header's bytes, in the version this build writes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..8].copy_from_slice(MAGIC);
        out[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[10..12].copy_from_slice(&self.serializer.0.to_le_bytes());
        out[12..16].copy_from_slice(&self.schema_version.to_le_bytes());
        out[16..24].copy_from_slice(&self.seq.0.to_le_bytes());
        if let Some(next) = self.next_record {
            out[24..32].copy_from_slice(&next.segment.0.to_le_bytes());
            out[32..40].copy_from_slice(&next.offset.to_le_bytes());
        }
        let crc = crc32c::crc32c(&out[0..44]);
        out[44..48].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Reads and verifies the header at the start of `bytes`, the content of `file`, and
    /// that the file is long enough for a header and a footer of its version.
    pub fn decode(file: &Path, bytes: &[u8]) -> Result<SnapshotHeader, SnapshotError> {
        let header = SnapshotHeader::decode_alone(file, bytes)?;
        let version = claimed_version(file, bytes)?;
        let frame = header_len(version).unwrap_or(HEADER_LEN) + footer_len(version).unwrap_or(FOOTER_LEN);
        if bytes.len() < frame {
            return Err(damaged(file, "file is shorter than a header and a footer"));
        }
        Ok(header)
    }

    /// Reads and verifies a header from `bytes`, the first bytes of `file` (at least
    /// [`HEADER_LEN`] of them if the file has that many), without looking for the rest of
    /// the file. Reads every version this build knows.
    pub fn decode_alone(file: &Path, bytes: &[u8]) -> Result<SnapshotHeader, SnapshotError> {
        let version = claimed_version(file, bytes)?;
        let Some(len) = header_len(version) else {
            // A newer version keeps its header checksum at 44 (see the module docs): if it
            // verifies, the version is real and not a damaged byte.
            if bytes.len() >= HEADER_LEN && u32_at(bytes, 44) == crc32c::crc32c(&bytes[0..44]) {
                return Err(SnapshotError::UnsupportedVersion {
                    file: file.to_path_buf(),
                    found: version,
                    supported: FORMAT_VERSION,
                });
            }
            return Err(damaged(file, format!("header checksum mismatch (or unknown format version {version})")));
        };
        if bytes.len() < len {
            return Err(damaged(file, "file is shorter than a header"));
        }
        if u32_at(bytes, len - 4) != crc32c::crc32c(&bytes[0..len - 4]) {
            return Err(damaged(file, "header checksum mismatch"));
        }
        let seq = Seq(u64_at(bytes, 16));
        if seq.0 > MAX_SEQ {
            // No journal gets there (the journal refuses first sequence numbers past the same
            // bound), and trusting it would overflow the record after it.
            return Err(damaged(file, "sequence number out of range"));
        }
        let next_record = match (version, u64_at(bytes, 24), u64_at(bytes, 32)) {
            (1, ..) | (_, 0, 0) => None,
            (_, segment, offset) => Some(RecordPosition { segment: Seq(segment), offset }),
        };
        Ok(SnapshotHeader {
            serializer: SerializerId(u16::from_le_bytes([bytes[10], bytes[11]])),
            schema_version: u32_at(bytes, 12),
            seq,
            next_record,
        })
    }
}

/// The footer: lengths and checksum of what precedes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footer {
    /// Length of the serialized state.
    pub raw_len: u64,
    /// Length of the compressed body.
    pub body_len: u64,
    /// crc32c of the body.
    pub body_crc: u32,
    /// Number of chunks in the body (a version 1 body is one zstd frame: 1).
    pub chunks: u32,
    /// The format version whose layout the footer has.
    pub version: u16,
}

impl Footer {
    /// The footer's bytes, in the version this build writes.
    pub fn encode(&self) -> [u8; FOOTER_LEN] {
        let mut out = [0u8; FOOTER_LEN];
        out[0..8].copy_from_slice(&self.raw_len.to_le_bytes());
        out[8..16].copy_from_slice(&self.body_len.to_le_bytes());
        out[16..20].copy_from_slice(&self.chunks.to_le_bytes());
        out[20..24].copy_from_slice(&self.body_crc.to_le_bytes());
        out[24..26].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        let crc = crc32c::crc32c(&out[0..28]);
        out[28..32].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Reads and verifies a footer on its own, from a file's last [`FOOTER_LEN`] bytes,
    /// without the header or the body: for tools that report sizes without reading whole
    /// snapshots. Reads both versions: a version 2 footer names its version, and a version 1
    /// footer is the last [`V1_FOOTER_LEN`] bytes. Prefer [`Footer::decode_tail`] when the
    /// header's version is known.
    pub fn decode_alone(file: &Path, footer: &[u8; FOOTER_LEN]) -> Result<Footer, SnapshotError> {
        // A version 1 footer passes the version 2 check only if 32 bits of checksum happen
        // to agree; knowing the header's version removes even that.
        Footer::decode_tail(file, footer, 2).or_else(|_| Footer::decode_tail(file, footer, 1))
    }

    /// Reads and verifies the footer of format `version` at the end of `tail` (a file's last
    /// bytes, at least as many as that version's footer has).
    pub fn decode_tail(file: &Path, tail: &[u8], version: u16) -> Result<Footer, SnapshotError> {
        let mismatch = || damaged(file, "footer checksum mismatch (the file is truncated or damaged)");
        let len =
            footer_len(version).ok_or_else(|| damaged(file, format!("no footer layout for version {version}")))?;
        let at = tail.len().checked_sub(len).ok_or_else(mismatch)?;
        let f = &tail[at..];
        if u32_at(f, len - 4) != crc32c::crc32c(&f[0..len - 4]) {
            return Err(mismatch());
        }
        if version == 1 {
            return Ok(Footer {
                raw_len: u64_at(f, 0),
                body_len: u64_at(f, 8),
                body_crc: u32_at(f, 16),
                chunks: 1,
                version,
            });
        }
        if u16::from_le_bytes([f[24], f[25]]) != version {
            return Err(damaged(file, "footer of another format version than the header's"));
        }
        Ok(Footer {
            raw_len: u64_at(f, 0),
            body_len: u64_at(f, 8),
            chunks: u32_at(f, 16),
            body_crc: u32_at(f, 20),
            version,
        })
    }

    /// Reads and verifies the footer at the end of `bytes`, a whole file whose header names
    /// its version, and that the body it describes fills exactly the space between header
    /// and footer.
    pub fn decode(file: &Path, bytes: &[u8]) -> Result<Footer, SnapshotError> {
        let version = claimed_version(file, bytes)?;
        let (Some(head), Some(foot)) = (header_len(version), footer_len(version)) else {
            return Err(damaged(file, format!("no footer layout for version {version}")));
        };
        let parsed = Footer::decode_tail(file, bytes, version)?;
        let present = bytes.len().saturating_sub(head + foot) as u64;
        if parsed.body_len != present || bytes.len() < head + foot {
            return Err(damaged(
                file,
                format!("footer names a {} byte body, {present} bytes are present", parsed.body_len),
            ));
        }
        Ok(parsed)
    }
}

/// One chunk of a version 2 body, located by walking the chunk headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Chunk {
    /// Offset of the zstd frame in the body.
    pub frame_at: u64,
    /// Length of the zstd frame.
    pub frame_len: u32,
    /// Offset of the chunk's bytes in the image.
    pub raw_at: u64,
    /// Length of the chunk's bytes.
    pub raw_len: u32,
}

/// The chunk header's bytes.
pub(crate) fn encode_chunk_header(frame_len: u32, raw_len: u32) -> [u8; CHUNK_HEADER_LEN] {
    let mut out = [0u8; CHUNK_HEADER_LEN];
    out[0..4].copy_from_slice(&frame_len.to_le_bytes());
    out[4..8].copy_from_slice(&raw_len.to_le_bytes());
    out
}

/// Walks the chunk headers of a version 2 body described by `footer`; `header_at(offset)`
/// returns the 8 bytes at `offset` in the body. Every length is checked against the body
/// that remains and against the footer, so that the result can be trusted to tile the body
/// and the image exactly.
pub(crate) fn walk_chunks(
    file: &Path,
    footer: &Footer,
    mut header_at: impl FnMut(u64) -> Result<[u8; CHUNK_HEADER_LEN], SnapshotError>,
) -> Result<Vec<Chunk>, SnapshotError> {
    let mut chunks = Vec::new();
    let (mut at, mut raw_at) = (0u64, 0u64);
    while at < footer.body_len {
        let index = chunks.len();
        if footer.body_len - at < CHUNK_HEADER_LEN as u64 {
            return Err(damaged(file, format!("chunk {index}'s header is cut by the end of the body")));
        }
        let h = header_at(at)?;
        let (frame_len, raw_len) = (u32_at(&h, 0), u32_at(&h, 4));
        let frame_at = at + CHUNK_HEADER_LEN as u64;
        if u64::from(frame_len) > footer.body_len - frame_at || frame_len == 0 {
            return Err(damaged(file, format!("chunk {index} claims {frame_len} bytes, more than the body has left")));
        }
        if raw_len == 0
            || raw_len as usize > MAX_CHUNK_RAW
            || u64::from(raw_len) > u64::from(frame_len) * ZSTD_MAX_RATIO
        {
            return Err(damaged(file, format!("chunk {index} claims {raw_len} bytes from a {frame_len} byte frame")));
        }
        chunks.push(Chunk { frame_at, frame_len, raw_at, raw_len });
        raw_at += u64::from(raw_len);
        at = frame_at + u64::from(frame_len);
    }
    if chunks.len() as u64 != u64::from(footer.chunks) {
        return Err(damaged(file, format!("the body has {} chunks, the footer says {}", chunks.len(), footer.chunks)));
    }
    if raw_at != footer.raw_len {
        return Err(damaged(file, format!("the chunks hold {raw_at} bytes, the footer says {}", footer.raw_len)));
    }
    Ok(chunks)
}

pub(crate) fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}
