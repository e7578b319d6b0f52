//! Record framing. Every record is
//!
//! ```text
//! offset size field
//!  0     4    payload length, u32 LE
//!  4     4    crc32c over bytes 0..4 and 8..(25 + length), u32 LE
//!  8     8    sequence number, u64 LE
//! 16     8    commit time, nanoseconds since the Unix epoch, u64 LE
//! 24     1    kind: low bits the record type, bit 6 set on the first record of a batch,
//!             bit 7 on the last, bit 5 on a command whose atomic unit goes on with the
//!             next record (every command of a unit but its last)
//! 25     n    payload
//! ```

use airomem_core::Seq;

use crate::error::Corruption;

/// Bytes in front of every payload.
pub const FRAME_HEADER_LEN: usize = 25;

/// The largest payload one record may carry. A limit keeps a damaged length field from ever
/// asking for more than this, on top of the check against the bytes actually present.
pub const MAX_PAYLOAD_LEN: usize = 256 * 1024 * 1024;

const _: () = assert!(MAX_PAYLOAD_LEN <= u32::MAX as usize);

const BATCH_START: u8 = 0x40;
const BATCH_END: u8 = 0x80;
const UNIT_NEXT: u8 = 0x20;
const FLAGS: u8 = BATCH_START | BATCH_END | UNIT_NEXT;

/// Where a record sits in the batch it was written with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchMark {
    /// The first record of its batch.
    pub start: bool,
    /// The last record of its batch.
    pub end: bool,
}

impl BatchMark {
    /// A record written alone: first and last of its batch.
    pub const ALONE: BatchMark = BatchMark { start: true, end: true };

    fn bits(self) -> u8 {
        (if self.start { BATCH_START } else { 0 }) | if self.end { BATCH_END } else { 0 }
    }
}

/// What a record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// A serialized command.
    Command,
    /// Marks an earlier command (named by the payload) as aborted: it panicked while being
    /// applied, so replay must skip it.
    Abort,
}

impl RecordKind {
    fn to_bits(self) -> u8 {
        match self {
            RecordKind::Command => 1,
            RecordKind::Abort => 2,
        }
    }

    fn from_bits(bits: u8) -> Option<RecordKind> {
        match bits {
            1 => Some(RecordKind::Command),
            2 => Some(RecordKind::Abort),
            _ => None,
        }
    }
}

/// A decoded record header, pointing into the segment bytes it was read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Offset of the record in its segment.
    pub offset: usize,
    /// Sequence number.
    pub seq: Seq,
    /// Commit time, nanoseconds since the Unix epoch.
    pub unix_nanos: u64,
    /// Record type.
    pub kind: RecordKind,
    /// Whether this is the first record of a batch written with one write.
    pub batch_start: bool,
    /// Whether this is the last record of a batch written with one write.
    pub batch_end: bool,
    /// Whether the next record belongs to the same atomic unit as this one (a command of a
    /// unit, not its last).
    pub unit_next: bool,
    /// The payload's position in the segment.
    pub payload: std::ops::Range<usize>,
}

impl Frame {
    /// Offset just past this record.
    pub fn end(&self) -> usize {
        self.payload.end
    }
}

/// Appends one record to `out`.
///
/// # Panics
/// If `payload` is longer than [`MAX_PAYLOAD_LEN`]; callers check that first.
pub fn encode(out: &mut Vec<u8>, seq: Seq, unix_nanos: u64, kind: RecordKind, mark: BatchMark, payload: &[u8]) {
    let start = out.len();
    encode_unsealed(out, seq, unix_nanos, kind, mark, payload);
    seal(out, start);
    debug_assert_eq!(decode(out, start).map(|f| f.seq), Ok(seq), "a frame must verify as written");
}

/// Appends one record to `out` with its checksum left blank, for a writer that may still
/// set flags on it ([`mark_batch_end`], [`mark_unit_next`]): [`seal`] it once they are
/// final, so that each record's checksum is computed once.
///
/// # Panics
/// If `payload` is longer than [`MAX_PAYLOAD_LEN`]; callers check that first.
pub fn encode_unsealed(
    out: &mut Vec<u8>,
    seq: Seq,
    unix_nanos: u64,
    kind: RecordKind,
    mark: BatchMark,
    payload: &[u8],
) {
    assert!(payload.len() <= MAX_PAYLOAD_LEN, "payload length is checked before framing");
    let len = u32::try_from(payload.len()).expect("MAX_PAYLOAD_LEN fits in u32");
    out.reserve(FRAME_HEADER_LEN + payload.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&seq.0.to_le_bytes());
    out.extend_from_slice(&unix_nanos.to_le_bytes());
    out.push(kind.to_bits() | mark.bits());
    out.extend_from_slice(payload);
}

/// Computes and stores the checksum of the record that starts at `offset` in `buf`.
pub fn seal(buf: &mut [u8], offset: usize) {
    let end = offset + FRAME_HEADER_LEN + read_u32(buf, offset) as usize;
    let crc = checksum(&buf[offset..end]);
    buf[offset + 4..offset + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Marks the unsealed record that starts at `offset` in `buf` as the last of its batch.
pub fn mark_batch_end(buf: &mut [u8], offset: usize) {
    buf[offset + 24] |= BATCH_END;
}

/// Marks the unsealed record that starts at `offset` in `buf` as continuing into the next
/// one, in one atomic unit.
pub fn mark_unit_next(buf: &mut [u8], offset: usize) {
    buf[offset + 24] |= UNIT_NEXT;
}

/// The checksum of the record that starts at `record[0]` and ends at `record.len()`.
fn checksum(record: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&record[0..4]), &record[8..])
}

