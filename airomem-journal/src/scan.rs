//! Reading the records of one segment that was loaded whole into memory.
//!
//! Verification is one pass over the bytes that checks every record and keeps only what
//! replay needs (counts, abort targets, where the last batch starts); replay then walks the
//! verified region again reading headers only, so no per-record index is ever allocated.

use std::collections::HashSet;
use std::path::Path;

use airomem_core::Seq;

use crate::JournalError;
use crate::error::Corruption;
use crate::frame::{self, BatchMark, FRAME_HEADER_LEN, Frame, RecordKind};
use crate::segment::{SEGMENT_HEADER_LEN, SegmentHeader};

/// What verifying a segment found.
#[derive(Debug)]
pub struct SegmentScan {
    /// The segment's header.
    pub header: SegmentHeader,
    /// Where verification started: just past the header, or where a snapshot recorded that
    /// the first record after it starts ([`Self::read_from`]).
    pub start: usize,
    /// The sequence number of the record at `start`.
    pub start_seq: Seq,
    /// Records that verified from `start` on, with contiguous sequence numbers from
    /// `start_seq`.
    pub records: u64,
    /// Offset just past the last verified record.
    pub valid_len: usize,
    /// Zero bytes after the last record, up to the end of the file: space the writer
    /// prepared ahead of its records, not damage.
    pub zero_tail: usize,
    /// Sequence numbers of the commands that abort markers in this segment cancel. The
    /// writer never rolls over between a batch and the abort marker for it, so a marker
    /// always sits in the same segment as the command it cancels.
    pub aborted: HashSet<Seq>,
    /// The first command of the last batch of commands in this segment: those a crash may
    /// have caught before anyone was told their outcome, if nothing was written after them.
    /// Abort markers do not count as batches: a crash can fall between the markers of two
    /// commands of one batch.
    pub final_batch_start: Seq,
    /// The last command that verified.
    pub last_command: Option<Frame>,
    /// The offset of the first record that did not verify, and why.
    pub damage: Option<(usize, Corruption)>,
    /// If the verified records end inside an atomic unit (its last command is missing): the
    /// offset and sequence number of the unit's first command.
    pub open_unit: Option<(usize, Seq)>,
}

impl SegmentScan {
    /// Verifies the header and every record of `bytes`, the whole content of `file`.
    pub fn read(file: &Path, bytes: &[u8]) -> Result<SegmentScan, JournalError> {
        let header = SegmentHeader::decode(file, bytes)?;
        Ok(SegmentScan::verify(header, bytes, SEGMENT_HEADER_LEN, header.first_seq))
    }

    /// Verifies the header of `bytes` (the whole content of `file`) and the records from
    /// `start` on, where record `start_seq` is expected: the records before `start` are not
    /// looked at. For an open that a snapshot has told where its first record after the
    /// snapshot starts, so that damage in what the snapshot covers does not stop it. A
    /// `start` past the end, or before the first record, reads as damage at `start`.
    pub fn read_from(file: &Path, bytes: &[u8], start: usize, start_seq: Seq) -> Result<SegmentScan, JournalError> {
        let header = SegmentHeader::decode(file, bytes)?;
        if start < SEGMENT_HEADER_LEN || start > bytes.len() {
            let mut scan = SegmentScan::verify(header, bytes, bytes.len(), start_seq);
            scan.valid_len = start.min(bytes.len());
            scan.zero_tail = 0;
            let kind = Corruption::Truncated { needed: start as u64, available: bytes.len() as u64 };
            scan.damage = Some((scan.valid_len, kind));
            return Ok(scan);
        }
        Ok(SegmentScan::verify(header, bytes, start, start_seq))
    }

