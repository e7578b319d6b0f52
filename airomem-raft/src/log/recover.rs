//! Opening the log: read the meta file and every segment, verify them, and decide what a
//! crash left behind.
//!
//! Nothing is changed on disk until the whole log has been read and judged; then the repairs
//! (a torn tail cut, leftovers of an interrupted purge or segment creation removed) are
//! applied and what recovery read is made durable before the log serves it.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use airomem::storage::Storage;
use tracing::warn;

use super::frame::{self, Bad};
use super::meta::{self, Meta};
use super::segment;
use crate::Error;
use crate::types::Entry;

/// A segment as the writer tracks it.
#[derive(Debug)]
pub(crate) struct SegmentInfo {
    /// Index of its first entry (also its name).
    pub(crate) first: u64,
    /// Offset of each entry's frame: `offsets[i]` holds entry `first + i`.
    pub(crate) offsets: Vec<u64>,
    /// Bytes of its header and entries.
    pub(crate) len: u64,
    /// Bytes in the file: past `len` by the zeroed space prepared for the next appends
    /// (only in the newest segment).
    pub(crate) file_len: u64,
}

impl SegmentInfo {
    /// The index after its last entry.
    pub(crate) fn end(&self) -> u64 {
        self.first + self.offsets.len() as u64
    }
}

/// What recovery found.
pub(crate) struct Recovered {
    pub(crate) meta: Meta,
    /// The live entries (after the purge point), contiguous.
    pub(crate) entries: VecDeque<Entry>,
    /// The segments that remain, oldest first.
    pub(crate) segments: Vec<SegmentInfo>,
    /// Whether a torn tail was cut from the newest segment.
    pub(crate) torn_tail_cut: bool,
}

/// A change recovery decided on, applied only once the whole log verified.
enum Repair {
    Cut { file: PathBuf, at: u64 },
    Remove { file: PathBuf },
}

struct Scanned {
    info: SegmentInfo,
    entries: Vec<Entry>,
}

/// Reads and verifies one segment. `newest` allows a torn tail (returned as the cut offset).
fn scan(file: &Path, bytes: &[u8], first: u64, newest: bool) -> Result<(Scanned, Option<u64>), Error> {
    let corrupt =
        |offset: usize, reason: String| Error::Corrupt { file: file.to_path_buf(), offset: offset as u64, reason };
    let mut offset = segment::HEADER_LEN;
    let mut entries = Vec::new();
    let mut offsets = Vec::new();
    let mut cut = None;
    let mut prepared = None;
    while offset < bytes.len() {
        let expected = first + entries.len() as u64;
        let failure = match frame::decode(&bytes[offset..]) {
            Ok(found) if found.index != expected => {
                return Err(corrupt(offset, format!("entry {} where {expected} was due", found.index)));
            }
            Ok(found) => match found.entry() {
                Ok(entry) => {
                    offsets.push(offset as u64);
                    entries.push(entry);
                    offset += found.len;
                    continue;
                }
                Err(bad) => bad,
            },
            Err(bad) => bad,
        };
        // A crash tears bytes; it never writes a frame with a valid checksum and bad content.
        if let Bad::Invalid(reason) = failure {
            return Err(corrupt(offset, reason));
        }
        // Zeros to the end are space the writer prepared for later appends, in the newest
        // segment only: a segment is trimmed to its entries before a newer one is created.
        if newest && bytes[offset..].iter().all(|&b| b == 0) {
            prepared = Some(offset as u64);
            break;
        }
        if !newest {
            return Err(corrupt(
                offset,
                format!("entry {expected} is damaged ({failure:?}) in a segment that is not the newest"),
            ));
        }
        // Only the last write can be torn: every write starts after the previous one's
        // fdatasync returned. An intact frame that starts a later write proves the damaged one
        // was durable once.
        if let Some(later) = (offset + 1..bytes.len())
            .find(|&at| frame::decode(&bytes[at..]).is_ok_and(|f| f.first_of_write && f.index > expected))
        {
            return Err(corrupt(
                offset,
                format!("entry {expected} is damaged but a later write survives at offset {later}"),
            ));
        }
        cut = Some(offset as u64);
        break;
    }
    let len = cut.or(prepared).unwrap_or(bytes.len() as u64);
    // A cut takes the prepared space with it; the writer prepares more when it appends.
    let file_len = if cut.is_some() { len } else { bytes.len() as u64 };
    Ok((Scanned { info: SegmentInfo { first, offsets, len, file_len }, entries }, cut))
}

