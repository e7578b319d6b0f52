//! A session service over HTTP: an axum server whose sessions live in an airomem store. A new
//! session is answered `201` only once its command is durable on disk, so a restart, even
//! after `kill -9`, serves every session a client was given.
//!
//! ```text
//! cargo run --release -p airomem-web-examples --example session_service -- --listen 127.0.0.1:8080 --dir ./sessions
//! curl -i -X POST 127.0.0.1:8080/sessions -H 'content-type: application/json' -d '{"user_id": 42}'
//! ```
//!
//! Options: `--listen ADDR` (default `127.0.0.1:8080`; port 0 picks a free one), `--dir DIR`
//! (default `./sessions`), `--ttl-secs N` (how long a new session lives, default 3600),
//! `--sweep-secs S` (how often expired sessions are removed, default 60, fractions allowed),
//! `--snapshot-every N` (commands between automatic snapshots, default 1,000,000).
//! Once it accepts connections it prints `listening on ADDR` (the real port) on stdout.
//!
//! | route | answer |
//! | --- | --- |
//! | `POST /sessions` `{"user_id": 42}` | `201 {"token": "<32 hex digits>", "expires_at": "<RFC 3339>"}` |
//! | `GET /sessions/{token}` | `200 {"user_id": 42, "expires_at": "..."}`, or `404` if unknown or expired |
//! | `DELETE /sessions/{token}` | `204`, or `404` |
//! | `GET /healthz` | `200` while the store serves reads |
//! | `GET /stats` | the store's counters and the number of sessions in memory |
//! | `GET /metrics` | the store's metrics in Prometheus text format (series `airomem_*`, label `store="sessions"`) |
//!
//! Bad input gets a 4xx with `{"error": "..."}`: malformed JSON (400), a missing or mistyped
//! field (422), no JSON content type (415), a body over [`MAX_BODY_BYTES`] (413), an unknown
//! route (404) or method (405). An answer given without reading the request's body to its end
//! (413, 415) carries `Connection: close`, since the server then closes the connection. Before
//! it closes, it reads and discards the rest of that body, up to [`DRAIN_BYTES`] (8 MiB) or for
//! [`DRAIN_TIME`] (2 s), whichever comes first, so that a client that sends its whole body
//! before reading (Python's `http.client` does) reads the answer rather than a reset.
//!
//! To build it in your own crate: `airomem` (feature `snapshot`), `axum` 0.8, `tokio` 1
//! (features `macros`, `rt-multi-thread`, `net`, `signal`, `time`), `serde` (feature
//! `derive`), `serde_json`, `getrandom` 0.4, `http-body` 1, `humantime` 2,
//! `metrics-exporter-prometheus` 0.18 (without default features: the service serves the
//! scrape itself) and `tracing-subscriber` (feature `env-filter`).
//!
//! Who owns what: `run` opens the store and owns it. The request handlers (through the
//! router's state) and the sweeper task hold clones. On SIGTERM or Ctrl-C the server stops
//! accepting, `axum::serve` returns once the requests in flight are answered, the sweeper
//! stops, and only then does `run` close the store: nothing commits after `close`, and the
//! process exits 0 once the journal is synced and the directory released.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use airomem::{CommitContext, PostcardSerializer, PostcardStore, Store, StoreOptions};
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::StatusCode;
use axum::http::header::{CONNECTION, CONTENT_TYPE, EXPECT, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// Request bodies longer than this are refused with `413`: a create body is a few bytes, and
/// a limit keeps a client from making the server buffer megabytes.
const MAX_BODY_BYTES: usize = 4 * 1024;
/// How much of a refused body (counted from its first byte) the server reads and discards
/// before it closes the connection, so that a client still sending can read the refusal
/// (nginx's lingering close). Twice the 4 MiB bodies seen refused with a reset: enough for any
/// upload a client of this API plausibly makes by mistake, while a client that streams
/// without end costs no more than this. Each piece read counts once it has come in, so the
/// piece that crosses the bound is the last read (hyper reads at most about 400 KiB at once).
const DRAIN_BYTES: u64 = 8 * 1024 * 1024;
/// For how long at most the server reads a refused body, from the refusal: a client that
/// trickles its body holds the connection, and a graceful shutdown (which waits for it), no
/// longer than this. 8 MiB come over loopback or a LAN in a fraction of it; a client sending
/// more slowly than about 4 MiB/s may be cut off before its body's end and see a reset.
const DRAIN_TIME: Duration = Duration::from_secs(2);
/// The most sessions one sweep command removes, so that a backlog of expired sessions is
/// removed in several short write-lock holds rather than one long one.
const SWEEP_BATCH: u32 = 10_000;
/// The default of `--snapshot-every`. A snapshot bounds the journal on disk and the replay
/// at the next start (a million records replay in about half a second), but serializes the
/// whole state under the read lock while commits wait: about 120 ms for a million sessions.
/// One every 100,000 commands cost about 15 % of the creates' throughput under full load,
/// with half a million sessions.
const SNAPSHOT_EVERY_COMMANDS: u64 = 1_000_000;
/// After a shutdown signal, how long requests in flight get to finish before the store is
/// closed anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
const NANOS_PER_SEC: u64 = 1_000_000_000;

const USAGE: &str =
    "usage: session_service [--listen ADDR] [--dir DIR] [--ttl-secs N] [--sweep-secs S] [--snapshot-every N]";

// The durable part: the state and the commands that change it.

/// A session token: 128 random bits, written as 32 lowercase hex digits in the API.
type Token = u128;

/// One live session.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
struct Session {
    user_id: u64,
    expires_at_nanos: u64,
}

/// Every session, and an index that lets the sweep find the expired ones without a scan.
#[derive(Serialize, Deserialize, Default)]
struct Sessions {
    live: HashMap<Token, Session>,
    /// `(expiry, token)` of each session in `live`, soonest first.
    by_expiry: BTreeSet<(u64, Token)>,
    /// What the latest command did, read back with `commit_with` right after it. Not
    /// serialized: every command sets it before anything reads it.
    #[serde(skip)]
    outcome: Outcome,
}

/// What a command did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Outcome {
    #[default]
    Nothing,
    Created(Session),
    /// The drawn token is already in use (odds: one in 2^128 per live session).
    TokenTaken,
    Deleted,
    NotFound,
    Swept {
        /// Whether sessions that expired by this command's time are left (past `max`).
        more_due: bool,
    },
}

