//! `records`: the journal's records in order, one segment in memory at a time, for
//! `airomem dump`.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use airomem_core::storage::{StdStorage, Storage};
use airomem_core::{Seq, SerializerId};
use airomem_journal::frame::RecordKind;
use airomem_journal::scan::{SegmentScan, abort_target};
use airomem_journal::segment::{self, SegmentHeader};
use airomem_journal::{Corruption, JournalError};

use super::files::list_store;
use crate::Error;

/// A journal record, as [`records`] reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordInfo {
    /// Its sequence number.
    pub seq: Seq,
    /// Its commit time, nanoseconds since the Unix epoch.
    pub unix_nanos: u64,
    /// What it is.
    pub kind: Kind,
    /// It starts a batch (the records written with one write and one sync).
    pub batch_start: bool,
    /// It ends a batch.
    pub batch_end: bool,
    /// An atomic unit goes on after it (its last command does not have this).
    pub unit_continues: bool,
    /// A command that an abort marker cancels: replay skips it.
    pub cancelled: bool,
    /// The segment holding it.
    pub segment: PathBuf,
    /// Its offset in the segment.
    pub offset: u64,
    /// The serializer of the segment.
    pub serializer: SerializerId,
    /// The schema version of the segment.
    pub schema_version: u32,
    /// The payload: the serialized command (for an abort marker, the cancelled sequence
    /// number).
    pub payload: Vec<u8>,
}

/// What a journal record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// A command.
    Command,
    /// An abort marker, cancelling a command that panicked.
    Abort {
        /// The cancelled command.
        cancels: Option<Seq>,
    },
}

/// The journal records of the store in `dir` with sequence numbers in `from..=to`, oldest
/// first, one segment in memory at a time. Records past damage are not read: the damage is
/// the last item (an error), unless it is a torn tail at the end of the newest segment,
/// which ends the records quietly ([`Records::torn_tail`] says where).
pub fn records(dir: impl AsRef<Path>, from: Seq, to: Option<Seq>) -> Result<Records, Error> {
    let dir = dir.as_ref().to_path_buf();
    let storage = StdStorage::default();
    let names = list_store(&storage, &dir)?;
    let mut segments: Vec<Seq> = names.iter().filter_map(|n| segment::parse_file_name(n)).collect();
    segments.sort_unstable();
    // Segments wholly before `from` are skipped: segment i ends where segment i + 1 begins.
    let first_needed = segments.partition_point(|&s| s <= from).saturating_sub(1);
    segments.drain(..first_needed);
    let last_segment = segments.last().copied();
    Ok(Records {
        storage,
        dir,
        pending: segments.into_iter().rev().collect(),
        last_segment,
        from,
        to,
        current: None,
        torn_tail: None,
        done: false,
    })
}

/// The iterator [`records`] returns.
pub struct Records {
    storage: StdStorage,
    dir: PathBuf,
    /// Segments still to read, the next one last.
    pending: Vec<Seq>,
    last_segment: Option<Seq>,
    from: Seq,
    to: Option<Seq>,
    current: Option<Loaded>,
    torn_tail: Option<(PathBuf, u64)>,
    done: bool,
}

struct Loaded {
    path: PathBuf,
    bytes: Vec<u8>,
    header: SegmentHeader,
    aborted: std::collections::HashSet<Seq>,
    /// Offsets of the verified frames still to hand out, the next one last.
    frames: Vec<airomem_journal::frame::Frame>,
    /// Damage after the verified frames: (offset, seq due, why), handed out after them.
    damage: Option<(u64, Seq, Corruption)>,
}

impl fmt::Debug for Records {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Records").field("dir", &self.dir).field("from", &self.from).field("to", &self.to).finish()
    }
}

impl Records {
    /// Where the newest segment's torn tail starts, once the records have been read to it.
    pub fn torn_tail(&self) -> Option<(&Path, u64)> {
        self.torn_tail.as_ref().map(|(path, offset)| (path.as_path(), *offset))
    }

    fn load(&mut self, first: Seq) -> Result<Loaded, Error> {
        let path = segment::path(&self.dir, first);
        let bytes = match self.storage.read(&path) {
            Ok(bytes) => bytes,
            // Listed when the records were asked for: the running store's retention took it.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Error::RemovedWhileReading { path }),
            Err(e) => return Err(Error::Io { op: "read", path, source: Arc::new(e) }),
        };
        let scan = SegmentScan::read(&path, &bytes)?;
        let newest = Some(first) == self.last_segment;
        let mut damage = scan.damage.clone().map(|(offset, kind)| (offset as u64, scan.next_seq(), kind));
        if damage.is_none()
            && let Some((offset, first)) = scan.open_unit
        {
            damage = Some((offset as u64, first, Corruption::UnfinishedUnit { first }));
        }
        if newest
            && let Some((offset, seq, _)) = &damage
            && airomem_journal::scan::is_torn_tail(&bytes, *offset as usize, *seq)
        {
            self.torn_tail = Some((path.clone(), *offset));
            damage = None;
        }
        let mut frames: Vec<_> = scan.frames(&bytes).collect();
        frames.reverse();
        Ok(Loaded { path, header: scan.header, aborted: scan.aborted, frames, damage, bytes })
    }
}

impl Iterator for Records {
    type Item = Result<RecordInfo, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            if self.current.is_none() {
                let first = self.pending.pop()?;
                match self.load(first) {
                    Ok(loaded) => self.current = Some(loaded),
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
            }
            let current = self.current.as_mut()?;
            let Some(frame) = current.frames.pop() else {
                let loaded = self.current.take()?;
                if let Some((offset, seq, kind)) = loaded.damage {
                    self.done = true;
                    return Some(Err(JournalError::Corrupt { file: loaded.path, offset, seq, kind }.into()));
                }
                continue;
            };
            if frame.seq < self.from {
                continue;
            }
            if self.to.is_some_and(|to| frame.seq > to) {
                self.done = true;
                return None;
            }
            let payload = current.bytes[frame.payload.clone()].to_vec();
            let kind = match frame.kind {
                RecordKind::Command => Kind::Command,
                RecordKind::Abort => Kind::Abort { cancels: abort_target(&payload) },
            };
            return Some(Ok(RecordInfo {
                seq: frame.seq,
                unix_nanos: frame.unix_nanos,
                kind,
                batch_start: frame.batch_start,
                batch_end: frame.batch_end,
                unit_continues: frame.unit_next,
                cancelled: current.aborted.contains(&frame.seq),
                segment: current.path.clone(),
                offset: frame.offset as u64,
                serializer: current.header.serializer,
                schema_version: current.header.schema_version,
                payload,
            }));
        }
        None
    }
}
