//! The session service of `examples/web/session_service.rs`, replicated: the same HTTP API on
//! every node of a Raft group, each node a process with its own directory. A new session is
//! answered `201` only once its command is on a majority's disks, so the loss of any one
//! node, even by `kill -9`, loses no session a client was given.
//!
//! ```text
//! head -c 32 /dev/urandom | base64 > cluster.secret
//! cargo run --release -p airomem-raft --example replicated_sessions -- --id 1 --listen 127.0.0.1:8081 \
//!     --raft 127.0.0.1:9081 --peer 2=127.0.0.1:9082 --peer 3=127.0.0.1:9083 --dir ./node-1 --init
//! # nodes 2 and 3 alike, without --init; then, on any node:
//! curl -i -X POST 127.0.0.1:8082/sessions -H 'content-type: application/json' -d '{"user_id": 42}'
//! ```
//! (`scripts/replicated-sessions` starts three nodes on loopback.)
//!
//! Options:
//! * `--id N` (required): this node's id, unique in the group.
//! * `--listen ADDR`: where clients reach it over HTTP (default `127.0.0.1:8080`; port 0
//!   picks a free one).
//! * `--raft ADDR` (required): where its peers reach it (its [`TcpTransport`]).
//! * `--advertise ADDR`: the address the peers are told to use for it, when it is not
//!   `--raft` (a NAT, a proxy; recorded in the membership when this node bootstraps).
//! * `--peer ID=ADDR`, repeated: another node's raft address.
//! * `--dir DIR` (required): its Raft log and snapshots.
//! * `--init`: bootstrap the group with this node and every `--peer` as voters. Give it to one
//!   node on the group's first start only (it is idempotent, so a repeat changes nothing).
//! * `--secret-file FILE`: the cluster secret (default `$AIROMEM_SECRET_FILE`, else
//!   `cluster.secret` in the current directory). Every node and admin client needs the same.
//! * `--election-ms MIN-MAX` (default `800-1600`), `--heartbeat-ms N` (default 100): timings
//!   that survive a loaded two-core machine; failover takes about the maximum plus a round.
//! * `--commit-timeout-ms N` (default 10,000): how long a write waits for the group.
//! * `--snapshot-every N` (default 5,000 log entries), `--logs-kept N` (entries kept behind
//!   a snapshot, default 1,000), `--min-voters N` (default 3).
//! * `--ttl-secs N` (default 3600), `--sweep-secs S` (default 60): as the single-node service.
//!
//! It prints `listening on ADDR` (the HTTP address) on stdout once it serves; logs go to
//! stderr, filtered by `RUST_LOG` (default `info`).
//!
//! | route | answer |
//! | --- | --- |
//! | `POST /sessions` `{"user_id": 42}` | `201 {"token", "expires_at"}` once committed |
//! | `GET /sessions/{token}` | `200 {"user_id", "expires_at"}`, or `404` |
//! | `DELETE /sessions/{token}` | `204`, or `404` |
//! | `GET /healthz` | `200` while the state serves reads |
//! | `GET /cluster` | `{"id", "role", "leader", "term", "last_applied", "commit_index", "snapshot_index", "purged_index", "refused_connections"}` |
//! | `GET /digest` | `{"count", "users", "hash"}`: the number of sessions, of distinct user ids, and an order-independent hash of every session, equal on nodes with equal states |
//! | `GET /cluster/members` | the voters and learners with their raft addresses |
//! | `POST /cluster/learners` `{"id", "raft_addr"}` | adds a learner (see below) |
//! | `POST /cluster/promote` `{"ids": [4]}` | makes learners voters |
//! | `DELETE /cluster/nodes/{id}` | removes a voter or learner |
//!
//! Writes may go to any node: [`ReplicatedStore::commit`] forwards them to the leader. Reads
//! (`GET /sessions/{token}` and `/digest`) take `?consistency=`:
//! * `linearizable` (the default): sees every write acknowledged anywhere before the read
//!   began; costs a round to the leader, which confirms it still leads.
//! * `leader`: served by the leader alone, without that round (`421` elsewhere, naming the
//!   leader); a leader cut off from the others may serve stale data until it notices.
//! * `stale&max_lag_ms=N`: served by any node that heard from the leader within N ms and has
//!   applied all it knows committed (`503` otherwise); may miss the last N ms of writes.
//! * `local`: whatever this node has applied, however old.
//!
//! Adding a learner returns once the leader counts it close to its log (openraft's
//! threshold: within 5,000 entries), not once it has caught up: watch its `/cluster`
//! `last_applied` reach the leader's `commit_index` before promoting it.
//!
//! The admin routes change the group's membership: a real deployment keeps them off the
//! public interface (or behind authentication). The `airomem cluster` CLI does the same
//! through the raft port instead, authenticated by the cluster secret.
//!
//! Status codes of writes: `503` when the command certainly was not applied (no leader
//! reachable: retry), `504` when its outcome is unknown (it may be applied later: read
//! before retrying), `201`/`204` once it is committed.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use airomem::{CommitContext, PostcardSerializer};
use airomem_raft::{Error, NodeConfig, ReplicatedStore, Secret, TcpConfig, TcpTransport};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// The most sessions one sweep command removes (as in the single-node service).
const SWEEP_BATCH: u32 = 10_000;
/// After a shutdown signal, how long requests in flight get before the node closes anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
const NANOS_PER_SEC: u64 = 1_000_000_000;
const SECRET_HELP: &str = "create one with: head -c 32 /dev/urandom | base64 > cluster.secret";

