//! Framing of the TCP transport. Every message is one frame:
//!
//! ```text
//! offset size field
//!  0     4    length of what follows (kind + id + payload), u32 BE, 9..=max_frame
//!  4     1    kind
//!  5     8    request id, u64 BE
//! 13     n    payload (postcard, see to_payload/from_payload)
//! ```
//!
//! The length is checked against `max_frame` before anything is allocated for the frame, so
//! a peer (or anyone who can open a connection) cannot make a node allocate more than
//! `max_frame` bytes per frame, nor panic it, whatever it sends.

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes of the length field.
const LEN_BYTES: usize = 4;

/// The smallest valid value of the length field: a kind and a request id, no payload.
pub(crate) const MIN_LEN: usize = 1 + 8;

/// Bytes in front of every payload.
pub(crate) const HEADER_LEN: usize = LEN_BYTES + MIN_LEN;

/// The default bound on a frame's length field: larger frames are refused unread. A sender
/// splits anything bigger (snapshots) into several frames.
pub(crate) const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

/// What [`read_frame`] allocates up front at most: the rest grows with the bytes that actually
/// arrive, so a peer announcing `max_frame` bytes and sending ten costs little memory.
const INITIAL_READ_CAPACITY: usize = 64 * 1024;

/// One message on a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Frame {
    /// What the payload is (the handshake reserves `0xF0..=0xFF`).
    pub(crate) kind: u8,
    /// Pairs an answer with its request; 0 where there is none (the handshake).
    pub(crate) id: u64,
    /// The message, usually postcard ([`to_payload`]).
    pub(crate) payload: Vec<u8>,
}

/// Why bytes on a connection are not a frame (or a payload is not the expected message).
/// Anything but [`FrameError::Io`] means the peer is broken or hostile: close the connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    /// The connection failed.
    #[error("connection I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The length field exceeds `max_frame`.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The length the frame claims (or, when sending, has).
        len: u64,
        /// The limit.
        max: usize,
    },
    /// The length field is below the 9 bytes of kind and request id.
    #[error("frame length {len} is below the minimum of {MIN_LEN}")]
    TooShort {
        /// The length the frame claims.
        len: usize,
    },
    /// The connection ended inside a frame.
    #[error("connection closed inside a frame: {received} of {expected} bytes arrived")]
    Truncated {
        /// The frame's size, length field included (4 while the length field itself is cut).
        expected: usize,
        /// How many of them arrived.
        received: usize,
    },
    /// A payload did not encode or decode as the expected message.
    #[error("malformed payload: {0}")]
    Payload(#[source] postcard::Error),
    /// A payload decoded, but bytes were left over: not the expected message.
    #[error("payload has {extra} bytes after the message")]
    TrailingBytes {
        /// The bytes left over.
        extra: usize,
    },
}

impl From<FrameError> for std::io::Error {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Io(e) => e,
            other => std::io::Error::new(std::io::ErrorKind::InvalidData, other),
        }
    }
}

/// Checks a length field. Everything that allocates for a frame comes after this.
fn check_len(len: u32, max_frame: usize) -> Result<usize, FrameError> {
    // A u32 fits a usize on every platform tokio supports; an overflow would be TooLarge anyway.
    let Ok(len) = usize::try_from(len) else { return Err(FrameError::TooLarge { len: len.into(), max: max_frame }) };
    if len < MIN_LEN {
        return Err(FrameError::TooShort { len });
    }
    if len > max_frame {
        return Err(FrameError::TooLarge { len: len as u64, max: max_frame });
    }
    Ok(len)
}

/// Splits kind, id and payload out of the bytes after a length field.
fn split_body(body: &[u8]) -> Result<Frame, FrameError> {
    let Some(([kind, id @ ..], payload)) = body.split_first_chunk::<MIN_LEN>() else {
        return Err(FrameError::TooShort { len: body.len() });
    };
    Ok(Frame { kind: *kind, id: u64::from_be_bytes(*id), payload: payload.to_vec() })
}

/// Decodes the frame at the start of `buf`. `Ok(None)`: `buf` holds only part of a frame
/// (read more and call again). `Ok(Some((frame, consumed)))`: drop `consumed` bytes from the
/// front of `buf`. An error is final for the connection: the stream is out of step.
pub(crate) fn decode(buf: &[u8], max_frame: usize) -> Result<Option<(Frame, usize)>, FrameError> {
    let Some((len_bytes, rest)) = buf.split_first_chunk::<LEN_BYTES>() else { return Ok(None) };
    let len = check_len(u32::from_be_bytes(*len_bytes), max_frame)?;
    let Some(body) = rest.get(..len) else { return Ok(None) };
    Ok(Some((split_body(body)?, LEN_BYTES + len)))
}

