//! Looking inside a store without its types, its lock, or changing anything: what files it
//! has ([`survey`]), whether they are intact ([`verify`]), and what its journal records say
//! ([`records`]). The `airomem` command-line tool (crate `airomem-cli`) is built on this.
//!
//! Everything here reads through a storage that refuses every write, so it is safe beside a
//! running store: a batch the store is writing at that moment shows as a torn tail (what an
//! open after a crash would cut), never as damage. It holds one journal segment in memory at
//! a time, however large the store.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use airomem_core::storage::{StdStorage, Storage};
use airomem_core::{Seq, SerializerId};
use airomem_journal::frame::RecordKind;
use airomem_journal::scan::{SegmentScan, abort_target};
use airomem_journal::segment::{self, SEGMENT_HEADER_LEN, SegmentHeader};
use airomem_journal::{Corruption, JournalConfig, JournalError, Repair, ReplayError, ReplayRange};

use crate::Error;
use crate::history::{ARCHIVE_DIR, HistoryView, reread_while_retention_runs};
use crate::names::{snapshot_path, snapshot_seq};

/// Everything in a store's directory, as [`survey`] found it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Survey {
    /// The directory.
    pub dir: PathBuf,
    /// Journal segments, oldest first.
    pub segments: Vec<SegmentSummary>,
    /// Snapshots, oldest first.
    pub snapshots: Vec<SnapshotSummary>,
    /// What the journal head (`journal.head`) records, if there is one.
    pub head: Option<HeadSummary>,
    /// Torn tails an open cut off after a crash (`*.torn-at-*`): kept for inspection, never
    /// read again by the store. Safe to delete once looked at.
    pub quarantine: Vec<FileSummary>,
    /// Files an interrupted write left (`*.tmp`): the next open removes them.
    pub unfinished: Vec<FileSummary>,
    /// Files of the archive (`archive/`), kept by a store that keeps history.
    pub archived: Vec<FileSummary>,
    /// Anything else in the directory.
    pub other: Vec<FileSummary>,
    /// Whether a live process holds the store open.
    pub lock: LockState,
}

/// One journal segment.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SegmentSummary {
    /// The file.
    pub path: PathBuf,
    /// Its size in bytes (including space prepared ahead of the records).
    pub len: u64,
    /// The header, or why it could not be read.
    pub header: Result<SegmentHeader, String>,
    /// Records that verify (commands and abort markers).
    pub records: u64,
    /// Commands cancelled by abort markers in the segment.
    pub aborted: u64,
    /// The first and last record's sequence numbers, if any.
    pub seqs: Option<(Seq, Seq)>,
    /// The first and last record's commit times (nanoseconds since the Unix epoch).
    pub times: Option<(u64, u64)>,
    /// Where the records stop verifying before the end of the file (zeros prepared ahead
    /// do not count), and why.
    pub damage: Option<(u64, String)>,
}

/// One snapshot.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SnapshotSummary {
    /// The file.
    pub path: PathBuf,
    /// The last journal record it includes.
    pub seq: Seq,
    /// Its size in bytes.
    pub len: u64,
    /// The serializer and schema version in its header, or why they could not be read.
    pub header: Result<(SerializerId, u32), String>,
    /// The size of the serialized state, from the footer (if it verifies).
    pub raw_len: Option<u64>,
}

/// The name of a serializer airomem ships: `postcard` or `json`.
pub fn serializer_name(id: SerializerId) -> Option<&'static str> {
    match id.0 {
        1 => Some("postcard"),
        2 => Some("json"),
        _ => None,
    }
}

/// The journal head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeadSummary {
    /// The first sequence number of the newest segment.
    pub newest: Seq,
    /// The last record the head records as synced, if it keeps a watermark.
    pub synced_through: Option<Seq>,
}

/// A file and its size.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileSummary {
    /// The file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub len: u64,
}

/// Whether a process holds a store's directory lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LockState {
    /// No process holds it (or the store never ran here).
    Free,
    /// A process holds it: the store is open. The process id, where the system says.
    Held {
        /// The holder.
        pid: Option<u32>,
    },
    /// This system does not say without taking the lock, which this module never does.
    Unknown,
}