const USAGE: &str = "usage: replicated_sessions --id N --raft ADDR --dir DIR [--listen ADDR] [--peer ID=ADDR]... \
     [--init] [--secret-file FILE] [--advertise ADDR] [--election-ms MIN-MAX] [--heartbeat-ms N] \
     [--commit-timeout-ms N] [--snapshot-every N] [--logs-kept N] [--min-voters N] [--ttl-secs N] [--sweep-secs S]";

// The replicated state: the single-node service's, less the outcome it read back after each
// commit (a replicated commit returns a receipt; the handler reads the state itself).

/// A session token: 128 random bits, written as 32 lowercase hex digits in the API.
type Token = u128;

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
struct Session {
    user_id: u64,
    expires_at_nanos: u64,
}

#[derive(Serialize, Deserialize, Default)]
struct Sessions {
    live: HashMap<Token, Session>,
    /// `(expiry, token)` of each session in `live`, soonest first.
    by_expiry: BTreeSet<(u64, Token)>,
}

/// The commands. Each carries all `execute` needs beyond the state and [`CommitContext`]:
/// every replica executes it, and must end with the same sessions.
#[derive(Serialize, Deserialize, Debug)]
enum Command {
    /// Starts a session. The token is drawn by the handler, since a command cannot draw
    /// random numbers (each replica would draw another).
    Create {
        token: Token,
        user_id: u64,
        ttl_secs: u64,
    },
    Delete {
        token: Token,
    },
    /// Removes up to `max` sessions expired by the command's commit time (the leader's clock,
    /// the same on every replica).
    Sweep {
        max: u32,
    },
}

impl Sessions {
    fn get(&self, token: Token, now_nanos: u64) -> Option<Session> {
        self.live.get(&token).filter(|session| session.expires_at_nanos > now_nanos).copied()
    }

    fn next_expiry(&self) -> Option<u64> {
        self.by_expiry.first().map(|&(expires_at, _)| expires_at)
    }

    /// What `/digest` shows: equal on two nodes that applied the same commands.
    fn digest(&self) -> serde_json::Value {
        let users: HashSet<u64> = self.live.values().map(|s| s.user_id).collect();
        // A sum of per-session hashes does not depend on the map's iteration order, which
        // differs between processes.
        let hash = self.live.iter().fold(0u64, |sum, (&token, session)| {
            let mixed = mix(mix(token as u64 ^ (token >> 64) as u64) ^ session.user_id) ^ session.expires_at_nanos;
            sum.wrapping_add(mix(mixed))
        });
        serde_json::json!({ "count": self.live.len(), "users": users.len(), "hash": format!("{hash:016x}") })
    }
}

