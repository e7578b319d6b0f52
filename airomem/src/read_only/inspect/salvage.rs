//! Salvage: what of a damaged store is intact ([`intact_prefix`]), and a new store built
//! from exactly that ([`salvage`]), without the application's types.
//!
//! The intact prefix starts at the newest snapshot that verifies (or at the journal's first
//! record if none does) and runs through the journal after it up to the first damage: a
//! record that does not verify, a segment whose header does not, or a gap between segments.
//! Damage before the snapshot in the segment that holds its next record is passed over when
//! the snapshot recorded where that record starts, as an open does.

use std::path::{Path, PathBuf};

use airomem_core::Seq;
use airomem_core::storage::{StdStorage, Storage};
use airomem_journal::scan::SegmentScan;
use airomem_journal::segment::{self, SegmentHeader};

use super::files::{list_store, read};
use crate::Error;

/// What of a damaged store is intact, from [`intact_prefix`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct IntactPrefix {
    /// The snapshot the prefix starts from (the newest that verifies), if any.
    pub snapshot: Option<Seq>,
    /// The last record of the prefix (`Seq(0)`: none), the snapshot's if no journal record
    /// after it is intact.
    pub last: Seq,
    /// The stretches of journal segments the prefix holds, in order.
    pub pieces: Vec<Piece>,
    /// Newer snapshots passed over because they do not verify, with the reason.
    pub snapshots_passed_over: Vec<String>,
    /// What the prefix leaves out, if anything.
    pub left_behind: Option<LeftBehind>,
}

/// A stretch of whole records of one journal segment.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Piece {
    /// The segment.
    pub segment: PathBuf,
    /// Its header.
    pub header: SegmentHeader,
    /// The offset of the stretch's first record.
    pub start: u64,
    /// The offset just past its last record.
    pub end: u64,
    /// The sequence number of its first record.
    pub first: Seq,
    /// How many records it holds.
    pub records: u64,
}

/// What the intact prefix of a damaged store leaves out: where the first damage is, and
/// which records are lost with it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeftBehind {
    /// The file of the first damage: a segment, or the directory when a segment is missing.
    pub segment: PathBuf,
    /// The offset of the first record that does not verify (0 for a whole segment).
    pub offset: u64,
    /// The first record lost: every record from it on is left behind.
    pub first_lost: Seq,
    /// What is wrong there.
    pub reason: String,
    /// Bytes of that segment from `offset` up to its last non-zero byte: the record bytes
    /// that follow the damage (intact records may be among them).
    pub bytes_after: u64,
    /// Later segments, left behind whole.
    pub later_segments: Vec<PathBuf>,
}

