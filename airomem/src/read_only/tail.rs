//! Reading a live journal's new records as the store appends them, without the lock and
//! without the application's types: what a [`crate::Follower`] and `airomem dump --follow`
//! share.
//!
//! A record is handed over only once its batch is **final**: whole, and with every abort
//! marker that can cancel one of its commands already written. The writer writes batch K,
//! executes it, writes one marker per command that panicked (alone, never causing a
//! rollover, so in K's segment), and only then writes batch K+1. So K is final once the first
//! record of a later batch is there, or once a newer segment exists (a rollover seals the old
//! segment after K's markers). Until then K is held back: the newest batch of an idle writer
//! stays unshown until the writer commits again or rolls over.
//!
//! In the newest segment a record that does not verify is one still being written: the read
//! stops before it and tries again later. In a sealed segment every byte is final, so the
//! same is damage and is reported.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use airomem_core::storage::{Storage, StorageReadFile};
use airomem_core::{Seq, SerializerId};
use airomem_journal::frame::{self, Frame, RecordKind};
use airomem_journal::segment::{self, SEGMENT_HEADER_LEN, SegmentHeader};
use airomem_journal::{Corruption, JournalError};

use crate::Error;

/// One record of a final batch, as the journal holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TailRecord {
    /// Its sequence number.
    pub seq: Seq,
    /// Its recorded commit time, nanoseconds since the Unix epoch.
    pub unix_nanos: u64,
    /// What it is.
    pub kind: RecordKind,
    /// For an abort marker, the command it cancels.
    pub cancels: Option<Seq>,
    /// A command that an abort marker cancels, alone or with its atomic unit: never applied.
    pub cancelled: bool,
    /// The batch and unit marks.
    pub batch_start: bool,
    /// See `batch_start`.
    pub batch_end: bool,
    /// An atomic unit goes on after it.
    pub unit_next: bool,
    /// The segment that holds it, and where.
    pub segment: PathBuf,
    /// Its byte offset in `segment`.
    pub offset: u64,
    /// The serializer of the segment that holds it.
    pub serializer: SerializerId,
    /// The schema version of the segment that holds it.
    pub schema_version: u32,
    /// The payload: a serialized command, or a marker's target.
    pub payload: Vec<u8>,
}

impl TailRecord {
    /// Whether replay applies it: a command no marker cancels.
    pub(crate) fn is_live(&self) -> bool {
        self.kind == RecordKind::Command && !self.cancelled
    }
}

/// What one read of the journal's tail gave.
#[derive(Debug, Default)]
pub(crate) struct Advance {
    /// Live commands of the batches that became final, in order.
    pub records: Vec<TailRecord>,
    /// Every record up to this one (commands, cancelled commands and markers) is now behind
    /// the cursor.
    pub reached: Seq,
}

/// Why a read of the tail could not go on from where it stood.
#[derive(Debug)]
pub(crate) enum TailError {
    /// The segment the cursor is in is gone: retention removed it (the reader fell behind a
    /// snapshot). Start again from the newest snapshot.
    Gone,
    /// Damage, or a file that cannot be read.
    Failed(Error),
}

impl From<Error> for TailError {
    fn from(e: Error) -> TailError {
        TailError::Failed(e)
    }
}

/// A cursor in a journal: the segment it reads and the first record it has not handed over.
#[derive(Debug)]
pub(crate) struct Tail {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    /// The first sequence number of the segment the cursor is in.
    segment: Seq,
    /// The byte offset of the first record not handed over, in `segment`.
    offset: u64,
    /// The sequence number the record at `offset` must carry.
    next: Seq,
    /// The serializer and schema version of `segment`, once its header was read.
    schema: Option<(SerializerId, u32)>,
}

impl Tail {
    /// A cursor before record `next`, which is (or will be) at `offset` of `segment`.
    pub(crate) fn new(storage: Arc<dyn Storage>, dir: &Path, segment: Seq, offset: u64, next: Seq) -> Tail {
        Tail { storage, dir: dir.to_path_buf(), segment, offset, next, schema: None }
    }

    /// The sequence number of the first record not handed over yet.
    pub(crate) fn next(&self) -> Seq {
        self.next
    }

