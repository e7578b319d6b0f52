//! The TCP transport: nodes in separate processes or machines.
//!
//! * **Connections.** Each node keeps at most one outgoing connection per peer, opened on the
//!   first call and kept; calls on it are multiplexed by request id, so a slow snapshot chunk
//!   does not hold up a heartbeat. A connection that fails is dropped, its calls in flight
//!   fail (answer lost), and the next call opens a new one.
//! * **Handshake.** Every connection starts with the mutual HMAC challenge of `wire::
//!   handshake`, which carries the protocol version; a peer with the wrong secret or an
//!   unknown version is refused with one log line and counted
//!   ([`TcpTransport::refused_connections`]).
//! * **Failures.** A peer that refuses connections, cannot be reached or does not answer is
//!   `Unreachable` to openraft, which then backs off exponentially (from the heartbeat
//!   interval to [`MAX_BACKOFF`]) instead of retrying at the heartbeat rate. This transport
//!   logs a peer going down and coming back once each, and a peer still down at most once a
//!   minute; openraft logs each failed attempt, so a dead peer costs at most about
//!   `2 × 60 s / MAX_BACKOFF` lines a minute in all.
//! * **Bounds.** A frame is at most `max_frame` bytes, checked from its length prefix before
//!   anything is allocated; an append that would be larger is split by openraft (it is told
//!   `PayloadTooLarge`). Each connection runs at most [`CALLS_PER_CONNECTION`] calls at once
//!   and a node at most [`HANDSHAKES`] unauthenticated connections at once.
//!
//! Owner: the [`TcpLink`] of the node the transport is attached to. `leave` (the node closes
//! or halts) stops the accept loop and every connection task; the listener's socket closes
//! with the accept loop.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::Error;
use crate::status::{Members, Status};
use crate::transport::admin::{self, AdminCall, AdminOutcome};
use crate::transport::local::{Failure, Local, invalid};
use crate::transport::rpc::{Call, Reply};
use crate::types::NodeId;
use crate::wire::frame::{self, DEFAULT_MAX_FRAME, Frame};
use crate::wire::handshake::{self, HandshakeError, Purpose};
use crate::wire::secret::{Keyring, Secret};

/// The reason a call was not sent because its frame would exceed the limit; openraft is told
/// `PayloadTooLarge` for an append refused with it.
pub(crate) const TOO_LARGE: &str = "frame too large";

/// The longest pause openraft makes between two attempts to reach a dead peer.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Calls one connection runs at once; the next frame is read when one finishes.
const CALLS_PER_CONNECTION: usize = 64;

/// Connections a node authenticates at once; more wait to be accepted.
const HANDSHAKES: usize = 32;

/// How long an admin client's connection and handshake may each take.
const ADMIN_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How often a peer that stays down is logged again.
const DOWN_LOG_EVERY: Duration = Duration::from_secs(60);

/// Frame kinds after the handshake.
const KIND_CALL: u8 = 1;
const KIND_REPLY: u8 = 2;
const _: () =
    assert!(KIND_CALL < *handshake::RESERVED_KINDS.start() && KIND_REPLY < *handshake::RESERVED_KINDS.start());

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every change under these locks is a single insert, remove or assignment.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The settings of one node's TCP transport: where it listens, the cluster secret, and where
/// its peers listen.
///
/// ```
/// use airomem_raft::{Secret, TcpConfig};
///
/// let secret = Secret::new("a secret of at least sixteen bytes")?;
/// let config = TcpConfig::new("127.0.0.1:7001".parse()?, secret)
///     .peer(2, "127.0.0.1:7002")
///     .peer(3, "127.0.0.1:7003");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct TcpConfig {
    listen: SocketAddr,
    advertise: Option<String>,
    keyring: Keyring,
    peers: BTreeMap<u64, String>,
    max_frame: usize,
    connect_timeout: Duration,
}

