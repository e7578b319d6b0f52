//! Replaying the journal: listing segments, loading each whole with one read, verifying it,
//! repairing a torn tail, and handing every live command to the caller in order.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use airomem_core::Seq;
use tracing::{debug, error, info, warn};

use crate::config::{JournalConfig, SyncMode};
use crate::error::Corruption;
use crate::frame::{Frame, RecordKind};
use crate::head::Watermark;
use crate::scan::{AfterDamage, SegmentScan, could_be_abort_marker};
use crate::{JournalError, segment};

/// Which commands to hand over.
#[derive(Clone, Copy, Debug)]
pub struct ReplayRange<'a> {
    /// First sequence number wanted; earlier ones are covered by a snapshot. A snapshot is
    /// taken only of synced records, so damage to a record before `from` is corruption,
    /// never a torn write.
    pub from: Seq,
    /// Last sequence number wanted, if not the end of the journal.
    pub until: Option<Seq>,
    /// Commands to skip on top of those the journal's abort markers cancel.
    pub skip: &'a BTreeSet<Seq>,
    /// The journal is read beside a writer that may be appending to it (a read without the
    /// lock): the newest segment's commands after its last complete batch are held back, as
    /// the writer may be in the middle of writing that batch. A crash recovery keeps them.
    pub beside_writer: bool,
    /// Where record `from` starts, as the snapshot that covers everything before it recorded
    /// it: the first sequence number of its segment and its byte offset there. With it, damage
    /// in that segment before the offset (history the snapshot covers) is passed over and
    /// reported in [`ReplayOutcome::covered_damage`] instead of stopping the replay. `None`
    /// (no snapshot, or one that did not record it): such damage is an error, as it always was.
    pub next_record: Option<(Seq, u64)>,
}

/// Damage that a replay passed over because nothing it hands over lies at or after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassedDamage {
    /// The damaged segment.
    pub file: PathBuf,
    /// The offset of the first record that does not verify.
    pub offset: u64,
    /// The sequence number that record should carry.
    pub seq: Seq,
    /// What is wrong there.
    pub kind: Corruption,
    /// Bytes of the segment from `offset` to its end, zeros included.
    pub bytes_after: u64,
}

impl PassedDamage {
    /// The damage at `offset` of segment `file`, whose bytes are `bytes`.
    fn at(file: &Path, bytes: &[u8], offset: usize, seq: Seq, kind: &Corruption) -> PassedDamage {
        PassedDamage {
            file: file.to_path_buf(),
            offset: offset as u64,
            seq,
            kind: kind.clone(),
            bytes_after: (bytes.len() - offset) as u64,
        }
    }
}

/// The first damage of a scanned segment: a record that does not verify, or whole records
/// that end inside an atomic unit (its last command never got there).
fn damage_of(scan: &SegmentScan) -> Option<(usize, Corruption)> {
    match (scan.damage.clone(), scan.open_unit) {
        (Some(damage), _) => Some(damage),
        (None, Some((_, first))) => Some((scan.valid_len, Corruption::UnfinishedUnit { first })),
        (None, None) => None,
    }
}

/// One live command, as replay hands it over.
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    /// Its sequence number.
    pub seq: Seq,
    /// The segment file that holds it, for errors about it.
    pub segment: &'a Path,
    /// The schema version its segment was written under.
    pub schema_version: u32,
    /// Its recorded commit time, nanoseconds since the Unix epoch.
    pub unix_nanos: u64,
    /// The serialized command.
    pub payload: &'a [u8],
    /// Whether it belongs to the last batch of commands the journal holds, and nothing shows
    /// that a later batch was written: then a crash may have stopped the writer before any
    /// caller was told of its outcome (before it was durable, or while an abort marker for
    /// one of its commands was being written). A batch followed by damage that cannot be an
    /// abort marker was followed by the next batch, written only after its callers were
    /// answered: it is not final.
    pub in_final_batch: bool,
}

