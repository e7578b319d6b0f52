//! The handshake that opens every connection: both ends prove they hold the cluster secret
//! (mutual HMAC-SHA256 challenge-response over fresh nonces) and agree on a protocol version.
//!
//! ```text
//! client                                               server
//!   Hello { magic, version, from, purpose, nonce_c } -->
//!                                                    <-- Challenge { version, server_id, nonce_s,
//!                                                          proof: HMAC(k, "server" | nonce_c | nonce_s
//!                                                                        | server_id | version) }
//!                                                        or Refused { version, reason }
//!   Proof { HMAC(k, "client" | nonce_s | nonce_c
//!                | from | purpose | version) }      -->
//!                                                    <-- Welcome, or Refused and close
//! ```
//!
//! Each side proves with its current secret and checks the other's proof against every secret
//! it accepts (see [`Keyring`]). The labels keep a proof of one direction from being replayed
//! as one of the other; the fresh nonces keep a recorded proof from being replayed at all.
//! The client's proof also covers its claimed id, purpose and version, so they cannot be
//! changed on the way. The secret authenticates membership of the cluster, not one node: any
//! holder of it can claim any node id.
//!
//! Versions: `Hello` starts with the magic and the version, and `Refused` with the version,
//! in every protocol version (they are how two versions meet). A server that cannot speak the
//! client's version answers `Refused` with its own; a client that cannot speak the version a
//! `Challenge` announces gives up. Either way both sides get [`HandshakeError::Version`]
//! naming both.
//!
//! Neither side has a deadline of its own: the caller wraps [`client`] and [`server`] in
//! `tokio::time::timeout` (a few seconds), or a peer that connects and then sends nothing
//! holds the task forever. Handshake frames are limited to [`HANDSHAKE_MAX_FRAME`] bytes
//! (or the caller's `max_frame`, if smaller), since the peer is not yet trusted.

use std::ops::RangeInclusive;

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::frame::{self, Frame, FrameError};
use super::secret::{Keyring, Secret};

/// The protocol version this build speaks.
pub(crate) const PROTOCOL_VERSION: u16 = 1;

/// Frame kinds the handshake uses; the protocol proper must not use any of them.
pub(crate) const RESERVED_KINDS: RangeInclusive<u8> = 0xF0..=0xFF;

const KIND_HELLO: u8 = 0xF0;
const KIND_CHALLENGE: u8 = 0xF1;
const KIND_PROOF: u8 = 0xF2;
const KIND_WELCOME: u8 = 0xF3;
const KIND_REFUSED: u8 = 0xF4;

/// The largest handshake frame: the messages are small, and an unauthenticated peer gets
/// no say in how much a node allocates.
pub(crate) const HANDSHAKE_MAX_FRAME: usize = 4096;

/// What every [`Hello`] starts with, so that anything else is refused at once.
const MAGIC: [u8; 8] = *b"AIRORAFT";

/// What the server says when the client's proof matches none of its secrets.
const WRONG_SECRET: &str = "wrong cluster secret";

type HmacSha256 = Hmac<Sha256>;

/// Why a client connects, which decides what the server lets it do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Purpose {
    /// Another node of the cluster (Raft traffic).
    Peer,
    /// An admin client (the CLI): membership changes, status.
    Admin,
}

impl Purpose {
    fn byte(self) -> u8 {
        match self {
            Purpose::Peer => 0,
            Purpose::Admin => 1,
        }
    }
}

/// What the client learns about the server it connected to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PeerInfo {
    /// The server's node id, as it claims (the secret vouches for membership of the cluster only).
    pub(crate) server_id: u64,
    /// The protocol version the connection speaks.
    pub(crate) version: u16,
}

/// What the server learns about the client that connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Greeted {
    /// The client's node id, as it claims; 0 for an admin client.
    pub(crate) from: u64,
    /// Why it connected.
    pub(crate) purpose: Purpose,
    /// The protocol version the connection speaks.
    pub(crate) version: u16,
}