/// The commands. Each carries everything `execute` needs beyond the state and
/// [`CommitContext`], because every start of the service executes the journaled commands
/// again and must rebuild the very same sessions.
#[derive(Serialize, Deserialize, Debug)]
enum Command {
    /// Starts a session. The token is drawn by the handler, before the command, since a
    /// command cannot draw random numbers. The lifetime is recorded too, so that a restart
    /// with another `--ttl-secs` leaves earlier sessions' expiries as they were.
    Create { token: Token, user_id: u64, ttl_secs: u64 },
    /// Ends a session.
    Delete { token: Token },
    /// Removes up to `max` sessions that expired by this command's recorded commit time. It
    /// holds no clock reading of its own: replay removes exactly what the first run removed.
    Sweep { max: u32 },
}

impl Sessions {
    /// The session of `token`, if it exists and is not expired at `now_nanos`.
    fn get(&self, token: Token, now_nanos: u64) -> Option<Session> {
        self.live.get(&token).filter(|session| session.expires_at_nanos > now_nanos).copied()
    }

    /// When the next session expires.
    fn next_expiry(&self) -> Option<u64> {
        self.by_expiry.first().map(|&(expires_at, _)| expires_at)
    }
}

// Qualified, because axum's extractor `State` is imported by name in this file.
impl airomem::State for Sessions {
    type Command = Command;