/// A torn write cut from the end of the newest segment.
#[derive(Clone, Debug)]
pub struct TornTail {
    /// The segment that was cut.
    pub segment: PathBuf,
    /// Its new length: the offset of the first record that did not verify.
    pub offset: u64,
    /// How many bytes were cut.
    pub bytes: u64,
    /// Where the cut bytes were kept.
    pub quarantine: PathBuf,
    /// What was wrong at `offset`.
    pub reason: Corruption,
    /// Records lost with the cut: the damaged one and every one found intact after it, up
    /// to the highest sequence number among those. At least this many; a record torn beyond
    /// recognition cannot be counted. Abort markers count too.
    pub records_lost: u64,
}

/// What a replay found and did.
#[derive(Clone, Debug)]
pub struct ReplayOutcome {
    /// The sequence number the next record must carry.
    pub next_seq: Seq,
    /// The newest recorded commit time, so that time never runs backwards across restarts.
    pub last_nanos: u64,
    /// First sequence numbers of all segments in the directory, oldest first.
    pub segments: Vec<Seq>,
    /// What `journal.head` said, read once here for the writer that opens after the replay.
    pub head: Option<crate::head::Head>,
    /// The schema version of the newest segment, if there is one: the writer starts a new
    /// segment rather than append to one of another version.
    pub newest_schema: Option<u32>,
    /// Where the records of the newest segment end, after any repair: where the next
    /// record goes.
    pub newest_len: u64,
    /// The newest segment's file length after any repair: past `newest_len` when the writer
    /// had prepared zeroed space ahead of its records.
    pub newest_file_len: u64,
    /// Segments loaded and verified.
    pub segments_read: u64,
    /// Bytes loaded.
    pub bytes_read: u64,
    /// Commands handed to the caller.
    pub records_replayed: u64,
    /// Commands skipped because they were aborted.
    pub records_skipped: u64,
    /// The first command not handed over although the journal holds it: the start of an
    /// atomic unit that ends past `until`, or (beside a writer) of an unfinished batch.
    pub held_back_from: Option<Seq>,
    /// Damage before `from` in a segment the replay had to read, passed over thanks to
    /// [`ReplayRange::next_record`]: history only, which a fallback to an older snapshot or
    /// a full replay would need.
    pub covered_damage: Option<PassedDamage>,
    /// Damage after `until`: the replay stopped there, since nothing it hands over lies at or
    /// after it, and read no later segment.
    pub damage_past_until: Option<PassedDamage>,
}

/// What replay found to repair after a crash, and later repaired.
///
/// Replay only plans: it reads the journal as if the repair were done and changes nothing,
/// so that an open that fails later (a state that does not convert, a command that panics)
/// leaves the directory exactly as it found it. [`Repair::apply`] then carries the plan
/// out, before anything is written.
#[derive(Clone, Debug, Default)]
pub struct Repair {
    /// Temporary files of interrupted segment creations, removed (or to be removed).
    pub temp_files_removed: u64,
    /// The torn tail cut (or to be cut), if there was one.
    pub torn_tail: Option<TornTail>,
    /// Temporary files still to remove.
    temp_files: Vec<PathBuf>,
    /// The bytes of `torn_tail` still to move into its quarantine file.
    cut: Option<Vec<u8>>,
}

impl Repair {
    /// Carries out what replay planned: removes the temporary files and cuts the torn tail,
    /// keeping the cut bytes in a durable quarantine file first. Doing it twice does it once.
    pub fn apply(&mut self, config: &JournalConfig) -> Result<(), JournalError> {
        if !self.temp_files.is_empty() {
            for path in &self.temp_files {
                warn!(file = %path.display(), "removing an unfinished segment left by an interrupted rollover");
                config.storage.remove(path).map_err(|e| JournalError::io("remove", path, e))?;
            }
            config.storage.sync_dir(&config.dir).map_err(|e| JournalError::io("sync directory", &config.dir, e))?;
            self.temp_files.clear();
        }
        if let (Some(bytes), Some(tail)) = (&self.cut, &self.torn_tail) {
            cut_torn_tail(config, tail, bytes)?;
            self.cut = None;
        }
        Ok(())
    }
}

