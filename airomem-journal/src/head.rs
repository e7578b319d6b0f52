//! `journal.head`: the first sequence number of the newest segment, and a watermark of how
//! far the journal is known to be synced.
//!
//! Segments carry everything needed to verify what is present, but nothing in them can show
//! that the newest segment was deleted (the journal would simply end earlier), nor that a
//! damaged record had once been synced (it would look like a write a crash interrupted).
//! The head can:
//!
//! * The **base** names the newest segment. The whole file is replaced atomically
//!   (temporary file, sync, rename, directory sync) after each new segment is durable, so it
//!   never names a segment a crash could have lost; replay refuses a directory whose newest
//!   segment is older than that.
//! * Two **slots** hold a watermark: every record up to a sequence number was `fdatasync`ed,
//!   and how the writer that recorded it syncs ([`SyncMode`]). A slot is written in place,
//!   only after the sync it reports returned, so a value read back is never ahead of what was
//!   synced, however old it is. Pending (unsynced) slot writes only ever go to the slot that
//!   does not hold the last value made durable; so a power cut can tear at most that one,
//!   its checksum tells, and the other still holds a valid, older value. The valid slot with
//!   the higher counter wins.
//!
//! ```text
//! base, at 0
//!  0  8  magic "AIROMEMH"
//!  8  8  first sequence number of the newest segment, u64 LE
//! 16  4  crc32c of bytes 0..16
//! slots, at 4096 and 8192 (each in a 4 KiB block of its own: a torn write can garble at
//! most the block it falls in, on a device without atomic sector writes)
//!  0  8  counter, u64 LE: the valid slot with the higher one is current
//!  8  8  synced through: every record up to this sequence number was synced, u64 LE
//! 16  1  sync mode of the writer that recorded it: 1 every batch, 2 deferred
//! 17 11  reserved, zero
//! 28  4  crc32c of bytes 0..28
//! ```
//!
//! The file is 8,224 bytes. A 20-byte file (the base alone) is a head from before the
//! watermark existed: it is read as having none, and the next writer to open the store
//! replaces it with the full layout.

use std::path::PathBuf;

use airomem_core::Seq;
use airomem_core::storage::StorageFile;

use crate::frame::{read_u32, read_u64};
use crate::{JournalConfig, JournalError, SyncMode};

/// The journal head's file name in the store directory.
pub const NAME: &str = "journal.head";
const TEMP_NAME: &str = "journal.head.tmp";
const MAGIC: &[u8; 8] = b"AIROMEMH";
const BASE_LEN: usize = 20;
const SLOT_LEN: usize = 32;
const SLOTS: [usize; 2] = [4096, 8192];
const LEN: usize = SLOTS[1] + SLOT_LEN;

/// How far the journal was known to be synced when a writer last recorded it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Watermark {
    /// Every record up to and including this sequence number was `fdatasync`ed.
    pub synced_through: Seq,
    /// How the writer that recorded it syncs, and so what a crash can have left unsynced
    /// after it.
    pub mode: SyncMode,
}

/// What `journal.head` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// First sequence number of the newest segment.
    pub newest: Seq,
    /// The current watermark: `None` for a head from before watermarks, or if neither slot
    /// verifies.
    pub watermark: Option<Watermark>,
    /// Whether the file has the slots (the current layout).
    slots: bool,
    /// The current slot and its counter.
    current: Option<(usize, u64)>,
}

/// The head file's path.
pub fn path(config: &JournalConfig) -> PathBuf {
    config.dir.join(NAME)
}

/// What the head in `config.dir` says, or `None` if there is none (a new store, or one
/// written before the head existed).
///
/// A reader beside a running writer reads the head *before* it lists the directory: the
/// writer makes a new segment durable before the head names it, and never removes the
/// newest segment, so every segment a head read first names is in a listing taken after it.
/// Listing first, a rollover between the two steps would show a head naming a segment the
/// listing lacks, which is what a deleted newest segment looks like.
pub fn read(config: &JournalConfig) -> Result<Option<Head>, JournalError> {
    let file = path(config);
    let bytes = match config.storage.read(&file) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(JournalError::io("read", &file, e)),
    };
    decode(&bytes).map(Some).map_err(|reason| JournalError::BadHeader { file, reason })
}