    fn execute(&mut self, command: Command) {
        // The commit time recorded in the journal: the same at every replay, unlike the clock.
        let now = CommitContext::current().expect("the store executes every command with its context").unix_nanos;
        self.outcome = match command {
            Command::Create { token, user_id, ttl_secs } => match self.live.entry(token) {
                Entry::Occupied(_) => Outcome::TokenTaken,
                Entry::Vacant(slot) => {
                    let expires_at_nanos = now.saturating_add(ttl_secs.saturating_mul(NANOS_PER_SEC));
                    let session = Session { user_id, expires_at_nanos };
                    slot.insert(session);
                    self.by_expiry.insert((expires_at_nanos, token));
                    Outcome::Created(session)
                }
            },
            Command::Delete { token } => match self.live.remove(&token) {
                Some(session) => {
                    self.by_expiry.remove(&(session.expires_at_nanos, token));
                    // An expired session was already gone as far as clients could tell.
                    if session.expires_at_nanos > now { Outcome::Deleted } else { Outcome::NotFound }
                }
                None => Outcome::NotFound,
            },
            Command::Sweep { max } => {
                let mut removed = 0;
                while removed < max {
                    match self.by_expiry.first() {
                        Some(&(expires_at, token)) if expires_at <= now => {
                            self.by_expiry.pop_first();
                            self.live.remove(&token);
                            removed += 1;
                        }
                        _ => break,
                    }
                }
                Outcome::Swept { more_due: self.next_expiry().is_some_and(|expires_at| expires_at <= now) }
            }
        };
    }
}

// The HTTP part.

/// What every handler gets: a clone of the store, and the lifetime given to new sessions.
#[derive(Clone)]
struct App {
    store: PostcardStore<Sessions>,
    ttl_secs: u64,
    /// Renders what the process's recorder holds, for `GET /metrics`.
    metrics: PrometheusHandle,
}

#[derive(Deserialize)]
struct CreateRequest {
    user_id: u64,
}

#[derive(Serialize)]
struct CreatedBody {
    token: String,
    expires_at: String,
}

#[derive(Serialize)]
struct SessionBody {
    user_id: u64,
    expires_at: String,
}