/// A replay failure: the journal's, or the one the caller's visitor returned.
#[derive(Debug)]
pub enum ReplayError<E> {
    /// The journal could not be read.
    Journal(JournalError),
    /// The visitor stopped the replay.
    Visit(E),
}

impl<E> From<JournalError> for ReplayError<E> {
    fn from(e: JournalError) -> Self {
        ReplayError::Journal(e)
    }
}

/// Replays the journal in `config.dir`, calling `visit` for each live command in `range`.
///
/// With `repair`, replay plans what makes the directory safe to append to after a crash
/// (removing segments whose creation was interrupted, cutting a torn write at the end of the
/// newest segment) and reads the journal as if it were done; [`Repair::apply`] does it.
/// Without it any damage is an error. Damage that is not a torn tail is an error either
/// way. Replay itself never changes a file.
///
/// Segments may have been written under older schema versions than `config`'s (each
/// [`Record`] says which); a newer one, or one older than the segment before it, is an
/// error.
pub fn replay<E>(
    config: &JournalConfig,
    range: ReplayRange<'_>,
    mut repair: Option<&mut Repair>,
    mut visit: impl FnMut(Record<'_>) -> Result<(), E>,
) -> Result<ReplayOutcome, ReplayError<E>> {
    let started = Instant::now();
    let storage = &*config.storage;
    let dir = &config.dir;
    // The head before the listing: see `head::read`.
    let head = crate::head::read(config)?;
    let names = storage.list(dir).map_err(|e| JournalError::io("list", dir, e))?;
    if let Some(repair) = repair.as_deref_mut() {
        // Planned afresh by every pass, so a replay started over plans the same repair.
        repair.temp_files = names.iter().filter(|n| segment::is_temp_file_name(n)).map(|n| dir.join(n)).collect();
        repair.temp_files_removed = repair.temp_files.len() as u64;
        repair.torn_tail = None;
        repair.cut = None;
    }
    let mut segments: Vec<Seq> = names.iter().filter_map(|n| segment::parse_file_name(n)).collect();
    segments.sort_unstable();
    if let Some(head) = head
        && segments.last().is_none_or(|&newest| newest < head.newest)
    {
        return Err(JournalError::SegmentMissing { file: segment::path(dir, head.newest) }.into());
    }
    let watermark = head.and_then(|h| h.watermark);

    let mut outcome = ReplayOutcome {
        next_seq: range.from,
        last_nanos: 0,
        segments: segments.clone(),
        head,
        newest_schema: None,
        newest_len: 0,
        newest_file_len: 0,
        segments_read: 0,
        bytes_read: 0,
        records_replayed: 0,
        records_skipped: 0,
        held_back_from: None,
        covered_damage: None,
        damage_past_until: None,
    };

    // Segments wholly before `from` are not needed: segment i ends where segment i + 1 begins.
    let first_needed = segments.partition_point(|&s| s <= range.from).saturating_sub(1);
    let mut expected: Option<Seq> = None;
    let mut previous: Option<(PathBuf, u32)> = None;
    for (index, &first) in segments.iter().enumerate().skip(first_needed) {
        let path = segment::path(dir, first);
        let newest = index + 1 == segments.len();
        let bytes = storage.read(&path).map_err(|e| match e.kind() {
            // Listed a moment ago: snapshot retention removed it since (or a person did).
            std::io::ErrorKind::NotFound => JournalError::SegmentVanished { file: path.clone() },
            _ => JournalError::io("read", &path, e),
        })?;
        outcome.segments_read += 1;
        outcome.bytes_read += bytes.len() as u64;
        let mut scan = SegmentScan::read(&path, &bytes)?;
        check_header(config, &path, &scan, first)?;
        let version = scan.header.schema_version;
        if let Some((previous_file, previous)) = previous.take().filter(|&(_, v)| version < v) {
            return Err(JournalError::SchemaOrder { file: path, found: version, previous_file, previous }.into());
        }
        let due = expected.unwrap_or(range.from);
        if scan.header.first_seq > due || expected.is_some_and(|e| e != scan.header.first_seq) {
            return Err(JournalError::MissingRecords { file: path, expected: due, found: scan.header.first_seq }.into());
        }
        let mut file_len = bytes.len() as u64;
        let mut final_batch = if newest { scan.final_batch_start } else { scan.next_seq() };
        let mut damage = damage_of(&scan);
        // Damage in history the snapshot covers: start again where the snapshot said its
        // first record after it starts, if that is in this segment, past the damage.
        if let (Some((offset, kind)), Some((segment, at))) = (&damage, range.next_record)
            && segment == first
            && scan.next_seq() < range.from
            && at > *offset as u64
            && at <= bytes.len() as u64
        {
            let passed = PassedDamage::at(&path, &bytes, *offset, scan.next_seq(), kind);
            warn!(
                file = %path.display(),
                offset,
                seq = passed.seq.0,
                kind = %passed.kind,
                "damage in journal history a snapshot covers; replaying from the snapshot's next record"
            );
            outcome.covered_damage = Some(passed);
            scan = SegmentScan::read_from(&path, &bytes, at as usize, range.from)?;
            damage = damage_of(&scan);
            final_batch = if newest { scan.final_batch_start } else { scan.next_seq() };
        }
        // Damage after the last record wanted: what is before it is all this read needs.
        let past_until = range.until.filter(|&until| scan.next_seq() > until);
        if let (Some((offset, kind)), Some(_)) = (&damage, past_until) {
            let passed = PassedDamage::at(&path, &bytes, *offset, scan.next_seq(), kind);
            debug!(file = %path.display(), offset, seq = passed.seq.0, "damage after the last record wanted");
            outcome.damage_past_until = Some(passed);
            damage = None;
        }
        if let Some((offset, kind)) = damage {
            let seq = scan.next_seq();
            let judged = if newest {
                judge(&bytes, offset, &kind, seq, range.from, watermark)
            } else {
                Err("it is not in the newest segment")
            };
            match (judged, repair.as_deref_mut()) {
                (Ok(after), Some(repair)) => {
                    // A unit is applied whole or not at all: the part of it before the damage
                    // goes with it. It was in the batch being written, like the damage.
                    let (cut, first_lost) = scan.open_unit.unwrap_or((offset, seq));
                    let records_lost = after.highest_seq.map_or(seq.0, |h| h.0.max(seq.0)) - first_lost.0 + 1;
                    if cut < scan.valid_len {
                        scan = SegmentScan::read(&path, &bytes[..cut])?;
                    }
                    repair.torn_tail = Some(plan_cut(config, &path, &bytes, cut, kind, records_lost));
                    repair.cut = Some(bytes[cut..].to_vec());
                    file_len = cut as u64;
                    final_batch = final_batch_after_cut(&scan, &bytes, cut, &after);
                }
                (judged, _) => {
                    let why = judged.err().unwrap_or("nothing may be repaired");
                    error!(file = %path.display(), offset, seq = seq.0, why, "damage in the journal is not a torn write");
                    return Err(JournalError::Corrupt { file: path, offset: offset as u64, seq, kind }.into());
                }
            }
        }
        if let Some(mark) = watermark.filter(|m| newest && past_until.is_none() && scan.next_seq() <= m.synced_through)
        {
            // Zeros over the last records read like space prepared for records never written.
            let kind = Corruption::SyncedRecordsMissing { synced_through: mark.synced_through };
            let (offset, seq) = (scan.valid_len as u64, scan.next_seq());
            error!(file = %path.display(), offset, seq = seq.0, "the journal ends before records it had synced");
            return Err(JournalError::Corrupt { file: path, offset, seq, kind }.into());
        }

        // Aborts are rare: skip the lookups (a hash per record) when there are none.
        let cancelled = |seq: Seq| {
            (!scan.aborted.is_empty() && scan.aborted.contains(&seq))
                || (!range.skip.is_empty() && range.skip.contains(&seq))
        };
        // Beside a writer, whole records after the last batch end are a batch being written.
        let unfinished =
            (range.beside_writer && newest && !scan.ends_at_batch_boundary()).then_some(scan.final_batch_start);
        // The commands of one run: a lone command, or an atomic unit gathered up to its last.
        let mut run: Vec<Frame> = Vec::new();
        for frame in scan.frames(&bytes) {
            if unfinished.is_some_and(|start| frame.seq >= start) {
                outcome.held_back_from = outcome.held_back_from.or(unfinished);
                break;
            }
            outcome.last_nanos = outcome.last_nanos.max(frame.unix_nanos);
            if frame.kind != RecordKind::Command {
                continue;
            }
            let ends_run = !frame.unit_next;
            run.push(frame);
            if !ends_run {
                continue;
            }
            let (first, last) = (run[0].seq, run[run.len() - 1].seq);
            if first < range.from {
                run.clear();
                continue;
            }
            if range.until.is_some_and(|until| last > until) {
                outcome.held_back_from = outcome.held_back_from.or(Some(first));
                break;
            }
            // One cancelled command of a unit cancels all of it.
            let skipped = run.iter().any(|f| cancelled(f.seq));
            for frame in run.drain(..) {
                if skipped {
                    outcome.records_skipped += 1;
                    continue;
                }
                visit(Record {
                    seq: frame.seq,
                    segment: &path,
                    schema_version: version,
                    unix_nanos: frame.unix_nanos,
                    payload: &bytes[frame.payload.clone()],
                    in_final_batch: frame.seq >= final_batch,
                })
                .map_err(ReplayError::Visit)?;
                outcome.records_replayed += 1;
            }
        }
        expected = Some(scan.next_seq());
        outcome.next_seq = scan.next_seq();
        outcome.newest_len = scan.valid_len as u64;
        outcome.newest_schema = Some(version);
        outcome.newest_file_len = file_len;
        debug!(segment = %path.display(), records = scan.records, bytes = bytes.len(), "segment replayed");
        previous = Some((path, version));
        if outcome.damage_past_until.is_some() {
            // A unit cut by the damage was never handed over: the read ends before it.
            if let Some((_, first)) = scan.open_unit {
                outcome.held_back_from = outcome.held_back_from.or(Some(first));
            }
            break;
        }
    }
    if outcome.next_seq < range.from {
        let file = segment::path(dir, segments.last().copied().unwrap_or(range.from));
        return Err(JournalError::MissingRecords { file, expected: outcome.next_seq, found: range.from }.into());
    }
    info!(
        dir = %dir.display(),
        segments = outcome.segments_read,
        bytes = outcome.bytes_read,
        records = outcome.records_replayed,
        skipped = outcome.records_skipped,
        next_seq = outcome.next_seq.0,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "journal replayed"
    );
    Ok(outcome)
}

/// Whether damage at `offset` of the newest segment, where record `seq` was due, can be a
/// write a crash interrupted (`Ok`, with what lies after it) or must be corruption (`Err`,
/// with the evidence).
fn judge(
    bytes: &[u8],
    offset: usize,
    kind: &Corruption,
    seq: Seq,
    from: Seq,
    watermark: Option<Watermark>,
) -> Result<AfterDamage, &'static str> {
    if kind.record_verified() {
        return Err("the record's checksum verifies: it was written whole");
    }
    if seq < from {
        return Err("the snapshot loaded covers it, and snapshots are taken of synced records only");
    }
    if watermark.is_some_and(|m| seq <= m.synced_through) {
        return Err("the journal head records it as synced");
    }
    let after = AfterDamage::find(bytes, offset, seq);
    match watermark.map(|m| m.mode) {
        // Batches after the watermark may reach the disk in any order or not at all.
        Some(SyncMode::Deferred) => Ok(after),
        // Each batch was synced before the next was written: only the last can be torn.
        Some(SyncMode::EveryBatch) | None if !after.later_batch => Ok(after),
        _ => Err("a later batch follows it, written after it was synced"),
    }
}