    /// Finds where the final part of the journal ends now: a cursor just after the last final
    /// batch of the newest segment (or at the start of it). A read of the state up to
    /// `cursor.next() - 1` then joins the cursor without a gap or an overlap.
    pub(crate) fn at_final_end(storage: Arc<dyn Storage>, dir: &Path) -> Result<Tail, TailError> {
        let segments = list_segments(&*storage, dir)?;
        let Some(&newest) = segments.last() else {
            // No journal yet: the store has no record; the first segment is named after 1.
            return Ok(Tail::new(storage, dir, Seq::FIRST, SEGMENT_HEADER_LEN as u64, Seq::FIRST));
        };
        let mut tail = Tail::new(storage, dir, newest, SEGMENT_HEADER_LEN as u64, newest);
        // Handing over nothing, only moving the cursor: the state comes from elsewhere. Not
        // sealed, even if a rollover came meanwhile: that only holds back more.
        tail.read_segment_inner(false, false)?;
        Ok(tail)
    }

    /// A cursor just before record `next` (which the journal may not hold yet): in the
    /// newest segment that starts at or before it, at the record or at the end.
    pub(crate) fn before(storage: Arc<dyn Storage>, dir: &Path, next: Seq) -> Result<Tail, TailError> {
        let segments = list_segments(&*storage, dir)?;
        let Some(&first) = segments.iter().rev().find(|&&s| s <= next) else {
            let oldest = segments.first().copied().unwrap_or(next);
            let file = segment::path(dir, oldest);
            return Err(TailError::Failed(JournalError::MissingRecords { file, expected: next, found: oldest }.into()));
        };
        let mut tail = Tail::new(storage, dir, first, SEGMENT_HEADER_LEN as u64, first);
        let path = segment::path(dir, first);
        let bytes = tail.storage.read(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => TailError::Gone,
            _ => io_error("read", &path, e),
        })?;
        let mut at = SEGMENT_HEADER_LEN;
        while at < bytes.len() && tail.next < next {
            match frame::decode(&bytes, at) {
                Ok(f) if f.seq == tail.next => {
                    tail.next = f.seq.next();
                    at = f.end();
                }
                _ => break,
            }
        }
        tail.offset = at as u64;
        Ok(tail)
    }

    /// Reads what the store appended since the last call and hands over the batches that
    /// became final, moving on across rollovers.
    pub(crate) fn advance(&mut self) -> Result<Advance, TailError> {
        let mut advance = Advance { records: Vec::new(), reached: Seq(self.next.0 - 1) };
        loop {
            // The listing before the read: a segment newer than ours, listed first, proves
            // ours sealed, so the read that follows sees all of it.
            let segments = list_segments(&*self.storage, &self.dir)?;
            let newer = segments.iter().copied().find(|&s| s > self.segment);
            if !segments.contains(&self.segment) && self.segment <= segments.last().copied().unwrap_or(Seq(0)) {
                return Err(TailError::Gone);
            }
            if !segments.contains(&self.segment) {
                // The journal has not started yet (a store with no record).
                return Ok(advance);
            }
            let records = self.read_segment(newer.is_some())?;
            advance.records.extend(records);
            advance.reached = Seq(self.next.0 - 1);
            let Some(newer) = newer else { return Ok(advance) };
            if self.offset != u64::MAX {
                // Sealed with a batch at its end not whole: a batch is one write, synced
                // before the rollover, so this is damage.
                let file = segment::path(&self.dir, self.segment);
                let kind = Corruption::UnfinishedUnit { first: self.next };
                let e = JournalError::Corrupt { file, offset: self.offset, seq: self.next, kind };
                return Err(TailError::Failed(e.into()));
            }
            if newer != self.next {
                let file = segment::path(&self.dir, newer);
                return Err(TailError::Failed(
                    JournalError::MissingRecords { file, expected: self.next, found: newer }.into(),
                ));
            }
            self.segment = newer;
            self.offset = SEGMENT_HEADER_LEN as u64;
            self.schema = None;
        }
    }

    /// Reads the cursor's segment from the cursor on and hands over its final batches (or, with
    /// `hand_over` false, only moves past them). With `sealed`, the segment is complete: the
    /// cursor ends at `u64::MAX` once everything in it was handed over.
    fn read_segment(&mut self, sealed: bool) -> Result<Vec<TailRecord>, TailError> {
        self.read_segment_inner(sealed, true)
    }

    fn read_segment_inner(&mut self, sealed: bool, hand_over: bool) -> Result<Vec<TailRecord>, TailError> {
        let path = segment::path(&self.dir, self.segment);
        let file = match self.storage.open_read(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(TailError::Gone),
            Err(e) => return Err(io_error("open", &path, e)),
        };
        let len = file.len().map_err(|e| io_error("read", &path, e))?;
        if self.schema.is_none() {
            if len < SEGMENT_HEADER_LEN as u64 {
                // Segments appear whole under their names: a short one is damage.
                return Err(TailError::Failed(
                    JournalError::BadHeader { file: path.clone(), reason: "shorter than a header" }.into(),
                ));
            }
            let mut header = [0u8; SEGMENT_HEADER_LEN];
            file.read_exact_at(0, &mut header).map_err(|e| io_error("read", &path, e))?;
            let header = SegmentHeader::decode(&path, &header).map_err(Error::from)?;
            self.schema = Some((header.serializer, header.schema_version));
        }
        let (serializer, schema_version) = self.schema.unwrap_or((SerializerId(0), 0));
        let start = self.offset;
        let mut bytes = vec![0u8; len.saturating_sub(start) as usize];
        let read = read_up_to(&*file, start, &mut bytes).map_err(|e| io_error("read", &path, e))?;
        if read < bytes.len() {
            if sealed {
                // A sealed segment never shrinks.
                let e = io::Error::new(io::ErrorKind::UnexpectedEof, "the file ends before the read");
                return Err(io_error("read", &path, e));
            }
            // The segment being written shrank after its length was measured: a restarted
            // writer's repair cut the torn tail a killed one left. Those bytes were never
            // final (a torn batch is the last thing in the segment), so what is left is the
            // same journal, only shorter.
            bytes.truncate(read);
        }
        let frames = self.verified_frames(&path, &bytes, sealed)?;
        let finals = final_prefix(&frames, sealed);
        let cancelled: Vec<Seq> = frames[..finals]
            .iter()
            .filter(|f| f.kind == RecordKind::Abort)
            .filter_map(|f| airomem_journal::scan::abort_target(&bytes[f.payload.clone()]))
            .collect();
        // One cancelled command cancels its whole atomic unit.
        let mut dead: Vec<Seq> = Vec::new();
        let mut unit: Vec<Seq> = Vec::new();
        for frame in frames[..finals].iter().filter(|f| f.kind == RecordKind::Command) {
            unit.push(frame.seq);
            if !frame.unit_next {
                if unit.iter().any(|seq| cancelled.contains(seq)) {
                    dead.append(&mut unit);
                }
                unit.clear();
            }
        }
        let mut records = Vec::new();
        if hand_over {
            records.extend(frames[..finals].iter().map(|f| {
                TailRecord {
                    seq: f.seq,
                    unix_nanos: f.unix_nanos,
                    kind: f.kind,
                    cancels: (f.kind == RecordKind::Abort)
                        .then(|| airomem_journal::scan::abort_target(&bytes[f.payload.clone()]))
                        .flatten(),
                    cancelled: dead.contains(&f.seq),
                    batch_start: f.batch_start,
                    batch_end: f.batch_end,
                    unit_next: f.unit_next,
                    segment: path.clone(),
                    offset: start + f.offset as u64,
                    serializer,
                    schema_version,
                    payload: bytes[f.payload.clone()].to_vec(),
                }
            }));
        }
        match frames.get(finals) {
            Some(held) => {
                self.offset = start + held.offset as u64;
                self.next = held.seq;
            }
            None => {
                if let Some(last) = frames.last() {
                    self.next = last.seq.next();
                }
                self.offset = if sealed { u64::MAX } else { start + frames.last().map_or(0, |f| f.end() as u64) };
            }
        }
        Ok(records)
    }

    /// The records of `bytes` (the segment from the cursor on) that verify, in order, each
    /// carrying the next sequence number. Offsets are relative to `bytes`.
    fn verified_frames(&self, path: &Path, bytes: &[u8], sealed: bool) -> Result<Vec<Frame>, TailError> {
        let mut frames: Vec<Frame> = Vec::new();
        let mut at = 0usize;
        let mut expected = self.next;
        while at < bytes.len() {
            let damage = match frame::decode(bytes, at) {
                Ok(f) if f.seq == expected => {
                    expected = f.seq.next();
                    at = f.end();
                    frames.push(f);
                    continue;
                }
                Ok(f) => Corruption::SequenceOutOfOrder { found: f.seq },
                Err(kind) => kind,
            };
            // Zeros from a record boundary on are the clean end (prepared space); in the
            // segment being written anything else may be a batch not whole yet.
            if !sealed || bytes[at..].iter().all(|&b| b == 0) {
                break;
            }
            let offset = self.offset + at as u64;
            return Err(TailError::Failed(
                JournalError::Corrupt { file: path.to_path_buf(), offset, seq: expected, kind: damage }.into(),
            ));
        }
        Ok(frames)
    }
}