/// The bytes [`encode`] writes for a payload of `payload_len` bytes.
pub(crate) const fn encoded_len(payload_len: usize) -> usize {
    HEADER_LEN + payload_len
}

/// The length field for a payload, if it fits one.
fn len_field(payload_len: usize) -> Result<u32, FrameError> {
    MIN_LEN
        .checked_add(payload_len)
        .and_then(|len| u32::try_from(len).ok())
        .ok_or(FrameError::TooLarge { len: payload_len as u64 + MIN_LEN as u64, max: u32::MAX as usize })
}

/// Appends `frame` to `out`.
///
/// # Panics
///
/// If the payload is longer than `u32::MAX - 9` bytes, which no length field can describe.
/// Frames are built by this node, never from received lengths, and a receiver refuses
/// anything above its `max_frame` (16 MiB by default) anyway: large data goes in pieces.
pub(crate) fn encode(frame: &Frame, out: &mut Vec<u8>) {
    #[expect(clippy::expect_used, reason = "documented: a caller's bug, not input from the network")]
    let len = len_field(frame.payload.len()).expect("payload too large for one frame");
    out.reserve(encoded_len(frame.payload.len()));
    out.extend_from_slice(&len.to_be_bytes());
    out.push(frame.kind);
    out.extend_from_slice(&frame.id.to_be_bytes());
    out.extend_from_slice(&frame.payload);
}

/// Reads one frame. `Ok(None)` when the stream ends cleanly between frames; an EOF inside a
/// frame is [`FrameError::Truncated`]. Allocates at most `max_frame` bytes, and only as they
/// arrive. Not cancel-safe: a frame partly read when the future is dropped is lost, and the
/// stream out of step (drop the connection then, as after any error).
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, max_frame: usize) -> Result<Option<Frame>, FrameError> {
    let mut len_bytes = [0u8; LEN_BYTES];
    let mut filled = 0;
    while filled < LEN_BYTES {
        match r.read(&mut len_bytes[filled..]).await? {
            0 if filled == 0 => return Ok(None),
            0 => return Err(FrameError::Truncated { expected: LEN_BYTES, received: filled }),
            n => filled += n,
        }
    }
    let len = check_len(u32::from_be_bytes(len_bytes), max_frame)?;
    let mut body = Vec::with_capacity(len.min(INITIAL_READ_CAPACITY));
    (&mut *r).take(len as u64).read_to_end(&mut body).await?;
    if body.len() < len {
        return Err(FrameError::Truncated { expected: LEN_BYTES + len, received: LEN_BYTES + body.len() });
    }
    split_body(&body).map(Some)
}

/// Writes one frame and flushes it. Refuses (before writing anything) a payload no length
/// field can describe; the receiver's `max_frame` is its own business.
pub(crate) async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, frame: &Frame) -> Result<(), FrameError> {
    let len = len_field(frame.payload.len())?;
    let mut header = [0u8; HEADER_LEN];
    header[..LEN_BYTES].copy_from_slice(&len.to_be_bytes());
    header[LEN_BYTES] = frame.kind;
    header[LEN_BYTES + 1..].copy_from_slice(&frame.id.to_be_bytes());
    // Two writes rather than one copy of a possibly large payload; the flush sends both.
    w.write_all(&header).await?;
    w.write_all(&frame.payload).await?;
    w.flush().await?;
    Ok(())
}

/// Encodes a message as a frame payload.
pub(crate) fn to_payload<T: Serialize>(value: &T) -> Result<Vec<u8>, FrameError> {
    postcard::to_stdvec(value).map_err(FrameError::Payload)
}