impl TcpConfig {
    /// Listens at `listen` for peers and admin clients, who must prove they hold `secret`.
    /// Defaults: frames up to 16 MiB, connect and handshake timeouts 2 s each.
    pub fn new(listen: SocketAddr, secret: Secret) -> TcpConfig {
        TcpConfig {
            listen,
            advertise: None,
            keyring: Keyring::new(secret),
            peers: BTreeMap::new(),
            max_frame: DEFAULT_MAX_FRAME,
            connect_timeout: Duration::from_secs(2),
        }
    }

    /// Node `id` listens at `addr` (`host:port`). Needed for the members a node must reach
    /// before it has heard of them from the group (at bootstrap, or when it restarts); the
    /// group's membership records every member's address, and wins over this.
    pub fn peer(mut self, id: u64, addr: impl Into<String>) -> TcpConfig {
        self.peers.insert(id, addr.into());
        self
    }

    /// The address the other nodes reach this one at, recorded in the membership when this
    /// node bootstraps the group (default: the listening address; set it when listening on
    /// `0.0.0.0` or behind a NAT).
    pub fn advertise(mut self, addr: impl Into<String>) -> TcpConfig {
        self.advertise = Some(addr.into());
        self
    }

    /// Also accepts peers proving themselves with `secret`, while this node still proves
    /// itself with the one given to [`TcpConfig::new`]: how a secret is rotated without
    /// downtime (see [`Secret`]).
    pub fn accept_also(mut self, secret: Secret) -> TcpConfig {
        self.keyring = self.keyring.accept_also(secret);
        self
    }

    /// The largest frame sent or accepted (default 16 MiB, at least 64 KiB). A larger append
    /// is split between entries; an entry carries at most half a frame of commands, and a
    /// larger command is refused (`Error::CommandTooLarge`). Keep it above the snapshot chunk
    /// size, and the same on every node.
    pub fn max_frame(mut self, bytes: usize) -> TcpConfig {
        self.max_frame = bytes.max(64 * 1024);
        self
    }

    /// How long opening a connection, and then its handshake, may each take (default 2 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> TcpConfig {
        self.connect_timeout = timeout;
        self
    }
}

/// A TCP transport for one node: pass it to [`crate::ReplicatedStore::open`]. Bound at once
/// (so its address is known, also with port 0); it serves once the node opens, and one node
/// only: a node reopened in the same process binds a new one.
#[derive(Debug)]
pub struct TcpTransport {
    config: Arc<TcpConfig>,
    listener: Mutex<Option<TcpListener>>,
    local_addr: SocketAddr,
    refused: Arc<AtomicU64>,
    attached: AtomicBool,
}

impl TcpTransport {
    /// Binds the listening socket.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the address cannot be bound (in use, not local).
    pub async fn bind(config: TcpConfig) -> Result<TcpTransport, Error> {
        let listener = TcpListener::bind(config.listen).await.map_err(|source| Error::Io {
            op: "bind",
            path: config.listen.to_string().into(),
            source,
        })?;
        let local_addr = listener.local_addr().map_err(|source| Error::Io {
            op: "local address of",
            path: config.listen.to_string().into(),
            source,
        })?;
        Ok(TcpTransport {
            config: Arc::new(config),
            listener: Mutex::new(Some(listener)),
            local_addr,
            refused: Arc::new(AtomicU64::new(0)),
            attached: AtomicBool::new(false),
        })
    }

    /// Serves on `listener`, already bound (by the caller, a service manager, a test that
    /// must know every node's port before any node starts); `TcpConfig`'s listening address
    /// is ignored. Call it inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the listener cannot be made non-blocking or handed to tokio.
    pub fn from_listener(listener: std::net::TcpListener, config: TcpConfig) -> Result<TcpTransport, Error> {
        let io = |op, source| Error::Io { op, path: config.listen.to_string().into(), source };
        listener.set_nonblocking(true).map_err(|e| io("set non-blocking", e))?;
        let local_addr = listener.local_addr().map_err(|e| io("local address of", e))?;
        let listener = TcpListener::from_std(listener).map_err(|e| io("register", e))?;
        Ok(TcpTransport {
            config: Arc::new(config),
            listener: Mutex::new(Some(listener)),
            local_addr,
            refused: Arc::new(AtomicU64::new(0)),
            attached: AtomicBool::new(false),
        })
    }