/// How many of `frames` (which start at a batch boundary) belong to final batches: a batch
/// is final once a command of a later batch follows it. In a sealed segment every whole unit
/// is final: nothing more comes into it. Its last batch normally ends with its end mark (and
/// its abort markers after it); but when a kill tore a batch of several units, the repair
/// keeps the whole units before the cut (the store applies them), and a rollover can seal
/// the segment right after them. A unit left unfinished stays behind the cursor, which then
/// reports it as damage.
fn final_prefix(frames: &[Frame], sealed: bool) -> usize {
    if sealed {
        return frames.iter().rposition(|f| f.kind == RecordKind::Abort || !f.unit_next).map_or(0, |i| i + 1);
    }
    frames.iter().rposition(|f| f.kind == RecordKind::Command && f.batch_start).unwrap_or(0)
}

/// Fills `buf` from `offset` until it is full or the file ends; returns how much it read.
fn read_up_to(file: &dyn StorageReadFile, mut offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(offset, &mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => {
                filled += n;
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn list_segments(storage: &dyn Storage, dir: &Path) -> Result<Vec<Seq>, TailError> {
    let names = match storage.list(dir) {
        Ok(names) => names,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(TailError::Failed(Error::NotAStore { dir: dir.to_path_buf() }));
        }
        Err(e) => return Err(io_error("list", dir, e)),
    };
    let mut segments: Vec<Seq> = names.iter().filter_map(|n| segment::parse_file_name(n)).collect();
    segments.sort_unstable();
    Ok(segments)
}

fn io_error(op: &'static str, path: &Path, e: io::Error) -> TailError {
    TailError::Failed(Error::Io { op, path: path.to_path_buf(), source: Arc::new(e) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use airomem_journal::frame::BatchMark;

    fn frames(marks: &[(RecordKind, bool, bool)]) -> Vec<Frame> {
        let mut buf = Vec::new();
        for (i, &(kind, start, end)) in marks.iter().enumerate() {
            let payload = if kind == RecordKind::Abort { 1u64.to_le_bytes().to_vec() } else { vec![7] };
            frame::encode(&mut buf, Seq(i as u64 + 1), 0, kind, BatchMark { start, end }, &payload);
        }
        let mut out = Vec::new();
        let mut at = 0;
        while at < buf.len() {
            let f = frame::decode(&buf, at).expect("just encoded");
            at = f.end();
            out.push(f);
        }
        out
    }

    const C: RecordKind = RecordKind::Command;
    const A: RecordKind = RecordKind::Abort;

    #[test]
    fn the_newest_batch_waits_for_the_next_one() {
        assert_eq!(final_prefix(&frames(&[(C, true, true)]), false), 0);
        assert_eq!(final_prefix(&frames(&[(C, true, true), (A, true, true)]), false), 0);
        assert_eq!(final_prefix(&frames(&[(C, true, true), (A, true, true), (C, true, false)]), false), 2);
        assert_eq!(final_prefix(&frames(&[(C, true, false), (C, false, true), (C, true, true)]), false), 2);
    }

    #[test]
    fn a_sealed_segment_is_final_to_its_last_whole_unit() {
        assert_eq!(final_prefix(&frames(&[(C, true, true), (A, true, true)]), true), 2);
        assert_eq!(final_prefix(&frames(&[(C, true, true), (C, true, false)]), true), 2);
    }
}
