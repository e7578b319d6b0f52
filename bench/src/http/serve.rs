//! The session service's routes and JSON, the same as `examples/web/session_service.rs`, over a
//! [`Backend`] that is not airomem: the SQLite variant ([`crate::sqlite`]) and the variant
//! without storage ([`crate::memory`]). `http-bench --serve KIND` runs one as its own
//! process, so that every variant is a separate server process the load generator talks to.

use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::backend::{Backend, Session, Token, now_nanos};
use crate::error::BoxError;

/// The same limit as the example's.
const MAX_BODY_BYTES: usize = 4 * 1024;
/// How often expired sessions are removed, as in the example (first one interval after the
/// start, so never within a measurement).
const SWEEP_EVERY: Duration = Duration::from_secs(60);
const NANOS_PER_SEC: u64 = 1_000_000_000;

#[derive(Clone)]
struct App<B> {
    backend: B,
    ttl_secs: u64,
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

fn router<B: Backend>(app: App<B>) -> Router {
    Router::new()
        .route("/sessions", post(create_session::<B>))
        .route("/sessions/{token}", get(read_session::<B>).delete(delete_session::<B>))
        .route("/healthz", get(|| async { Json(serde_json::json!({ "status": "ok" })) }))
        .route("/stats", get(stats::<B>))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route") })
        .method_not_allowed_fallback(|| async { error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(app)
}

async fn create_session<B: Backend>(
    State(app): State<App<B>>,
    body: Result<Json<CreateRequest>, JsonRejection>,
) -> Response {
    let request = match body {
        Ok(Json(request)) => request,
        Err(rejection) => return error(rejection.status(), &rejection.body_text()),
    };
    let token = match new_token() {
        Ok(token) => token,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &format!("no random numbers: {e}")),
    };
    let expires_at_nanos = now_nanos().saturating_add(app.ttl_secs.saturating_mul(NANOS_PER_SEC));
    let session = Session { user_id: request.user_id, expires_at_nanos };
    match app.backend.create(token, session).await {
        Ok(()) => {
            let body = CreatedBody { token: format!("{token:032x}"), expires_at: rfc3339(expires_at_nanos) };
            (StatusCode::CREATED, Json(body)).into_response()
        }
        Err(e) => unavailable(&e),
    }
}

async fn read_session<B: Backend>(State(app): State<App<B>>, token: Result<Path<String>, PathRejection>) -> Response {
    let Some(token) = parse_token(token) else { return no_session() };
    match app.backend.read(token, now_nanos()).await {
        Ok(Some(session)) => {
            let body = SessionBody { user_id: session.user_id, expires_at: rfc3339(session.expires_at_nanos) };
            (StatusCode::OK, Json(body)).into_response()
        }
        Ok(None) => no_session(),
        Err(e) => unavailable(&e),
    }
}

async fn delete_session<B: Backend>(State(app): State<App<B>>, token: Result<Path<String>, PathRejection>) -> Response {
    let Some(token) = parse_token(token) else { return no_session() };
    let now = now_nanos();
    // As the example does: an unknown token is answered from a read, without a write.
    match app.backend.read(token, now).await {
        Ok(Some(_)) => {}
        Ok(None) => return no_session(),
        Err(e) => return unavailable(&e),
    }
    match app.backend.delete(token, now).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => no_session(),
        Err(e) => unavailable(&e),
    }
}

async fn stats<B: Backend>(State(app): State<App<B>>) -> Response {
    match app.backend.count().await {
        Ok(sessions) => Json(serde_json::json!({ "sessions": sessions })).into_response(),
        Err(e) => unavailable(&e),
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

fn no_session() -> Response {
    error(StatusCode::NOT_FOUND, "no such session")
}

fn unavailable(e: &str) -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, &format!("store unavailable: {e}"))
}

fn new_token() -> Result<Token, getrandom::Error> {
    let mut bytes = [0; 16];
    getrandom::fill(&mut bytes)?;
    Ok(Token::from_le_bytes(bytes))
}

fn parse_token(path: Result<Path<String>, PathRejection>) -> Option<Token> {
    let Path(text) = path.ok()?;
    let well_formed = text.len() == 32 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if well_formed { Token::from_str_radix(&text, 16).ok() } else { None }
}

fn rfc3339(unix_nanos: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_nanos(unix_nanos)).to_string()
}

/// Which variant `--serve` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// [`crate::sqlite::Sqlite`] with this many connections for writes.
    Sqlite { writers: u32 },
    /// [`crate::memory::Memory`].
    Memory,
}

/// Serves `kind` on `listen` (printing `listening on ADDR` once it accepts) until SIGTERM,
/// then finishes the requests in flight and returns.
pub fn run(kind: Kind, listen: std::net::SocketAddr, dir: PathBuf, ttl_secs: u64) -> Result<(), BoxError> {
    // Two workers, as `#[tokio::main]` gives the example on this machine's two cores.
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        match kind {
            Kind::Sqlite { writers } => serve(crate::sqlite::Sqlite::open(&dir, writers)?, listen, ttl_secs).await,
            Kind::Memory => serve(crate::memory::Memory::default(), listen, ttl_secs).await,
        }
    })
}

async fn serve<B: Backend>(backend: B, listen: std::net::SocketAddr, ttl_secs: u64) -> Result<(), BoxError> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let (stop, mut stopping) = watch::channel(false);
    let sweeper = tokio::spawn(sweep(backend.clone(), stopping.clone()));
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let address = listener.local_addr()?;
    let listener = listener.tap_io(|connection| {
        if let Err(e) = connection.set_nodelay(true) {
            eprintln!("TCP_NODELAY: {e}");
        }
    });
    println!("listening on {address}");
    std::io::Write::flush(&mut std::io::stdout())?;
    tokio::spawn(async move {
        terminate.recv().await;
        let _ = stop.send(true);
    });
    axum::serve(listener, router(App { backend, ttl_secs }))
        .with_graceful_shutdown(async move {
            let _ = stopping.wait_for(|stopping| *stopping).await;
        })
        .await?;
    sweeper.await?;
    Ok(())
}

async fn sweep<B: Backend>(backend: B, mut stop: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + SWEEP_EVERY, SWEEP_EVERY);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|stopping| *stopping) => return,
        }
        if let Err(e) = backend.sweep(now_nanos()).await {
            eprintln!("sweep failed: {e}");
        }
    }
}