/// SplitMix64's finalizer: a cheap, well-mixing 64-bit hash.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl airomem::State for Sessions {
    type Command = Command;

    fn execute(&mut self, command: Command) {
        // The leader's time, stamped on the entry: every replica expires the same sessions.
        let now = CommitContext::current().expect("replicas execute every command with its context").unix_nanos;
        match command {
            Command::Create { token, user_id, ttl_secs } => {
                // A taken token keeps its session; the handler tells the client.
                if let Entry::Vacant(slot) = self.live.entry(token) {
                    let expires_at_nanos = now.saturating_add(ttl_secs.saturating_mul(NANOS_PER_SEC));
                    slot.insert(Session { user_id, expires_at_nanos });
                    self.by_expiry.insert((expires_at_nanos, token));
                }
            }
            Command::Delete { token } => {
                if let Some(session) = self.live.remove(&token) {
                    self.by_expiry.remove(&(session.expires_at_nanos, token));
                }
            }
            Command::Sweep { max } => {
                for _ in 0..max {
                    match self.by_expiry.first() {
                        Some(&(expires_at, token)) if expires_at <= now => {
                            self.by_expiry.pop_first();
                            self.live.remove(&token);
                        }
                        _ => break,
                    }
                }
            }
        }
    }
}

type Store = ReplicatedStore<Sessions>;

// The HTTP part.

#[derive(Clone)]
struct App {
    store: Arc<Store>,
    transport: Arc<TcpTransport>,
    ttl_secs: u64,
}

#[derive(Deserialize)]
struct CreateRequest {
    user_id: u64,
}

#[derive(Deserialize)]
struct LearnerRequest {
    id: u64,
    raft_addr: String,
}

#[derive(Deserialize)]
struct PromoteRequest {
    ids: Vec<u64>,
}

fn router(app: App) -> Router {
    Router::new()
        .route("/sessions", post(create_session))
        .route("/sessions/{token}", get(read_session).delete(delete_session))
        .route("/healthz", get(healthz))
        .route("/digest", get(digest))
        .route("/cluster", get(cluster))
        .route("/cluster/members", get(members))
        .route("/cluster/learners", post(add_learner))
        .route("/cluster/promote", post(promote))
        .route("/cluster/nodes/{id}", delete(remove_node))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route") })
        .with_state(app)
}

async fn create_session(State(app): State<App>, body: Result<Json<CreateRequest>, JsonRejection>) -> Response {
    let request = match body {
        Ok(Json(request)) => request,
        Err(rejection) => return error(rejection.status(), &rejection.body_text()),
    };
    let token = match new_token() {
        Ok(token) => token,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &format!("no random numbers: {e}")),
    };
    let ttl_nanos = app.ttl_secs.saturating_mul(NANOS_PER_SEC);
    match app.store.commit(Command::Create { token, user_id: request.user_id, ttl_secs: app.ttl_secs }).await {
        Ok(receipt) => {
            // Applied here before `commit` returned; a local read shows whose the token is.
            let ours = match app.store.query() {
                Ok(sessions) => sessions.live.get(&token).is_none_or(|s| s.user_id == request.user_id),
                Err(e) => return store_error(&e),
            };
            if !ours {
                return error(StatusCode::INTERNAL_SERVER_ERROR, "the drawn token is taken; try again");
            }
            // The session's expiry is computed by `execute` from the same commit time.
            let expires_at = rfc3339(receipt.unix_nanos.saturating_add(ttl_nanos));
            created(token, Some(expires_at))
        }
        // Committed (on a majority's disks, applied by the leader) but not yet applied on
        // this node: it will not be lost and will not run again, so the client gets its
        // token. A 5xx would invite a retry, which would create a second session. This node
        // cannot tell the expiry, which the commit time decides: `null`.
        Err(Error::Lagging { .. }) => created(token, None),
        Err(e) => store_error(&e),
    }
}

