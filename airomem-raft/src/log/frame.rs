//! One log entry on disk: a fixed 48-byte header and the payload.
//!
//! ```text
//! offset size field
//!  0     4    payload length n, u32 (≤ MAX_PAYLOAD_LEN)
//!  4     4    crc32c over bytes 0..4 and 8..48+n
//!  8     8    log index, u64
//! 16     8    term, u64
//! 24     8    node id of the leader that created the entry, u64
//! 32     8    commit time stamped by that leader, ns since the Unix epoch (0 unless normal)
//! 40     1    kind: bits 0..2 (1 blank, 2 normal, 3 membership), bit 7 first frame of a write
//! 41     7    reserved, 0
//! 48     n    payload: normal: its requests, one after another; membership: postcard;
//!             blank: empty
//! ```
//!
//! Each request of a normal entry: client id u128, serial u64, low water u64, the command's
//! length u32 (36 bytes, little-endian), then the command as the store's serializer encoded
//! it (see `types::Command`).

use crate::Error;
use crate::types::{Command, Entry, Membership, Request, log_id};
use openraft::EntryPayload;

/// Bytes before the payload.
pub(crate) const HEADER_LEN: usize = 48;
/// Bytes before each request's command in a normal entry's payload: client, serial, low
/// water and the command's length.
const REQUEST_PREFIX_LEN: usize = 36;
/// The largest payload a frame may carry; a length above it is damage, never an allocation.
pub(crate) const MAX_PAYLOAD_LEN: u32 = 256 * 1024 * 1024;

const KIND_BLANK: u8 = 1;
const KIND_NORMAL: u8 = 2;
const KIND_MEMBERSHIP: u8 = 3;
const KIND_MASK: u8 = 0x07;
/// Set on the first frame of each write: recovery uses it to tell a torn last write from
/// damage to a write that an earlier `fdatasync` already made durable.
pub(crate) const FIRST_OF_WRITE: u8 = 0x80;

/// Appends the frame of `entry` to `out`.
pub(crate) fn encode(entry: &Entry, first_of_write: bool, out: &mut Vec<u8>) -> Result<(), Error> {
    let start = out.len();
    let (kind, unix_nanos) = match &entry.payload {
        EntryPayload::Blank => (KIND_BLANK, 0),
        EntryPayload::Normal(command) => (KIND_NORMAL, command.unix_nanos),
        EntryPayload::Membership(_) => (KIND_MEMBERSHIP, 0),
    };
    out.resize(start + HEADER_LEN, 0);
    match &entry.payload {
        EntryPayload::Blank => {}
        EntryPayload::Normal(command) => {
            // Each request: client, serial, low water, length, then the command's bytes.
            for request in command.requests.iter() {
                out.extend_from_slice(&request.client.to_le_bytes());
                out.extend_from_slice(&request.serial.to_le_bytes());
                out.extend_from_slice(&request.low_water.to_le_bytes());
                let len = u32::try_from(request.bytes.len()).unwrap_or(u32::MAX);
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(&request.bytes);
            }
        }
        EntryPayload::Membership(membership) => {
            postcard::to_io(membership, &mut *out).map_err(|e| codec_error("encode", &e))?;
        }
    }
    let len = out.len() - start - HEADER_LEN;
    let len = u32::try_from(len).ok().filter(|&n| n <= MAX_PAYLOAD_LEN).ok_or_else(|| {
        Error::Codec(airomem::CodecError::Encode {
            serializer: "raft frame",
            message: format!("payload of {len} bytes exceeds {MAX_PAYLOAD_LEN}"),
        })
    })?;
    let header = &mut out[start..start + HEADER_LEN];
    header[0..4].copy_from_slice(&len.to_le_bytes());
    header[8..16].copy_from_slice(&entry.log_id.index.to_le_bytes());
    header[16..24].copy_from_slice(&entry.log_id.leader_id.term.to_le_bytes());
    header[24..32].copy_from_slice(&entry.log_id.leader_id.node_id.to_le_bytes());
    header[32..40].copy_from_slice(&unix_nanos.to_le_bytes());
    header[40] = kind | if first_of_write { FIRST_OF_WRITE } else { 0 };
    let crc = checksum(&out[start..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

fn checksum(frame: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&frame[0..4]), &frame[8..])
}

fn codec_error(what: &str, e: &postcard::Error) -> Error {
    Error::Codec(airomem::CodecError::Decode { serializer: "postcard", message: format!("{what} membership: {e}") })
}

/// A frame that verified, not yet turned into an entry.
#[derive(Debug)]
pub(crate) struct Frame<'a> {
    pub(crate) index: u64,
    pub(crate) first_of_write: bool,
    /// Bytes the frame occupies.
    pub(crate) len: usize,
    term: u64,
    leader: u64,
    unix_nanos: u64,
    kind: u8,
    payload: &'a [u8],
}

/// Why bytes at an offset are not a frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Bad {
    /// Fewer bytes than the header or the length announce.
    Short,
    /// The checksum does not match.
    Checksum,
    /// The checksum matches but the content is impossible (unknown kind, reserved bits).
    Invalid(String),
}