/// Finds the intact prefix of the store in `dir` (see the module docs). Reads only.
pub fn intact_prefix(dir: impl AsRef<Path>) -> Result<IntactPrefix, Error> {
    let dir = dir.as_ref();
    let storage = StdStorage::default();
    let names = list_store(&storage, dir)?;
    let mut segments: Vec<Seq> = names.iter().filter_map(|n| segment::parse_file_name(n)).collect();
    segments.sort_unstable();
    let (snapshot, next_record, snapshots_passed_over) = newest_valid_snapshot(&storage, dir, &names)?;
    let mut prefix = IntactPrefix {
        snapshot,
        last: snapshot.unwrap_or(Seq(0)),
        pieces: Vec::new(),
        snapshots_passed_over,
        left_behind: None,
    };
    let from = snapshot.map_or(Seq::FIRST, Seq::next);
    // Segments wholly before `from` are not needed: segment i ends where segment i + 1 begins.
    let first_needed = segments.partition_point(|&s| s <= from).saturating_sub(1);
    let mut expected = from;
    for (index, &first) in segments.iter().enumerate().skip(first_needed) {
        let path = segment::path(dir, first);
        let later = || segments[index + 1..].iter().map(|&s| segment::path(dir, s)).collect::<Vec<_>>();
        let lost = |offset: u64, first_lost: Seq, reason: String, bytes_after: u64| LeftBehind {
            segment: path.clone(),
            offset,
            first_lost,
            reason,
            bytes_after,
            later_segments: later(),
        };
        if first > expected {
            let reason = format!("records #{}..#{} are missing before this segment", expected.0, first.0 - 1);
            prefix.left_behind = Some(LeftBehind {
                later_segments: segments[index..].iter().map(|&s| segment::path(dir, s)).collect(),
                ..lost(0, expected, reason, 0)
            });
            return Ok(prefix);
        }
        let bytes = read(&storage, &path)?;
        let data_end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1) as u64;
        let scan = SegmentScan::read(&path, &bytes).and_then(|scan| {
            if scan.header.first_seq != first {
                return Err(airomem_journal::JournalError::BadHeader {
                    file: path.clone(),
                    reason: "first sequence number differs from the file name",
                });
            }
            Ok(scan)
        });
        let mut scan = match scan {
            Ok(scan) => scan,
            Err(e) => {
                prefix.left_behind = Some(lost(0, expected, e.to_string(), data_end));
                return Ok(prefix);
            }
        };
        // Damage the snapshot covers, in the segment that holds its next record.
        if let (Some((offset, _)), Some((segment, at))) = (&scan.damage, next_record)
            && segment == first
            && scan.next_seq() < from
            && at > *offset as u64
            && at <= bytes.len() as u64
        {
            scan = SegmentScan::read_from(&path, &bytes, at as usize, from)?;
        }
        if scan.start_seq < from && scan.next_seq() < from && scan.damage.is_some() {
            let (offset, kind) = scan.damage.clone().expect("checked above");
            let reason = format!("{kind}, in history the snapshot covers, with no recorded way past it");
            prefix.left_behind = Some(lost(offset as u64, from, reason, data_end.saturating_sub(offset as u64)));
            return Ok(prefix);
        }
        // A unit is whole or absent: one that the damage or the end of the records cuts goes
        // with it.
        let (end, end_seq) = scan.open_unit.unwrap_or((scan.valid_len, scan.next_seq()));
        // The records before `from` in this segment are the snapshot's already.
        let (start, start_seq) = if scan.start_seq < from {
            skip_to(&scan, &bytes, from).unwrap_or((end, end_seq))
        } else {
            (scan.start, scan.start_seq)
        };
        if end > start {
            prefix.pieces.push(Piece {
                segment: path.clone(),
                header: scan.header,
                start: start as u64,
                end: end as u64,
                first: start_seq,
                records: end_seq.0 - start_seq.0,
            });
            prefix.last = Seq(end_seq.0 - 1);
        }
        expected = expected.max(scan.next_seq());
        let cut = match (&scan.damage, scan.open_unit) {
            (Some((offset, kind)), _) => Some((*offset as u64, kind.to_string())),
            (None, Some((offset, first))) => {
                Some((offset as u64, format!("the records end inside the atomic unit that starts at #{}", first.0)))
            }
            (None, None) => None,
        };
        if let Some((offset, reason)) = cut {
            prefix.left_behind = Some(lost(offset, end_seq, reason, data_end.saturating_sub(offset)));
            return Ok(prefix);
        }
    }
    Ok(prefix)
}

/// The offset and sequence number of the first record at or after `from` in a scanned
/// segment, if one is there.
fn skip_to(scan: &SegmentScan, bytes: &[u8], from: Seq) -> Option<(usize, Seq)> {
    scan.frames(bytes).find(|f| f.seq >= from).map(|f| (f.offset, f.seq))
}

/// The newest snapshot that verifies, where it says its next record is, and why each newer
/// one was passed over.
#[cfg(feature = "snapshot")]
#[expect(clippy::type_complexity, reason = "a private helper's three answers")]
fn newest_valid_snapshot(
    storage: &StdStorage,
    dir: &Path,
    names: &[String],
) -> Result<(Option<Seq>, Option<(Seq, u64)>, Vec<String>), Error> {
    let mut snapshots: Vec<Seq> = names.iter().filter_map(|n| airomem_snapshot::parse_file_name(n)).collect();
    snapshots.sort_unstable();
    let mut passed_over = Vec::new();
    for &seq in snapshots.iter().rev() {
        let file = airomem_snapshot::path(dir, seq);
        let bytes = read(storage, &file)?;
        let serializer = match airomem_snapshot::SnapshotHeader::decode_alone(&file, &bytes) {
            Ok(header) => header.serializer,
            Err(e) => {
                passed_over.push(e.to_string());
                continue;
            }
        };
        match airomem_snapshot::verify(&file, &bytes, seq, serializer) {
            Ok((header, _)) => {
                return Ok((Some(seq), header.next_record.map(|p| (p.segment, p.offset)), passed_over));
            }
            Err(e) => passed_over.push(e.to_string()),
        }
    }
    Ok((None, None, passed_over))
}