fn created(token: Token, expires_at: Option<String>) -> Response {
    let body = serde_json::json!({ "token": format!("{token:032x}"), "expires_at": expires_at });
    (StatusCode::CREATED, Json(body)).into_response()
}

async fn read_session(State(app): State<App>, Path(token): Path<String>, uri: Uri) -> Response {
    let consistency = match Consistency::parse(&uri) {
        Ok(consistency) => consistency,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    let Some(token) = parse_token(&token) else { return no_session() };
    // A read is never replayed, so it may use the clock.
    match read(&app, consistency, |sessions| sessions.get(token, now_nanos())).await {
        Ok(Some(session)) => {
            let body = serde_json::json!({
                "user_id": session.user_id,
                "expires_at": rfc3339(session.expires_at_nanos),
            });
            (StatusCode::OK, Json(body)).into_response()
        }
        Ok(None) => no_session(),
        Err(e) => store_error(&e),
    }
}

async fn delete_session(State(app): State<App>, Path(token): Path<String>) -> Response {
    let Some(token) = parse_token(&token) else { return no_session() };
    // An unknown token is answered without a command. The check is linearizable, so a
    // session created (anywhere) before this request is found.
    match read(&app, Consistency::Linearizable, |sessions| sessions.get(token, now_nanos()).is_some()).await {
        Ok(true) => {}
        Ok(false) => return no_session(),
        Err(e) => return store_error(&e),
    }
    match app.store.commit(Command::Delete { token }).await {
        // Committed: the session is gone (also if another request ended it in between).
        Ok(_) | Err(Error::Lagging { .. }) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => store_error(&e),
    }
}

async fn healthz(State(app): State<App>) -> Response {
    match app.store.query() {
        Ok(_) => Json(serde_json::json!({ "status": "ok" })).into_response(),
        Err(e) => store_error(&e),
    }
}

async fn digest(State(app): State<App>, uri: Uri) -> Response {
    let consistency = match Consistency::parse(&uri) {
        Ok(consistency) => consistency,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    match read(&app, consistency, Sessions::digest).await {
        Ok(digest) => Json(digest).into_response(),
        Err(e) => store_error(&e),
    }
}

async fn cluster(State(app): State<App>) -> Response {
    let status = app.store.status();
    Json(serde_json::json!({
        "id": status.id,
        "role": status.role,
        "leader": status.leader,
        "term": status.term,
        "last_applied": status.applied_index,
        "commit_index": status.commit_index,
        "snapshot_index": status.snapshot_index,
        "purged_index": status.purged_index,
        "refused_connections": app.transport.refused_connections(),
    }))
    .into_response()
}

async fn members(State(app): State<App>) -> Response {
    match app.store.members().await {
        Ok(members) => Json(members).into_response(),
        Err(e) => store_error(&e),
    }
}

async fn add_learner(State(app): State<App>, body: Result<Json<LearnerRequest>, JsonRejection>) -> Response {
    let request = match body {
        Ok(Json(request)) => request,
        Err(rejection) => return error(rejection.status(), &rejection.body_text()),
    };
    membership_changed(&app, app.store.add_learner(request.id, request.raft_addr).await).await
}

async fn promote(State(app): State<App>, body: Result<Json<PromoteRequest>, JsonRejection>) -> Response {
    let request = match body {
        Ok(Json(request)) => request,
        Err(rejection) => return error(rejection.status(), &rejection.body_text()),
    };
    membership_changed(&app, app.store.promote(request.ids).await).await
}

async fn remove_node(State(app): State<App>, Path(id): Path<u64>) -> Response {
    membership_changed(&app, app.store.remove(id).await).await
}

/// Answers a membership change with the members after it.
async fn membership_changed(app: &App, changed: Result<(), Error>) -> Response {
    match changed {
        Ok(()) => members(State(app.clone())).await,
        Err(e) => store_error(&e),
    }
}

/// How a read is served (see the module docs).
#[derive(Clone, Copy, Debug)]
enum Consistency {
    Linearizable,
    Leader,
    Stale(Duration),
    Local,
}

impl Consistency {
    /// From `?consistency=…&max_lag_ms=…`. Parsed by hand: two parameters do not warrant a
    /// query-string decoder.
    fn parse(uri: &Uri) -> Result<Consistency, String> {
        let mut consistency = None;
        let mut max_lag_ms = None;
        for pair in uri.query().unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=').unwrap_or((pair, "")) {
                ("consistency", value) => consistency = Some(value),
                ("max_lag_ms", value) => {
                    max_lag_ms = Some(value.parse::<u64>().map_err(|e| format!("max_lag_ms: {e}"))?);
                }
                (other, _) => return Err(format!("unknown parameter {other}")),
            }
        }
        match (consistency.unwrap_or("linearizable"), max_lag_ms) {
            ("linearizable", None) => Ok(Consistency::Linearizable),
            ("leader", None) => Ok(Consistency::Leader),
            ("local", None) => Ok(Consistency::Local),
            ("stale", Some(ms)) => Ok(Consistency::Stale(Duration::from_millis(ms))),
            ("stale", None) => Err("consistency=stale needs max_lag_ms".into()),
            (_, Some(_)) => Err("max_lag_ms goes with consistency=stale".into()),
            (other, None) => Err(format!("unknown consistency {other}: linearizable, leader, stale or local")),
        }
    }
}