    /// The most bytes of commands one log entry may carry: half a frame, so that an append
    /// of one entry, with its envelope, always fits one frame.
    pub(crate) fn entry_limit(&self) -> usize {
        self.config.max_frame / 2
    }

    /// The address it listens at (the actual port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// How many connections were refused, incoming or outgoing: the other side proved no
    /// secret this node accepts, speaks an unknown protocol version, or is not an airomem
    /// node at all. Each is also logged (a peer that keeps failing, once a minute).
    pub fn refused_connections(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

impl TcpTransport {
    /// Starts serving node `local`.
    pub(crate) fn attach_node(&self, local: Local, heartbeat: Duration) -> Result<TcpLink, Error> {
        let Some(listener) = lock(&self.listener).take() else {
            return Err(invalid("this TCP transport already served a node; bind a new one"));
        };
        self.attached.store(true, Ordering::Release);
        let mut addresses = self.config.peers.clone();
        let own = self.config.advertise.clone().unwrap_or_else(|| self.local_addr.to_string());
        addresses.insert(local.id, own);
        let (stop, stopped) = watch::channel(false);
        let shared = Arc::new(Shared {
            local,
            config: Arc::clone(&self.config),
            addresses: Mutex::new(addresses),
            peers: Mutex::new(HashMap::new()),
            stop,
            heartbeat,
            refused: Arc::clone(&self.refused),
        });
        let accepting = Accept {
            listener,
            shared: Arc::clone(&shared),
            refused: Arc::clone(&self.refused),
            handshakes: Arc::new(Semaphore::new(HANDSHAKES)),
        };
        let accepting = tokio::spawn(accepting.run(stopped));
        info!(node = shared.local.id, addr = %self.local_addr, "listening for peers");
        Ok(TcpLink { shared, accepting: Arc::new(tokio::sync::Mutex::new(Some(accepting))) })
    }

    /// Whether a node was attached (a transport serves one node once).
    pub(crate) fn served(&self) -> bool {
        self.attached.load(Ordering::Acquire)
    }
}

/// What a node's link and its tasks share.
struct Shared {
    local: Local,
    config: Arc<TcpConfig>,
    addresses: Mutex<BTreeMap<NodeId, String>>,
    peers: Mutex<HashMap<NodeId, Arc<Peer>>>,
    /// Set to `true` when the node leaves: every task of this transport ends.
    stop: watch::Sender<bool>,
    heartbeat: Duration,
    /// Connections refused, either way (see [`TcpTransport::refused_connections`]).
    refused: Arc<AtomicU64>,
}

/// One node's link over TCP.
#[derive(Clone)]
pub struct TcpLink {
    shared: Arc<Shared>,
    /// The accept loop, which owns the listening socket: it drops it when it sees the stop,
    /// and [`TcpLink::closed`] waits for that, so that a node closed and reopened in one
    /// process finds its port free.
    accepting: Arc<tokio::sync::Mutex<Option<JoinHandle<()>>>>,
}

impl TcpLink {
    pub(crate) fn local(&self) -> &Local {
        &self.shared.local
    }

    pub(crate) fn address_of(&self, id: NodeId) -> Option<String> {
        lock(&self.shared.addresses).get(&id).cloned()
    }

    pub(crate) fn learn_address(&self, id: NodeId, addr: &str) {
        let mut addresses = lock(&self.shared.addresses);
        if addresses.get(&id).is_none_or(|known| known != addr) {
            debug!(node = self.shared.local.id, peer = id, addr, "learned a peer's address");
            addresses.insert(id, addr.to_owned());
        }
    }

    pub(crate) fn leave(&self) {
        self.shared.stop.send_replace(true);
        lock(&self.shared.peers).clear();
    }

    /// Returns once the listening socket is closed (after [`TcpLink::leave`]).
    pub(crate) async fn closed(&self) {
        if let Some(accepting) = self.accepting.lock().await.take() {
            // It ends at the stop; a panic in it is a bug, surfaced by its own report.
            drop(accepting.await);
        }
    }

    pub(crate) fn backoff(&self) -> impl Iterator<Item = Duration> + Send + 'static {
        let first = self.shared.heartbeat.max(Duration::from_millis(10));
        std::iter::successors(Some(first), |&d| Some((d * 2).min(MAX_BACKOFF)))
    }

    pub(crate) async fn call(&self, to: NodeId, call: Call) -> Result<Reply, Failure> {
        let shared = &self.shared;
        if to == shared.local.id {
            return Ok(shared.local.handle(call).await);
        }
        if *shared.stop.borrow() {
            return Err(Failure::NotDelivered(format!("node {} is stopped", shared.local.id)));
        }
        let payload = frame::to_payload(&call).map_err(|e| Failure::NotDelivered(format!("encoding a call: {e}")))?;
        if frame::encoded_len(payload.len()) > shared.config.max_frame {
            return match call {
                Call::Append(_) => Ok(Reply::Refused(format!("{TOO_LARGE}: {} bytes", payload.len()))),
                other => Err(Failure::NotDelivered(format!(
                    "{TOO_LARGE}: a {} of {} bytes exceeds the frame limit of {}",
                    other.name(),
                    payload.len(),
                    shared.config.max_frame
                ))),
            };
        }
        let peer = {
            let mut peers = lock(&shared.peers);
            Arc::clone(peers.entry(to).or_insert_with(|| Arc::new(Peer::new(to))))
        };
        let connection = peer.connection(self).await?;
        connection.call(payload).await
    }
}

/// The outgoing side towards one peer.
struct Peer {
    id: NodeId,
    /// The open connection, if any. A `tokio` mutex: a call that finds none opens one while
    /// the others wait for it, so there is one connection per peer.
    connection: tokio::sync::Mutex<Option<Arc<Connection>>>,
    /// Since when the peer has been unreachable, and when that was last logged.
    down: Mutex<Option<(Instant, Instant)>>,
}

impl Peer {
    fn new(id: NodeId) -> Peer {
        Peer { id, connection: tokio::sync::Mutex::new(None), down: Mutex::new(None) }
    }

