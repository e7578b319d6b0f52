//! `verify`: whether every file of a store is intact, and whether an open would refuse it,
//! for `airomem verify`.

use std::fmt;
use std::path::{Path, PathBuf};

use airomem_core::storage::{StdStorage, Storage};
use airomem_core::{Seq, SerializerId};
use airomem_journal::scan::SegmentScan;
use airomem_journal::segment::{self, SEGMENT_HEADER_LEN, SegmentHeader};
use airomem_journal::{Corruption, JournalError, Repair, ReplayError, ReplayRange};

use super::files::{file_len, list_store, read, read_config};
use crate::Error;
use crate::layout::{snapshot_path, snapshot_seq};
use crate::read_only::view::reread_while_retention_runs;

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
    /// Whether it makes [`crate::Store::open`] refuse the store. `false`: only history is
    /// lost (a damaged snapshot an open passes over, damaged journal history a usable
    /// snapshot covers), which a fallback to an older snapshot or a point-in-time read of
    /// that history would need; the store opens whole.
    pub blocks_open: bool,
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
        write!(f, ": {}", self.message)?;
        if self.blocks_open {
            f.write_str(" [blocks an open]")
        } else {
            f.write_str(" [costs history only: an open passes over it]")
        }
    }
}

impl Problem {
    fn new(file: &Path, offset: Option<u64>, seq: Option<Seq>, message: impl Into<String>) -> Problem {
        Problem { file: file.to_path_buf(), offset, seq, message: message.into(), blocks_open: true }
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
    let mut next_record = None;
    for &seq in &snapshots {
        let path = snapshot_path(&dir, seq);
        let bytes = read(&storage, &path)?;
        progress(bytes.len() as u64);
        found.snapshots += 1;
        found.bytes += bytes.len() as u64;
        match verify_snapshot(&path, &bytes, seq) {
            Ok((id, version, next)) => {
                files.serializer(&mut found, id, &path);
                files.newest_schema = files.newest_schema.max(version);
                usable_snapshot = Some(seq);
                next_record = next;
            }
            // An open passes over a damaged snapshot; if that leaves it nothing to open
            // from, the replay below reports what blocks it.
            Err(reason) => {
                found.problems.push(Problem { blocks_open: false, ..Problem::new(&path, None, Some(seq), reason) })
            }
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
        ReplayRange { from, until: None, skip: &skip, beside_writer: false, next_record },
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
            if let Some(damage) = &outcome.covered_damage {
                found.problems.push(Problem {
                    blocks_open: false,
                    ..Problem::new(&damage.file, Some(damage.offset), Some(damage.seq), damage.kind.to_string())
                });
            }
            // The open replayed all it needs: whatever else is damaged is history only.
            let newest = segments.last().copied();
            let next = segments.get(replayed_from).copied();
            let before = found.problems.len();
            files.scan(&dir, &segments[..replayed_from], next, newest, &mut found, progress)?;
            for problem in &mut found.problems[before..] {
                problem.blocks_open = false;
            }
        }
        Err(ReplayError::Journal(e)) => {
            let before = found.problems.len();
            files.scan(&dir, &segments, None, segments.last().copied(), &mut found, progress)?;
            // Segments wholly before `from` hold history only; the open reads from there on.
            let needed = segments.get(replayed_from).copied().unwrap_or(Seq(u64::MAX));
            for problem in &mut found.problems[before..] {
                let first = problem.file.file_name().and_then(|n| n.to_str()).and_then(segment::parse_file_name);
                problem.blocks_open = first.is_none_or(|first| first >= needed);
            }
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
            // After damage the segment's real end is unknown: the records it cost are that
            // damage, not a second one at the next segment.
            expected = scan.damage.is_none().then(|| scan.next_seq());
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

/// Verifies a snapshot's checksums and length, with whatever serializer its header names.
#[cfg(feature = "snapshot")]
fn verify_snapshot(path: &Path, bytes: &[u8], seq: Seq) -> Result<Verified, String> {
    let header = airomem_snapshot::SnapshotHeader::decode_alone(path, bytes).map_err(|e| e.to_string())?;
    airomem_snapshot::verify(path, bytes, seq, header.serializer)
        .map(|(h, _)| (h.serializer, h.schema_version, h.next_record.map(|p| (p.segment, p.offset))))
        .map_err(|e| e.to_string())
}

/// A snapshot that verified: its serializer, schema version and next record's position.
type Verified = (SerializerId, u32, Option<(Seq, u64)>);

#[cfg(not(feature = "snapshot"))]
fn verify_snapshot(_path: &Path, _bytes: &[u8], _seq: Seq) -> Result<Verified, String> {
    Err("this build reads no snapshots (feature `snapshot` is off)".into())
}