/// Reads the frame at the start of `bytes`.
pub(crate) fn decode(bytes: &[u8]) -> Result<Frame<'_>, Bad> {
    if bytes.len() < HEADER_LEN {
        return Err(Bad::Short);
    }
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let len = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes"));
    if len > MAX_PAYLOAD_LEN {
        return Err(Bad::Checksum);
    }
    let total = HEADER_LEN + len as usize;
    if bytes.len() < total {
        return Err(Bad::Short);
    }
    let stored = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    if checksum(&bytes[..total]) != stored {
        return Err(Bad::Checksum);
    }
    let flags = bytes[40];
    let kind = flags & KIND_MASK;
    if !(KIND_BLANK..=KIND_MEMBERSHIP).contains(&kind) || flags & !(KIND_MASK | FIRST_OF_WRITE) != 0 {
        return Err(Bad::Invalid(format!("unknown kind byte {flags:#04x}")));
    }
    if bytes[41..48].iter().any(|&b| b != 0) {
        return Err(Bad::Invalid("reserved header bytes are not zero".into()));
    }
    Ok(Frame {
        index: u64_at(8),
        first_of_write: flags & FIRST_OF_WRITE != 0,
        len: total,
        term: u64_at(16),
        leader: u64_at(24),
        unix_nanos: u64_at(32),
        kind,
        payload: &bytes[HEADER_LEN..total],
    })
}

impl Frame<'_> {
    /// The entry this frame holds.
    pub(crate) fn entry(&self) -> Result<Entry, Bad> {
        let payload = match self.kind {
            KIND_BLANK if self.payload.is_empty() => EntryPayload::Blank,
            KIND_NORMAL => {
                let mut requests = Vec::new();
                let mut p = self.payload;
                while !p.is_empty() {
                    if p.len() < REQUEST_PREFIX_LEN {
                        return Err(Bad::Invalid("a request shorter than its prefix".into()));
                    }
                    let len = u32::from_le_bytes(p[32..36].try_into().expect("4 bytes")) as usize;
                    let Some(bytes) = p.get(REQUEST_PREFIX_LEN..REQUEST_PREFIX_LEN + len) else {
                        return Err(Bad::Invalid("a request longer than its entry".into()));
                    };
                    requests.push(Request {
                        client: u128::from_le_bytes(p[0..16].try_into().expect("16 bytes")),
                        serial: u64::from_le_bytes(p[16..24].try_into().expect("8 bytes")),
                        low_water: u64::from_le_bytes(p[24..32].try_into().expect("8 bytes")),
                        bytes: bytes.to_vec(),
                    });
                    p = &p[REQUEST_PREFIX_LEN + len..];
                }
                if requests.is_empty() {
                    return Err(Bad::Invalid("a normal entry without a command".into()));
                }
                EntryPayload::Normal(Command { unix_nanos: self.unix_nanos, requests: requests.into() })
            }
            KIND_MEMBERSHIP => {
                let membership: Membership = postcard::from_bytes(self.payload)
                    .map_err(|e| Bad::Invalid(format!("membership does not decode: {e}")))?;
                EntryPayload::Membership(membership)
            }
            _ => return Err(Bad::Invalid("a blank entry with a payload".into())),
        };
        Ok(Entry { log_id: log_id(self.term, self.leader, self.index), payload })
    }
}

/// Sets the first-of-write flag on the frame at the start of `frame` and re-seals its
/// checksum: callers encode frames without knowing which write will carry them.
pub(crate) fn mark_first_of_write(frame: &mut [u8]) {
    frame[40] |= FIRST_OF_WRITE;
    let len = HEADER_LEN + u32::from_le_bytes(frame[0..4].try_into().expect("4 bytes")) as usize;
    let crc = checksum(&frame[..len]);
    frame[4..8].copy_from_slice(&crc.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn entries() -> Vec<Entry> {
        let members: BTreeSet<u64> = [1, 2, 3].into();
        vec![
            Entry { log_id: log_id(1, 7, 1), payload: EntryPayload::Blank },
            Entry {
                log_id: log_id(1, 7, 2),
                payload: EntryPayload::Normal(Command {
                    unix_nanos: 42,
                    requests: vec![
                        Request {
                            client: 0x0123_4567_89ab_cdef_0011_2233_4455_6677,
                            serial: 9,
                            low_water: 4,
                            bytes: vec![1, 2, 3],
                        },
                        Request { client: 5, serial: 1, low_water: 0, bytes: Vec::new() },
                    ]
                    .into(),
                }),
            },
            Entry { log_id: log_id(2, 9, 3), payload: EntryPayload::Membership(Membership::new(vec![members], ())) },
        ]
    }

    #[test]
    fn frames_round_trip_and_any_flipped_bit_is_caught() {
        for (i, entry) in entries().into_iter().enumerate() {
            let mut out = Vec::new();
            encode(&entry, i == 0, &mut out).expect("encodes");
            let frame = decode(&out).expect("decodes");
            assert_eq!(frame.len, out.len());
            assert_eq!(frame.first_of_write, i == 0);
            assert_eq!(frame.entry().expect("an entry"), entry);
            for bit in 0..out.len() * 8 {
                let mut damaged = out.clone();
                damaged[bit / 8] ^= 1 << (bit % 8);
                assert!(decode(&damaged).is_err(), "bit {bit} of entry {i} flipped unnoticed");
            }
            assert_eq!(decode(&out[..out.len() - 1]).err(), Some(Bad::Short));
        }
    }
}