    fn verify(header: SegmentHeader, bytes: &[u8], start: usize, start_seq: Seq) -> SegmentScan {
        let mut scan = SegmentScan {
            header,
            start,
            start_seq,
            records: 0,
            valid_len: start,
            zero_tail: 0,
            aborted: HashSet::new(),
            final_batch_start: start_seq,
            last_command: None,
            damage: None,
            open_unit: None,
        };
        // The two newest ends of command batches seen: the last batch starts after the older
        // one if the newest command ends a batch, after the newer one otherwise.
        let (mut older_end, mut newer_end): (Option<Seq>, Option<Seq>) = (None, None);
        let mut expected = start_seq;
        while scan.valid_len < bytes.len() {
            match frame::decode(bytes, scan.valid_len).and_then(|f| check(bytes, f, expected)) {
                Ok(f) => {
                    match f.kind {
                        RecordKind::Abort => {
                            scan.aborted.insert(abort_target(&bytes[f.payload.clone()]).expect("checked above"));
                        }
                        RecordKind::Command => {
                            if f.batch_end {
                                (older_end, newer_end) = (newer_end, Some(f.seq));
                            }
                            scan.open_unit = match (scan.open_unit, f.unit_next) {
                                (_, false) => None,
                                (None, true) => Some((f.offset, f.seq)),
                                (open, true) => open,
                            };
                            scan.last_command = Some(f.clone());
                        }
                    }
                    scan.valid_len = f.end();
                    scan.records += 1;
                    expected = expected.next();
                }
                Err(_) if bytes[scan.valid_len..].iter().all(|&b| b == 0) => {
                    scan.zero_tail = bytes.len() - scan.valid_len;
                    break;
                }
                Err(kind) => {
                    scan.damage = Some((scan.valid_len, kind));
                    break;
                }
            }
        }
        let boundary = if scan.ends_at_batch_boundary() { older_end } else { newer_end };
        scan.final_batch_start = boundary.map_or(start_seq, Seq::next);
        scan
    }

    /// The sequence number after the last verified record.
    pub fn next_seq(&self) -> Seq {
        Seq(self.start_seq.0 + self.records)
    }

    /// Whether the verified records end where a batch of commands ended (its batch-end bit
    /// is set, possibly followed by abort markers), rather than inside one.
    pub fn ends_at_batch_boundary(&self) -> bool {
        self.last_command.as_ref().is_none_or(|f| f.batch_end)
    }

    /// The verified records, reading headers only (they were checked by [`Self::read`]).
    pub fn frames<'a>(&self, bytes: &'a [u8]) -> impl Iterator<Item = Frame> + 'a {
        let end = self.valid_len;
        let mut offset = self.start;
        std::iter::from_fn(move || {
            (offset < end).then(|| {
                let f = frame::peek(bytes, offset);
                offset = f.end();
                f
            })
        })
    }
}

/// The length of an abort marker record: a frame header and the sequence number it cancels.
pub const ABORT_MARKER_LEN: usize = FRAME_HEADER_LEN + 8;

fn check(bytes: &[u8], f: Frame, expected: Seq) -> Result<Frame, Corruption> {
    if f.seq != expected {
        return Err(Corruption::SequenceOutOfOrder { found: f.seq });
    }
    if f.kind == RecordKind::Abort && abort_target(&bytes[f.payload.clone()]).is_none() {
        return Err(Corruption::BadAbortMarker);
    }
    Ok(f)
}

/// The command an abort marker's payload names.
pub fn abort_target(payload: &[u8]) -> Option<Seq> {
    let bytes: [u8; 8] = payload.try_into().ok()?;
    Some(Seq(u64::from_le_bytes(bytes)))
}

/// What lies after damage at offset `damaged`, where the record numbered `expected` was
/// due: the evidence that tells a write a crash interrupted from corruption of bytes that
/// were once durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AfterDamage {
    /// A record that verifies after the damage starts a batch, or follows one that ends a
    /// batch: a batch was written after the damaged one.
    pub later_batch: bool,
    /// Some record after the damage verifies.
    pub intact: bool,
    /// The highest sequence number of a record that verifies after the damage.
    pub highest_seq: Option<Seq>,
    /// Offset just past the last byte that is not zero.
    pub data_end: usize,
}

impl AfterDamage {
    /// Looks at every byte offset after `damaged` for a record that verifies, with a
    /// plausible-sequence-number filter before the checksum. Bounded by the bytes present;
    /// runs only when a segment is damaged.
    pub fn find(bytes: &[u8], damaged: usize, expected: Seq) -> AfterDamage {
        let lowest = expected.0;
        let mut after = AfterDamage {
            data_end: bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1),
            ..AfterDamage::default()
        };
        let mut batch_ended = false;
        let mut offset = damaged + 1;
        while offset + FRAME_HEADER_LEN <= bytes.len() {
            let seq = frame::read_u64(bytes, offset + 8);
            // A record at this offset could be at most this far past the one due at `damaged`.
            let highest = lowest.saturating_add(((offset - damaged) / FRAME_HEADER_LEN) as u64 + 1);
            if seq >= lowest
                && seq <= highest
                && let Ok(found) = frame::decode(bytes, offset)
            {
                after.later_batch |= batch_ended || found.batch_start;
                after.intact = true;
                after.highest_seq = Some(after.highest_seq.map_or(found.seq, |h| h.max(found.seq)));
                batch_ended = found.batch_end;
                offset = found.end();
                continue;
            }
            offset += 1;
        }
        after
    }
}