/// Decodes a frame payload as a `T`; malformed input (or bytes left over) is an error.
///
/// A sequence length that claims more elements than the input could hold allocates nothing
/// up front: postcard gives serde no size hint then, and serde preallocates at most 1 MiB
/// even with one, so memory stays bounded by the payload. Not so time: a `Vec` of a
/// zero-sized type (`Vec<()>`) with a claimed length of 2^60 loops 2^60 times, so message
/// types must not contain sequences of zero-sized elements.
pub(crate) fn from_payload<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FrameError> {
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(FrameError::Payload)?;
    if !rest.is_empty() {
        return Err(FrameError::TrailingBytes { extra: rest.len() });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde::{Deserialize, Serialize};

    use super::*;

    fn frame(kind: u8, id: u64, payload: &[u8]) -> Frame {
        Frame { kind, id, payload: payload.to_vec() }
    }

    fn encoded(f: &Frame) -> Vec<u8> {
        let mut out = Vec::new();
        encode(f, &mut out);
        out
    }

    /// A frame whose length field says `len`, with `len` bytes after it.
    fn with_len(len: u32) -> Vec<u8> {
        let mut out = len.to_be_bytes().to_vec();
        out.resize(4 + len as usize, 0xAB);
        out
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().expect("a runtime").block_on(f)
    }

    #[test]
    fn round_trip_through_encode_and_decode() {
        let frames = [frame(1, 0, b""), frame(0xFF, u64::MAX, b"hello"), frame(7, 42, &[0; 1000])];
        let mut buf = Vec::new();
        for f in &frames {
            encode(f, &mut buf);
        }
        assert_eq!(buf.len(), frames.iter().map(|f| encoded_len(f.payload.len())).sum::<usize>());
        let mut at = 0;
        for f in &frames {
            let (got, used) = decode(&buf[at..], DEFAULT_MAX_FRAME).expect("valid").expect("complete");
            assert_eq!(&got, f);
            assert_eq!(used, encoded_len(f.payload.len()));
            at += used;
        }
        assert_eq!(at, buf.len());
        assert!(decode(&buf[at..], DEFAULT_MAX_FRAME).expect("empty is fine").is_none());
    }

    #[test]
    fn layout_is_big_endian_length_kind_id_payload() {
        assert_eq!(
            encoded(&frame(0x12, 0x0102_0304_0506_0708, b"xy")),
            [0, 0, 0, 11, 0x12, 1, 2, 3, 4, 5, 6, 7, 8, b'x', b'y']
        );
    }

    #[test]
    fn length_boundaries() {
        let max = 100;
        assert!(matches!(decode(&with_len(8), max), Err(FrameError::TooShort { len: 8 })));
        assert!(matches!(decode(&with_len(0), max), Err(FrameError::TooShort { len: 0 })));
        let (f, used) = decode(&with_len(9), max).expect("minimal").expect("complete");
        assert_eq!((f.payload.len(), used), (0, 13));
        let (f, used) = decode(&with_len(100), max).expect("at the limit").expect("complete");
        assert_eq!((f.payload.len(), used), (91, 104));
        assert!(matches!(decode(&with_len(101), max), Err(FrameError::TooLarge { len: 101, max: 100 })));
        // Decided from the 4 length bytes alone: the body need not (and for u32::MAX cannot) be there.
        assert!(matches!(decode(&101u32.to_be_bytes(), max), Err(FrameError::TooLarge { .. })));
        assert!(matches!(decode(&u32::MAX.to_be_bytes(), max), Err(FrameError::TooLarge { .. })));
        assert!(matches!(decode(&8u32.to_be_bytes(), max), Err(FrameError::TooShort { .. })));

        block_on(async {
            for (len, ok) in [(8, false), (9, true), (100, true), (101, false)] {
                let bytes = with_len(len);
                let got = read_frame(&mut &bytes[..], max).await;
                assert_eq!(got.is_ok(), ok, "length {len}: {got:?}");
            }
            // Refused without waiting for (or allocating) a body that never comes.
            let got = read_frame(&mut &u32::MAX.to_be_bytes()[..], DEFAULT_MAX_FRAME).await;
            assert!(matches!(got, Err(FrameError::TooLarge { len, .. }) if len == u64::from(u32::MAX)));
        });
    }

    #[test]
    fn partial_input_asks_for_more() {
        let buf = encoded(&frame(3, 9, b"payload"));
        for cut in 0..buf.len() {
            assert!(decode(&buf[..cut], DEFAULT_MAX_FRAME).expect("no error on a prefix").is_none(), "cut {cut}");
        }
    }

    #[test]
    fn a_stream_cut_inside_a_frame_is_an_error_and_between_frames_is_eof() {
        let mut buf = encoded(&frame(3, 9, b"first"));
        let first_end = buf.len();
        encode(&frame(4, 10, b"second"), &mut buf);
        block_on(async {
            let mut whole = &buf[..];
            assert_eq!(read_frame(&mut whole, 64).await.expect("ok"), Some(frame(3, 9, b"first")));
            assert_eq!(read_frame(&mut whole, 64).await.expect("ok"), Some(frame(4, 10, b"second")));
            assert!(read_frame(&mut whole, 64).await.expect("clean EOF").is_none());

            for cut in first_end + 1..buf.len() {
                let mut r = &buf[..cut];
                read_frame(&mut r, 64).await.expect("first frame").expect("present");
                let err = read_frame(&mut r, 64).await.expect_err("cut inside the second frame");
                assert!(
                    matches!(err, FrameError::Truncated { received, .. } if received == cut - first_end),
                    "{err:?}"
                );
                let io: std::io::Error = err.into();
                assert_eq!(io.kind(), std::io::ErrorKind::InvalidData);
            }
        });
    }

    #[test]
    fn write_frame_writes_what_encode_does() {
        let f = frame(0xF0, 77, b"abc");
        let mut out = Vec::new();
        block_on(write_frame(&mut out, &f)).expect("writes");
        assert_eq!(out, encoded(&f));
    }

    #[test]
    fn io_errors_stay_io_errors() {
        let e: std::io::Error = FrameError::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset)).into();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset);
        let e: std::io::Error = FrameError::TooShort { len: 1 }.into();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Message {
        Ping,
        Data { id: u64, items: Vec<u32>, text: String },
        Nested(Vec<Vec<u8>>),
    }

    #[test]
    fn payload_round_trip_and_trailing_bytes() {
        let m = Message::Data { id: 5, items: vec![1, 2, 3], text: "hi".into() };
        let bytes = to_payload(&m).expect("encodes");
        assert_eq!(from_payload::<Message>(&bytes).expect("decodes"), m);
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(from_payload::<Message>(&longer), Err(FrameError::TrailingBytes { extra: 1 })));
        assert!(matches!(from_payload::<Message>(&bytes[..bytes.len() - 1]), Err(FrameError::Payload(_))));
        assert!(matches!(from_payload::<Message>(&[9]), Err(FrameError::Payload(_))), "unknown variant");
    }

    /// A varint of 2^60 elements, then almost nothing: refused for want of input, without
    /// trying to reserve 2^60 elements (which would abort on allocation failure).
    #[test]
    fn a_huge_claimed_vec_length_allocates_nothing() {
        fn varint(mut n: u64) -> Vec<u8> {
            let mut out = Vec::new();
            while n >= 0x80 {
                out.push((n as u8) | 0x80);
                n >>= 7;
            }
            out.push(n as u8);
            out
        }
        let huge = varint(1 << 60);
        assert!(matches!(from_payload::<Vec<u64>>(&huge), Err(FrameError::Payload(_))));
        assert!(matches!(from_payload::<Vec<u8>>(&huge), Err(FrameError::Payload(_))));
        assert!(matches!(from_payload::<String>(&huge), Err(FrameError::Payload(_))));
        let mut data = vec![1u8]; // Message::Data
        data.push(5);
        data.extend_from_slice(&huge);
        data.extend_from_slice(&[1, 2, 3]);
        assert!(matches!(from_payload::<Message>(&data), Err(FrameError::Payload(_))));
        let mut nested = vec![2u8]; // Message::Nested
        nested.extend_from_slice(&huge);
        nested.extend_from_slice(&huge);
        assert!(matches!(from_payload::<Message>(&nested), Err(FrameError::Payload(_))));
    }

    /// Feeds `bytes` to `decode` in the pieces `cuts` delimits, as a reader would.
    fn decode_in_pieces(bytes: &[u8], cuts: &[usize], max: usize) -> (Vec<Frame>, Option<String>) {
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        points.push(bytes.len());
        points.sort_unstable();
        let mut buf = Vec::new();
        let mut frames = Vec::new();
        let mut at = 0;
        for p in points {
            buf.extend_from_slice(&bytes[at..p]);
            at = p;
            loop {
                match decode(&buf, max) {
                    Ok(Some((f, used))) => {
                        assert!(used <= buf.len());
                        frames.push(f);
                        buf.drain(..used);
                    }
                    Ok(None) => break,
                    Err(e) => return (frames, Some(e.to_string())),
                }
            }
        }
        (frames, None)
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_nor_exceed_max(
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
            max in 0usize..200,
        ) {
            let whole = decode_in_pieces(&bytes, &[], max);
            let pieces = decode_in_pieces(&bytes, &cuts, max);
            prop_assert_eq!(&whole, &pieces, "how the bytes arrive changes nothing");
            for f in &whole.0 {
                prop_assert!(f.payload.len() + MIN_LEN <= max);
            }
            let read = block_on(async {
                let mut r = &bytes[..];
                let mut frames = Vec::new();
                loop {
                    match read_frame(&mut r, max).await {
                        Ok(Some(f)) => frames.push(f),
                        Ok(None) | Err(_) => return frames,
                    }
                }
            });
            prop_assert_eq!(&read, &whole.0);
            let _ = from_payload::<Message>(&bytes);
            for f in &whole.0 {
                let _ = from_payload::<Message>(&f.payload);
            }
        }

        #[test]
        fn arbitrary_frames_round_trip(kind in any::<u8>(), id in any::<u64>(), payload in proptest::collection::vec(any::<u8>(), 0..100)) {
            let f = Frame { kind, id, payload };
            let bytes = encoded(&f);
            prop_assert_eq!(decode(&bytes, f.payload.len() + MIN_LEN).expect("valid"), Some((f, bytes.len())));
        }
    }
}