/// Opens the log in `dir`: see the module docs.
pub(crate) fn recover(storage: &dyn Storage, dir: &Path) -> Result<Recovered, Error> {
    let meta = meta::read(storage, dir)?;
    let names = storage.list(dir).map_err(|e| Error::io("list", dir, e))?;
    let mut firsts: Vec<u64> = names.iter().filter_map(|n| segment::parse_file_name(n)).collect();
    firsts.sort_unstable();

    let mut repairs = Vec::new();
    let mut scanned: Vec<Scanned> = Vec::new();
    let mut torn_tail_cut = false;
    for (i, &first) in firsts.iter().enumerate() {
        let file = segment::path(dir, first);
        let newest = i + 1 == firsts.len();
        let bytes = storage.read(&file).map_err(|e| Error::io("read", &file, e))?;
        if let Err(e) = segment::check_header(&file, &bytes, first) {
            // The newest segment is created with its header and first write in one write; a
            // crash before that write's sync can leave the header torn. Nothing in it was
            // acknowledged unless some frame in it verifies.
            let holds_frames = (0..bytes.len()).any(|at| frame::decode(&bytes[at..]).is_ok());
            if newest && !holds_frames && !matches!(e, Error::UnsupportedVersion { .. }) {
                warn!(file = %file.display(), error = %e, "removing a segment whose creation a crash interrupted");
                repairs.push(Repair::Remove { file });
                continue;
            }
            return Err(e);
        }
        let (segment, cut) = scan(&file, &bytes, first, newest)?;
        if let Some(at) = cut {
            warn!(file = %file.display(), offset = at, "cutting a torn tail left by a crash");
            torn_tail_cut = true;
            repairs.push(Repair::Cut { file: file.clone(), at });
        }
        if segment.entries.is_empty() {
            // Only the newest segment can be empty: its first write was lost.
            if !newest {
                return Err(Error::Corrupt {
                    file,
                    offset: segment::HEADER_LEN as u64,
                    reason: "a segment with no entries before a newer one".into(),
                });
            }
            repairs.retain(|r| !matches!(r, Repair::Cut { file: f, .. } if *f == file));
            repairs.push(Repair::Remove { file });
            continue;
        }
        scanned.push(segment);
    }

    // Segments wholly at or below the purge point are leftovers of a purge interrupted after
    // its meta file was written: remove them.
    let purged_end = meta.purged.map_or(0, |p| p.index + 1);
    let mut segments = Vec::new();
    let mut entries = VecDeque::new();
    for segment in scanned {
        if segment.info.end() <= purged_end {
            repairs.push(Repair::Remove { file: segment::path(dir, segment.info.first) });
            continue;
        }
        if let Some(previous) = segments.last().map(SegmentInfo::end)
            && previous != segment.info.first
        {
            return Err(Error::Corrupt {
                file: segment::path(dir, segment.info.first),
                offset: 0,
                reason: format!("the log has a hole: the previous segment ends before index {previous}"),
            });
        }
        if meta.purged.is_some() && segments.is_empty() && segment.info.first > purged_end {
            return Err(Error::Corrupt {
                file: segment::path(dir, segment.info.first),
                offset: 0,
                reason: format!("the log has a hole after the purge point {purged_end}"),
            });
        }
        entries.extend(segment.entries.into_iter().filter(|e| e.log_id.index >= purged_end));
        segments.push(segment.info);
    }

    apply(storage, repairs)?;
    // A killed process leaves its unsynced writes in the page cache, where this open reads
    // them; make them durable before they are served (a later power cut must not take back
    // what this node has since acknowledged or voted on).
    if let Some(newest) = segments.last() {
        let file = segment::path(dir, newest.first);
        let mut handle = storage.open_write(&file).map_err(|e| Error::io("open", &file, e))?;
        handle.sync_data().map_err(|e| Error::io("fdatasync", &file, e))?;
    }
    storage.sync_dir(dir).map_err(|e| Error::io("sync directory", dir, e))?;

    let mut meta = meta;
    let last = entries.back().map(|e| e.log_id).or(meta.purged);
    if meta.committed > last {
        warn!(committed = ?meta.committed, last = ?last, "the recorded commit point is past the log's end; lowering it");
        meta.committed = last;
    }
    Ok(Recovered { meta, entries, segments, torn_tail_cut })
}

fn apply(storage: &dyn Storage, repairs: Vec<Repair>) -> Result<(), Error> {
    for repair in repairs {
        match repair {
            Repair::Cut { file, at } => {
                let mut handle = storage.open_write(&file).map_err(|e| Error::io("open", &file, e))?;
                handle.set_len(at).map_err(|e| Error::io("set_len", &file, e))?;
                handle.sync_data().map_err(|e| Error::io("fdatasync", &file, e))?;
            }
            Repair::Remove { file } => {
                storage.remove(&file).map_err(|e| Error::io("remove", &file, e))?;
            }
        }
    }
    Ok(())
}