    async fn connection(&self, link: &TcpLink) -> Result<Arc<Connection>, Failure> {
        let mut current = self.connection.lock().await;
        if let Some(connection) = current.as_ref().filter(|c| c.alive.load(Ordering::Acquire)) {
            return Ok(Arc::clone(connection));
        }
        *current = None;
        match self.connect(link).await {
            Ok(connection) => {
                if let Some((since, _)) = lock(&self.down).take() {
                    info!(node = link.shared.local.id, peer = self.id, down_for = ?since.elapsed(), "peer reachable again");
                }
                *current = Some(Arc::clone(&connection));
                Ok(connection)
            }
            Err(why) => {
                let now = Instant::now();
                let mut down = lock(&self.down);
                match down.as_mut() {
                    None => {
                        warn!(node = link.shared.local.id, peer = self.id, %why, "peer unreachable");
                        *down = Some((now, now));
                    }
                    Some((since, logged)) if now.duration_since(*logged) >= DOWN_LOG_EVERY => {
                        warn!(node = link.shared.local.id, peer = self.id, %why, down_for = ?since.elapsed(), "peer still unreachable");
                        *logged = now;
                    }
                    Some(_) => debug!(node = link.shared.local.id, peer = self.id, %why, "peer unreachable"),
                }
                Err(Failure::NotDelivered(why))
            }
        }
    }