/// The first command of the batch that is final once the bytes from `offset` on are cut,
/// or the sequence number after the kept records if none is.
///
/// A batch is final when nothing shows that a later write began after its callers were
/// answered. If the damage is inside a batch, that batch was being written, unless an
/// intact later batch follows the damage (possible when batches are synced later). If the
/// damage starts right after a whole batch, what was being written there was either an
/// abort marker for one of that batch's commands (its callers were not answered yet: the
/// batch is final) or the next batch (they were: it is not); only bytes that cannot be an
/// abort marker tell the second case apart.
fn final_batch_after_cut(scan: &SegmentScan, bytes: &[u8], offset: usize, after: &AfterDamage) -> Seq {
    let Some(last) = &scan.last_command else { return scan.next_seq() };
    let candidate = scan.final_batch_start;
    let is_final = if scan.ends_at_batch_boundary() {
        could_be_abort_marker(bytes, offset, after, scan.next_seq(), last.unix_nanos, candidate.0..=last.seq.0)
    } else {
        !after.later_batch
    };
    if is_final { candidate } else { scan.next_seq() }
}

fn check_header(config: &JournalConfig, path: &Path, scan: &SegmentScan, named: Seq) -> Result<(), JournalError> {
    let header = scan.header;
    if header.first_seq != named {
        return Err(JournalError::BadHeader {
            file: path.to_path_buf(),
            reason: "first sequence number differs from the file name",
        });
    }
    if header.serializer != config.serializer {
        return Err(JournalError::SerializerMismatch {
            file: path.to_path_buf(),
            found: header.serializer,
            expected: config.serializer,
        });
    }
    // Older versions are the caller's to judge: it may know how to migrate them.
    if header.schema_version > config.schema_version {
        return Err(JournalError::SchemaNewer {
            file: path.to_path_buf(),
            found: header.schema_version,
            current: config.schema_version,
        });
    }
    Ok(())
}