/// Lists and reads the headers of every file of the store in `dir`, and scans each journal
/// segment (one at a time) for its records. `progress` is told each segment's size as it is
/// read.
pub fn survey(dir: impl AsRef<Path>, progress: &mut dyn FnMut(u64)) -> Result<Survey, Error> {
    let dir = dir.as_ref().to_path_buf();
    let storage = StdStorage::default();
    let names = list_store(&storage, &dir)?;
    let mut survey = Survey {
        dir: dir.clone(),
        segments: Vec::new(),
        snapshots: Vec::new(),
        head: None,
        quarantine: Vec::new(),
        unfinished: Vec::new(),
        archived: Vec::new(),
        other: Vec::new(),
        lock: lock_state(&dir.join(crate::lifecycle::LOCK_FILE)),
    };
    let mut segments = BTreeMap::new();
    let mut snapshots = BTreeMap::new();
    for name in &names {
        let path = dir.join(name);
        if let Some(first) = segment::parse_file_name(name) {
            segments.insert(first, path);
        } else if let Some(seq) = snapshot_seq(name) {
            snapshots.insert(seq, path);
        } else if name == crate::lifecycle::LOCK_FILE || name == airomem_journal::head::NAME {
            // Reported as `lock` and `head`.
        } else if name.contains(".torn-at-") {
            survey.quarantine.push(file_summary(path));
        } else if segment::is_temp_file_name(name) || name.ends_with(".tmp") {
            survey.unfinished.push(file_summary(path));
        } else {
            survey.other.push(file_summary(path));
        }
    }
    if segments.is_empty() && snapshots.is_empty() {
        return Err(Error::NotAStore { dir });
    }
    for (_, path) in segments {
        let bytes = match storage.read(&path) {
            Ok(bytes) => bytes,
            // Listed a moment ago: the running store's retention removed it. It is no longer
            // part of the store.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::Io { op: "read", path, source: Arc::new(e) }),
        };
        progress(bytes.len() as u64);
        survey.segments.push(summarize_segment(&path, &bytes));
    }
    for (seq, path) in snapshots {
        let header = read_snapshot_header(&storage, &dir, seq);
        let (len, raw_len) = (file_len(&path), footer_raw_len(&path));
        // Asked after the reads, so that a file retention removed while they ran is not
        // described as a damaged one: like a segment above, it is no longer the store's.
        if !path.exists() {
            continue;
        }
        survey.snapshots.push(SnapshotSummary { len, raw_len, path, seq, header });
    }
    let config = read_config(&dir, SerializerId(0), 0);
    survey.head = airomem_journal::head::read(&config)
        .ok()
        .flatten()
        .map(|head| HeadSummary { newest: head.newest, synced_through: head.watermark.map(|w| w.synced_through) });
    let archive = dir.join(ARCHIVE_DIR);
    if let Ok(archived) = storage.list(&archive) {
        let mut archived: Vec<_> = archived.into_iter().map(|name| file_summary(archive.join(name))).collect();
        archived.sort_by(|a, b| a.path.cmp(&b.path));
        survey.archived = archived;
    }
    Ok(survey)
}

fn summarize_segment(path: &Path, bytes: &[u8]) -> SegmentSummary {
    let len = bytes.len() as u64;
    match SegmentScan::read(path, bytes) {
        Ok(scan) => {
            let mut frames = scan.frames(bytes);
            let first = frames.next();
            let last = frames.last().or_else(|| first.clone());
            let damage = scan.damage.as_ref().map(|(offset, kind)| (*offset as u64, kind.to_string())).or_else(|| {
                scan.open_unit.map(|(offset, first)| (offset as u64, Corruption::UnfinishedUnit { first }.to_string()))
            });
            SegmentSummary {
                path: path.to_path_buf(),
                len,
                header: Ok(scan.header),
                records: scan.records,
                aborted: scan.aborted.len() as u64,
                seqs: first.as_ref().zip(last.as_ref()).map(|(f, l)| (f.seq, l.seq)),
                times: first.as_ref().zip(last.as_ref()).map(|(f, l)| (f.unix_nanos, l.unix_nanos)),
                damage,
            }
        }
        Err(e) => SegmentSummary {
            path: path.to_path_buf(),
            len,
            header: Err(e.to_string()),
            records: 0,
            aborted: 0,
            seqs: None,
            times: None,
            damage: None,
        },
    }
}