/// Why a handshake failed. After any of them, close the connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    /// The connection failed or closed during the handshake.
    #[error("connection I/O during the handshake: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent something that is not a valid handshake frame.
    #[error("malformed handshake message: {0}")]
    Frame(FrameError),
    /// The peer does not speak this protocol at all (a port scanner, an HTTP client, the
    /// wrong port).
    #[error("the peer does not speak the airomem-raft protocol")]
    NotAirorem,
    /// The two ends speak different protocol versions.
    #[error("protocol version mismatch: we speak {ours}, the peer {theirs}")]
    Version {
        /// This build's version.
        ours: u16,
        /// The peer's.
        theirs: u16,
    },
    /// The peer's proof matches none of our accepted secrets: it does not hold the cluster
    /// secret (another cluster, a stale secret after a rotation, or an impostor).
    #[error("the peer's proof matches none of our cluster secrets")]
    WrongSecret,
    /// The peer refused us (most often: it does not accept our secret).
    #[error("refused by the peer: {reason}")]
    RefusedByPeer {
        /// What the peer said.
        reason: String,
    },
    /// A frame of a kind that does not belong at this point of the handshake.
    #[error("unexpected frame of kind {kind:#04x} during the handshake")]
    Unexpected {
        /// The frame's kind.
        kind: u8,
    },
}

impl From<FrameError> for HandshakeError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Io(e) => HandshakeError::Io(e),
            other => HandshakeError::Frame(other),
        }
    }
}