/// Describes the cut of the bytes from `offset` to the end, and where they will be kept.
fn plan_cut(
    config: &JournalConfig,
    path: &Path,
    bytes: &[u8],
    offset: usize,
    reason: Corruption,
    records_lost: u64,
) -> TornTail {
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("segment");
    let quarantine = config.dir.join(format!("{name}.torn-at-{offset}-{stamp}"));
    TornTail {
        segment: path.to_path_buf(),
        offset: offset as u64,
        bytes: (bytes.len() - offset) as u64,
        quarantine,
        reason,
        records_lost,
    }
}

/// Copies the cut bytes into the quarantine file, makes that durable, and only then cuts
/// the segment.
fn cut_torn_tail(config: &JournalConfig, tail: &TornTail, cut: &[u8]) -> Result<(), JournalError> {
    let storage = &*config.storage;
    let (path, quarantine) = (&tail.segment, &tail.quarantine);
    let mut file = storage.create(quarantine).map_err(|e| JournalError::io("create", quarantine, e))?;
    file.write_all(cut).map_err(|e| JournalError::io("write", quarantine, e))?;
    file.sync_data().map_err(|e| JournalError::io("fdatasync", quarantine, e))?;
    drop(file);
    storage.sync_dir(&config.dir).map_err(|e| JournalError::io("sync directory", &config.dir, e))?;

    let mut segment = storage.open_write(path).map_err(|e| JournalError::io("open", path, e))?;
    segment.set_len(tail.offset).map_err(|e| JournalError::io("truncate", path, e))?;
    segment.sync_data().map_err(|e| JournalError::io("fdatasync", path, e))?;
    warn!(
        segment = %path.display(),
        offset = tail.offset,
        bytes = tail.bytes,
        records_lost = tail.records_lost,
        quarantine = %quarantine.display(),
        reason = %tail.reason,
        "cut a torn write from the end of the journal"
    );
    Ok(())
}