    async fn connect(&self, link: &TcpLink) -> Result<Arc<Connection>, String> {
        let shared = &link.shared;
        let Some(addr) = link.address_of(self.id) else {
            return Err(format!("no address known for node {}", self.id));
        };
        let config = &shared.config;
        let dialed =
            dial(&addr, &config.keyring, shared.local.id, Purpose::Peer, config.max_frame, config.connect_timeout)
                .await;
        let stream = match dialed {
            Ok((stream, server_id)) if server_id == self.id => stream,
            Ok((_, server_id)) => return Err(format!("{addr} is node {server_id}, not node {}", self.id)),
            Err(Dialed::Refused(why)) => {
                shared.refused.fetch_add(1, Ordering::Relaxed);
                return Err(format!("node {}: {why}", self.id));
            }
            Err(Dialed::Failed(why)) => return Err(format!("node {}: {why}", self.id)),
        };
        Ok(Connection::start(stream, config.max_frame, shared.stop.subscribe()))
    }
}

/// Why [`dial`] failed.
enum Dialed {
    /// The other side is not one of ours: it proved no secret we accept, refused ours, or
    /// speaks another protocol version.
    Refused(String),
    /// Unreachable, refused at the TCP level, timed out, or cut during the handshake.
    Failed(String),
}

/// Opens a connection to `addr` and runs the client side of the handshake as node `from`
/// (0 for an admin client), each step within `timeout`; returns the stream and the id the
/// server proved.
async fn dial(
    addr: &str,
    keyring: &Keyring,
    from: NodeId,
    purpose: Purpose,
    max_frame: usize,
    timeout: Duration,
) -> Result<(TcpStream, NodeId), Dialed> {
    let mut stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(Dialed::Failed(format!("connecting to {addr}: {e}"))),
        Err(_) => return Err(Dialed::Failed(format!("connecting to {addr}: timed out"))),
    };
    // Appends and heartbeats are small and latency-bound.
    drop(stream.set_nodelay(true));
    match tokio::time::timeout(timeout, handshake::client(&mut stream, keyring, from, purpose, max_frame)).await {
        Ok(Ok(info)) => Ok((stream, info.server_id)),
        Ok(Err(
            e @ (HandshakeError::WrongSecret
            | HandshakeError::RefusedByPeer { .. }
            | HandshakeError::Version { .. }
            | HandshakeError::NotAirorem),
        )) => Err(Dialed::Refused(format!("handshake with {addr}: {e}"))),
        Ok(Err(e)) => Err(Dialed::Failed(format!("handshake with {addr}: {e}"))),
        Err(_) => Err(Dialed::Failed(format!("handshake with {addr}: timed out"))),
    }
}

/// One open, authenticated connection to a peer, and its calls in flight.
struct Connection {
    frames: mpsc::Sender<Frame>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
    next_id: AtomicU64,
    alive: AtomicBool,
}

/// Forgets a call in flight when its caller stops waiting (answered, timed out, dropped).
struct InFlight<'a>(&'a Connection, u64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        lock(&self.0.pending).remove(&self.1);
    }
}

impl Connection {
    fn start(stream: TcpStream, max_frame: usize, stop: watch::Receiver<bool>) -> Arc<Connection> {
        let (reader, writer) = stream.into_split();
        let (frames, outgoing) = mpsc::channel(CALLS_PER_CONNECTION);
        let connection = Arc::new(Connection {
            frames,
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            alive: AtomicBool::new(true),
        });
        let writing = Arc::clone(&connection);
        let stop_writing = stop.clone();
        tokio::spawn(async move {
            write_frames(writer, outgoing, stop_writing).await;
            // A write that failed ends the connection: the next call opens a new one.
            writing.alive.store(false, Ordering::Release);
        });
        tokio::spawn(Arc::clone(&connection).read_replies(reader, max_frame, stop));
        connection
    }