impl From<HandshakeError> for std::io::Error {
    fn from(e: HandshakeError) -> Self {
        use std::io::ErrorKind;
        match e {
            HandshakeError::Io(e) => e,
            e @ (HandshakeError::WrongSecret | HandshakeError::RefusedByPeer { .. }) => {
                std::io::Error::new(ErrorKind::PermissionDenied, e)
            }
            other => std::io::Error::new(ErrorKind::InvalidData, other),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Hello {
    magic: [u8; 8],
    version: u16,
    from: u64,
    purpose: Purpose,
    nonce_c: [u8; 32],
}

/// The start of a [`Hello`] of any version.
#[derive(Deserialize)]
struct HelloHead {
    magic: [u8; 8],
    version: u16,
}

#[derive(Serialize, Deserialize)]
struct Challenge {
    version: u16,
    server_id: u64,
    nonce_s: [u8; 32],
    proof: [u8; 32],
}

/// The start of a [`Challenge`] of any version.
#[derive(Deserialize)]
struct ChallengeHead {
    version: u16,
}

#[derive(Serialize, Deserialize)]
struct Proof {
    proof: [u8; 32],
}

#[derive(Serialize, Deserialize)]
struct Refused {
    /// The refusing side's version, first in every version.
    version: u16,
    reason: String,
}

fn nonce() -> Result<[u8; 32], HandshakeError> {
    let mut nonce = [0u8; 32];
    getrandom::fill(&mut nonce).map_err(std::io::Error::other)?;
    Ok(nonce)
}

/// The MAC over a proof's fields. Every field has a fixed length, so the concatenation is
/// unambiguous.
fn mac(secret: &Secret, label: &[u8; 6], fields: &[&[u8]]) -> HmacSha256 {
    #[expect(clippy::expect_used, reason = "HMAC takes keys of any length; this never fails")]
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(label);
    for field in fields {
        mac.update(field);
    }
    mac
}

fn server_mac(secret: &Secret, nonce_c: &[u8; 32], nonce_s: &[u8; 32], server_id: u64, version: u16) -> HmacSha256 {
    mac(secret, b"server", &[nonce_c, nonce_s, &server_id.to_be_bytes(), &version.to_be_bytes()])
}

fn client_mac(
    secret: &Secret,
    nonce_s: &[u8; 32],
    nonce_c: &[u8; 32],
    from: u64,
    purpose: Purpose,
    version: u16,
) -> HmacSha256 {
    mac(secret, b"client", &[nonce_s, nonce_c, &from.to_be_bytes(), &[purpose.byte()], &version.to_be_bytes()])
}

/// Whether `proof` is the MAC `expected` yields under any of `keyring`'s accepted secrets,
/// compared in constant time.
fn verify(keyring: &Keyring, proof: &[u8; 32], expected: impl Fn(&Secret) -> HmacSha256) -> bool {
    // Every secret is tried, so the time taken does not tell which one matched.
    keyring.accepted().fold(false, |ok, secret| expected(secret).verify_slice(proof).is_ok() | ok)
}

async fn send<S: AsyncWrite + Unpin, T: Serialize>(
    stream: &mut S,
    kind: u8,
    message: &T,
) -> Result<(), HandshakeError> {
    let payload = frame::to_payload(message)?;
    frame::write_frame(stream, &Frame { kind, id: 0, payload }).await?;
    Ok(())
}

/// Sends a refusal and closes our side, for the peer to read why before the connection ends.
/// Best effort: we are giving up on the connection anyway.
async fn refuse<S: AsyncWrite + Unpin>(stream: &mut S, reason: String) {
    let _ = send(stream, KIND_REFUSED, &Refused { version: PROTOCOL_VERSION, reason }).await;
    let _ = stream.shutdown().await;
}

/// Reads the next handshake frame; the connection ending here is an error.
async fn receive<S: AsyncRead + Unpin>(stream: &mut S, max_frame: usize) -> Result<Frame, FrameError> {
    match frame::read_frame(stream, max_frame.min(HANDSHAKE_MAX_FRAME)).await? {
        Some(frame) => Ok(frame),
        None => Err(FrameError::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the peer closed the connection during the handshake",
        ))),
    }
}

/// Reads the peer's first frame. Bytes that are not even a frame of ours (an HTTP request's
/// "GET " reads as a length of 1.2 GB) mean the peer speaks another protocol.
async fn receive_first<S: AsyncRead + Unpin>(stream: &mut S, max_frame: usize) -> Result<Frame, HandshakeError> {
    receive(stream, max_frame).await.map_err(|e| match e {
        FrameError::Io(e) => HandshakeError::Io(e),
        _ => HandshakeError::NotAirorem,
    })
}

/// Decodes a refusal from a peer of any version.
fn refused(frame: &Frame) -> HandshakeError {
    match postcard::take_from_bytes::<Refused>(&frame.payload) {
        Ok((r, _)) if r.version != PROTOCOL_VERSION => {
            HandshakeError::Version { ours: PROTOCOL_VERSION, theirs: r.version }
        }
        Ok((r, _)) => HandshakeError::RefusedByPeer { reason: r.reason },
        Err(e) => HandshakeError::Frame(FrameError::Payload(e)),
    }
}

/// Opens a connection: proves to the server that we hold the cluster secret (`keyring`'s
/// current one) and checks that it does too (under any secret we accept). `from` is our
/// node id, 0 for an admin client. Wrap the call in a timeout (see the module docs).
pub(crate) async fn client<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    keyring: &Keyring,
    from: u64,
    purpose: Purpose,
    max_frame: usize,
) -> Result<PeerInfo, HandshakeError> {
    let nonce_c = nonce()?;
    send(stream, KIND_HELLO, &Hello { magic: MAGIC, version: PROTOCOL_VERSION, from, purpose, nonce_c }).await?;

    let answer = receive_first(stream, max_frame).await?;
    match answer.kind {
        KIND_CHALLENGE => {}
        KIND_REFUSED => return Err(refused(&answer)),
        _ => return Err(HandshakeError::NotAirorem),
    }
    let (head, _) = postcard::take_from_bytes::<ChallengeHead>(&answer.payload)
        .map_err(|e| HandshakeError::Frame(FrameError::Payload(e)))?;
    if head.version != PROTOCOL_VERSION {
        let reason =
            format!("protocol version {} is not supported; this client speaks {PROTOCOL_VERSION}", head.version);
        refuse(stream, reason).await;
        return Err(HandshakeError::Version { ours: PROTOCOL_VERSION, theirs: head.version });
    }
    let challenge: Challenge = frame::from_payload(&answer.payload)?;
    let server_id = challenge.server_id;
    if !verify(keyring, &challenge.proof, |s| server_mac(s, &nonce_c, &challenge.nonce_s, server_id, PROTOCOL_VERSION))
    {
        // Told so that the server's log says why the client went away.
        refuse(stream, "the server's proof matches none of the client's cluster secrets".into()).await;
        return Err(HandshakeError::WrongSecret);
    }

    let proof = client_mac(keyring.current(), &challenge.nonce_s, &nonce_c, from, purpose, PROTOCOL_VERSION);
    send(stream, KIND_PROOF, &Proof { proof: proof.finalize().into_bytes().into() }).await?;

    let verdict = receive(stream, max_frame).await?;
    match verdict.kind {
        KIND_WELCOME if verdict.payload.is_empty() => Ok(PeerInfo { server_id, version: PROTOCOL_VERSION }),
        KIND_WELCOME => Err(HandshakeError::Frame(FrameError::TrailingBytes { extra: verdict.payload.len() })),
        KIND_REFUSED => Err(refused(&verdict)),
        kind => Err(HandshakeError::Unexpected { kind }),
    }
}

