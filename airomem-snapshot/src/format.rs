//! The snapshot container. The body is streamed, so its lengths and checksum follow it:
//!
//! ```text
//! header, 40 bytes
//!  0     8    magic "AIROMEMS"
//!  8     2    format version, u16 LE (1)
//! 10     2    serializer id, u16 LE
//! 12     4    State::SCHEMA_VERSION, u32 LE
//! 16     8    sequence number of the last record included, u64 LE
//! 24     8    reserved, zero
//! 32     4    reserved, zero
//! 36     4    crc32c of bytes 0..36
//! body: one zstd frame (with zstd's own content checksum) of the serialized state
//! footer, 24 bytes
//!  0     8    length of the serialized state, u64 LE
//!  8     8    length of the body, u64 LE
//! 16     4    crc32c of the body
//! 20     4    crc32c of footer bytes 0..20
//! ```

use std::path::Path;

use airomem_core::{Seq, SerializerId};

use crate::SnapshotError;

/// Bytes before the body.
pub const HEADER_LEN: usize = 40;
/// Bytes after the body.
pub const FOOTER_LEN: usize = 24;
/// The snapshot format this build reads and writes.
pub const FORMAT_VERSION: u16 = 1;

const MAGIC: &[u8; 8] = b"AIROMEMS";

/// What a snapshot header records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotHeader {
    /// Serializer of the state image.
    pub serializer: SerializerId,
    /// The user's schema version.
    pub schema_version: u32,
    /// The last journal record the image includes.
    pub seq: Seq,
}

/// The highest sequence number a snapshot may include: half the `u64` range, the same bound
/// the journal puts on segment headers.
pub const MAX_SEQ: u64 = u64::MAX / 2;

impl SnapshotHeader {
    /// The header's bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..8].copy_from_slice(MAGIC);
        out[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[10..12].copy_from_slice(&self.serializer.0.to_le_bytes());
        out[12..16].copy_from_slice(&self.schema_version.to_le_bytes());
        out[16..24].copy_from_slice(&self.seq.0.to_le_bytes());
        let crc = crc32c::crc32c(&out[0..36]);
        out[36..40].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Reads and verifies the header at the start of `bytes`, the content of `file`.
    pub fn decode(file: &Path, bytes: &[u8]) -> Result<SnapshotHeader, SnapshotError> {
        if bytes.len() < HEADER_LEN + FOOTER_LEN {
            let reason = "file is shorter than a header and a footer".to_string();
            return Err(SnapshotError::Damaged { file: file.to_path_buf(), reason });
        }
        SnapshotHeader::decode_alone(file, bytes)
    }

    /// Reads and verifies a header from `bytes`, the first bytes of `file`, without
    /// looking for the rest of the file.
    pub fn decode_alone(file: &Path, bytes: &[u8]) -> Result<SnapshotHeader, SnapshotError> {
        let damaged = |reason: &str| SnapshotError::Damaged { file: file.to_path_buf(), reason: reason.to_string() };
        if bytes.len() < HEADER_LEN {
            return Err(damaged("file is shorter than a header"));
        }
        if &bytes[0..8] != MAGIC {
            return Err(damaged("wrong magic bytes"));
        }
        if u32_at(bytes, 36) != crc32c::crc32c(&bytes[0..36]) {
            return Err(damaged("header checksum mismatch"));
        }
        let version = u16::from_le_bytes([bytes[8], bytes[9]]);
        if version != FORMAT_VERSION {
            return Err(SnapshotError::UnsupportedVersion {
                file: file.to_path_buf(),
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let seq = Seq(u64_at(bytes, 16));
        if seq.0 > MAX_SEQ {
            // No journal gets there (the journal refuses first sequence numbers past the same
            // bound), and trusting it would overflow the record after it.
            return Err(damaged("sequence number out of range"));
        }
        Ok(SnapshotHeader {
            serializer: SerializerId(u16::from_le_bytes([bytes[10], bytes[11]])),
            schema_version: u32_at(bytes, 12),
            seq,
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
}

impl Footer {
    /// The footer's bytes.
    pub fn encode(&self) -> [u8; FOOTER_LEN] {
        let mut out = [0u8; FOOTER_LEN];
        out[0..8].copy_from_slice(&self.raw_len.to_le_bytes());
        out[8..16].copy_from_slice(&self.body_len.to_le_bytes());
        out[16..20].copy_from_slice(&self.body_crc.to_le_bytes());
        let crc = crc32c::crc32c(&out[0..20]);
        out[20..24].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Reads and verifies a footer on its own (a file's last [`FOOTER_LEN`] bytes), without
    /// the body it describes: for tools that report sizes without reading whole snapshots.
    pub fn decode_alone(file: &Path, footer: &[u8; FOOTER_LEN]) -> Result<Footer, SnapshotError> {
        if u32_at(footer, 20) != crc32c::crc32c(&footer[0..20]) {
            return Err(SnapshotError::Damaged {
                file: file.to_path_buf(),
                reason: "footer checksum mismatch (the file is truncated or damaged)".into(),
            });
        }
        Ok(Footer { raw_len: u64_at(footer, 0), body_len: u64_at(footer, 8), body_crc: u32_at(footer, 16) })
    }

    /// Reads and verifies the footer at the end of `bytes`, and that the body it describes
    /// fills exactly the space between header and footer.
    pub fn decode(file: &Path, bytes: &[u8]) -> Result<Footer, SnapshotError> {
        let damaged = |reason: String| SnapshotError::Damaged { file: file.to_path_buf(), reason };
        let at = bytes.len().checked_sub(FOOTER_LEN).ok_or_else(|| damaged("no footer".into()))?;
        let footer = &bytes[at..];
        if u32_at(footer, 20) != crc32c::crc32c(&footer[0..20]) {
            return Err(damaged("footer checksum mismatch (the file is truncated or damaged)".into()));
        }
        let parsed = Footer { raw_len: u64_at(footer, 0), body_len: u64_at(footer, 8), body_crc: u32_at(footer, 16) };
        let present = (at - HEADER_LEN.min(at)) as u64;
        if parsed.body_len != present {
            return Err(damaged(format!("footer names a {} byte body, {present} bytes are present", parsed.body_len)));
        }
        Ok(parsed)
    }
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}