/// What [`verify`] found.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Verification {
    /// Every problem found: damage, missing files or records, files that do not belong
    /// together. Empty for an intact store.
    pub problems: Vec<Problem>,
    /// A torn write at the end of the newest segment: a crash interrupted it, or the live
    /// store is writing it right now. Not a problem: an open cuts it (keeping the bytes in
    /// quarantine); commands in it were never acknowledged.
    pub torn_tail: Option<Problem>,
    /// Journal segments checked.
    pub segments: u64,
    /// Records that verified.
    pub records: u64,
    /// Snapshots checked.
    pub snapshots: u64,
    /// Bytes read.
    pub bytes: u64,
}

/// One problem [`verify`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Problem {
    /// The file it is in (or the directory, for a problem of the whole).
    pub file: PathBuf,
    /// Where in the file, if it is at one place.
    pub offset: Option<u64>,
    /// The record it concerns, if one.
    pub seq: Option<Seq>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(offset) = self.offset {
            write!(f, " at offset {offset}")?;
        }
        if let Some(seq) = self.seq {
            write!(f, " (record {seq})")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl Problem {
    fn new(file: &Path, offset: Option<u64>, seq: Option<Seq>, message: impl Into<String>) -> Problem {
        Problem { file: file.to_path_buf(), offset, seq, message: message.into() }
    }
}

/// Checks every file of the store in `dir`: segment headers, every record's checksum and
/// sequence number, continuity from segment to segment, one serializer throughout, schema
/// versions that never decrease, the journal head, and every snapshot's checksums (and that
/// it decompresses to its recorded length). Then it replays the journal the way an open
/// does, without applying anything, so whatever damage would make [`crate::Store::open`]
/// refuse the store is reported (all but what needs the application's types: bytes that
/// do not decode, a schema the state's chain does not reach). `progress` is told the size
/// of each file as it is read.
///
/// Beside a running store, a check that fails or finds a problem while the store's snapshot
/// retention removes files is made again (retention changes the list of snapshots or the
/// oldest segment; damage changes neither), so a file removed under it is not reported as
/// damage.
pub fn verify(dir: impl AsRef<Path>, progress: &mut dyn FnMut(u64)) -> Result<Verification, Error> {
    let dir = dir.as_ref();
    let clean = |found: &Result<Verification, Error>| found.as_ref().is_ok_and(|f| f.problems.is_empty());
    reread_while_retention_runs(&StdStorage::default(), dir, clean, || verify_once(dir, progress))
}

fn verify_once(dir: &Path, progress: &mut dyn FnMut(u64)) -> Result<Verification, Error> {
    let dir = dir.to_path_buf();
    let storage = StdStorage::default();
    let names = list_store(&storage, &dir)?;
    let mut found = Verification::default();
    let mut segments: Vec<Seq> = names.iter().filter_map(|n| segment::parse_file_name(n)).collect();
    segments.sort_unstable();
    let mut snapshots: Vec<Seq> = names.iter().filter_map(|n| snapshot_seq(n)).collect();
    snapshots.sort_unstable();
    if segments.is_empty() && snapshots.is_empty() {
        return Err(Error::NotAStore { dir });
    }
    let mut files = Files::default();

    // Snapshots first: the newest that verifies is where an open's replay starts.
    let mut usable_snapshot = None;
    for &seq in &snapshots {
        let path = snapshot_path(&dir, seq);
        let bytes = read(&storage, &path)?;
        progress(bytes.len() as u64);
        found.snapshots += 1;
        found.bytes += bytes.len() as u64;
        match verify_snapshot(&path, &bytes, seq) {
            Ok((id, version)) => {
                files.serializer(&mut found, id, &path);
                files.newest_schema = files.newest_schema.max(version);
                usable_snapshot = Some(seq);
            }
            Err(reason) => found.problems.push(Problem::new(&path, None, Some(seq), reason)),
        }
    }
    // The segments' headers alone, for the serializer and schema the replay expects.
    for &first in &segments {
        let path = segment::path(&dir, first);
        let header = storage.read_prefix(&path, SEGMENT_HEADER_LEN).ok();
        if let Some(header) = header.and_then(|bytes| SegmentHeader::decode(&path, &bytes).ok()) {
            files.serializer(&mut found, header.serializer, &path);
            files.newest_schema = files.newest_schema.max(header.schema_version);
        }
    }
    let Some((serializer, _)) = files.first_serializer.clone() else {
        // No header reads: every file is damage, which the scans below describe.
        files.scan(&dir, &segments, None, None, &mut found, progress)?;
        return Ok(found);
    };

    // The whole, as an open sees it: the head, continuity from the newest usable snapshot
    // (or the start) on, every record after it, and the newest segment's tail. One read
    // of each segment when the store is intact; only when it is not are the segments read
    // again, one by one, to find every problem, not just the first.
    let config = read_config(&dir, serializer, files.newest_schema);
    let from = usable_snapshot.map_or(Seq::FIRST, Seq::next);
    let skip = Default::default();
    let mut repair = Repair::default();
    let mut reading: Option<PathBuf> = None;
    let replayed = airomem_journal::replay(
        &config,
        ReplayRange { from, until: None, skip: &skip, beside_writer: false },
        Some(&mut repair),
        |record| {
            if reading.as_deref() != Some(record.segment)
                && let Some(done) = reading.replace(record.segment.to_path_buf())
            {
                progress(file_len(&done));
            }
            Ok::<(), ()>(())
        },
    );
    if let Some(done) = reading {
        progress(file_len(&done));
    }
    // Segments wholly before `from` are not replayed: segment i ends where i + 1 begins.
    let replayed_from = segments.partition_point(|&s| s <= from).saturating_sub(1);
    match replayed {
        Ok(outcome) => {
            found.segments += outcome.segments_read;
            found.bytes += outcome.bytes_read;
            // Every record of the segments it read was verified, those before `from` too.
            if let Some(&first_read) = segments.get(replayed_from) {
                found.records += outcome.next_seq.0.saturating_sub(first_read.0);
            }
            found.torn_tail = repair.torn_tail.map(|torn| {
                Problem::new(
                    &torn.segment,
                    Some(torn.offset),
                    None,
                    format!(
                        "torn write of {} bytes ({}): {} unacknowledged record(s)",
                        torn.bytes, torn.reason, torn.records_lost
                    ),
                )
            });
            let newest = segments.last().copied();
            let next = segments.get(replayed_from).copied();
            files.scan(&dir, &segments[..replayed_from], next, newest, &mut found, progress)?;
        }
        Err(ReplayError::Journal(e)) => {
            files.scan(&dir, &segments, None, segments.last().copied(), &mut found, progress)?;
            let problem = journal_problem(&dir, &e);
            if !found.problems.iter().any(|p| p.file == problem.file) {
                found.problems.push(problem);
            }
        }
        Err(ReplayError::Visit(())) => {}
    }
    Ok(found)
}

/// What [`verify`] learns across files.
#[derive(Default)]
struct Files {
    /// The first serializer seen, and where.
    first_serializer: Option<(SerializerId, PathBuf)>,
    newest_schema: u32,
}

impl Files {
    /// Every file of a store is written by one serializer.
    fn serializer(&mut self, found: &mut Verification, id: SerializerId, file: &Path) {
        match &self.first_serializer {
            None => self.first_serializer = Some((id, file.to_path_buf())),
            Some((first, first_file)) if *first != id => found.problems.push(Problem::new(
                file,
                None,
                None,
                format!("written with serializer {} but {} with serializer {}", id.0, first_file.display(), first.0),
            )),
            Some(_) => {}
        }
    }

    /// Reads and checks `segments` one by one: header, every record, continuity between
    /// them (and on to `next`, the segment after the last of them, if any), schema order.
    /// Damage at the end of `newest` is left to the replay to judge (it may be a torn tail).
    fn scan(
        &mut self,
        dir: &Path,
        segments: &[Seq],
        next: Option<Seq>,
        newest: Option<Seq>,
        found: &mut Verification,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), Error> {
        let mut schema: Option<(u32, PathBuf)> = None;
        let mut expected: Option<Seq> = None;
        for &first in segments {
            let path = segment::path(dir, first);
            let bytes = read(&StdStorage::default(), &path)?;
            progress(bytes.len() as u64);
            found.segments += 1;
            found.bytes += bytes.len() as u64;
            let scan = match SegmentScan::read(&path, &bytes) {
                Ok(scan) => scan,
                Err(e) => {
                    found.problems.push(Problem::new(&path, Some(0), None, e.to_string()));
                    expected = None;
                    continue;
                }
            };
            found.records += scan.records;
            let version = scan.header.schema_version;
            if let Some((previous, previous_file)) = &schema
                && version < *previous
            {
                found.problems.push(Problem::new(
                    &path,
                    None,
                    None,
                    format!("schema version {version} after schema version {previous} in {}", previous_file.display()),
                ));
            }
            schema = Some((version, path.clone()));
            if scan.header.first_seq != first {
                found.problems.push(Problem::new(
                    &path,
                    Some(0),
                    None,
                    format!(
                        "the header says the segment starts at {} but its name says {first}",
                        scan.header.first_seq
                    ),
                ));
            }
            if let Some(due) = expected
                && due != scan.header.first_seq
            {
                let message = if due < scan.header.first_seq {
                    format!("records {due} to {} are missing before this segment", Seq(scan.header.first_seq.0 - 1))
                } else {
                    format!("starts at {} but the segment before it ends at {}", scan.header.first_seq, Seq(due.0 - 1))
                };
                found.problems.push(Problem::new(&path, Some(0), Some(scan.header.first_seq), message));
            }
            expected = Some(scan.next_seq());
            if Some(first) != newest {
                if let Some((offset, kind)) = &scan.damage {
                    let seq = Some(scan.next_seq());
                    found.problems.push(Problem::new(&path, Some(*offset as u64), seq, kind.to_string()));
                } else if let Some((offset, first)) = scan.open_unit {
                    let kind = Corruption::UnfinishedUnit { first };
                    found.problems.push(Problem::new(&path, Some(offset as u64), Some(first), kind.to_string()));
                }
            }
        }
        if let (Some(due), Some(next)) = (expected, next)
            && due < next
        {
            let message = format!("records {due} to {} are missing before this segment", Seq(next.0 - 1));
            found.problems.push(Problem::new(&segment::path(dir, next), Some(0), Some(next), message));
        }
        Ok(())
    }
}

fn journal_problem(dir: &Path, e: &JournalError) -> Problem {
    match e {
        JournalError::Corrupt { file, offset, seq, kind } => {
            Problem::new(file, Some(*offset), Some(*seq), kind.to_string())
        }
        JournalError::MissingRecords { file, expected, found } => Problem::new(
            file,
            None,
            Some(*expected),
            format!(
                "records {expected} to {} are missing (no snapshot that verifies covers them)",
                Seq(found.0.saturating_sub(1))
            ),
        ),
        JournalError::BadHeader { file, reason } => Problem::new(file, Some(0), None, *reason),
        JournalError::SegmentMissing { file } => {
            Problem::new(file, None, None, "the journal head names this segment, which is missing")
        }
        other => Problem::new(dir, None, None, other.to_string()),
    }
}

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

/// The names in a store directory, or [`Error::NotAStore`] if there is no directory.
fn list_store(storage: &StdStorage, dir: &Path) -> Result<Vec<String>, Error> {
    match storage.list(dir) {
        Ok(mut names) => {
            names.sort_unstable();
            Ok(names)
        }
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
            Err(Error::NotAStore { dir: dir.to_path_buf() })
        }
        Err(e) => Err(Error::Io { op: "list", path: dir.to_path_buf(), source: Arc::new(e) }),
    }
}

