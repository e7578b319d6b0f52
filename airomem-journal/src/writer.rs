//! The single writer of a journal: batches of records, one write and one sync per batch,
//! and segment rollover.

use std::time::{SystemTime, UNIX_EPOCH};

use airomem_core::Seq;
use airomem_core::storage::StorageFile;
use tracing::{debug, error, info};

use crate::JournalError;
use crate::config::JournalConfig;
use crate::frame::{self, BatchMark, MAX_PAYLOAD_LEN, RecordKind};
use crate::recovery::ReplayOutcome;
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
    /// `fdatasync` calls on segments.
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
    file: Box<dyn StorageFile>,
    segment_first: Seq,
    /// Where the records of the active segment end: where the next one goes.
    segment_len: u64,
    /// The active segment's file length: past `segment_len` by the zeroed space prepared.
    file_len: u64,
    next_seq: Seq,
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
    /// the first segment if there is none.
    pub fn open(config: JournalConfig, outcome: &ReplayOutcome) -> Result<JournalWriter, JournalError> {
        let mut counters = WriterCounters::default();
        let (file, segment_first, segment_len, file_len) = match outcome.segments.last() {
            Some(&first) => {
                let path = segment::path(&config.dir, first);
                let file = config.storage.open_write(&path).map_err(|e| JournalError::io("open", &path, e))?;
                (file, first, outcome.newest_len, outcome.newest_file_len)
            }
            None => {
                let (file, file_len) = create_segment(&config, outcome.next_seq)?;
                counters.segments_created += 1;
                counters.bytes += SEGMENT_HEADER_LEN as u64;
                (file, outcome.next_seq, SEGMENT_HEADER_LEN as u64, file_len)
            }
        };
        let mut writer = JournalWriter {
            config,
            file,
            segment_first,
            segment_len,
            file_len,
            next_seq: outcome.next_seq,
            last_nanos: outcome.last_nanos,
            batch: Vec::new(),
            batch_first: outcome.next_seq,
            last_frame: None,
            unsynced: false,
            poisoned: None,
            counters,
        };
        if outcome.segments.last().is_some() {
            // A crashed process leaves its unsynced writes in the page cache, where recovery
            // just read them: they are not durable, yet the store is about to serve them,
            // snapshot them and write after them. One fdatasync of the newest segment (every
            // older one was synced before the next was created) and one of the directory
            // (an interrupted rollover, snapshot or head rename) make them so.
            writer.unsynced = true;
            writer.sync()?;
            let dir = writer.config.dir.clone();
            writer.config.storage.sync_dir(&dir).map_err(|e| JournalError::io("sync directory", &dir, e))?;
        }
        if writer.config.preallocate == 0 {
            // Without a sync after every batch, several batches could be caught unsynced by
            // a crash: they must be appended, not written over space an earlier run prepared.
            writer.trim()?;
        }
        Ok(writer)
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
        self.last_frame = Some(self.batch.len());
        let mark = BatchMark { start: self.batch.is_empty(), end: false };
        frame::encode(&mut self.batch, seq, self.last_nanos, RecordKind::Command, mark, payload);
        self.next_seq = seq.next();
        Ok(seq)
    }

    /// Bytes in the current batch so far.
    pub fn batch_len(&self) -> usize {
        self.batch.len()
    }

    /// Writes the current batch with one write call, rolling over first if the batch would
    /// take the segment past its size. The batch is not durable until [`Self::sync`].
    pub fn write_batch(&mut self) -> Result<(), JournalError> {
        self.check_poisoned()?;
        let Some(last) = self.last_frame.take() else { return Ok(()) };
        frame::set_batch_end(&mut self.batch, last);
        let fits = self.segment_len + self.batch.len() as u64 <= self.config.segment_size;
        if !fits && self.segment_len > SEGMENT_HEADER_LEN as u64 {
            let first = self.batch_first;
            if let Err(e) = self.poison_on_err(|w| w.roll_over(first)) {
                self.batch.clear();
                return Err(e);
            }
        }
        let mut batch = std::mem::take(&mut self.batch);
        let written = self.poison_on_err(|w| w.write_records(&batch));
        if written.is_ok() {
            self.unsynced = true;
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
    pub fn sync(&mut self) -> Result<(), JournalError> {
        self.check_poisoned()?;
        if !self.unsynced {
            return Ok(());
        }
        self.poison_on_err(|w| w.file.sync_data().map_err(|e| JournalError::io("fdatasync", w.path(), e)))?;
        self.unsynced = false;
        self.counters.syncs += 1;
        Ok(())
    }

    /// Syncs, then gives back the zeroed space prepared ahead of the records, so that a
    /// closed journal holds its records and nothing else. The writer stays usable.
    pub fn trim(&mut self) -> Result<(), JournalError> {
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
        self.poison_on_err(|w| w.write_records(&record))?;
        self.next_seq = seq.next();
        self.unsynced = true;
        self.segment_len += record.len() as u64;
        self.counters.records += 1;
        self.counters.bytes += record.len() as u64;
        self.sync()?;
        info!(target = target.0, marker = seq.0, "journaled an abort marker");
        Ok(seq)
    }

    /// Writes `records` where the active segment's records end, first preparing zeroed
    /// space for them if the writer preallocates.
    fn write_records(&mut self, records: &[u8]) -> Result<(), JournalError> {
        let end = self.segment_len + records.len() as u64;
        if self.config.preallocate > 0 && end > self.file_len {
            let target = (self.file_len + self.config.preallocate).min(self.config.segment_size).max(end);
            write_zeros(&mut *self.file, self.file_len, target)
                .map_err(|e| JournalError::io("write", self.path(), e))?;
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
        let (file, file_len) = create_segment(&self.config, first)?;
        self.file = file;
        self.file_len = file_len;
        debug!(
            previous = self.segment_first.0,
            next = first.0,
            bytes = self.segment_len,
            "journal segment rolled over"
        );
        self.segment_first = first;
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
            error!(error = %e, "journal write failed; the writer is poisoned and acknowledges nothing more");
            self.poisoned.get_or_insert_with(|| e.to_string());
        }
        result
    }
}

/// Creates the segment that starts at `first`: prepared under a temporary name (with its
/// first zeroed space, if the writer preallocates), made durable, then renamed into place
/// and the directory synced, so a segment file never exists with a partial header. Then the
/// head file is moved on to it. Returns the file and its length.
fn create_segment(config: &JournalConfig, first: Seq) -> Result<(Box<dyn StorageFile>, u64), JournalError> {
    let storage = &*config.storage;
    let temp = segment::temp_path(&config.dir, first);
    let path = segment::path(&config.dir, first);
    let header =
        SegmentHeader { serializer: config.serializer, schema_version: config.schema_version, first_seq: first };
    let mut file = storage.create(&temp).map_err(|e| JournalError::io("create", &temp, e))?;
    file.write_all(&header.encode()).map_err(|e| JournalError::io("write", &temp, e))?;
    let len = config.preallocate.min(config.segment_size).max(SEGMENT_HEADER_LEN as u64);
    write_zeros(&mut *file, SEGMENT_HEADER_LEN as u64, len).map_err(|e| JournalError::io("write", &temp, e))?;
    file.sync_data().map_err(|e| JournalError::io("fdatasync", &temp, e))?;
    storage.rename(&temp, &path).map_err(|e| JournalError::io("rename", &temp, e))?;
    storage.sync_dir(&config.dir).map_err(|e| JournalError::io("sync directory", &config.dir, e))?;
    crate::head::write(config, first)?;
    Ok((file, len))
}

/// Fills `from..to` of `file` with zeros.
fn write_zeros(file: &mut dyn StorageFile, from: u64, to: u64) -> std::io::Result<()> {
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    let mut offset = from;
    while offset < to {
        let len = (to - offset).min(ZEROS.len() as u64);
        file.write_at(offset, &ZEROS[..len as usize])?;
        offset += len;
    }
    Ok(())
}