fn router(app: App) -> Router {
    Router::new()
        .route("/sessions", post(create_session))
        .route("/sessions/{token}", get(read_session).delete(delete_session))
        .route("/healthz", get(healthz))
        .route("/stats", get(stats))
        .route("/metrics", get(metrics))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route") })
        .method_not_allowed_fallback(|| async { error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(close_if_body_unread))
        .with_state(app)
}

/// Answers a request whose body was not read to its end with `Connection: close`, and reads
/// the rest of that body, within a bound, before the connection closes.
///
/// A handler that refuses a request (a body over the limit, no JSON content type) does not
/// read all of its body, and the server then closes the connection rather than keep it for
/// a next request behind what may be megabytes of refused body. Two things follow. The
/// answer must say so: a client that is not told may send its next request on the connection
/// just as the close arrives, and that request is lost, with an error the client cannot tell
/// from a server that died. And the close must wait for the body: closed with bytes unread,
/// the connection is reset by the kernel as the client's next bytes arrive, and a client that
/// writes its whole body before reading gets `BrokenPipe` instead of the answer. So what is
/// left of the body is read and discarded in a task of its own while the answer goes out, up
/// to [`DRAIN_BYTES`] or for [`DRAIN_TIME`], whichever comes first (see [`drain`]); hyper
/// closes the connection at the body's end, or when that task gives up and drops it. Answers
/// to requests whose body was read keep the connection open.
async fn close_if_body_unread(request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let ended = Arc::new(AtomicBool::new(body.is_end_stream()));
    let expects_continue = parts
        .headers
        .get(EXPECT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("100-continue"));
    let body = Body::new(WatchedBody { body, ended: Arc::clone(&ended), read: 0, polled: false, expects_continue });
    let mut response = next.run(Request::from_parts(parts, body)).await;
    // The handler has returned, so it has read all of the body it ever will.
    if !ended.load(Ordering::Acquire) {
        response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// A request body that records when it has been read to its end, and that hands what is
/// left of it to [`drain`] when it is dropped before then.
struct WatchedBody {
    body: Body,
    ended: Arc<AtomicBool>,
    /// The bytes of body read so far.
    read: u64,
    /// Whether anything asked for the body yet.
    polled: bool,
    /// Whether the client waits to be told to send its body (`Expect: 100-continue`).
    expects_continue: bool,
}

impl HttpBody for WatchedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        self.polled = true;
        let frame = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &frame {
            self.read = self.read.saturating_add(frame.data_ref().map_or(0, |data| data.len() as u64));
        }
        if matches!(frame, Poll::Ready(None)) || self.body.is_end_stream() {
            self.ended.store(true, Ordering::Release);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for WatchedBody {
    fn drop(&mut self) {
        if self.ended.load(Ordering::Acquire) {
            return;
        }
        // A client that waits to be told (`100 Continue`, which hyper sends at the first read)
        // has sent no body while nothing read it: hyper closes without waiting for one, and
        // reading now could only ask the client to send what is refused anyway.
        if self.expects_continue && !self.polled {
            return;
        }
        let rest = std::mem::take(&mut self.body);
        let budget = DRAIN_BYTES.saturating_sub(self.read);
        // Bodies are dropped in the runtime's tasks; were one not, hyper would close at once.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(drain(rest, budget));
        }
    }
}

/// Reads and discards `body` until its end, until `budget` bytes have come in, or for
/// [`DRAIN_TIME`], whichever comes first. Dropping the body at the end lets hyper close the
/// connection: at once, with an orderly end, if the body was read to its end; otherwise with
/// the rest unread, which the client sees as a reset.
async fn drain(mut body: Body, budget: u64) {
    let reading = async {
        let mut left = budget;
        while left > 0 {
            match std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                Some(Ok(frame)) => left = left.saturating_sub(frame.data_ref().map_or(0, |data| data.len() as u64)),
                // The body's end, or the client stopped sending (a malformed chunk, a reset).
                None | Some(Err(_)) => return,
            }
        }
    };
    // Out of time: the body is dropped unread as well.
    let _ = tokio::time::timeout(DRAIN_TIME, reading).await;
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
    let command = Command::Create { token, user_id: request.user_id, ttl_secs: app.ttl_secs };
    // Returns once the command is journaled and synced: only then may the client learn
    // the token.
    match app.store.commit_with(command, |sessions| sessions.outcome).await {
        Ok(Outcome::Created(session)) => {
            let body = CreatedBody { token: format!("{token:032x}"), expires_at: rfc3339(session.expires_at_nanos) };
            (StatusCode::CREATED, Json(body)).into_response()
        }
        Ok(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "the drawn token is taken; try again"),
        Err(e) => store_error(&e),
    }
}

async fn read_session(State(app): State<App>, token: Result<Path<String>, PathRejection>) -> Response {
    let Some(token) = parse_token(token) else { return no_session() };
    // A read is never replayed, so it may use the clock.
    match app.store.query() {
        Ok(sessions) => match sessions.get(token, now_nanos()) {
            Some(session) => {
                let body = SessionBody { user_id: session.user_id, expires_at: rfc3339(session.expires_at_nanos) };
                (StatusCode::OK, Json(body)).into_response()
            }
            None => no_session(),
        },
        Err(e) => store_error(&e),
    }
}

async fn delete_session(State(app): State<App>, token: Result<Path<String>, PathRejection>) -> Response {
    let Some(token) = parse_token(token) else { return no_session() };
    // An unknown token is answered from memory, without a journal record. The command
    // decides again: another request, or the sweep, may end the session in between.
    match app.store.query() {
        Ok(sessions) if sessions.get(token, now_nanos()).is_none() => return no_session(),
        Ok(_) => {}
        Err(e) => return store_error(&e),
    }
    match app.store.commit_with(Command::Delete { token }, |sessions| sessions.outcome).await {
        Ok(Outcome::Deleted) => StatusCode::NO_CONTENT.into_response(),
        Ok(_) => no_session(),
        Err(e) => store_error(&e),
    }
}

async fn healthz(State(app): State<App>) -> Response {
    match app.store.query() {
        Ok(_) => Json(serde_json::json!({ "status": "ok" })).into_response(),
        Err(e) => store_error(&e),
    }
}

async fn stats(State(app): State<App>) -> Response {
    let sessions = match app.store.query() {
        Ok(sessions) => sessions.live.len(),
        Err(e) => return store_error(&e),
    };
    let stats = app.store.stats();
    Json(serde_json::json!({
        "sessions_in_memory": sessions,
        "store": {
            "commits": stats.commits,
            "aborted": stats.aborted,
            "batches": stats.batches,
            "syncs": stats.syncs,
            "average_batch": stats.average_batch(),
            "journal_bytes": stats.journal_bytes,
            "segments_created": stats.segments_created,
            "last_seq": stats.last_seq,
            "segments": stats.segments,
            "snapshot_seq": stats.snapshot_seq,
            "records_since_snapshot": stats.records_since_snapshot(),
            "oldest_schema_on_disk": stats.oldest_schema_on_disk,
            "last_snapshot_raw_bytes": stats.last_snapshot_raw_bytes,
            "resident_bytes": stats.resident_bytes,
        },
    }))
    .into_response()
}

/// The Prometheus scrape: the store's series and anything else recorded in this process.
async fn metrics(State(app): State<App>) -> Response {
    let text = app.metrics.render();
    ([(CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"))], text).into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

fn no_session() -> Response {
    error(StatusCode::NOT_FOUND, "no such session")
}

/// The store refused: it is closing, or a failed write or sync stopped it taking commits
/// (the command's outcome is then unknown). Either way a later try may succeed.
fn store_error(e: &airomem::Error) -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, &format!("store unavailable: {e}"))
}

/// 128 bits from the operating system's generator: unguessable, unlike a counter.
fn new_token() -> Result<Token, getrandom::Error> {
    let mut bytes = [0; 16];
    getrandom::fill(&mut bytes)?;
    Ok(Token::from_le_bytes(bytes))
}

/// The token in a path, if it has the shape of one (anything else cannot name a session).
fn parse_token(path: Result<Path<String>, PathRejection>) -> Option<Token> {
    let Path(text) = path.ok()?;
    let well_formed = text.len() == 32 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if well_formed { Token::from_str_radix(&text, 16).ok() } else { None }
}

fn now_nanos() -> u64 {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since_epoch.as_nanos()).unwrap_or(u64::MAX)
}

fn rfc3339(unix_nanos: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_nanos(unix_nanos)).to_string()
}

/// Removes expired sessions every `every` until `stop` says so, so that memory holds only
/// the sessions of the last TTL whatever the load.
async fn sweep_expired(store: PostcardStore<Sessions>, every: Duration, mut stop: watch::Receiver<bool>) {
    // The first sweep comes one interval after the start, not at once: what was due at the
    // last shutdown is swept then, while the service is already serving.
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|stopping| *stopping) => return,
        }
        loop {
            // A sweep with nothing due would still be journaled (and replayed at every
            // start): ask the state first.
            let due = match store.query() {
                Ok(sessions) => sessions.next_expiry().is_some_and(|expires_at| expires_at <= now_nanos()),
                Err(e) => {
                    eprintln!("sweep skipped: {e}");
                    false
                }
            };
            if !due {
                break;
            }
            match store.commit_with(Command::Sweep { max: SWEEP_BATCH }, |sessions| sessions.outcome).await {
                Ok(Outcome::Swept { more_due: true }) => {}
                Ok(_) => break,
                Err(e) => {
                    eprintln!("sweep failed: {e}");
                    break;
                }
            }
        }
    }
}