/// Decodes the record that starts at `offset` in `buf`, verifying length and checksum.
///
/// Never allocates: a length field is checked against [`MAX_PAYLOAD_LEN`] and the bytes
/// present before it is used.
pub fn decode(buf: &[u8], offset: usize) -> Result<Frame, Corruption> {
    let available = (buf.len() - offset) as u64;
    if available < FRAME_HEADER_LEN as u64 {
        return Err(Corruption::Truncated { needed: FRAME_HEADER_LEN as u64, available });
    }
    let header = &buf[offset..offset + FRAME_HEADER_LEN];
    let len = u64::from(read_u32(header, 0));
    if len > MAX_PAYLOAD_LEN as u64 {
        return Err(Corruption::LengthTooLarge { claimed: len });
    }
    let needed = FRAME_HEADER_LEN as u64 + len;
    if needed > available {
        return Err(Corruption::Truncated { needed, available });
    }
    let end = offset + FRAME_HEADER_LEN + len as usize;
    let stored = read_u32(header, 4);
    let computed = checksum(&buf[offset..end]);
    if stored != computed {
        return Err(Corruption::Checksum { stored, computed });
    }
    let kind_byte = header[24];
    let kind = RecordKind::from_bits(kind_byte & !FLAGS).ok_or(Corruption::UnknownKind(kind_byte))?;
    // Only commands form units: a marker that says otherwise was not written by airomem.
    if kind != RecordKind::Command && kind_byte & UNIT_NEXT != 0 {
        return Err(Corruption::UnknownKind(kind_byte));
    }
    Ok(Frame {
        offset,
        seq: Seq(read_u64(header, 8)),
        unix_nanos: read_u64(header, 16),
        kind,
        batch_start: kind_byte & BATCH_START != 0,
        batch_end: kind_byte & BATCH_END != 0,
        unit_next: kind_byte & UNIT_NEXT != 0,
        payload: offset + FRAME_HEADER_LEN..end,
    })
}

/// Reads the header of a record that already verified: no checksum, no bounds beyond the
/// slice's own.
pub fn peek(buf: &[u8], offset: usize) -> Frame {
    let header = &buf[offset..offset + FRAME_HEADER_LEN];
    let len = read_u32(header, 0) as usize;
    let kind_byte = header[24];
    let frame = Frame {
        offset,
        seq: Seq(read_u64(header, 8)),
        unix_nanos: read_u64(header, 16),
        kind: RecordKind::from_bits(kind_byte & !FLAGS).expect("peek reads verified records only"),
        batch_start: kind_byte & BATCH_START != 0,
        batch_end: kind_byte & BATCH_END != 0,
        unit_next: kind_byte & UNIT_NEXT != 0,
        payload: offset + FRAME_HEADER_LEN..offset + FRAME_HEADER_LEN + len,
    };
    debug_assert_eq!(decode(buf, offset).as_ref(), Ok(&frame), "peek reads verified records only");
    frame
}

pub(crate) fn read_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

pub(crate) fn read_u64(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_and_batch_end() {
        let mut buf = Vec::new();
        encode(&mut buf, Seq(5), 99, RecordKind::Command, BatchMark { start: true, end: false }, b"hello");
        encode_unsealed(&mut buf, Seq(6), 100, RecordKind::Abort, BatchMark::default(), &5u64.to_le_bytes());
        mark_batch_end(&mut buf, FRAME_HEADER_LEN + 5);
        assert!(matches!(decode(&buf, FRAME_HEADER_LEN + 5), Err(Corruption::Checksum { .. })), "not sealed yet");
        seal(&mut buf, FRAME_HEADER_LEN + 5);
        let a = decode(&buf, 0).expect("first");
        assert_eq!(
            (a.seq, a.unix_nanos, a.kind, a.batch_start, a.batch_end),
            (Seq(5), 99, RecordKind::Command, true, false)
        );
        assert_eq!(&buf[a.payload.clone()], b"hello");
        let b = decode(&buf, a.end()).expect("second");
        assert_eq!(
            (b.seq, b.kind, b.batch_start, b.batch_end, b.end()),
            (Seq(6), RecordKind::Abort, false, true, buf.len())
        );
    }

    #[test]
    fn huge_length_is_refused_without_allocating() {
        let mut buf = vec![0u8; FRAME_HEADER_LEN];
        buf[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&buf, 0), Err(Corruption::LengthTooLarge { claimed: u64::from(u32::MAX) }));
        buf[0..4].copy_from_slice(&1000u32.to_le_bytes());
        assert_eq!(decode(&buf, 0), Err(Corruption::Truncated { needed: 1025, available: 25 }));
    }

    proptest! {
        #[test]
        fn any_single_bit_flip_is_detected(payload in proptest::collection::vec(any::<u8>(), 0..64), bit in 0usize..8 * 89) {
            let mut buf = Vec::new();
            encode(&mut buf, Seq(1), 7, RecordKind::Command, BatchMark::ALONE, &payload);
            let bit = bit % (buf.len() * 8);
            buf[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(decode(&buf, 0).is_err());
        }
    }
}