#[cfg(not(feature = "snapshot"))]
#[expect(clippy::type_complexity, reason = "a private helper's three answers")]
fn newest_valid_snapshot(
    _storage: &StdStorage,
    _dir: &Path,
    _names: &[String],
) -> Result<(Option<Seq>, Option<(Seq, u64)>, Vec<String>), Error> {
    Ok((None, None, Vec::new()))
}

/// What [`salvage`] built.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Salvaged {
    /// What of the damaged store is in the new one.
    pub prefix: IntactPrefix,
    /// The files written into the destination.
    pub written: Vec<PathBuf>,
}

/// Builds a new store in `dest` from the intact prefix of the store in `dir`: a copy of the
/// newest snapshot that verifies, and journal segments rewritten to hold exactly the intact
/// records after it (each record's bytes as they were; segments named after their first
/// record; no `journal.head`, which the first open writes). The application's own
/// `Store::open` then opens `dest` with the state at [`IntactPrefix::last`].
///
/// Writes nothing to `dir`. Refuses ([`Error::SalvageRefused`], before writing anything) a
/// `dest` that exists and is not empty, and a store of which nothing can be rebuilt. Every
/// file is written under a temporary name, synced and renamed, and the directory and its
/// parent are synced before this returns.
pub fn salvage(dir: impl AsRef<Path>, dest: impl AsRef<Path>) -> Result<Salvaged, Error> {
    let (dir, dest) = (dir.as_ref(), dest.as_ref());
    let storage = StdStorage::default();
    let refuse = |reason: String| Error::SalvageRefused { dest: dest.to_path_buf(), reason };
    match storage.list(dest) {
        Ok(names) if !names.is_empty() => {
            return Err(refuse(format!("it is not empty ({} entries); salvage into a new directory", names.len())));
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("list", dest)(e)),
    }
    if std::fs::canonicalize(dir).ok().zip(std::fs::canonicalize(dest).ok()).is_some_and(|(a, b)| a == b) {
        return Err(refuse("it is the damaged store itself".to_string()));
    }
    let prefix = intact_prefix(dir)?;
    if prefix.snapshot.is_none() && prefix.pieces.is_empty() {
        let why = prefix.left_behind.as_ref().map_or("the store holds no records".to_string(), |l| l.reason.clone());
        return Err(refuse(format!(
            "nothing of {} can be rebuilt: no snapshot verifies and the journal's first records are not intact ({why})",
            dir.display()
        )));
    }
    storage.create_dir_all(dest).map_err(Error::io("create directory", dest))?;
    let mut written = Vec::new();
    #[cfg(feature = "snapshot")]
    if let Some(seq) = prefix.snapshot {
        let from = airomem_snapshot::path(dir, seq);
        let bytes = read(&storage, &from)?;
        let to = airomem_snapshot::path(dest, seq);
        write_whole(&storage, &to, &[&bytes])?;
        written.push(to);
    }
    for piece in &prefix.pieces {
        let bytes = read(&storage, &piece.segment)?;
        let header = SegmentHeader { first_seq: piece.first, ..piece.header };
        let to = segment::path(dest, piece.first);
        write_whole(&storage, &to, &[&header.encode(), &bytes[piece.start as usize..piece.end as usize]])?;
        written.push(to);
    }
    storage.sync_dir(dest).map_err(Error::io("sync directory", dest))?;
    if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        storage.sync_dir(parent).map_err(Error::io("sync directory", parent))?;
    }
    Ok(Salvaged { prefix, written })
}

/// Writes `parts` as the file `path`: a temporary file, synced, then renamed.
fn write_whole(storage: &StdStorage, path: &Path, parts: &[&[u8]]) -> Result<(), Error> {
    let temp = path.with_extension("salvage.tmp");
    let mut file = storage.create(&temp).map_err(Error::io("create", &temp))?;
    for part in parts {
        file.write_all(part).map_err(Error::io("write", &temp))?;
    }
    file.sync_data().map_err(Error::io("fdatasync", &temp))?;
    drop(file);
    storage.rename(&temp, path).map_err(Error::io("rename", &temp))
}