/// Accepts a connection: checks that the client holds a cluster secret we accept (any of
/// `keyring`'s) and proves that we do too (with its current one). `me` is our node id. On
/// [`HandshakeError::WrongSecret`] and [`HandshakeError::Version`] the client has been told
/// why and our side of the stream shut down. Wrap the call in a timeout (see the module docs).
pub(crate) async fn server<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    keyring: &Keyring,
    me: u64,
    max_frame: usize,
) -> Result<Greeted, HandshakeError> {
    let first = receive_first(stream, max_frame).await?;
    if first.kind != KIND_HELLO {
        return Err(HandshakeError::NotAirorem);
    }
    let head = match postcard::take_from_bytes::<HelloHead>(&first.payload) {
        Ok((head, _)) if head.magic == MAGIC => head,
        _ => return Err(HandshakeError::NotAirorem),
    };
    // The one place to adapt to an older client once there is more than one version.
    if head.version != PROTOCOL_VERSION {
        let reason = format!("protocol version {} is not supported; this node speaks {PROTOCOL_VERSION}", head.version);
        refuse(stream, reason).await;
        return Err(HandshakeError::Version { ours: PROTOCOL_VERSION, theirs: head.version });
    }
    let hello: Hello = frame::from_payload(&first.payload)?;

    let nonce_s = nonce()?;
    let proof = server_mac(keyring.current(), &hello.nonce_c, &nonce_s, me, PROTOCOL_VERSION);
    let challenge =
        Challenge { version: PROTOCOL_VERSION, server_id: me, nonce_s, proof: proof.finalize().into_bytes().into() };
    send(stream, KIND_CHALLENGE, &challenge).await?;

    let answer = receive(stream, max_frame).await?;
    let proof: Proof = match answer.kind {
        KIND_PROOF => frame::from_payload(&answer.payload)?,
        KIND_REFUSED => return Err(refused(&answer)),
        kind => return Err(HandshakeError::Unexpected { kind }),
    };
    if !verify(keyring, &proof.proof, |s| {
        client_mac(s, &nonce_s, &hello.nonce_c, hello.from, hello.purpose, PROTOCOL_VERSION)
    }) {
        refuse(stream, WRONG_SECRET.into()).await;
        return Err(HandshakeError::WrongSecret);
    }
    frame::write_frame(stream, &Frame { kind: KIND_WELCOME, id: 0, payload: Vec::new() }).await?;
    Ok(Greeted { from: hello.from, purpose: hello.purpose, version: PROTOCOL_VERSION })
}

/// Decodes `payload` as each handshake message in turn, for the fuzz target: none may panic.
pub(super) fn decode_any_message(payload: &[u8]) -> usize {
    [
        frame::from_payload::<Hello>(payload).is_ok(),
        postcard::take_from_bytes::<HelloHead>(payload).is_ok(),
        frame::from_payload::<Challenge>(payload).is_ok(),
        postcard::take_from_bytes::<ChallengeHead>(payload).is_ok(),
        frame::from_payload::<Proof>(payload).is_ok(),
        frame::from_payload::<Refused>(payload).is_ok(),
    ]
    .into_iter()
    .filter(|ok| *ok)
    .count()
}

#[cfg(test)]
mod tests {
    use tokio::io::duplex;

    use super::*;

    fn secret(byte: u8) -> Secret {
        Secret::new(vec![byte; 32]).expect("long enough")
    }

    fn ring(current: u8, others: &[u8]) -> Keyring {
        others.iter().fold(Keyring::new(secret(current)), |ring, &o| ring.accept_also(secret(o)))
    }

    async fn both(
        client_ring: Keyring,
        server_ring: Keyring,
    ) -> (Result<PeerInfo, HandshakeError>, Result<Greeted, HandshakeError>) {
        let (mut c, mut s) = duplex(64 * 1024);
        let max = frame::DEFAULT_MAX_FRAME;
        tokio::join!(async move { client(&mut c, &client_ring, 7, Purpose::Peer, max).await }, async move {
            server(&mut s, &server_ring, 3, max).await
        },)
    }

    #[tokio::test]
    async fn the_same_secret_lets_both_in() {
        let (c, s) = both(ring(1, &[]), ring(1, &[])).await;
        assert_eq!(c.expect("client"), PeerInfo { server_id: 3, version: PROTOCOL_VERSION });
        assert_eq!(s.expect("server"), Greeted { from: 7, purpose: Purpose::Peer, version: PROTOCOL_VERSION });
    }