/// Resolves at the first SIGTERM or Ctrl-C. The handlers are installed before it returns
/// the future, so a signal that comes right after `listening on` is not missed (the default
/// action would kill the process instead).
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
    listen: SocketAddr,
    dir: PathBuf,
    ttl_secs: u64,
    sweep_every: Duration,
    snapshot_every: u64,
}

impl Options {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
        let mut options = Options {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            dir: PathBuf::from("./sessions"),
            ttl_secs: 3600,
            sweep_every: Duration::from_secs(60),
            snapshot_every: SNAPSHOT_EVERY_COMMANDS,
        };
        while let Some(flag) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--listen" => options.listen = value()?.parse().map_err(|e| format!("--listen: {e}"))?,
                "--dir" => options.dir = value()?.into(),
                // Ten years at most, so that every expiry stays a valid timestamp.
                "--ttl-secs" => {
                    options.ttl_secs = value()?.parse().map_err(|e| format!("--ttl-secs: {e}"))?;
                    if options.ttl_secs > 10 * 366 * 86_400 {
                        return Err("--ttl-secs: at most ten years".into());
                    }
                }
                "--sweep-secs" => {
                    let secs: f64 = value()?.parse().map_err(|e| format!("--sweep-secs: {e}"))?;
                    options.sweep_every = Duration::try_from_secs_f64(secs)
                        .ok()
                        .filter(|every| !every.is_zero())
                        .ok_or("--sweep-secs: a positive number of seconds")?;
                }
                "--snapshot-every" => {
                    options.snapshot_every = value()?.parse().map_err(|e| format!("--snapshot-every: {e}"))?;
                }
                "--help" | "-h" => return Err(USAGE.into()),
                other => return Err(format!("unknown argument {other}\n{USAGE}")),
            }
        }
        Ok(options)
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    // airomem reports what recovery repaired through `tracing`; stdout is kept for the
    // `listening on` line.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .init();
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    match run(options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("session_service: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(options: Options) -> Result<(), Box<dyn std::error::Error>> {
    // Installed before the store opens: the store registers its series with the recorder
    // it finds then. One recorder per process, so this is the only place that installs it.
    let metrics = PrometheusBuilder::new().install_recorder()?;
    let store_options =
        StoreOptions::default().snapshot_every_commands(options.snapshot_every).metrics_label("sessions");
    let store: PostcardStore<Sessions> = Store::open_with(PostcardSerializer, &options.dir, store_options).await?;
    let recovery = store.recovery();
    println!(
        "opened {}: {} sessions, {} journal records replayed in {:.2?}",
        options.dir.display(),
        store.query()?.live.len(),
        recovery.records_replayed,
        recovery.duration
    );

    let signal = shutdown_signal()?;
    let (stop, stopping) = watch::channel(false);
    let sweeper = tokio::spawn(sweep_expired(store.clone(), options.sweep_every, stopping.clone()));
    let app = router(App { store: store.clone(), ttl_secs: options.ttl_secs, metrics });
    let listener = tokio::net::TcpListener::bind(options.listen).await?;
    let address = listener.local_addr()?;
    // Small answers go out at once instead of waiting on the client's delayed ACK.
    let listener = listener.tap_io(|connection| {
        if let Err(e) = connection.set_nodelay(true) {
            eprintln!("TCP_NODELAY: {e}");
        }
    });
    println!("listening on {address}");
    // Whoever started the process may be waiting for that line through a pipe.
    std::io::stdout().flush()?;

    let stop_sweeper = stop.clone();
    tokio::spawn(async move {
        signal.await;
        // Every receiver lives as long as `run`, so the send cannot fail while it matters.
        let _ = stop.send(true);
    });
    let mut stopped = stopping.clone();
    let serving = axum::serve(listener, app)
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
            eprintln!("requests still in flight after {SHUTDOWN_GRACE:?}; closing the store anyway");
            Ok(())
        }
    };

    // Closed whatever ended the serving, so that the journal is trimmed and the directory
    // released before the process exits.
    let _ = stop_sweeper.send(true);
    sweeper.await?;
    store.close().await?;
    println!("store closed");
    Ok(served?)
}
