//! Reading the records of one segment that was loaded whole into memory.

use std::collections::HashSet;
use std::path::Path;

use airomem_core::Seq;

use crate::JournalError;
use crate::error::Corruption;
use crate::frame::{self, FRAME_HEADER_LEN, Frame, RecordKind};
use crate::segment::{SEGMENT_HEADER_LEN, SegmentHeader};

/// The verified records of a segment, and where verification stopped if it did.
#[derive(Debug)]
pub struct SegmentScan {
    /// The segment's header.
    pub header: SegmentHeader,
    /// Every record that verified, in file order, with contiguous sequence numbers.
    pub frames: Vec<Frame>,
    /// The offset of the first record that did not verify, and why.
    pub damage: Option<(usize, Corruption)>,
}

impl SegmentScan {
    /// Verifies the header and every record of `bytes`, the whole content of `file`.
    pub fn read(file: &Path, bytes: &[u8]) -> Result<SegmentScan, JournalError> {
        let header = SegmentHeader::decode(file, bytes)?;
        let mut frames = Vec::new();
        let mut offset = SEGMENT_HEADER_LEN;
        let mut expected = header.first_seq;
        let mut damage = None;
        while offset < bytes.len() {
            match frame::decode(bytes, offset).and_then(|f| check(bytes, f, expected)) {
                Ok(f) => {
                    offset = f.end();
                    expected = expected.next();
                    frames.push(f);
                }
                Err(kind) => {
                    damage = Some((offset, kind));
                    break;
                }
            }
        }
        Ok(SegmentScan { header, frames, damage })
    }

    /// The sequence number after the last verified record.
    pub fn next_seq(&self) -> Seq {
        self.frames.last().map_or(self.header.first_seq, |f| f.seq.next())
    }

    /// The offset just past the last verified record.
    pub fn valid_len(&self) -> usize {
        self.frames.last().map_or(SEGMENT_HEADER_LEN, Frame::end)
    }

    /// Sequence numbers of the commands that abort markers in this segment cancel.
    ///
    /// The writer never rotates between a batch and the abort marker for it, so a marker
    /// always sits in the same segment as the command it cancels.
    pub fn aborted(&self, bytes: &[u8]) -> HashSet<Seq> {
        self.frames
            .iter()
            .filter(|f| f.kind == RecordKind::Abort)
            .map(|f| abort_target(&bytes[f.payload.clone()]).expect("abort payloads are checked by the scan"))
            .collect()
    }

    /// Index of the first record of the last batch in this segment: the records a crash may
    /// have caught before their batch was durable.
    pub fn final_batch_start(&self) -> usize {
        let before_last = self.frames.len().saturating_sub(1);
        self.frames[..before_last].iter().rposition(|f| f.batch_end).map_or(0, |i| i + 1)
    }
}

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

/// Whether any record that verifies, and carries a sequence number at or after `expected`
/// (the one due at `damaged`), starts after `damaged` in `bytes`.
///
/// Damage followed by an intact record is not a torn write at the end of the log: it is
/// corruption of data that was once durable. The search is bounded by the bytes present
/// and runs only when a segment is damaged.
pub fn intact_record_after(bytes: &[u8], damaged: usize, expected: Seq) -> bool {
    let lowest = expected.0;
    let mut offset = damaged + 1;
    while offset + FRAME_HEADER_LEN <= bytes.len() {
        let seq = frame::read_u64(bytes, offset + 8);
        // A record at this offset could be at most this far past the last good one.
        let highest = lowest.saturating_add(((offset - damaged) / FRAME_HEADER_LEN) as u64 + 1);
        if seq >= lowest && seq <= highest && frame::decode(bytes, offset).is_ok() {
            return true;
        }
        offset += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use airomem_core::SerializerId;

    fn segment(records: &[&[u8]]) -> Vec<u8> {
        let header = SegmentHeader { serializer: SerializerId(1), schema_version: 1, first_seq: Seq(10) };
        let mut bytes = header.encode().to_vec();
        for (i, payload) in records.iter().enumerate() {
            frame::encode(&mut bytes, Seq(10 + i as u64), 1, RecordKind::Command, true, payload);
        }
        bytes
    }

    #[test]
    fn reads_every_record_and_reports_the_end() {
        let bytes = segment(&[b"a", b"bb", b""]);
        let scan = SegmentScan::read(Path::new("s"), &bytes).expect("valid");
        assert_eq!(scan.frames.len(), 3);
        assert_eq!(scan.next_seq(), Seq(13));
        assert_eq!(scan.valid_len(), bytes.len());
        assert!(scan.damage.is_none());
    }

    #[test]
    fn damage_in_the_last_record_has_nothing_intact_after_it() {
        let mut bytes = segment(&[b"aaaa", b"bbbb", b"cccc"]);
        let last = bytes.len() - 2;
        bytes[last] ^= 0xff;
        let scan = SegmentScan::read(Path::new("s"), &bytes).expect("header ok");
        let (offset, kind) = scan.damage.clone().expect("damaged");
        assert!(matches!(kind, Corruption::Checksum { .. }));
        assert!(!intact_record_after(&bytes, offset, scan.next_seq()));
    }

    #[test]
    fn damage_before_an_intact_record_is_found() {
        let mut bytes = segment(&[b"aaaa", b"bbbb", b"cccc"]);
        bytes[SEGMENT_HEADER_LEN + FRAME_HEADER_LEN] ^= 0xff;
        let scan = SegmentScan::read(Path::new("s"), &bytes).expect("header ok");
        let (offset, _) = scan.damage.clone().expect("damaged");
        assert_eq!(offset, SEGMENT_HEADER_LEN);
        assert!(scan.frames.is_empty());
        assert!(intact_record_after(&bytes, offset, scan.next_seq()));
    }
}