/// Runs `f` on the state as `consistency` asks. The read lock is released before any await:
/// applying entries waits while it is held.
async fn read<T>(app: &App, consistency: Consistency, f: impl FnOnce(&Sessions) -> T) -> Result<T, Error> {
    match consistency {
        Consistency::Linearizable => app.store.query_linearizable().await.map(|sessions| f(&sessions)),
        Consistency::Leader => app.store.query_leader().map(|sessions| f(&sessions)),
        Consistency::Stale(max_lag) => app.store.query_fresh(max_lag).map(|sessions| f(&sessions)),
        Consistency::Local => app.store.query().map(|sessions| f(&sessions)),
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

fn no_session() -> Response {
    error(StatusCode::NOT_FOUND, "no such session")
}

/// The status a store error answers with. What matters to a client is whether the command
/// may have been applied: `503` says certainly not (retry freely), `504` says unknown (a
/// retry may apply it twice: read first).
fn store_error(e: &Error) -> Response {
    let (status, outcome) = match e {
        Error::Unavailable { .. } | Error::Closed | Error::Stopped { .. } | Error::TooStale { .. } => {
            (StatusCode::SERVICE_UNAVAILABLE, "not applied")
        }
        Error::Indeterminate { .. } => (StatusCode::GATEWAY_TIMEOUT, "unknown"),
        Error::NotLeader { leader } => {
            let body = serde_json::json!({ "error": e.to_string(), "leader": leader });
            return (StatusCode::MISDIRECTED_REQUEST, Json(body)).into_response();
        }
        Error::Refused { .. } => (StatusCode::CONFLICT, "not applied"),
        Error::InvalidConfig { .. } => (StatusCode::BAD_REQUEST, "not applied"),
        // Rolled back on every replica.
        Error::CommandPanicked { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "not applied"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "unknown"),
    };
    (status, Json(serde_json::json!({ "error": e.to_string(), "outcome": outcome }))).into_response()
}

fn new_token() -> Result<Token, getrandom::Error> {
    let mut bytes = [0; 16];
    getrandom::fill(&mut bytes)?;
    Ok(Token::from_le_bytes(bytes))
}

fn parse_token(text: &str) -> Option<Token> {
    let well_formed = text.len() == 32 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if well_formed { Token::from_str_radix(text, 16).ok() } else { None }
}

fn now_nanos() -> u64 {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since_epoch.as_nanos()).unwrap_or(u64::MAX)
}

fn rfc3339(unix_nanos: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_nanos(unix_nanos)).to_string()
}