    #[tokio::test]
    async fn an_admin_client_says_so() {
        let (mut c, mut s) = duplex(4096);
        let k = ring(1, &[]);
        let (c, s) = tokio::join!(client(&mut c, &k, 0, Purpose::Admin, 4096), server(&mut s, &k, 3, 4096));
        c.expect("client");
        assert_eq!(s.expect("server"), Greeted { from: 0, purpose: Purpose::Admin, version: PROTOCOL_VERSION });
    }

    /// The client proves with 1, which the server does not accept. The client still accepts
    /// the server (it accepts 2 as well), so it is the server that refuses.
    #[tokio::test]
    async fn a_wrong_secret_is_refused_by_the_server() {
        let (c, s) = both(ring(1, &[2]), ring(2, &[])).await;
        assert!(matches!(s, Err(HandshakeError::WrongSecret)), "{s:?}");
        assert!(matches!(&c, Err(HandshakeError::RefusedByPeer { reason }) if reason == WRONG_SECRET), "{c:?}");
    }

    #[tokio::test]
    async fn an_impostor_server_is_rejected_by_the_client() {
        let (c, s) = both(ring(1, &[]), ring(9, &[1])).await;
        assert!(matches!(c, Err(HandshakeError::WrongSecret)), "{c:?}");
        assert!(matches!(s, Err(HandshakeError::RefusedByPeer { .. })), "{s:?}");
    }

    /// Rotation from 1 to 2, in each direction: whichever side proves with which, a side that
    /// accepts both lets the other in.
    #[tokio::test]
    async fn rotation_accepts_old_and_new() {
        // Step 1 (prove old, accept new too) meets a node not yet rolled.
        let (c, s) = both(ring(1, &[2]), ring(1, &[])).await;
        assert!(c.is_ok() && s.is_ok(), "{c:?} {s:?}");
        let (c, s) = both(ring(1, &[]), ring(1, &[2])).await;
        assert!(c.is_ok() && s.is_ok(), "{c:?} {s:?}");
        // Step 2 (prove new, accept old) meets a node still at step 1.
        let (c, s) = both(ring(2, &[1]), ring(1, &[2])).await;
        assert!(c.is_ok() && s.is_ok(), "{c:?} {s:?}");
        let (c, s) = both(ring(1, &[2]), ring(2, &[1])).await;
        assert!(c.is_ok() && s.is_ok(), "{c:?} {s:?}");
        // Step 3 (new only) meets a node still at step 2.
        let (c, s) = both(ring(2, &[1]), ring(2, &[])).await;
        assert!(c.is_ok() && s.is_ok(), "{c:?} {s:?}");
        let (c, s) = both(ring(2, &[]), ring(2, &[1])).await;
        assert!(c.is_ok() && s.is_ok(), "{c:?} {s:?}");
        // Skipping step 1: a node proving with new meets one that only knows old.
        let (c, s) = both(ring(2, &[1]), ring(1, &[])).await;
        assert!(matches!(s, Err(HandshakeError::WrongSecret)), "{c:?} {s:?}");
    }

    fn hello_bytes(magic: [u8; 8], version: u16) -> Vec<u8> {
        let hello = Hello { magic, version, from: 5, purpose: Purpose::Peer, nonce_c: [4; 32] };
        let mut out = Vec::new();
        let payload = frame::to_payload(&hello).expect("encodes");
        frame::encode(&Frame { kind: KIND_HELLO, id: 0, payload }, &mut out);
        out
    }