/// Whether the damage at `damaged` (where the record numbered `expected` is due) can be a
/// write that a crash interrupted when every batch is synced before the next is written.
///
/// Then only the newest batch of the newest segment can have been caught unsynced by a
/// crash, and, since it may overwrite space prepared with zeros, its sectors may have
/// reached the disk in any order: some of its records may be intact after the damage. The
/// damage is a torn write if every record that verifies after it could belong to that one
/// batch, the batch the damage is in: none of them starts a batch (the first record of the
/// damaged batch is at or before the damage), and none follows a batch end. A later batch
/// was written after the damaged one was synced, so the damage was once durable.
pub fn is_torn_tail(bytes: &[u8], damaged: usize, expected: Seq) -> bool {
    !AfterDamage::find(bytes, damaged, expected).later_batch
}

/// Whether the damaged bytes at `at`, right after a whole batch, can be what is left of an
/// abort marker numbered `seq` with commit time `unix_nanos` that cancels one of the
/// commands `targets`, rather than of the next batch's first record.
///
/// The writer writes an abort marker alone, never over newly prepared zeros, and nothing
/// after it until it is synced. So a torn marker leaves no byte that is not zero past its
/// 33 bytes, and no intact record after it. If the file goes on past the marker, the
/// marker was written over zeros that were already durable: each of its bytes then either
/// landed or is still zero, and the bytes that landed must be the marker's. (A marker that
/// extended the file may have left junk in the rest of its range, so then only the length
/// tells.)
pub fn could_be_abort_marker(
    bytes: &[u8],
    at: usize,
    after: &AfterDamage,
    seq: Seq,
    unix_nanos: u64,
    targets: std::ops::RangeInclusive<u64>,
) -> bool {
    let end = at + ABORT_MARKER_LEN;
    if after.intact || after.data_end > end {
        return false;
    }
    if bytes.len() <= end {
        return true;
    }
    let landed = &bytes[at..end];
    let mut marker = Vec::with_capacity(ABORT_MARKER_LEN);
    targets.into_iter().any(|target| {
        marker.clear();
        frame::encode(&mut marker, seq, unix_nanos, RecordKind::Abort, BatchMark::ALONE, &target.to_le_bytes());
        landed.iter().zip(&marker).all(|(&b, &m)| b == 0 || b == m)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use airomem_core::SerializerId;

    /// A segment from record 10 on, with batches of the given sizes.
    fn segment(batches: &[usize]) -> Vec<u8> {
        let header = SegmentHeader { serializer: SerializerId(1), schema_version: 1, first_seq: Seq(10) };
        let mut bytes = header.encode().to_vec();
        let mut seq = 10;
        for &size in batches {
            for i in 0..size {
                let mark = BatchMark { start: i == 0, end: i + 1 == size };
                frame::encode(&mut bytes, Seq(seq), 1, RecordKind::Command, mark, b"abcd");
                seq += 1;
            }
        }
        bytes
    }

    #[test]
    fn reads_every_record_and_finds_the_last_batch() {
        let bytes = segment(&[1, 3, 2]);
        let scan = SegmentScan::read(Path::new("s"), &bytes).expect("valid");
        assert_eq!(scan.records, 6);
        assert_eq!(scan.next_seq(), Seq(16));
        assert_eq!(scan.valid_len, bytes.len());
        assert_eq!(scan.final_batch_start, Seq(14));
        assert!(scan.damage.is_none());
        let seqs: Vec<u64> = scan.frames(&bytes).map(|f| f.seq.0).collect();
        assert_eq!(seqs, (10..16).collect::<Vec<_>>());
    }

    #[test]
    fn abort_markers_do_not_end_the_final_batch() {
        let mut bytes = segment(&[2, 3]);
        frame::encode(&mut bytes, Seq(15), 1, RecordKind::Abort, BatchMark::ALONE, &13u64.to_le_bytes());
        let scan = SegmentScan::read(Path::new("s"), &bytes).expect("valid");
        assert_eq!(scan.final_batch_start, Seq(12));
        assert_eq!(scan.aborted, HashSet::from([Seq(13)]));
    }

    #[test]
    fn a_cut_batch_is_the_final_batch() {
        let mut bytes = segment(&[2, 3]);
        bytes.truncate(bytes.len() - 4);
        let scan = SegmentScan::read(Path::new("s"), &bytes).expect("header ok");
        assert_eq!(scan.records, 4);
        assert_eq!(scan.final_batch_start, Seq(12));
        assert!(matches!(scan.damage, Some((_, Corruption::Truncated { .. }))));
    }

    #[test]
    fn damage_in_the_last_record_has_nothing_intact_after_it() {
        let mut bytes = segment(&[1, 1, 1]);
        let last = bytes.len() - 2;
        bytes[last] ^= 0xff;
        let scan = SegmentScan::read(Path::new("s"), &bytes).expect("header ok");
        let (offset, kind) = scan.damage.clone().expect("damaged");
        assert!(matches!(kind, Corruption::Checksum { .. }));
        assert!(is_torn_tail(&bytes, offset, scan.next_seq()));
    }

    #[test]
    fn damage_before_a_later_batch_is_corruption() {
        let mut bytes = segment(&[1, 1, 1]);
        bytes[SEGMENT_HEADER_LEN + FRAME_HEADER_LEN] ^= 0xff;
        let scan = SegmentScan::read(Path::new("s"), &bytes).expect("header ok");
        let (offset, _) = scan.damage.clone().expect("damaged");
        assert_eq!(offset, SEGMENT_HEADER_LEN);
        assert_eq!(scan.records, 0);
        assert!(!is_torn_tail(&bytes, offset, scan.next_seq()));
    }

    /// The sectors of an unsynced overwrite land in any order: records of the last batch
    /// may survive after a lost one, and that is still a torn write.
    #[test]
    fn intact_records_of_the_last_batch_after_the_damage_are_a_torn_write() {
        let mut bytes = segment(&[2, 4]);
        let record = FRAME_HEADER_LEN + 4;
        let third = SEGMENT_HEADER_LEN + 2 * record;
        bytes[third..third + record].fill(0);
        bytes.extend_from_slice(&[0; 300]);
        let scan = SegmentScan::read(Path::new("s"), &bytes).expect("header ok");
        let (offset, _) = scan.damage.clone().expect("damaged");
        assert_eq!((offset, scan.records), (third, 2));
        assert!(is_torn_tail(&bytes, offset, scan.next_seq()));
        // The same damage one batch earlier is followed by a whole later batch.
        let mut bytes = segment(&[2, 4, 1]);
        bytes[third..third + record].fill(0);
        let scan = SegmentScan::read(Path::new("s"), &bytes).expect("header ok");
        let (offset, _) = scan.damage.clone().expect("damaged");
        assert!(!is_torn_tail(&bytes, offset, scan.next_seq()));
    }

    /// A damaged batch of one record followed by an intact batch: the later batch was
    /// written after the damaged one was synced.
    #[test]
    fn damage_in_the_batch_before_the_last_is_corruption() {
        let mut bytes = segment(&[1, 1, 1, 1]);
        let record = FRAME_HEADER_LEN + 4;
        let third = SEGMENT_HEADER_LEN + 2 * record;
        bytes[third + FRAME_HEADER_LEN] ^= 1;
        let scan = SegmentScan::read(Path::new("s"), &bytes).expect("header ok");
        let (offset, _) = scan.damage.clone().expect("damaged");
        assert_eq!(offset, third);
        assert!(!is_torn_tail(&bytes, offset, scan.next_seq()));
    }

    #[test]
    fn zeros_after_the_last_record_are_prepared_space() {
        let mut bytes = segment(&[1, 2]);
        let records_end = bytes.len();
        bytes.extend_from_slice(&[0; 1000]);
        let scan = SegmentScan::read(Path::new("s"), &bytes).expect("valid");
        assert_eq!((scan.records, scan.valid_len, scan.zero_tail), (3, records_end, 1000));
        assert!(scan.damage.is_none());
        // One stray byte in the zeros is damage, not prepared space.
        bytes[records_end + 700] = 1;
        let scan = SegmentScan::read(Path::new("s"), &bytes).expect("header ok");
        assert_eq!(scan.damage.map(|d| d.0), Some(records_end));
    }

    /// Right after a whole batch, what a torn write left must be able to be an abort marker
    /// for one of that batch's commands, or it started the next batch.
    #[test]
    fn a_torn_abort_marker_is_told_from_a_torn_next_batch() {
        let records = segment(&[2, 1]);
        let at = records.len();
        let mut marker = Vec::new();
        frame::encode(&mut marker, Seq(13), 1, RecordKind::Abort, BatchMark::ALONE, &12u64.to_le_bytes());
        assert_eq!(marker.len(), ABORT_MARKER_LEN);
        let mut next = Vec::new();
        frame::encode(&mut next, Seq(13), 1, RecordKind::Command, BatchMark::ALONE, b"12345678");
        let judge = |tail: &[u8], prepared: usize| {
            let mut bytes = [&records[..], tail].concat();
            bytes.resize(bytes.len().max(at + prepared), 0);
            let after = AfterDamage::find(&bytes, at, Seq(13));
            could_be_abort_marker(&bytes, at, &after, Seq(13), 1, 12..=12)
        };
        // Over zeros prepared earlier: each byte landed or is still zero.
        assert!(judge(&marker[..20], 200));
        assert!(judge(&[&marker[..8], &[0; 9], &marker[17..30]].concat(), 200));
        // A record of the next batch, as long as a marker: its checksum bytes differ.
        assert!(!judge(&next[..20], 200));
        // The marker names a command of another batch.
        assert!(!judge(&[&marker[..25], &[11]].concat(), 200));
        // Something landed past a marker's length.
        assert!(!judge(&[&marker[..20], &[0; 30], &[1]].concat(), 200));
        // An append torn short may leave junk in the rest of its range: only the length tells.
        assert!(judge(&[&marker[..10], &[0xab; 23]].concat(), 0));
        assert!(!judge(&[&marker[..10], &[0xab; 24]].concat(), 0));
    }

    /// A header can claim any first sequence number; counting records on from one near
    /// the end of `u64` must not overflow.
    #[test]
    fn a_first_sequence_number_near_the_end_of_u64_is_a_bad_header() {
        for first in [u64::MAX, u64::MAX - 1, u64::MAX / 2 + 1] {
            let header = SegmentHeader { serializer: SerializerId(1), schema_version: 1, first_seq: Seq(first) };
            let mut bytes = header.encode().to_vec();
            for seq in first..=first.saturating_add(1) {
                frame::encode(&mut bytes, Seq(seq), 1, RecordKind::Command, BatchMark::ALONE, b"x");
            }
            match SegmentScan::read(Path::new("s"), &bytes) {
                Err(JournalError::BadHeader { reason, .. }) => assert!(reason.contains("sequence"), "{reason}"),
                other => panic!("first seq {first}: {other:?}"),
            }
        }
    }

    /// The committed fuzz corpus as a regression suite in every `cargo test`: the checks of
    /// `fuzz/fuzz_targets/segment_reader.rs`, on every input.
    #[test]
    fn the_segment_reader_fuzz_corpus_reads_without_panicking() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/segment_reader");
        let mut inputs = 0;
        for entry in std::fs::read_dir(&dir).expect("the fuzz corpus") {
            let path = entry.expect("corpus entry").path();
            let bytes = std::fs::read(&path).expect("corpus input");
            let checked = std::panic::catch_unwind(|| {
                let Ok(scan) = SegmentScan::read(Path::new("fuzz.journal"), &bytes) else { return };
                assert!(scan.valid_len <= bytes.len());
                for (i, frame) in scan.frames(&bytes).enumerate() {
                    assert_eq!(frame.seq.0, scan.header.first_seq.0 + i as u64);
                }
                if let Some((offset, _)) = scan.damage {
                    let after = AfterDamage::find(&bytes, offset, scan.next_seq());
                    assert_eq!(is_torn_tail(&bytes, offset, scan.next_seq()), !after.later_batch);
                    if let Some(last) = &scan.last_command {
                        let targets = scan.final_batch_start.0..=last.seq.0;
                        let _ =
                            could_be_abort_marker(&bytes, offset, &after, scan.next_seq(), last.unix_nanos, targets);
                    }
                }
            });
            assert!(checked.is_ok(), "{} panicked", path.display());
            inputs += 1;
        }
        assert!(inputs > 100, "the corpus has {inputs} inputs");
    }
}