fn decode(bytes: &[u8]) -> Result<Head, &'static str> {
    if (bytes.len() != BASE_LEN && bytes.len() != LEN) || &bytes[0..8] != MAGIC {
        return Err("not an airomem journal head");
    }
    if read_u32(bytes, 16) != crc32c::crc32c(&bytes[0..16]) {
        return Err("journal head checksum mismatch");
    }
    let mut head = Head { newest: Seq(read_u64(bytes, 8)), watermark: None, slots: bytes.len() == LEN, current: None };
    if head.slots {
        for (index, &at) in SLOTS.iter().enumerate() {
            let slot = &bytes[at..at + SLOT_LEN];
            // A torn slot write fails its checksum; the other slot then holds an older value.
            if read_u32(slot, 28) != crc32c::crc32c(&slot[0..28]) {
                continue;
            }
            let mode = match slot[16] {
                1 => SyncMode::EveryBatch,
                2 => SyncMode::Deferred,
                _ => return Err("unknown sync mode in the journal head"),
            };
            let counter = read_u64(slot, 0);
            if head.current.is_none_or(|(_, c)| counter > c) {
                head.current = Some((index, counter));
                head.watermark = Some(Watermark { synced_through: Seq(read_u64(slot, 8)), mode });
            }
        }
    }
    Ok(head)
}

fn encode_slot(counter: u64, mark: Watermark) -> [u8; SLOT_LEN] {
    let mut slot = [0u8; SLOT_LEN];
    slot[0..8].copy_from_slice(&counter.to_le_bytes());
    slot[8..16].copy_from_slice(&mark.synced_through.0.to_le_bytes());
    slot[16] = match mark.mode {
        SyncMode::EveryBatch => 1,
        SyncMode::Deferred => 2,
    };
    let crc = crc32c::crc32c(&slot[0..28]);
    slot[28..32].copy_from_slice(&crc.to_le_bytes());
    slot
}

/// The writer's handle on the head: where the next watermark goes.
pub(crate) struct HeadFile {
    file: Box<dyn StorageFile>,
    counter: u64,
    /// The slot holding the last watermark made durable. Unsynced writes never go there.
    durable: usize,
    /// The current watermark, and whether it is the durable one.
    current: Option<(Watermark, bool)>,
}

impl HeadFile {
    /// Replaces the head atomically with one naming `newest` as the newest segment and
    /// holding `mark` in its first slot, and returns the writer's handle on it.
    pub(crate) fn create(
        config: &JournalConfig,
        newest: Seq,
        mark: Watermark,
        counter: u64,
    ) -> Result<HeadFile, JournalError> {
        let storage = &*config.storage;
        let temp = config.dir.join(TEMP_NAME);
        let target = path(config);
        let mut bytes = vec![0u8; LEN];
        bytes[0..8].copy_from_slice(MAGIC);
        bytes[8..16].copy_from_slice(&newest.0.to_le_bytes());
        let crc = crc32c::crc32c(&bytes[0..16]);
        bytes[16..20].copy_from_slice(&crc.to_le_bytes());
        let counter = counter + 1;
        bytes[SLOTS[0]..SLOTS[0] + SLOT_LEN].copy_from_slice(&encode_slot(counter, mark));
        match storage.remove(&temp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(JournalError::io("remove", &temp, e)),
            _ => {}
        }
        let mut file = storage.create(&temp).map_err(|e| JournalError::io("create", &temp, e))?;
        file.write_all(&bytes).map_err(|e| JournalError::io("write", &temp, e))?;
        file.sync_data().map_err(|e| JournalError::io("fdatasync", &temp, e))?;
        storage.rename(&temp, &target).map_err(|e| JournalError::io("rename", &temp, e))?;
        storage.sync_dir(&config.dir).map_err(|e| JournalError::io("sync directory", &config.dir, e))?;
        Ok(HeadFile { file, counter, durable: 0, current: Some((mark, true)) })
    }

    /// Takes over the head `head` read from `config.dir`, recording `mark` durably. A head
    /// without slots (or none at all), or one that still names an older segment than
    /// `newest` (a crash interrupted its replacement), is replaced.
    pub(crate) fn open(
        config: &JournalConfig,
        head: Option<Head>,
        newest: Seq,
        mark: Watermark,
    ) -> Result<HeadFile, JournalError> {
        let Some(head) = head.filter(|h| h.slots && h.newest == newest) else {
            return HeadFile::create(config, newest, mark, 0);
        };
        let target = path(config);
        let mut file = config.storage.open_write(&target).map_err(|e| JournalError::io("open", &target, e))?;
        // A crashed process may have left slot writes in the page cache, where `read` saw
        // them: sync them, so that whichever slot is written next, the other is durable.
        file.sync_data().map_err(|e| JournalError::io("fdatasync", &target, e))?;
        let (durable, counter) = head.current.unwrap_or((1, 0));
        let current = head.watermark.map(|m| (m, true));
        let mut handle = HeadFile { file, counter, durable, current };
        handle.record(config, mark, true)?;
        Ok(handle)
    }