    async fn call(&self, payload: Vec<u8>) -> Result<Reply, Failure> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        let _in_flight = InFlight(self, id);
        if self.frames.send(Frame { kind: KIND_CALL, id, payload }).await.is_err() {
            self.alive.store(false, Ordering::Release);
            return Err(Failure::NotDelivered("the connection closed".into()));
        }
        rx.await.map_err(|_| Failure::AnswerLost("the connection closed before the answer arrived".into()))
    }

    async fn read_replies(
        self: Arc<Connection>,
        reader: impl AsyncRead + Unpin,
        max_frame: usize,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut reader = BufReader::new(reader);
        loop {
            let next = tokio::select! {
                next = frame::read_frame(&mut reader, max_frame) => next,
                _ = stop.wait_for(|&s| s) => break,
            };
            let frame = match next {
                Ok(Some(frame)) if frame.kind == KIND_REPLY => frame,
                Ok(Some(frame)) => {
                    warn!(kind = frame.kind, "a peer sent a frame of an unexpected kind; closing the connection");
                    break;
                }
                Ok(None) => break,
                Err(e) => {
                    debug!(error = %e, "connection to a peer failed");
                    break;
                }
            };
            let reply = match frame::from_payload::<Reply>(&frame.payload) {
                Ok(reply) => reply,
                Err(e) => {
                    warn!(error = %e, "a peer sent a reply that does not decode; closing the connection");
                    break;
                }
            };
            if let Some(waiting) = lock(&self.pending).remove(&frame.id) {
                drop(waiting.send(reply));
            }
        }
        self.alive.store(false, Ordering::Release);
        // Callers still waiting learn the answer is lost.
        lock(&self.pending).clear();
    }
}

/// Writes the frames of one connection, flushing when no more are queued.
async fn write_frames(
    writer: impl AsyncWrite + Unpin,
    mut frames: mpsc::Receiver<Frame>,
    mut stop: watch::Receiver<bool>,
) {
    use tokio::io::AsyncWriteExt;
    let mut writer = BufWriter::new(writer);
    loop {
        let next = tokio::select! {
            next = frames.recv() => next,
            _ = stop.wait_for(|&s| s) => None,
        };
        let Some(first) = next else { break };
        if frame::write_frame(&mut writer, &first).await.is_err() {
            break;
        }
        while let Ok(more) = frames.try_recv() {
            if frame::write_frame(&mut writer, &more).await.is_err() {
                return;
            }
        }
        if writer.flush().await.is_err() {
            break;
        }
    }
}

/// The accept loop of a node.
struct Accept {
    listener: TcpListener,
    shared: Arc<Shared>,
    refused: Arc<AtomicU64>,
    handshakes: Arc<Semaphore>,
}

impl Accept {
    async fn run(self, mut stopped: watch::Receiver<bool>) {
        let id = self.shared.local.id;
        loop {
            let Ok(permit) = Arc::clone(&self.handshakes).acquire_owned().await else { break };
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                _ = stopped.wait_for(|&s| s) => break,
            };
            let (mut stream, from) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors and the like: wait a little rather than spin.
                    warn!(node = id, error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            drop(stream.set_nodelay(true));
            let shared = Arc::clone(&self.shared);
            let refused = Arc::clone(&self.refused);
            let stop = stopped.clone();
            tokio::spawn(async move {
                let config = &shared.config;
                let greeting = handshake::server(&mut stream, &config.keyring, id, config.max_frame);
                let greeted = tokio::time::timeout(config.connect_timeout, greeting).await;
                drop(permit);
                let greeted = match greeted {
                    Ok(Ok(greeted)) => greeted,
                    Ok(Err(e)) => {
                        refuse(id, from, &e, &refused);
                        return;
                    }
                    Err(_) => {
                        debug!(node = id, %from, "a connection did not finish its handshake in time");
                        return;
                    }
                };
                debug!(node = id, %from, peer = greeted.from, purpose = ?greeted.purpose, "accepted a connection");
                serve(stream, shared, greeted.purpose, stop).await;
            });
        }
        debug!(node = id, "stopped listening");
    }
}

