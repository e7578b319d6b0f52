//! Segment files: named by the first log index they hold, each starting with a header.
//!
//! ```text
//! offset size field
//!  0     8    magic "AIROMEMR"
//!  8     2    format version, u16 (3; 2 had one request per normal entry, 1 no session
//!             prefix; neither was released)
//! 10     6    reserved, 0
//! 16     8    first log index, u64 (must equal the file name)
//! 24     4    reserved, 0
//! 28     4    crc32c of bytes 0..28
//! ```

use std::path::{Path, PathBuf};

use crate::Error;

/// Bytes of the header.
pub(crate) const HEADER_LEN: usize = 32;
/// The format this build reads and writes.
pub(crate) const FORMAT_VERSION: u16 = 3;
const MAGIC: &[u8; 8] = b"AIROMEMR";
const EXTENSION: &str = ".raftlog";

/// The file name of the segment whose first entry has `index`.
pub(crate) fn file_name(index: u64) -> String {
    format!("{index:020}{EXTENSION}")
}

/// The first index a segment file name declares, or `None` for other files.
pub(crate) fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(EXTENSION)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The header of a segment starting at `first`.
pub(crate) fn header(first: u64) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    out[0..8].copy_from_slice(MAGIC);
    out[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[16..24].copy_from_slice(&first.to_le_bytes());
    let crc = crc32c::crc32c(&out[0..28]);
    out[28..32].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Checks the header of the segment at `file`, which must start at `first`.
pub(crate) fn check_header(file: &Path, bytes: &[u8], first: u64) -> Result<(), Error> {
    let corrupt = |reason: String| Error::Corrupt { file: file.to_path_buf(), offset: 0, reason };
    if bytes.len() < HEADER_LEN {
        return Err(corrupt(format!("{} bytes, shorter than a segment header", bytes.len())));
    }
    if &bytes[0..8] != MAGIC {
        return Err(corrupt("not a Raft log segment (bad magic)".into()));
    }
    let crc = u32::from_le_bytes(bytes[28..32].try_into().expect("4 bytes"));
    if crc32c::crc32c(&bytes[0..28]) != crc {
        return Err(corrupt("segment header checksum mismatch".into()));
    }
    let version = u16::from_le_bytes(bytes[8..10].try_into().expect("2 bytes"));
    if version != FORMAT_VERSION {
        return Err(Error::UnsupportedVersion { file: file.to_path_buf(), found: version, supported: FORMAT_VERSION });
    }
    let declared = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
    if declared != first {
        return Err(corrupt(format!("header says first index {declared}, the file name {first}")));
    }
    Ok(())
}

/// The path of the segment starting at `first` in `dir`.
pub(crate) fn path(dir: &Path, first: u64) -> PathBuf {
    dir.join(file_name(first))
}