    /// Records `mark` in the slot that does not hold the last durable watermark; with
    /// `durable`, syncs it, and it becomes that slot. A watermark equal to the current one
    /// is not written again (reopening an idle store changes no file).
    pub(crate) fn record(
        &mut self,
        config: &JournalConfig,
        mark: Watermark,
        durable: bool,
    ) -> Result<(), JournalError> {
        let target = path(config);
        let slot = 1 - self.durable;
        if let Some((current, synced)) = self.current
            && current == mark
        {
            if durable && !synced {
                self.file.sync_data().map_err(|e| JournalError::io("fdatasync", &target, e))?;
                (self.durable, self.current) = (slot, Some((mark, true)));
            }
            return Ok(());
        }
        self.counter += 1;
        // Until the write below returns, the slot holds nothing to compare with.
        self.current = None;
        self.file
            .write_at(SLOTS[slot] as u64, &encode_slot(self.counter, mark))
            .map_err(|e| JournalError::io("write", &target, e))?;
        self.current = Some((mark, false));
        if durable {
            self.file.sync_data().map_err(|e| JournalError::io("fdatasync", &target, e))?;
            (self.durable, self.current) = (slot, Some((mark, true)));
        }
        Ok(())
    }

    /// The counter of the last watermark recorded, so that a replacement head continues it.
    pub(crate) fn counter(&self) -> u64 {
        self.counter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(through: u64, mode: SyncMode) -> Watermark {
        Watermark { synced_through: Seq(through), mode }
    }

    fn base(newest: u64) -> Vec<u8> {
        let mut bytes = vec![0u8; BASE_LEN];
        bytes[0..8].copy_from_slice(MAGIC);
        bytes[8..16].copy_from_slice(&newest.to_le_bytes());
        let crc = crc32c::crc32c(&bytes[0..16]);
        bytes[16..20].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    fn with_slots(newest: u64, slots: [Option<(u64, Watermark)>; 2]) -> Vec<u8> {
        let mut bytes = base(newest);
        bytes.resize(LEN, 0);
        for (at, slot) in SLOTS.iter().zip(slots) {
            if let Some((counter, mark)) = slot {
                bytes[*at..*at + SLOT_LEN].copy_from_slice(&encode_slot(counter, mark));
            }
        }
        bytes
    }

    #[test]
    fn a_head_from_before_watermarks_reads_as_having_none() {
        let head = decode(&base(42)).expect("old head");
        assert_eq!((head.newest, head.watermark, head.slots), (Seq(42), None, false));
    }

    #[test]
    fn the_valid_slot_with_the_higher_counter_wins() {
        let a = (7, mark(100, SyncMode::EveryBatch));
        let b = (8, mark(120, SyncMode::Deferred));
        for slots in [[Some(a), Some(b)], [Some(b), Some(a)]] {
            let head = decode(&with_slots(5, slots)).expect("head");
            assert_eq!(head.watermark, Some(b.1));
        }
        // A torn write of the newer slot leaves the older one.
        let mut bytes = with_slots(5, [Some(a), Some(b)]);
        bytes[SLOTS[1] + 3] ^= 0x10;
        assert_eq!(decode(&bytes).expect("head").watermark, Some(a.1));
        let head = decode(&with_slots(5, [None, None])).expect("head");
        assert_eq!((head.watermark, head.slots), (None, true));
    }

    #[test]
    fn damage_to_the_base_or_an_unknown_mode_is_refused() {
        let mut bytes = with_slots(5, [Some((1, mark(4, SyncMode::EveryBatch))), None]);
        bytes[9] ^= 1;
        assert_eq!(decode(&bytes), Err("journal head checksum mismatch"));
        let mut bytes = with_slots(5, [Some((1, mark(4, SyncMode::EveryBatch))), None]);
        bytes[SLOTS[0] + 16] = 9;
        let crc = crc32c::crc32c(&bytes[SLOTS[0]..SLOTS[0] + 28]);
        bytes[SLOTS[0] + 28..SLOTS[0] + 32].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode(&bytes), Err("unknown sync mode in the journal head"));
        assert_eq!(decode(&base(5)[..19]), Err("not an airomem journal head"));
    }
}
