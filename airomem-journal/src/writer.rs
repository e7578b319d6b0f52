//! The single writer of a journal: batches of records, one write and one sync per batch,
//! and segment rollover.

use std::time::{SystemTime, UNIX_EPOCH};

use airomem_core::Seq;
use airomem_core::storage::StorageFile;
use tracing::{debug, error, info, warn};

use crate::JournalError;
use crate::config::{JournalConfig, SyncMode};
use crate::frame::{self, BatchMark, MAX_PAYLOAD_LEN, RecordKind};
use crate::head::{HeadFile, Watermark};
use crate::replay::ReplayOutcome;
use crate::segment::{self, SEGMENT_HEADER_LEN, SegmentHeader};

/// Running totals of what a writer did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterCounters {
    /// Batches written.
    pub batches: u64,
    /// Records written, abort markers included.
    pub records: u64,
    /// Bytes written to segments, headers included.
    pub bytes: u64,
    /// `fdatasync` calls on segments after writes (not the one that makes what recovery
    /// replayed durable at open).
    pub syncs: u64,
    /// Segments created.
    pub segments_created: u64,
}

/// Appends records to the newest segment, rolling over to a new one by size.
///
/// After any failed write or sync the writer is poisoned: it can no longer tell what reached
/// the disk, so it refuses all further work rather than retry a sync that may report success
/// for data the kernel already dropped.
pub struct JournalWriter {
    config: JournalConfig,
    mode: SyncMode,
    file: Box<dyn StorageFile>,
    head: HeadFile,
    segment_first: Seq,
    /// The schema version the active segment was written under.
    segment_schema: u32,
    /// Where the records of the active segment end: where the next one goes.
    segment_len: u64,
    /// The active segment's file length: past `segment_len` by the zeroed space prepared.
    file_len: u64,
    next_seq: Seq,
    /// The sequence number after the last record written (not just framed).
    written: Seq,
    last_nanos: u64,
    batch: Vec<u8>,
    batch_first: Seq,
    last_frame: Option<usize>,
    unsynced: bool,
    poisoned: Option<String>,
    counters: WriterCounters,
}

impl JournalWriter {
    /// Opens the newest segment that `replay` left in `outcome` for appending, or creates
    /// the first segment if there is none, for a caller that syncs every batch before it
    /// writes the next: [`Self::open_with`] with [`SyncMode::EveryBatch`].
    pub fn open(config: JournalConfig, outcome: &ReplayOutcome) -> Result<JournalWriter, JournalError> {
        JournalWriter::open_with(config, outcome, SyncMode::EveryBatch)
    }

    /// Opens the newest segment that `replay` left in `outcome` for appending, or creates
    /// the first segment if there is none. `mode` says how the caller will sync the batches
    /// it writes; the journal head records it, with how far the journal is synced, because
    /// recovery needs both to tell a torn write from corruption.
    pub fn open_with(
        config: JournalConfig,
        outcome: &ReplayOutcome,
        mode: SyncMode,
    ) -> Result<JournalWriter, JournalError> {
        let mut counters = WriterCounters::default();
        let config_schema = config.schema_version;
        let (file, segment_first, segment_len, file_len, head) = match outcome.segments.last() {
            Some(&first) => {
                let path = segment::path(&config.dir, first);
                let mut file = config.storage.open_write(&path).map_err(|e| JournalError::io("open", &path, e))?;
                // A crashed process leaves its unsynced writes in the page cache, where recovery
                // just read them: they are not durable, yet the store is about to serve them,
                // snapshot them and write after them. One fdatasync of the newest segment (every
                // older one was synced before the next was created) and one of the directory
                // (an interrupted rollover, snapshot or head rename) make them so. (Not counted
                // in `counters.syncs`, which counts the syncs of written batches.)
                file.sync_data().map_err(|e| JournalError::io("fdatasync", &path, e))?;
                config.storage.sync_dir(&config.dir).map_err(|e| JournalError::io("sync directory", &config.dir, e))?;
                // Everything replayed is synced now. Recording that durably also records, before
                // this writer writes anything, how it syncs: recovery judges damage after the
                // watermark by the mode of the writer that wrote it.
                let mark = Watermark { synced_through: Seq(outcome.next_seq.0.saturating_sub(1)), mode };
                let head = HeadFile::open(&config, outcome.head, first, mark)?;
                (file, first, outcome.newest_len, outcome.newest_file_len, head)
            }
            None => {
                let (file, file_len, head) = create_segment(&config, outcome.next_seq, mode, 0)?;
                counters.segments_created += 1;
                counters.bytes += SEGMENT_HEADER_LEN as u64;
                (file, outcome.next_seq, SEGMENT_HEADER_LEN as u64, file_len, head)
            }
        };
        let mut writer = JournalWriter {
            config,
            mode,
            file,
            head,
            segment_first,
            segment_schema: match outcome.segments.last() {
                Some(_) => outcome.newest_schema.unwrap_or(config_schema),
                None => config_schema,
            },
            segment_len,
            file_len,
            next_seq: outcome.next_seq,
            written: outcome.next_seq,
            last_nanos: outcome.last_nanos,
            batch: Vec::new(),
            batch_first: outcome.next_seq,
            last_frame: None,
            unsynced: false,
            poisoned: None,
            counters,
        };
        if writer.config.preallocate == 0 {
            // Without a sync after every batch, several batches could be caught unsynced by
            // a crash: they must be appended, not written over space an earlier run prepared.
            writer.give_back_prepared_space()?;
        }
        Ok(writer)
    }