fn refuse(id: NodeId, from: SocketAddr, e: &HandshakeError, refused: &AtomicU64) {
    match e {
        HandshakeError::WrongSecret => {
            refused.fetch_add(1, Ordering::Relaxed);
            warn!(node = id, %from, "refused a connection: wrong cluster secret");
        }
        HandshakeError::Version { .. } | HandshakeError::NotAirorem | HandshakeError::Unexpected { .. } => {
            refused.fetch_add(1, Ordering::Relaxed);
            warn!(node = id, %from, error = %e, "refused a connection");
        }
        // The client could not verify this node's proof: the two hold different secrets.
        HandshakeError::RefusedByPeer { .. } => {
            refused.fetch_add(1, Ordering::Relaxed);
            warn!(node = id, %from, error = %e, "a connection was refused: the cluster secrets differ");
        }
        // The other side went away or sent garbage mid-handshake: nothing to act on.
        _ => debug!(node = id, %from, error = %e, "a handshake failed"),
    }
}

/// Serves the calls of one accepted connection until it closes or the node leaves.
async fn serve(stream: TcpStream, shared: Arc<Shared>, purpose: Purpose, mut stop: watch::Receiver<bool>) {
    let (reader, writer) = stream.into_split();
    let (replies, outgoing) = mpsc::channel(CALLS_PER_CONNECTION);
    tokio::spawn(write_frames(writer, outgoing, stop.clone()));
    let mut reader = BufReader::new(reader);
    let running = Arc::new(Semaphore::new(CALLS_PER_CONNECTION));
    let max_frame = shared.config.max_frame;
    loop {
        // Backpressure: the next call is read once one of those running has finished.
        let Ok(slot) = Arc::clone(&running).acquire_owned().await else { break };
        let next = tokio::select! {
            next = frame::read_frame(&mut reader, max_frame) => next,
            _ = stop.wait_for(|&s| s) => break,
        };
        let frame = match next {
            Ok(Some(frame)) if frame.kind == KIND_CALL => frame,
            Ok(Some(frame)) => {
                warn!(node = shared.local.id, kind = frame.kind, "a peer sent a frame of an unexpected kind; closing");
                break;
            }
            Ok(None) => break,
            Err(e) => {
                debug!(node = shared.local.id, error = %e, "a peer's connection failed");
                break;
            }
        };
        let replies = replies.clone();
        let local = shared.local.clone();
        tokio::spawn(async move {
            let reply = match frame::from_payload::<Call>(&frame.payload) {
                Ok(Call::Admin(call)) => local.handle(Call::Admin(call)).await,
                Ok(call) if purpose == Purpose::Peer => local.handle(call).await,
                Ok(call) => Reply::Refused(format!("a {} on an admin connection", call.name())),
                Err(e) => Reply::Refused(format!("the call does not decode: {e}")),
            };
            let payload = match frame::to_payload(&reply) {
                Ok(payload) if frame::encoded_len(payload.len()) <= max_frame => payload,
                Ok(payload) => {
                    let too_large = Reply::Refused(format!("{TOO_LARGE}: a reply of {} bytes", payload.len()));
                    frame::to_payload(&too_large).unwrap_or_default()
                }
                Err(e) => frame::to_payload(&Reply::Refused(format!("encoding the reply: {e}"))).unwrap_or_default(),
            };
            drop(replies.send(Frame { kind: KIND_REPLY, id: frame.id, payload }).await);
            drop(slot);
        });
    }
}

/// A client of a node's admin endpoint (the `airomem cluster` commands): status, members
/// and membership changes, authenticated with the cluster secret.
#[derive(Debug)]
pub struct AdminClient {
    keyring: Keyring,
    addr: String,
    timeout: Duration,
}

impl AdminClient {
    /// A client of the node listening for peers at `addr`.
    pub fn new(addr: impl Into<String>, secret: Secret) -> AdminClient {
        AdminClient {
            keyring: Keyring::new(secret),
            addr: addr.into(),
            timeout: crate::transport::admin::ADMIN_TIMEOUT,
        }
    }

    /// How long one call may take (default 10 minutes: adding a learner waits for it to
    /// catch up).
    pub fn timeout(mut self, timeout: Duration) -> AdminClient {
        self.timeout = timeout;
        self
    }