/// Removes expired sessions every `every`, from the leader only: any node's sweep would do
/// (each goes through the leader), but one sweeper spares the log the others' commands.
async fn sweep_expired(store: Arc<Store>, every: Duration, mut stop: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|stopping| *stopping) => return,
        }
        if store.status().role != airomem_raft::Role::Leader {
            continue;
        }
        loop {
            // A sweep with nothing due would still be a log entry: ask the state first.
            let due = store.query().is_ok_and(|s| s.next_expiry().is_some_and(|at| at <= now_nanos()));
            if !due {
                break;
            }
            if let Err(e) = store.commit(Command::Sweep { max: SWEEP_BATCH }).await {
                tracing::warn!(error = %e, "sweep failed");
                break;
            }
        }
    }
}

/// Resolves at the first SIGTERM or Ctrl-C; the handlers are installed before it returns.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    #[cfg(unix)]
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let interrupt = tokio::signal::ctrl_c();
    Ok(async move {
        #[cfg(unix)]
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt => {}
        }
        #[cfg(not(unix))]
        let _ = interrupt.await;
    })
}

struct Options {
    id: u64,
    listen: SocketAddr,
    raft: SocketAddr,
    advertise: Option<String>,
    peers: Vec<(u64, String)>,
    dir: PathBuf,
    init: bool,
    secret_file: PathBuf,
    heartbeat: Duration,
    election: (Duration, Duration),
    commit_timeout: Duration,
    snapshot_every: u64,
    logs_kept: u64,
    min_voters: usize,
    ttl_secs: u64,
    sweep_every: Duration,
}