    /// Whether something was written since the last sync.
    pub fn has_unsynced(&self) -> bool {
        self.unsynced
    }

    /// The sequence number the next record will carry.
    pub fn next_seq(&self) -> Seq {
        self.next_seq
    }

    /// What the writer has done so far.
    pub fn counters(&self) -> WriterCounters {
        self.counters
    }

    /// First sequence number of the segment being appended to.
    pub fn active_segment(&self) -> Seq {
        self.segment_first
    }

    /// Where the next record goes, between batches: the active segment's first sequence
    /// number and the byte offset after its last written record. A snapshot records it, so
    /// that an open can find the first record after the snapshot without reading what the
    /// snapshot covers. If the next batch rolls over, the record starts instead at the
    /// beginning of the segment named after it; a reader checks the sequence number it finds.
    pub fn next_record_position(&self) -> (Seq, u64) {
        (self.segment_first, self.segment_len)
    }

    /// Starts a batch and returns its commit time: the wall clock, but never earlier than the
    /// previous batch's, so that recorded time does not run backwards.
    pub fn begin_batch(&mut self) -> Result<u64, JournalError> {
        self.check_poisoned()?;
        assert!(self.batch.is_empty(), "the previous batch was written or abandoned");
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        self.last_nanos = self.last_nanos.max(u64::try_from(now).unwrap_or(u64::MAX));
        self.batch_first = self.next_seq;
        Ok(self.last_nanos)
    }

    /// Adds a command to the current batch and returns its sequence number.
    pub fn push(&mut self, payload: &[u8]) -> Result<Seq, JournalError> {
        if payload.len() > MAX_PAYLOAD_LEN {
            return Err(JournalError::RecordTooLarge { len: payload.len(), max: MAX_PAYLOAD_LEN });
        }
        let seq = self.next_seq;
        // The record before is final now (a unit's flag is set before the next push): its
        // checksum is computed once, here, and this one's when the next comes or the batch ends.
        if let Some(previous) = self.last_frame {
            frame::seal(&mut self.batch, previous);
        }
        self.last_frame = Some(self.batch.len());
        let mark = BatchMark { start: self.batch.is_empty(), end: false };
        frame::encode_unsealed(&mut self.batch, seq, self.last_nanos, RecordKind::Command, mark, payload);
        self.next_seq = seq.next();
        Ok(seq)
    }

    /// Marks the command pushed last as going on with the next one: both belong to one
    /// atomic unit, which replay applies whole or not at all, and of which a torn write never
    /// leaves a part. Push a unit's commands one after the other, calling this after each but
    /// the last; the batch must not end between them.
    pub fn continue_unit(&mut self) {
        if let Some(at) = self.last_frame {
            frame::mark_unit_next(&mut self.batch, at);
        }
    }

    /// Whether a batch of `records` commands holding `payload_bytes` bytes between them would
    /// be written into the active segment as it is: no rollover first (which syncs the old
    /// segment and creates and syncs a new one and a new head), nothing but the write.
    pub fn fits(&self, records: usize, payload_bytes: usize) -> bool {
        let len = (payload_bytes + records * frame::FRAME_HEADER_LEN) as u64;
        !self.rolls_over(self.batch.len() as u64 + len)
    }

    /// Whether writing a batch of `batch_bytes` rolls over first: it would take the active
    /// segment past its size (a segment holding no record takes any batch), or the segment
    /// is of another schema version.
    fn rolls_over(&self, batch_bytes: u64) -> bool {
        let fits = self.segment_len + batch_bytes <= self.config.segment_size;
        (!fits && self.segment_len > SEGMENT_HEADER_LEN as u64) || self.segment_schema != self.config.schema_version
    }

    /// Bytes in the current batch so far.
    pub fn batch_len(&self) -> usize {
        self.batch.len()
    }

