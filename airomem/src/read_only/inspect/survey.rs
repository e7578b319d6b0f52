//! `survey`: every file of a store directory, its header, and what its records say, for
//! `airomem info`.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use airomem_core::storage::{StdStorage, Storage};
use airomem_core::{Seq, SerializerId};
use airomem_journal::Corruption;
use airomem_journal::scan::SegmentScan;
use airomem_journal::segment::{self, SegmentHeader};

use super::files::{file_len, list_store, read_config};
use crate::Error;
use crate::layout::{ARCHIVE_DIR, DAMAGED_DIR, LOCK_FILE, snapshot_seq};

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
    /// Copies of segments whose history an open found damaged under its snapshot
    /// (`damaged/`, see [`crate::DAMAGED_DIR`]): evidence, never read by the store.
    pub damaged: Vec<FileSummary>,
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
        damaged: Vec::new(),
        other: Vec::new(),
        lock: lock_state(&dir.join(LOCK_FILE)),
    };
    let mut segments = BTreeMap::new();
    let mut snapshots = BTreeMap::new();
    for name in &names {
        let path = dir.join(name);
        if let Some(first) = segment::parse_file_name(name) {
            segments.insert(first, path);
        } else if let Some(seq) = snapshot_seq(name) {
            snapshots.insert(seq, path);
        } else if name == LOCK_FILE || name == airomem_journal::head::NAME || name == DAMAGED_DIR {
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
    let damaged = dir.join(DAMAGED_DIR);
    if let Ok(kept) = storage.list(&damaged) {
        let mut kept: Vec<_> = kept.into_iter().map(|name| file_summary(damaged.join(name))).collect();
        kept.sort_by(|a, b| a.path.cmp(&b.path));
        survey.damaged = kept;
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

fn file_summary(path: PathBuf) -> FileSummary {
    FileSummary { len: file_len(&path), path }
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