    /// A client of a future version meets this server: both sides name both versions.
    #[tokio::test]
    async fn a_version_mismatch_names_both_versions_on_both_sides() {
        let (mut c, mut s) = duplex(4096);
        let server_side = tokio::spawn(async move { server(&mut s, &ring(1, &[]), 3, 4096).await });
        c.write_all(&hello_bytes(MAGIC, 2)).await.expect("writes");
        let reply = frame::read_frame(&mut c, 4096).await.expect("a frame").expect("not EOF");
        let theirs = server_side.await.expect("no panic");
        assert!(matches!(theirs, Err(HandshakeError::Version { ours: 1, theirs: 2 })), "{theirs:?}");
        // What a version-2 client makes of the refusal: the server speaks 1.
        assert_eq!(reply.kind, KIND_REFUSED);
        let refusal: Refused = frame::from_payload(&reply.payload).expect("a refusal");
        assert_eq!(refusal.version, 1);
        assert!(refusal.reason.contains('2') && refusal.reason.contains('1'), "{}", refusal.reason);
        assert!(frame::read_frame(&mut c, 4096).await.expect("clean").is_none(), "the server closed");

        // A server of a future version refuses this client.
        let (mut c, mut s) = duplex(4096);
        let client_side = tokio::spawn(async move { client(&mut c, &ring(1, &[]), 7, Purpose::Peer, 4096).await });
        frame::read_frame(&mut s, 4096).await.expect("hello").expect("not EOF");
        send(&mut s, KIND_REFUSED, &Refused { version: 2, reason: "version 1 is too old".into() }).await.expect("sent");
        let got = client_side.await.expect("no panic");
        assert!(matches!(got, Err(HandshakeError::Version { ours: 1, theirs: 2 })), "{got:?}");

        // A server of a future version that answers in its own version.
        let (mut c, mut s) = duplex(4096);
        let client_side = tokio::spawn(async move { client(&mut c, &ring(1, &[]), 7, Purpose::Peer, 4096).await });
        frame::read_frame(&mut s, 4096).await.expect("hello").expect("not EOF");
        let challenge = Challenge { version: 2, server_id: 3, nonce_s: [0; 32], proof: [0; 32] };
        send(&mut s, KIND_CHALLENGE, &challenge).await.expect("sent");
        let got = client_side.await.expect("no panic");
        assert!(matches!(got, Err(HandshakeError::Version { ours: 1, theirs: 2 })), "{got:?}");
    }

    async fn server_given(bytes: &[u8]) -> Result<Greeted, HandshakeError> {
        let (mut c, mut s) = duplex(64 * 1024);
        c.write_all(bytes).await.expect("writes");
        c.shutdown().await.expect("shuts down");
        // What the server answers fits the duplex's buffer, so nobody needs to read it.
        server(&mut s, &ring(1, &[]), 3, frame::DEFAULT_MAX_FRAME).await
    }

    #[tokio::test]
    async fn garbage_is_not_airorem() {
        for garbage in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..], // a TLS ClientHello
            &b"\0\0\0\x09\xF0\0\0\0\0\0\0\0\0"[..],               // a Hello frame without a payload
            &[0xFF; 64][..],
            &b"\0\0\0\x0A\x01\0\0\0\0\0\0\0\0\0"[..], // a frame of another kind
        ] {
            let got = server_given(garbage).await;
            assert!(matches!(got, Err(HandshakeError::NotAirorem)), "{garbage:?}: {got:?}");
        }
        let got = server_given(&hello_bytes(*b"AIROMEM!", PROTOCOL_VERSION)).await;
        assert!(matches!(got, Err(HandshakeError::NotAirorem)), "{got:?}");
        let got = server_given(b"").await;
        assert!(matches!(&got, Err(HandshakeError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof), "{got:?}");

        let (mut c, mut s) = duplex(4096);
        let client_side = tokio::spawn(async move { client(&mut c, &ring(1, &[]), 7, Purpose::Peer, 4096).await });
        frame::read_frame(&mut s, 4096).await.expect("hello").expect("not EOF");
        s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await.expect("writes");
        let got = client_side.await.expect("no panic");
        assert!(matches!(got, Err(HandshakeError::NotAirorem)), "{got:?}");
    }

    /// The client goes away (or sends something else) where its proof belongs.
    #[tokio::test]
    async fn a_client_that_stops_half_way_is_an_error() {
        let mut hello = hello_bytes(MAGIC, PROTOCOL_VERSION);
        let got = server_given(&hello).await;
        assert!(matches!(got, Err(HandshakeError::Io(_))), "{got:?}");
        frame::encode(&Frame { kind: 0x01, id: 0, payload: vec![] }, &mut hello);
        let got = server_given(&hello).await;
        assert!(matches!(got, Err(HandshakeError::Unexpected { kind: 0x01 })), "{got:?}");
    }

    #[test]
    fn the_reserved_kinds_cover_every_handshake_kind() {
        for kind in [KIND_HELLO, KIND_CHALLENGE, KIND_PROOF, KIND_WELCOME, KIND_REFUSED] {
            assert!(RESERVED_KINDS.contains(&kind));
        }
    }

    /// Over a one-byte pipe each write waits for the other side to read: the handshake must
    /// never have both sides writing (or both reading) at once.
    #[tokio::test]
    async fn works_over_a_one_byte_duplex() {
        let (mut c, mut s) = duplex(1);
        let k = ring(1, &[]);
        let (c, s) = tokio::join!(client(&mut c, &k, 7, Purpose::Peer, 4096), server(&mut s, &k, 3, 4096));
        assert!(c.is_ok() && s.is_ok(), "{c:?} {s:?}");
    }
}
