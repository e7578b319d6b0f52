//! The wire layer of the TCP transport: frames ([`frame`]), the cluster secret ([`Secret`])
//! and the authenticated handshake that opens every connection ([`handshake`]).

pub(crate) mod frame;
pub(crate) mod handshake;
pub(crate) mod secret;

pub use secret::Secret;

/// Entry points for the `raft_frame` fuzz target (`fuzz/`); not part of the API.
#[doc(hidden)]
pub mod fuzzing {
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use super::frame::{self, Frame};
    use super::handshake::{self, Purpose};
    use super::secret::{Keyring, Secret};

    /// The limit the fuzz target decodes with: small, so that inputs reach it.
    const MAX_FRAME: usize = 256;

    /// Runs a future whose I/O is all in memory (a slice, a sink), so it never waits.
    fn run<F: Future>(future: F) -> F::Output {
        let mut future = pin!(future);
        match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(output) => output,
            Poll::Pending => panic!("in-memory I/O never waits"),
        }
    }

    /// Decodes `bytes` as a stream of frames, with `frame::decode` and with
    /// `frame::read_frame`, and every payload as every handshake message. Panics if the
    /// two disagree, if a frame exceeds the limit, or if a decoded frame does not encode back
    /// to the same bytes. Returns the number of frames.
    pub fn decode_frames(bytes: &[u8]) -> usize {
        let mut frames = Vec::new();
        let mut at = 0;
        while let Ok(Some((frame, used))) = frame::decode(&bytes[at..], MAX_FRAME) {
            assert!(used <= bytes.len() - at && used - 4 <= MAX_FRAME);
            let mut again = Vec::new();
            frame::encode(&frame, &mut again);
            assert_eq!(again, bytes[at..at + used]);
            at += used;
            frames.push(frame);
        }
        let read: Vec<Frame> = run(async {
            let mut reader = bytes;
            let mut read = Vec::new();
            while let Ok(Some(frame)) = frame::read_frame(&mut reader, MAX_FRAME).await {
                read.push(frame);
            }
            read
        });
        assert_eq!(read, frames);
        for frame in &frames {
            handshake::decode_any_message(&frame.payload);
        }
        handshake::decode_any_message(bytes);
        frames.len()
    }

    /// Runs both sides of the handshake against `bytes` as everything the other side sends.
    /// Neither may panic; neither can succeed (the nonces are fresh, the secret unknown).
    pub fn handshake(bytes: &[u8]) {
        let Ok(secret) = Secret::new(*b"fuzzing fuzzing fuzzing!") else { return };
        let keyring = Keyring::new(secret);
        let mut stream = tokio::io::join(bytes, tokio::io::sink());
        let server = run(handshake::server(&mut stream, &keyring, 1, frame::DEFAULT_MAX_FRAME));
        assert!(server.is_err());
        let mut stream = tokio::io::join(bytes, tokio::io::sink());
        let client = run(handshake::client(&mut stream, &keyring, 2, Purpose::Peer, frame::DEFAULT_MAX_FRAME));
        assert!(client.is_err());
    }
}

#[cfg(test)]
mod tests {
    use super::frame::{self, Frame};
    use super::fuzzing;

    /// The fuzz entry points run without a runtime: in-memory I/O must never make them wait.
    #[test]
    fn the_fuzz_entry_points_run_on_seed_like_inputs() {
        let mut two = Vec::new();
        frame::encode(&Frame { kind: 1, id: 2, payload: b"abc".to_vec() }, &mut two);
        frame::encode(&Frame { kind: 0xF0, id: 0, payload: b"AIRORAFT\x01\x05\x00".to_vec() }, &mut two);
        assert_eq!(fuzzing::decode_frames(&two), 2);
        assert_eq!(fuzzing::decode_frames(b"GET / HTTP/1.1\r\n"), 0);
        for input in [&two[..], b"", b"GET / HTTP/1.1\r\n", &[0, 0, 0, 9, 0xF1, 0, 0, 0, 0, 0, 0, 0, 0]] {
            fuzzing::handshake(input);
        }
    }

    /// Every input of the fuzz target's corpus, so that one added for a fixed bug stays a
    /// regression test in each `cargo test`.
    #[test]
    fn the_fuzz_corpus_runs_clean() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/raft_frame");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("the corpus directory") {
            let bytes = std::fs::read(entry.expect("an entry").path()).expect("readable");
            fuzzing::decode_frames(&bytes);
            fuzzing::handshake(&bytes);
            seen += 1;
        }
        assert!(seen > 0, "no inputs in {}", dir.display());
    }
}
