//! Segment files: naming and the 32-byte header.
//!
//! ```text
//! offset size field
//!  0     8    magic "AIROMEMJ"
//!  8     2    format version, u16 LE (currently 1)
//! 10     2    serializer id, u16 LE
//! 12     4    schema version of the user's state, u32 LE
//! 16     8    sequence number of the first record, u64 LE (equal to the file name)
//! 24     4    reserved, zero
//! 28     4    crc32c of bytes 0..28, u32 LE
//! ```

use std::path::{Path, PathBuf};

use airomem_core::{Seq, SerializerId};

use crate::JournalError;
use crate::frame::{read_u32, read_u64};

/// Bytes in a segment header.
pub const SEGMENT_HEADER_LEN: usize = 32;
/// The journal format this build reads and writes.
pub const FORMAT_VERSION: u16 = 1;
/// The highest first sequence number a segment header may carry. No store gets near it
/// (2^63 records), and it keeps every count of records from a header's number far from
/// overflowing `u64`, whatever a damaged or hostile header claims.
pub const MAX_FIRST_SEQ: u64 = u64::MAX / 2;

const MAGIC: &[u8; 8] = b"AIROMEMJ";
const EXTENSION: &str = ".journal";
const TEMP_SUFFIX: &str = ".tmp";

/// What a segment header records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Serializer of the payloads.
    pub serializer: SerializerId,
    /// The user's schema version.
    pub schema_version: u32,
    /// First sequence number the segment holds.
    pub first_seq: Seq,
}

impl SegmentHeader {
    /// The header's bytes.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut out = [0u8; SEGMENT_HEADER_LEN];
        out[0..8].copy_from_slice(MAGIC);
        out[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[10..12].copy_from_slice(&self.serializer.0.to_le_bytes());
        out[12..16].copy_from_slice(&self.schema_version.to_le_bytes());
        out[16..24].copy_from_slice(&self.first_seq.0.to_le_bytes());
        let crc = crc32c::crc32c(&out[0..28]);
        out[28..32].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Reads and verifies the header at the start of `bytes`, the content of `file`.
    pub fn decode(file: &Path, bytes: &[u8]) -> Result<SegmentHeader, JournalError> {
        let bad = |reason| JournalError::BadHeader { file: file.to_path_buf(), reason };
        if bytes.len() < SEGMENT_HEADER_LEN {
            return Err(bad("file is shorter than a segment header"));
        }
        if &bytes[0..8] != MAGIC {
            return Err(bad("wrong magic bytes"));
        }
        if read_u32(bytes, 28) != crc32c::crc32c(&bytes[0..28]) {
            return Err(bad("header checksum mismatch"));
        }
        let version = u16::from_le_bytes([bytes[8], bytes[9]]);
        if version != FORMAT_VERSION {
            return Err(JournalError::UnsupportedVersion {
                file: file.to_path_buf(),
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let first_seq = read_u64(bytes, 16);
        if first_seq > MAX_FIRST_SEQ {
            return Err(bad("first sequence number out of range"));
        }
        Ok(SegmentHeader {
            serializer: SerializerId(u16::from_le_bytes([bytes[10], bytes[11]])),
            schema_version: read_u32(bytes, 12),
            first_seq: Seq(first_seq),
        })
    }
}

/// The file name of the segment whose first record is `first`: zero-padded so names sort.
pub fn file_name(first: Seq) -> String {
    format!("{:020}{EXTENSION}", first.0)
}

/// The path of the segment whose first record is `first`.
pub fn path(dir: &Path, first: Seq) -> PathBuf {
    dir.join(file_name(first))
}

/// The temporary name a new segment is prepared under before it is renamed into place.
pub fn temp_path(dir: &Path, first: Seq) -> PathBuf {
    dir.join(format!("{}{TEMP_SUFFIX}", file_name(first)))
}

/// The first sequence number of a segment file name, or `None` for other files.
pub fn parse_file_name(name: &str) -> Option<Seq> {
    let digits = name.strip_suffix(EXTENSION)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(Seq)
}

/// Whether `name` is a segment that was being prepared when the process stopped.
pub fn is_temp_file_name(name: &str) -> bool {
    name.strip_suffix(TEMP_SUFFIX).and_then(parse_file_name).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_and_parse() {
        assert_eq!(file_name(Seq(42)), "00000000000000000042.journal");
        assert_eq!(parse_file_name(&file_name(Seq(u64::MAX))), Some(Seq(u64::MAX)));
        assert_eq!(parse_file_name("42.journal"), None);
        assert_eq!(parse_file_name("00000000000000000042.journal.tmp"), None);
        assert!(is_temp_file_name("00000000000000000042.journal.tmp"));
        assert!(file_name(Seq(9)) < file_name(Seq(10)));
    }

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let header = SegmentHeader { serializer: SerializerId(2), schema_version: 7, first_seq: Seq(3) };
        let bytes = header.encode();
        let file = Path::new("x");
        assert_eq!(SegmentHeader::decode(file, &bytes).expect("valid"), header);
        let mut bad = bytes;
        bad[13] ^= 1;
        assert!(matches!(SegmentHeader::decode(file, &bad), Err(JournalError::BadHeader { .. })));
        let mut newer = bytes;
        newer[8] = 2;
        let crc = crc32c::crc32c(&newer[0..28]);
        newer[28..32].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            SegmentHeader::decode(file, &newer),
            Err(JournalError::UnsupportedVersion { found: 2, supported: 1, .. })
        ));
    }
}