    /// Starts a segment of the configured schema version if the active one was written under
    /// another, as after a migration, so that a segment holds one version. Returns whether
    /// the old segment held no record and was replaced: the new one starts at the same
    /// sequence number and so takes the same name (by an atomic rename).
    ///
    /// [`Self::write_batch`] does it too, before the first batch; calling it earlier lets the
    /// caller first append abort markers to the old segment, where replay looks for them
    /// (with the commands they cancel).
    pub fn start_current_schema(&mut self) -> Result<bool, JournalError> {
        self.check_poisoned()?;
        if self.segment_schema == self.config.schema_version {
            return Ok(false);
        }
        let replaced = self.segment_first == self.next_seq;
        let first = self.next_seq;
        self.poison_on_err(|w| w.roll_over(first))?;
        Ok(replaced)
    }

    /// Writes the current batch with one write call, rolling over first if the batch would
    /// take the segment past its size (or the segment is of another schema version). The
    /// batch is not durable until [`Self::sync`].
    pub fn write_batch(&mut self) -> Result<(), JournalError> {
        self.check_poisoned()?;
        let Some(last) = self.last_frame.take() else { return Ok(()) };
        frame::mark_batch_end(&mut self.batch, last);
        frame::seal(&mut self.batch, last);
        if self.rolls_over(self.batch.len() as u64) {
            let first = self.batch_first;
            if let Err(e) = self.poison_on_err(|w| w.roll_over(first)) {
                self.batch.clear();
                return Err(e);
            }
        }
        let mut batch = std::mem::take(&mut self.batch);
        let written = self.poison_on_err(|w| w.write_records(&batch, true));
        if written.is_ok() {
            self.unsynced = true;
            self.written = self.next_seq;
            self.segment_len += batch.len() as u64;
            self.counters.batches += 1;
            self.counters.bytes += batch.len() as u64;
            self.counters.records += self.next_seq.0 - self.batch_first.0;
        }
        batch.clear();
        self.batch = batch;
        written
    }

    /// Makes everything written so far durable with one `fdatasync`.
    ///
    /// Under [`SyncMode::Deferred`] it then records in the journal head, without syncing
    /// that, how far the journal is synced: recovery cuts damage after that point as the
    /// unsynced tail. (Under [`SyncMode::EveryBatch`] only the last batch can be torn, which
    /// needs no watermark, so the head is left alone and a sync costs no more.)
    pub fn sync(&mut self) -> Result<(), JournalError> {
        self.check_poisoned()?;
        if !self.unsynced {
            return Ok(());
        }
        self.poison_on_err(|w| w.file.sync_data().map_err(|e| JournalError::io("fdatasync", w.path(), e)))?;
        self.unsynced = false;
        self.counters.syncs += 1;
        if self.mode == SyncMode::Deferred
            && let Err(e) = self.head.record(&self.config, self.watermark(), false)
        {
            // The watermark is only evidence: the head keeps an older one, which is still a
            // lower bound, and the journal itself is synced.
            warn!(error = %e.with_sources(), "could not record the synced watermark in the journal head");
        }
        Ok(())
    }

    /// Syncs, gives back the zeroed space prepared ahead of the records, so that a closed
    /// journal holds its records and nothing else, and durably records in the journal head
    /// that every record is synced: damage to any of them is then corruption, never taken
    /// for a torn write. Called when the journal is closed; the writer stays usable.
    pub fn trim(&mut self) -> Result<(), JournalError> {
        self.sync()?;
        self.give_back_prepared_space()?;
        let mark = self.watermark();
        self.poison_on_err(|w| w.head.record(&w.config, mark, true))
    }

    /// Every record written so far is synced: the watermark that says so.
    fn watermark(&self) -> Watermark {
        Watermark { synced_through: Seq(self.written.0.saturating_sub(1)), mode: self.mode }
    }

    /// Syncs, then cuts the zeroed space prepared ahead of the records.
    fn give_back_prepared_space(&mut self) -> Result<(), JournalError> {
        self.sync()?;
        if self.file_len > self.segment_len {
            self.poison_on_err(|w| {
                w.file.set_len(w.segment_len).map_err(|e| JournalError::io("truncate", w.path(), e))?;
                w.file.sync_data().map_err(|e| JournalError::io("fdatasync", w.path(), e))
            })?;
            self.file_len = self.segment_len;
        }
        Ok(())
    }

