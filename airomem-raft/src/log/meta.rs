//! The meta file `raft.meta`: the vote, the last purged log id and the committed log id, in
//! one small checksummed file replaced atomically (temporary file, `fdatasync`, rename,
//! directory sync), so a crash leaves the old or the new one, never a mix.
//!
//! ```text
//! offset size field
//!  0     8    magic "AIROMEMV"
//!  8     2    format version, u16 (1)
//! 10     1    present: bit 0 vote, bit 1 vote committed, bit 2 purged, bit 3 committed
//! 11     5    reserved, 0
//! 16    16    vote: term, node id (u64 each)
//! 32    24    last purged log id: term, leader node id, index
//! 56    24    committed log id: term, leader node id, index
//! 80     4    reserved, 0
//! 84     4    crc32c of bytes 0..84
//! ```

use std::io;
use std::path::{Path, PathBuf};

use airomem::storage::Storage;

use crate::Error;
use crate::types::{LogId, Vote, log_id};

const LEN: usize = 88;
const MAGIC: &[u8; 8] = b"AIROMEMV";
const FORMAT_VERSION: u16 = 1;
const NAME: &str = "raft.meta";
const TEMP_NAME: &str = "raft.meta.tmp";

/// What the meta file records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Meta {
    pub(crate) vote: Option<Vote>,
    pub(crate) purged: Option<LogId>,
    pub(crate) committed: Option<LogId>,
}

fn put_log_id(out: &mut [u8], id: &LogId) {
    out[0..8].copy_from_slice(&id.leader_id.term.to_le_bytes());
    out[8..16].copy_from_slice(&id.leader_id.node_id.to_le_bytes());
    out[16..24].copy_from_slice(&id.index.to_le_bytes());
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

fn get_log_id(bytes: &[u8], at: usize) -> LogId {
    log_id(u64_at(bytes, at), u64_at(bytes, at + 8), u64_at(bytes, at + 16))
}

impl Meta {
    fn encode(&self) -> [u8; LEN] {
        let mut out = [0u8; LEN];
        out[0..8].copy_from_slice(MAGIC);
        out[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        let mut present = 0u8;
        if let Some(vote) = &self.vote {
            present |= 1;
            if vote.committed {
                present |= 2;
            }
            out[16..24].copy_from_slice(&vote.leader_id.term.to_le_bytes());
            out[24..32].copy_from_slice(&vote.leader_id.node_id.to_le_bytes());
        }
        if let Some(purged) = &self.purged {
            present |= 4;
            put_log_id(&mut out[32..56], purged);
        }
        if let Some(committed) = &self.committed {
            present |= 8;
            put_log_id(&mut out[56..80], committed);
        }
        out[10] = present;
        let crc = crc32c::crc32c(&out[0..84]);
        out[84..88].copy_from_slice(&crc.to_le_bytes());
        out
    }

    fn decode(file: &Path, bytes: &[u8]) -> Result<Meta, Error> {
        let corrupt = |reason: &str| Error::Corrupt { file: file.to_path_buf(), offset: 0, reason: reason.into() };
        if bytes.len() != LEN || &bytes[0..8] != MAGIC {
            return Err(corrupt("not a Raft meta file"));
        }
        let crc = u32::from_le_bytes(bytes[84..88].try_into().expect("4 bytes"));
        if crc32c::crc32c(&bytes[0..84]) != crc {
            return Err(corrupt("checksum mismatch"));
        }
        let version = u16::from_le_bytes(bytes[8..10].try_into().expect("2 bytes"));
        if version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                file: file.to_path_buf(),
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let present = bytes[10];
        if present & !0x0f != 0 {
            return Err(corrupt("unknown flags"));
        }
        let vote = (present & 1 != 0).then(|| {
            let mut vote = Vote::new(u64_at(bytes, 16), u64_at(bytes, 24));
            vote.committed = present & 2 != 0;
            vote
        });
        Ok(Meta {
            vote,
            purged: (present & 4 != 0).then(|| get_log_id(bytes, 32)),
            committed: (present & 8 != 0).then(|| get_log_id(bytes, 56)),
        })
    }
}

/// The meta file's path in `dir`.
pub(crate) fn path(dir: &Path) -> PathBuf {
    dir.join(NAME)
}

/// Reads the meta file of `dir`; a missing one is a new log. A leftover temporary file was
/// never renamed into place, so it is ignored (and replaced by the next write).
///
/// A damaged meta file is an error, never a default: it may hold the vote, and forgetting a
/// vote lets this node vote twice in one term.
pub(crate) fn read(storage: &dyn Storage, dir: &Path) -> Result<Meta, Error> {
    let file = path(dir);
    match storage.read(&file) {
        Ok(bytes) => Meta::decode(&file, &bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Meta::default()),
        Err(e) => Err(Error::io("read", file, e)),
    }
}

/// Replaces the meta file of `dir` with `meta`, durably.
pub(crate) fn write(storage: &dyn Storage, dir: &Path, meta: &Meta) -> Result<(), Error> {
    let temp = dir.join(TEMP_NAME);
    let mut file = match storage.create(&temp) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            storage.remove(&temp).map_err(|e| Error::io("remove", &temp, e))?;
            storage.create(&temp)
        }
        created => created,
    }
    .map_err(|e| Error::io("create", &temp, e))?;
    file.write_all(&meta.encode()).map_err(|e| Error::io("write", &temp, e))?;
    file.sync_data().map_err(|e| Error::io("fdatasync", &temp, e))?;
    drop(file);
    let target = path(dir);
    storage.rename(&temp, &target).map_err(|e| Error::io("rename", &temp, e))?;
    storage.sync_dir(dir).map_err(|e| Error::io("sync directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips_and_detects_damage() {
        let mut vote = Vote::new(7, 3);
        vote.committed = true;
        let meta = Meta { vote: Some(vote), purged: Some(log_id(2, 1, 10)), committed: Some(log_id(6, 3, 99)) };
        let bytes = meta.encode();
        assert_eq!(Meta::decode(Path::new("m"), &bytes).expect("decodes"), meta);
        assert_eq!(Meta::decode(Path::new("m"), &Meta::default().encode()).expect("decodes"), Meta::default());
        for at in 0..LEN {
            let mut damaged = bytes;
            damaged[at] ^= 0x10;
            assert!(Meta::decode(Path::new("m"), &damaged).is_err(), "byte {at}");
        }
    }
}