fn read(storage: &StdStorage, path: &Path) -> Result<Vec<u8>, Error> {
    storage.read(path).map_err(|e| Error::Io { op: "read", path: path.to_path_buf(), source: Arc::new(e) })
}

/// The serialized length a snapshot's footer records, read from the file's last bytes
/// alone; `None` if the footer does not verify.
#[cfg(feature = "snapshot")]
fn footer_raw_len(path: &Path) -> Option<u64> {
    use airomem_snapshot::format::{FOOTER_LEN, Footer};
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).ok()?;
    file.seek(SeekFrom::End(-(FOOTER_LEN as i64))).ok()?;
    let mut footer = [0u8; FOOTER_LEN];
    file.read_exact(&mut footer).ok()?;
    Footer::decode_alone(path, &footer).ok().map(|f| f.raw_len)
}

#[cfg(not(feature = "snapshot"))]
fn footer_raw_len(_path: &Path) -> Option<u64> {
    None
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

fn file_summary(path: PathBuf) -> FileSummary {
    FileSummary { len: file_len(&path), path }
}

/// A journal configuration for reading only: every write through it fails.
fn read_config(dir: &Path, serializer: SerializerId, schema_version: u32) -> JournalConfig {
    JournalConfig {
        storage: Arc::new(HistoryView::without_archive(Arc::new(StdStorage::default()), dir)),
        dir: dir.to_path_buf(),
        serializer,
        schema_version,
        segment_size: u64::MAX,
        preallocate: 0,
    }
}

#[cfg(feature = "snapshot")]
fn read_snapshot_header(storage: &StdStorage, dir: &Path, seq: Seq) -> Result<(SerializerId, u32), String> {
    airomem_snapshot::read_header(storage, dir, seq)
        .map(|h| (h.serializer, h.schema_version))
        .map_err(|e| e.to_string())
}

#[cfg(not(feature = "snapshot"))]
fn read_snapshot_header(_storage: &StdStorage, _dir: &Path, _seq: Seq) -> Result<(SerializerId, u32), String> {
    Err("this build reads no snapshots (feature `snapshot` is off)".into())
}

/// Verifies a snapshot's checksums and length, with whatever serializer its header names.
#[cfg(feature = "snapshot")]
fn verify_snapshot(path: &Path, bytes: &[u8], seq: Seq) -> Result<(SerializerId, u32), String> {
    let header = airomem_snapshot::SnapshotHeader::decode_alone(path, bytes).map_err(|e| e.to_string())?;
    airomem_snapshot::verify(path, bytes, seq, header.serializer)
        .map(|(h, _)| (h.serializer, h.schema_version))
        .map_err(|e| e.to_string())
}

#[cfg(not(feature = "snapshot"))]
fn verify_snapshot(_path: &Path, _bytes: &[u8], _seq: Seq) -> Result<(SerializerId, u32), String> {
    Err("this build reads no snapshots (feature `snapshot` is off)".into())
}

/// Who holds the flock on `lock_file`, from `/proc/locks` (Linux): read without taking the
/// lock, which would make a store opening at that instant fail with [`Error::Locked`].
fn lock_state(lock_file: &Path) -> LockState {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::MetadataExt;
        let Ok(meta) = std::fs::metadata(lock_file) else { return LockState::Free };
        let Ok(locks) = std::fs::read_to_string("/proc/locks") else { return LockState::Unknown };
        let (major, minor) = ((meta.dev() >> 8) & 0xfff, (meta.dev() & 0xff) | ((meta.dev() >> 12) & 0xfff00));
        for line in locks.lines() {
            // "1: FLOCK  ADVISORY  WRITE 4242 fd:01:1234567 0 EOF"; a blocked waiter's line
            // has "->" after the number and does not hold the lock.
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(1) == Some(&"->") || fields.len() < 6 {
                continue;
            }
            let mut id = fields[5].split(':');
            let (Some(maj), Some(min), Some(ino)) = (id.next(), id.next(), id.next()) else { continue };
            let same_device =
                u64::from_str_radix(maj, 16).ok() == Some(major) && u64::from_str_radix(min, 16).ok() == Some(minor);
            if same_device && ino.parse::<u64>().ok() == Some(meta.ino()) {
                return LockState::Held { pid: fields[4].parse().ok() };
            }
        }
        LockState::Free
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = lock_file;
        LockState::Unknown
    }
}
