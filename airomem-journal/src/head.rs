//! `journal.head`: the first sequence number of the newest segment.
//!
//! Segments carry everything needed to verify what is present, but nothing in them can show
//! that the newest segment was deleted: the journal would simply end earlier. The head file
//! is rewritten (atomically: temporary file, sync, rename, directory sync) after each new
//! segment is durable, so it never names a segment that a crash could have lost; replay
//! refuses a directory whose newest segment is older than the head says.
//!
//! ```text
//!  0  8  magic "AIROMEMH"
//!  8  8  first sequence number of the newest segment, u64 LE
//! 16  4  crc32c of bytes 0..16
//! ```

use std::path::PathBuf;

use airomem_core::Seq;

use crate::frame::{read_u32, read_u64};
use crate::{JournalConfig, JournalError};

const NAME: &str = "journal.head";
const TEMP_NAME: &str = "journal.head.tmp";
const MAGIC: &[u8; 8] = b"AIROMEMH";
const LEN: usize = 20;

/// The head file's path.
pub fn path(config: &JournalConfig) -> PathBuf {
    config.dir.join(NAME)
}

/// Records `first` as the newest segment.
pub(crate) fn write(config: &JournalConfig, first: Seq) -> Result<(), JournalError> {
    let storage = &*config.storage;
    let temp = config.dir.join(TEMP_NAME);
    let target = path(config);
    let mut bytes = [0u8; LEN];
    bytes[0..8].copy_from_slice(MAGIC);
    bytes[8..16].copy_from_slice(&first.0.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[0..16]);
    bytes[16..20].copy_from_slice(&crc.to_le_bytes());
    match storage.remove(&temp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(JournalError::io("remove", &temp, e)),
        _ => {}
    }
    let mut file = storage.create(&temp).map_err(|e| JournalError::io("create", &temp, e))?;
    file.write_all(&bytes).map_err(|e| JournalError::io("write", &temp, e))?;
    file.sync_data().map_err(|e| JournalError::io("fdatasync", &temp, e))?;
    drop(file);
    storage.rename(&temp, &target).map_err(|e| JournalError::io("rename", &temp, e))?;
    storage.sync_dir(&config.dir).map_err(|e| JournalError::io("sync directory", &config.dir, e))
}

/// The newest segment the head names, or `None` if there is no head file (a new store, or
/// one written before the head existed).
pub(crate) fn read(config: &JournalConfig, names: &[String]) -> Result<Option<Seq>, JournalError> {
    if !names.iter().any(|n| n == NAME) {
        return Ok(None);
    }
    let file = path(config);
    let bytes = config.storage.read(&file).map_err(|e| JournalError::io("read", &file, e))?;
    let bad = |reason| JournalError::BadHeader { file: file.clone(), reason };
    if bytes.len() != LEN || &bytes[0..8] != MAGIC {
        return Err(bad("not an airomem journal head"));
    }
    if read_u32(&bytes, 16) != crc32c::crc32c(&bytes[0..16]) {
        return Err(bad("journal head checksum mismatch"));
    }
    Ok(Some(Seq(read_u64(&bytes, 8))))
}