    /// Durably records that the command `target` is aborted. Never rolls over, so the marker
    /// lands in the same segment as the command it cancels.
    pub fn append_abort(&mut self, target: Seq) -> Result<Seq, JournalError> {
        self.check_poisoned()?;
        assert!(self.batch.is_empty(), "abort markers are written between batches");
        assert!(target < self.next_seq, "only a written command can be aborted");
        let seq = self.next_seq;
        let mut record = Vec::new();
        frame::encode(&mut record, seq, self.last_nanos, RecordKind::Abort, BatchMark::ALONE, &target.0.to_le_bytes());
        // Never over newly prepared zeros: recovery recognises a torn marker by its bytes
        // and by nothing landing past them, which a torn write of zeros could break.
        self.poison_on_err(|w| w.write_records(&record, false))?;
        self.next_seq = seq.next();
        self.written = self.next_seq;
        self.unsynced = true;
        self.segment_len += record.len() as u64;
        self.counters.records += 1;
        self.counters.bytes += record.len() as u64;
        self.sync()?;
        info!(target = target.0, marker = seq.0, "journaled an abort marker");
        Ok(seq)
    }

    /// Writes `records` where the active segment's records end, first preparing zeroed
    /// space for them if the writer preallocates and `prepare` allows.
    fn write_records(&mut self, records: &[u8], prepare: bool) -> Result<(), JournalError> {
        let end = self.segment_len + records.len() as u64;
        if prepare && self.config.preallocate > 0 && end > self.file_len {
            let target = (self.file_len + self.config.preallocate).min(self.config.segment_size).max(end);
            self.file.write_zeros(self.file_len, target).map_err(|e| JournalError::io("write", self.path(), e))?;
            self.file_len = target;
        }
        self.file.write_at(self.segment_len, records).map_err(|e| JournalError::io("write", self.path(), e))?;
        self.file_len = self.file_len.max(end);
        Ok(())
    }

    fn roll_over(&mut self, first: Seq) -> Result<(), JournalError> {
        // The closed segment keeps its unused zeros, which recovery reads as free space:
        // fewer bytes than the batch that did not fit, since preparing stops at the
        // segment size.
        self.sync()?;
        let (file, file_len, head) = create_segment(&self.config, first, self.mode, self.head.counter())?;
        self.file = file;
        self.file_len = file_len;
        self.head = head;
        debug!(
            previous = self.segment_first.0,
            next = first.0,
            bytes = self.segment_len,
            "journal segment rolled over"
        );
        self.segment_first = first;
        self.segment_schema = self.config.schema_version;
        self.segment_len = SEGMENT_HEADER_LEN as u64;
        self.counters.segments_created += 1;
        self.counters.bytes += SEGMENT_HEADER_LEN as u64;
        Ok(())
    }

    /// The active segment's path, for errors.
    fn path(&self) -> std::path::PathBuf {
        segment::path(&self.config.dir, self.segment_first)
    }

    fn check_poisoned(&self) -> Result<(), JournalError> {
        match &self.poisoned {
            Some(cause) => Err(JournalError::Poisoned { cause: cause.clone() }),
            None => Ok(()),
        }
    }

    fn poison_on_err<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T, JournalError>) -> Result<T, JournalError> {
        let result = f(self);
        if let Err(e) = &result {
            let cause = e.with_sources();
            error!(error = %cause, "journal write failed; the writer is poisoned and acknowledges nothing more");
            self.poisoned.get_or_insert(cause);
        }
        result
    }
}

/// Creates the segment that starts at `first`: prepared under a temporary name (with its
/// first zeroed space, if the writer preallocates), made durable, then renamed into place
/// and the directory synced, so a segment file never exists with a partial header. Then the
/// head file is moved on to it, saying that every record before it is synced (older
/// segments are synced before a new one is created). Returns the file, its length and the
/// new head.
fn create_segment(
    config: &JournalConfig,
    first: Seq,
    mode: SyncMode,
    counter: u64,
) -> Result<(Box<dyn StorageFile>, u64, HeadFile), JournalError> {
    let storage = &*config.storage;
    let temp = segment::temp_path(&config.dir, first);
    let path = segment::path(&config.dir, first);
    let header =
        SegmentHeader { serializer: config.serializer, schema_version: config.schema_version, first_seq: first };
    let mut file = storage.create(&temp).map_err(|e| JournalError::io("create", &temp, e))?;
    file.write_all(&header.encode()).map_err(|e| JournalError::io("write", &temp, e))?;
    let len = config.preallocate.min(config.segment_size).max(SEGMENT_HEADER_LEN as u64);
    file.write_zeros(SEGMENT_HEADER_LEN as u64, len).map_err(|e| JournalError::io("write", &temp, e))?;
    file.sync_data().map_err(|e| JournalError::io("fdatasync", &temp, e))?;
    storage.rename(&temp, &path).map_err(|e| JournalError::io("rename", &temp, e))?;
    storage.sync_dir(&config.dir).map_err(|e| JournalError::io("sync directory", &config.dir, e))?;
    let mark = Watermark { synced_through: Seq(first.0.saturating_sub(1)), mode };
    let head = HeadFile::create(config, first, mark, counter)?;
    Ok((file, len, head))
}