impl Options {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
        let (mut id, mut raft, mut dir) = (None, None, None);
        let secret_file =
            std::env::var_os("AIROMEM_SECRET_FILE").map_or_else(|| "cluster.secret".into(), PathBuf::from);
        let mut options = Options {
            id: 0,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            raft: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise: None,
            peers: Vec::new(),
            dir: PathBuf::new(),
            init: false,
            secret_file,
            heartbeat: Duration::from_millis(100),
            election: (Duration::from_millis(800), Duration::from_millis(1600)),
            commit_timeout: Duration::from_secs(10),
            snapshot_every: 5_000,
            logs_kept: 1_000,
            min_voters: 3,
            ttl_secs: 3600,
            sweep_every: Duration::from_secs(60),
        };
        let number = |flag: &str, value: String| value.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        while let Some(flag) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--id" => id = Some(number(&flag, value()?)?),
                "--listen" => options.listen = value()?.parse().map_err(|e| format!("--listen: {e}"))?,
                "--raft" => raft = Some(value()?.parse().map_err(|e| format!("--raft: {e}"))?),
                "--advertise" => options.advertise = Some(value()?),
                "--peer" => {
                    let peer = value()?;
                    let (peer_id, addr) = peer.split_once('=').ok_or("--peer takes ID=HOST:PORT")?;
                    options.peers.push((number("--peer", peer_id.into())?, addr.into()));
                }
                "--dir" => dir = Some(PathBuf::from(value()?)),
                "--init" => options.init = true,
                "--secret-file" => options.secret_file = value()?.into(),
                "--heartbeat-ms" => options.heartbeat = Duration::from_millis(number(&flag, value()?)?),
                "--election-ms" => {
                    let range = value()?;
                    let (min, max) = range.split_once('-').ok_or("--election-ms takes MIN-MAX")?;
                    let (min, max) = (number(&flag, min.into())?, number(&flag, max.into())?);
                    options.election = (Duration::from_millis(min), Duration::from_millis(max));
                }
                "--commit-timeout-ms" => options.commit_timeout = Duration::from_millis(number(&flag, value()?)?),
                "--snapshot-every" => options.snapshot_every = number(&flag, value()?)?,
                "--logs-kept" => options.logs_kept = number(&flag, value()?)?,
                "--min-voters" => {
                    options.min_voters = usize::try_from(number(&flag, value()?)?).map_err(|e| e.to_string())?;
                }
                "--ttl-secs" => options.ttl_secs = number(&flag, value()?)?.min(10 * 366 * 86_400),
                "--sweep-secs" => {
                    let secs: f64 = value()?.parse().map_err(|e| format!("--sweep-secs: {e}"))?;
                    options.sweep_every = Duration::try_from_secs_f64(secs)
                        .ok()
                        .filter(|every| !every.is_zero())
                        .ok_or("--sweep-secs: a positive number of seconds")?;
                }
                "--help" | "-h" => return Err(USAGE.into()),
                other => return Err(format!("unknown argument {other}\n{USAGE}")),
            }
        }
        options.id = id.ok_or(format!("--id is required\n{USAGE}"))?;
        options.raft = raft.ok_or(format!("--raft is required\n{USAGE}"))?;
        options.dir = dir.ok_or(format!("--dir is required\n{USAGE}"))?;
        Ok(options)
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    // Checked before anything opens, with the fix in the message: the commonest first-run
    // mistake.
    if !options.secret_file.exists() {
        eprintln!(
            "replicated_sessions: no cluster secret at {} (set --secret-file or AIROMEM_SECRET_FILE); {SECRET_HELP}",
            options.secret_file.display()
        );
        return ExitCode::from(2);
    }
    match run(options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("replicated_sessions: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(options: Options) -> Result<(), Box<dyn std::error::Error>> {
    let secret = Secret::from_file(&options.secret_file)?;
    let mut tcp = TcpConfig::new(options.raft, secret);
    if let Some(advertise) = &options.advertise {
        tcp = tcp.advertise(advertise.clone());
    }
    for (id, addr) in &options.peers {
        tcp = tcp.peer(*id, addr.clone());
    }
    let transport = Arc::new(TcpTransport::bind(tcp).await?);
    let config = NodeConfig::new(options.id, &options.dir)
        .heartbeat(options.heartbeat)
        .election_timeout(options.election.0, options.election.1)
        .commit_timeout(options.commit_timeout)
        .snapshot_every(options.snapshot_every)
        .logs_kept_after_snapshot(options.logs_kept)
        .min_voters(options.min_voters);
    let store = Arc::new(Store::open(config, PostcardSerializer, transport.as_ref()).await?);
    if options.init {
        let members = std::iter::once(options.id).chain(options.peers.iter().map(|&(id, _)| id));
        store.bootstrap(members).await?;
    }
    println!("raft on {}", transport.local_addr());

    let signal = shutdown_signal()?;
    let (stop, stopping) = watch::channel(false);
    let sweeper = tokio::spawn(sweep_expired(Arc::clone(&store), options.sweep_every, stopping.clone()));
    let app = App { store: Arc::clone(&store), transport, ttl_secs: options.ttl_secs };
    let listener = tokio::net::TcpListener::bind(options.listen).await?;
    let address = listener.local_addr()?;
    println!("listening on {address}");
    // Whoever started the process may be waiting for that line through a pipe.
    std::io::stdout().flush()?;

    tokio::spawn(async move {
        signal.await;
        let _ = stop.send(true);
    });
    let mut stopped = stopping.clone();
    let serving = axum::serve(listener, router(app))
        .with_graceful_shutdown(async move {
            let _ = stopped.wait_for(|stopping| *stopping).await;
        })
        .into_future();
    let mut deadline = stopping;
    let grace_over = async move {
        let _ = deadline.wait_for(|stopping| *stopping).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    let served = tokio::select! {
        served = serving => served,
        () = grace_over => {
            tracing::warn!("requests still in flight after {SHUTDOWN_GRACE:?}; closing anyway");
            Ok(())
        }
    };
    sweeper.await?;
    // The router (and every handler's clone) is gone with the server: this is the last
    // handle, unless a request outlived the grace period, whose drop then stops the node in
    // the background.
    match Arc::into_inner(store) {
        Some(store) => store.close().await?,
        None => tracing::warn!("a request still holds the store; it stops when that one ends"),
    }
    println!("closed");
    Ok(served?)
}