    /// Sends one admin call to `addr` and returns the reply.
    pub(crate) async fn call_at(&self, addr: &str, call: AdminCall) -> Result<AdminOutcome, Error> {
        let unavailable = |reason: String| Error::Unavailable { reason };
        let attempt = async {
            let dialed = dial(addr, &self.keyring, 0, Purpose::Admin, DEFAULT_MAX_FRAME, ADMIN_CONNECT_TIMEOUT).await;
            let (mut stream, _) = dialed.map_err(|e| match e {
                Dialed::Refused(reason) => Error::Denied { reason },
                Dialed::Failed(reason) => unavailable(reason),
            })?;
            let payload = frame::to_payload(&Call::Admin(call)).map_err(|e| unavailable(e.to_string()))?;
            frame::write_frame(&mut stream, &Frame { kind: KIND_CALL, id: 1, payload })
                .await
                .map_err(|e| unavailable(format!("sending to {addr}: {e}")))?;
            let reply = frame::read_frame(&mut stream, DEFAULT_MAX_FRAME)
                .await
                .map_err(|e| unavailable(format!("reading from {addr}: {e}")))?
                .ok_or_else(|| unavailable(format!("{addr} closed the connection")))?;
            match frame::from_payload::<Reply>(&reply.payload) {
                Ok(Reply::Admin(outcome)) => Ok(outcome),
                Ok(Reply::Refused(why)) => Err(unavailable(format!("{addr} refused the call: {why}"))),
                Ok(_) => Err(unavailable(format!("{addr} sent an unexpected reply"))),
                Err(e) => Err(unavailable(format!("{addr} sent a reply that does not decode: {e}"))),
            }
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Error::Indeterminate { reason: format!("no answer from {addr} within {:?}", self.timeout) }),
        }
    }
}

impl AdminClient {
    /// The status of the node this client talks to.
    pub async fn status(&self) -> Result<Status, Error> {
        match self.call_at(&self.addr, AdminCall::Status).await? {
            AdminOutcome::Status(status) => Ok(status),
            other => Err(unexpected(&other)),
        }
    }

    /// The group's members, as its leader knows them (as this node knows them if it knows no
    /// leader).
    pub async fn members(&self) -> Result<Members, Error> {
        match self.to_leader(AdminCall::Members).await? {
            AdminOutcome::Members(members) => Ok(members),
            other => Err(unexpected(&other)),
        }
    }

    /// Adds node `id`, listening for peers at `addr`, as a learner, and returns once it has
    /// caught up with the leader's log (see [`crate::ReplicatedStore::add_learner`]).
    pub async fn add_learner(&self, id: u64, addr: impl Into<String>) -> Result<(), Error> {
        admin::done(self.to_leader(AdminCall::AddLearner { id, addr: addr.into() }).await?)
    }

    /// Makes learners voters (see [`crate::ReplicatedStore::promote`]).
    pub async fn promote(&self, ids: impl IntoIterator<Item = u64>) -> Result<(), Error> {
        admin::done(self.to_leader(AdminCall::Promote { ids: ids.into_iter().collect() }).await?)
    }

    /// Removes node `id` from the group (see [`crate::ReplicatedStore::remove`]).
    pub async fn remove(&self, id: u64, force: bool) -> Result<(), Error> {
        admin::done(self.to_leader(AdminCall::Remove { id, force }).await?)
    }

    /// Sends `call` to the node this client talks to and follows it to the leader that node
    /// names (a few hops at most: a leader change during the call).
    async fn to_leader(&self, call: AdminCall) -> Result<AdminOutcome, Error> {
        let mut addr = self.addr.clone();
        for _ in 0..5 {
            match self.call_at(&addr, call.clone()).await? {
                AdminOutcome::NotLeader { leader: Some((_, next)) } if !next.is_empty() && next != addr => addr = next,
                AdminOutcome::NotLeader { .. } => {
                    return Err(Error::Unavailable { reason: format!("{addr} knows no leader") });
                }
                outcome => return Ok(outcome),
            }
        }
        Err(Error::Unavailable { reason: "the leader kept changing".into() })
    }
}

fn unexpected(outcome: &AdminOutcome) -> Error {
    Error::Unavailable { reason: format!("unexpected answer: {outcome:?}") }
}
