//! The session service example (`examples/web/session_service.rs`) run the way its users run
//! it: a real process on a free loopback port, driven by concurrent HTTP clients, killed with
//! SIGKILL in the middle of the load and restarted on the same directory, where every
//! session whose create was answered `201` must be served with its user id and expiry.
//! Then bad input, deletion, a graceful SIGTERM under load, and expiry by the sweep; and
//! refused bodies sent by hand-written clients that write their whole body before reading,
//! within the bound the service drains and far past it. And `GET /metrics`, scraped under
//! load, with every series of the store and figures that match the load and `/stats`.
//!
//! The binary is the one `cargo test` builds beside this test (`target/debug/examples/`).

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpSocket;
use tokio::process::{Child, Command};
use tokio::sync::{Notify, oneshot};

/// Concurrent clients during the crash.
const WRITERS: u64 = 32;
/// How many `201`s the clients collect before the service is killed.
const KILL_AFTER: u64 = 2_000;
/// How many more `201`s the clients collect before the service is sent SIGTERM.
const TERMINATE_AFTER: u64 = 500;
/// A bound on each client's requests, so that a service that never dies cannot loop a test.
const MAX_REQUESTS_PER_CLIENT: u64 = 10_000;
/// How long anything the service should do at once may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(30);

/// The example's binary, as `cargo test` builds it beside the test binaries: the test
/// binary is `target/<profile>/deps/<test>`, the example
/// `target/<profile>/examples/session_service`.
///
/// # Panics
///
/// If the binary is missing or older than its source (`cargo test --test session_service`
/// alone does not rebuild examples), with a message saying how to build it.
fn service_binary() -> PathBuf {
    let test_binary = std::env::current_exe().expect("the test binary's path");
    let profile_dir =
        test_binary.parent().and_then(Path::parent).expect("the test binary lies in target/<profile>/deps");
    let binary = profile_dir.join("examples").join(format!("session_service{}", std::env::consts::EXE_SUFFIX));
    let build = "`cargo test -p airomem-web-examples` builds it; `--test session_service` alone does not: \
                 run `cargo build -p airomem-web-examples --example session_service` first";
    let built = std::fs::metadata(&binary)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("the example binary {} is missing ({e}): {build}", binary.display()));
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("session_service.rs");
    let edited = std::fs::metadata(&source).and_then(|m| m.modified()).expect("the example's source");
    assert!(built >= edited, "the example binary {} is older than its source: {build}", binary.display());
    binary
}

/// A running service. Dropping it kills the process (`kill_on_drop`), also when a test
/// fails, and a failing test prints what the service wrote.
struct Service {
    child: Child,
    base: String,
    output: Arc<Mutex<String>>,
    /// The tasks reading its stdout and stderr: done once the process has exited and they
    /// have read its last lines.
    collectors: Vec<tokio::task::JoinHandle<()>>,
}

impl Service {
    /// Starts the service on `dir` with `args` and waits for its `listening on` line.
    async fn start(dir: &Path, args: &[&str]) -> Service {
        let mut child = Command::new(service_binary())
            .args(["--listen", "127.0.0.1:0", "--dir"])
            .arg(dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the service");
        let output = Arc::new(Mutex::new(String::new()));
        let (listening, address) = oneshot::channel();
        // Both pipes are read to the end, so that the service never blocks on a full pipe or
        // fails on a closed one.
        let collectors = vec![
            tokio::spawn(collect(child.stdout.take().expect("stdout"), Arc::clone(&output), Some(listening))),
            tokio::spawn(collect(child.stderr.take().expect("stderr"), Arc::clone(&output), None)),
        ];
        let address = match tokio::time::timeout(PATIENCE, address).await {
            Ok(Ok(address)) => address,
            _ => panic!("the service did not say where it listens; it wrote:\n{}", output.lock().expect("output")),
        };
        Service { child, base: format!("http://{address}"), output, collectors }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The address it listens on.
    fn address(&self) -> std::net::SocketAddr {
        let address = self.base.strip_prefix("http://").expect("an http:// base");
        address.parse().expect("a socket address")
    }

    fn pid(&self) -> rustix::process::Pid {
        let pid = self.child.id().expect("the service is running");
        let pid = i32::try_from(pid).expect("a pid fits a pid_t");
        rustix::process::Pid::from_raw(pid).expect("a child's pid is positive")
    }

    /// SIGKILL, and waits until the process is gone.
    async fn kill(&mut self) {
        self.child.kill().await.expect("SIGKILL the service");
    }

    /// SIGTERM, and the exit status once the process has shut down and everything it wrote
    /// has been read (an exited process's last lines may still sit in its pipes).
    async fn terminate(&mut self) -> ExitStatus {
        // The pid is our own child's, not yet reaped, so it names no other process.
        rustix::process::kill_process(self.pid(), rustix::process::Signal::TERM).expect("SIGTERM the service");
        let status = match tokio::time::timeout(PATIENCE, self.child.wait()).await {
            Ok(status) => status.expect("wait for the service"),
            Err(_) => panic!("the service did not exit within {PATIENCE:?} of SIGTERM"),
        };
        for collector in self.collectors.drain(..) {
            match tokio::time::timeout(PATIENCE, collector).await {
                Ok(done) => done.expect("the output collector"),
                Err(_) => panic!("the service's pipes stayed open {PATIENCE:?} after it exited"),
            }
        }
        status
    }

    /// What the service wrote on stdout and stderr so far.
    fn output(&self) -> String {
        self.output.lock().expect("output").clone()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("the service wrote:\n{}", self.output());
        }
    }
}

/// Appends each line of `pipe` to `output`; the address of the `listening on` line goes to
/// `listening`.
async fn collect(
    pipe: impl AsyncRead + Unpin,
    output: Arc<Mutex<String>>,
    mut listening: Option<oneshot::Sender<String>>,
) {
    let mut lines = BufReader::new(pipe).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(address) = line.strip_prefix("listening on ")
            && let Some(listening) = listening.take()
        {
            let _ = listening.send(address.to_string());
        }
        let mut output = output.lock().expect("output");
        output.push_str(&line);
        output.push('\n');
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(PATIENCE).build().expect("HTTP client")
}

/// A session as its create answered it.
#[derive(Clone, Debug)]
struct Created {
    token: String,
    user_id: u64,
    expires_at: String,
}

/// Creates a session for `user_id`; `Err` if the request got no answer (the service is
/// gone). Any answer but `201` fails the test.
async fn create(client: &reqwest::Client, service_base: &str, user_id: u64) -> Result<Created, reqwest::Error> {
    let response = client.post(format!("{service_base}/sessions")).json(&json!({ "user_id": user_id })).send().await?;
    let status = response.status();
    let body: Value = response.json().await?;
    assert_eq!(status, StatusCode::CREATED, "create for user {user_id}: {body}");
    let token = body["token"].as_str().expect("a token").to_string();
    assert!(token.len() == 32 && token.bytes().all(|b| b.is_ascii_hexdigit()), "token {token}");
    let expires_at = body["expires_at"].as_str().expect("an expiry").to_string();
    Ok(Created { token, user_id, expires_at })
}

/// Clients create sessions from `writers` tasks until the service stops answering; once
/// `signal_after` `201`s have come back, `reached` is notified. Returns every session
/// answered `201`, once all the tasks have ended.
struct Load {
    created: Arc<Mutex<Vec<Created>>>,
    reached: Arc<Notify>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(service: &Service, writers: u64, signal_after: u64, first_user: u64) -> Load {
        let created = Arc::new(Mutex::new(Vec::new()));
        let reached = Arc::new(Notify::new());
        let count = Arc::new(AtomicU64::new(0));
        let client = client();
        let tasks = (0..writers)
            .map(|writer| {
                let (created, reached, count, client) =
                    (Arc::clone(&created), Arc::clone(&reached), Arc::clone(&count), client.clone());
                let base = service.base.clone();
                tokio::spawn(async move {
                    for i in 0..MAX_REQUESTS_PER_CLIENT {
                        let user_id = first_user + writer * MAX_REQUESTS_PER_CLIENT + i;
                        let Ok(session) = create(&client, &base, user_id).await else { return };
                        created.lock().expect("created").push(session);
                        if count.fetch_add(1, Ordering::SeqCst) + 1 == signal_after {
                            reached.notify_one();
                        }
                    }
                })
            })
            .collect();
        Load { created, reached, tasks }
    }

    async fn wait_for_count(&self, what: &str) {
        if tokio::time::timeout(PATIENCE, self.reached.notified()).await.is_err() {
            panic!("{what}: the clients did not get their 201s within {PATIENCE:?}");
        }
    }

    async fn finish(self) -> Vec<Created> {
        for task in self.tasks {
            task.await.expect("a client task");
        }
        std::mem::take(&mut *self.created.lock().expect("created"))
    }
}

async fn get_json(client: &reqwest::Client, url: &str) -> (StatusCode, Value) {
    let response = client.get(url).send().await.expect("GET");
    let status = response.status();
    (status, response.json().await.unwrap_or_else(|e| panic!("GET {url}: {status}, not JSON: {e}")))
}

async fn sessions_in_memory(client: &reqwest::Client, service: &Service) -> u64 {
    let (status, stats) = get_json(client, &service.url("/stats")).await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    stats["sessions_in_memory"].as_u64().expect("sessions_in_memory")
}

/// Every session in `sessions` is served, with the user id and expiry its create answered.
async fn assert_all_served(client: &reqwest::Client, service: &Service, sessions: &[Created], when: &str) {
    for session in sessions {
        let (status, body) = get_json(client, &service.url(&format!("/sessions/{}", session.token))).await;
        assert_eq!(status, StatusCode::OK, "{when}: session of user {} is gone: {body}", session.user_id);
        assert_eq!(body["user_id"], session.user_id, "{when}: {body}");
        // The expiry was computed from the recorded commit time, so replay gives it back
        // exactly, not from the time of the restart.
        assert_eq!(body["expires_at"], session.expires_at.as_str(), "{when}: {body}");
    }
}

/// A request with bad input gets `status` and a JSON error.
async fn assert_refused(request: reqwest::RequestBuilder, status: StatusCode, what: &str) {
    let response = request.send().await.unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
    assert_eq!(response.status(), status, "{what}");
    let content_type = response.headers().get("content-type").map(|v| v.to_str().expect("ascii").to_string());
    assert_eq!(content_type.as_deref(), Some("application/json"), "{what}");
    let body: Value = response.json().await.unwrap_or_else(|e| panic!("{what}: not JSON: {e}"));
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{what}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_load_restarted_serves_every_acknowledged_session_then_shuts_down_cleanly() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("sessions");
    let client = client();

    // SIGKILL in the middle of the load: some creates are answered, some are in flight.
    let mut service = Service::start(&dir, &[]).await;
    let load = Load::start(&service, WRITERS, KILL_AFTER, 0);
    load.wait_for_count("before SIGKILL").await;
    service.kill().await;
    let mut acknowledged = load.finish().await;
    let before_kill = acknowledged.len();
    assert!(before_kill as u64 >= KILL_AFTER);
    drop(service);

    let mut service = Service::start(&dir, &[]).await;
    assert_all_served(&client, &service, &acknowledged, "after SIGKILL").await;
    let recovered = sessions_in_memory(&client, &service).await;
    // Each client had at most one create in flight when the process died.
    let in_flight = recovered - acknowledged.len() as u64;
    assert!(in_flight <= WRITERS, "{recovered} sessions recovered, {} acknowledged", acknowledged.len());

    // Bad input: a 4xx and a JSON error each, never a 5xx.
    let sessions = service.url("/sessions");
    let post_json = |body: String| client.post(&sessions).header("content-type", "application/json").body(body);
    assert_refused(post_json(r#"{"user_id": "#.into()), StatusCode::BAD_REQUEST, "malformed JSON").await;
    assert_refused(post_json("{}".into()), StatusCode::UNPROCESSABLE_ENTITY, "missing field").await;
    assert_refused(post_json(r#"{"user_id": "seven"}"#.into()), StatusCode::UNPROCESSABLE_ENTITY, "wrong type").await;
    assert_refused(post_json(r#"{"user_id": -1}"#.into()), StatusCode::UNPROCESSABLE_ENTITY, "negative id").await;
    let big = format!(r#"{{"user_id": 1, "padding": "{}"}}"#, "x".repeat(70 * 1024));
    assert_refused(post_json(big), StatusCode::PAYLOAD_TOO_LARGE, "70 KiB body").await;
    assert_refused(client.post(&sessions).body(r#"{"user_id": 1}"#), StatusCode::UNSUPPORTED_MEDIA_TYPE, "no type")
        .await;
    assert_refused(client.get(service.url("/no/such/route")), StatusCode::NOT_FOUND, "unknown route").await;
    assert_refused(client.put(&sessions), StatusCode::METHOD_NOT_ALLOWED, "unknown method").await;
    assert_refused(client.get(service.url("/sessions/not-a-token")), StatusCode::NOT_FOUND, "malformed token").await;
    let unknown = "0123456789abcdef0123456789abcdef";
    assert_refused(client.get(service.url(&format!("/sessions/{unknown}"))), StatusCode::NOT_FOUND, "unknown").await;
    assert_refused(client.delete(service.url(&format!("/sessions/{unknown}"))), StatusCode::NOT_FOUND, "unknown").await;
    let (status, health) = get_json(&client, &service.url("/healthz")).await;
    assert_eq!((status, &health["status"]), (StatusCode::OK, &json!("ok")));
    assert_eq!(sessions_in_memory(&client, &service).await, recovered, "bad input changed nothing");

    // Delete, then the session is gone, and a second delete finds nothing.
    let ended = acknowledged.swap_remove(0);
    let url = service.url(&format!("/sessions/{}", ended.token));
    let deleted = client.delete(&url).send().await.expect("DELETE");
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_refused(client.get(&url), StatusCode::NOT_FOUND, "GET after DELETE").await;
    assert_refused(client.delete(&url), StatusCode::NOT_FOUND, "DELETE after DELETE").await;

    // SIGTERM in the middle of the load: requests in flight are answered, the store is
    // closed, the process exits 0.
    let load = Load::start(&service, WRITERS / 4, TERMINATE_AFTER, WRITERS * MAX_REQUESTS_PER_CLIENT);
    load.wait_for_count("before SIGTERM").await;
    let status = service.terminate().await;
    let during_shutdown = load.finish().await;
    assert!(status.success(), "exit after SIGTERM: {status}");
    assert!(service.output().contains("store closed"), "{}", service.output());
    drop(service);
    acknowledged.extend(during_shutdown.iter().cloned());

    let service = Service::start(&dir, &[]).await;
    assert_all_served(&client, &service, &acknowledged, "after SIGTERM").await;
    // A graceful shutdown answers what it takes in, so nothing was created unseen.
    let expected = recovered - 1 + during_shutdown.len() as u64;
    assert_eq!(sessions_in_memory(&client, &service).await, expected);
    drop(service);
    eprintln!(
        "{before_kill} creates acknowledged before SIGKILL ({in_flight} more were in flight), {} \
         before SIGTERM; all served after restarts, in {:.1?}",
        during_shutdown.len(),
        started.elapsed()
    );
}

/// How many times a refused body is followed by a request on the same client.
const REFUSED_ROUNDS: u32 = 200;

/// Sends `request` and reads its answer to the end: the status and the `Connection` header.
async fn answer_and_connection(request: reqwest::RequestBuilder, what: &str) -> (StatusCode, Option<String>) {
    let response = request.send().await.unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
    let status = response.status();
    let connection =
        response.headers().get(reqwest::header::CONNECTION).map(|v| v.to_str().expect("ascii").to_string());
    response.bytes().await.unwrap_or_else(|e| panic!("{what}: body: {e}"));
    (status, connection)
}

/// A request refused before its body was read leaves that body's bytes unread, and the
/// server closes the connection after its answer. The answer must say so
/// (`Connection: close`): a client not told reuses the connection for its next request,
/// which is lost when the close arrives. Answers to requests whose body was read keep the
/// connection open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_refused_unread_closes_its_connection_and_says_so() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let service = Service::start(&tmp.path().join("sessions"), &[]).await;
    let client = client();
    let sessions = service.url("/sessions");
    let big = format!(r#"{{"user_id": 1, "padding": "{}"}}"#, "x".repeat(70 * 1024));
    for round in 0..REFUSED_ROUNDS {
        let refused = [
            (
                client.post(&sessions).header("content-type", "application/json").body(big.clone()),
                StatusCode::PAYLOAD_TOO_LARGE,
            ),
            (client.post(&sessions).body(r#"{"user_id": 1}"#), StatusCode::UNSUPPORTED_MEDIA_TYPE),
        ];
        for (request, status) in refused {
            let what = format!("round {round}, {status}");
            let (answered, connection) = answer_and_connection(request, &what).await;
            assert_eq!(answered, status, "{what}");
            assert_eq!(connection.as_deref(), Some("close"), "{what}");
            // The next request on the same client must not be sent on the closing connection.
            let what = format!("round {round}, GET after {status}");
            let (answered, connection) = answer_and_connection(client.get(service.url("/healthz")), &what).await;
            assert_eq!(answered, StatusCode::OK, "{what}");
            assert_eq!(connection, None, "{what}: a body-less request keeps the connection");
        }
        let what = format!("round {round}, create");
        let create = client.post(&sessions).json(&json!({ "user_id": round }));
        let (answered, connection) = answer_and_connection(create, &what).await;
        assert_eq!(answered, StatusCode::CREATED, "{what}");
        assert_eq!(connection, None, "{what}: a create's body is read, so it keeps the connection");
    }
    assert_eq!(sessions_in_memory(&client, &service).await, u64::from(REFUSED_ROUNDS));
}

/// How much of a refused request's body the service reads and discards before it closes the
/// connection (`DRAIN_BYTES` in the example).
const DRAIN_BYTES: usize = 8 * 1024 * 1024;
/// The pieces a hand-written request's body is written in (and the size of each chunk).
const PIECE: usize = 64 * 1024;

/// How a hand-written request frames its body.
#[derive(Clone, Copy, Debug)]
enum Framing {
    ContentLength,
    Chunked,
}

/// A `POST /sessions` with a body of `len` bytes, written by hand the way Python's
/// `http.client` sends it: the head and the whole body, and only then a read of the answer.
struct WholeBody {
    framing: Framing,
    len: usize,
    /// Whether the request says its body is JSON (without, the service answers `415`).
    json: bool,
}

impl WholeBody {
    fn head(&self) -> String {
        let mut head = String::from("POST /sessions HTTP/1.1\r\nhost: localhost\r\n");
        if self.json {
            head.push_str("content-type: application/json\r\n");
        }
        match self.framing {
            Framing::ContentLength => head.push_str(&format!("content-length: {}\r\n", self.len)),
            Framing::Chunked => head.push_str("transfer-encoding: chunked\r\n"),
        }
        head.push_str("\r\n");
        head
    }

    /// The body's pieces on the wire, in order: `PIECE` bytes each (the last may be shorter),
    /// framed as chunks if the request is chunked, then the last chunk.
    fn pieces(&self) -> impl Iterator<Item = Vec<u8>> {
        let (framing, len) = (self.framing, self.len);
        let data = (0..len.div_ceil(PIECE)).map(move |i| {
            let size = PIECE.min(len - i * PIECE);
            match framing {
                Framing::ContentLength => vec![b'x'; size],
                Framing::Chunked => {
                    let mut chunk = format!("{size:x}\r\n").into_bytes();
                    chunk.resize(chunk.len() + size, b'x');
                    chunk.extend_from_slice(b"\r\n");
                    chunk
                }
            }
        });
        let last = match framing {
            Framing::ContentLength => None,
            Framing::Chunked => Some(b"0\r\n\r\n".to_vec()),
        };
        data.chain(last)
    }
}

/// A connection to the service whose send buffer is small, so that what the client manages
/// to write is what the server read plus little more than the server's receive buffer; and
/// the size of that send buffer.
async fn connect(service: &Service) -> (tokio::net::TcpStream, usize) {
    let socket = TcpSocket::new_v4().expect("a socket");
    socket.set_send_buffer_size(64 * 1024).expect("SO_SNDBUF");
    let send_buffer = socket.send_buffer_size().expect("SO_SNDBUF");
    let stream = socket.connect(service.address()).await.expect("connect to the service");
    (stream, usize::try_from(send_buffer).expect("a buffer size fits usize"))
}

/// An answer read to the end of the connection: its status, its headers (names in lower
/// case) and its body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn parse(bytes: &[u8], what: &str) -> Answer {
        let text = String::from_utf8_lossy(bytes);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("{what}: no answer head in {text:?}"));
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("{what}: status line {status_line:?}"));
        let headers = lines
            .map(|line| {
                let (name, value) = line.split_once(':').unwrap_or_else(|| panic!("{what}: header {line:?}"));
                (name.trim().to_ascii_lowercase(), value.trim().to_string())
            })
            .collect();
        Answer { status, headers, body: body.as_bytes().to_vec() }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, value)| value.as_str())
    }
}

/// Sends `request`, its whole body before reading anything, then reads the answer to the end
/// of the connection.
async fn send_whole_body_then_read(service: &Service, request: &WholeBody) -> std::io::Result<Vec<u8>> {
    let (mut stream, _) = connect(service).await;
    stream.write_all(request.head().as_bytes()).await?;
    for piece in request.pieces() {
        stream.write_all(&piece).await?;
    }
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    Ok(answer)
}

/// A client that writes its whole body before it reads (Python's `http.client` does) must be
/// able to read why it was refused. The service refuses a body over its 4 KiB limit before
/// reading it all; were it to close the connection with the rest of the body unread, the
/// kernel would answer the client's next bytes with a reset, and the client would see
/// `BrokenPipe` or `ConnectionReset` instead of the `413`. So the service reads and discards
/// up to `DRAIN_BYTES` of a refused body, and closes only after: every body within that bound
/// gets its answer, with `Connection: close`, followed by an orderly end of the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_writes_its_whole_body_before_reading_gets_the_refusal() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let service = Service::start(&tmp.path().join("sessions"), &[]).await;
    // Just under the bound: the little the handler reads before it refuses counts too.
    let just_under = DRAIN_BYTES - PIECE;
    let requests = [
        (WholeBody { framing: Framing::ContentLength, len: 4 * 1024 * 1024, json: true }, 413),
        (WholeBody { framing: Framing::ContentLength, len: just_under, json: true }, 413),
        (WholeBody { framing: Framing::Chunked, len: 4 * 1024 * 1024, json: true }, 413),
        (WholeBody { framing: Framing::Chunked, len: just_under, json: true }, 413),
        // Refused without a single byte of the body read.
        (WholeBody { framing: Framing::ContentLength, len: 4 * 1024 * 1024, json: false }, 415),
    ];
    for (request, status) in requests {
        let what = format!("a {} byte body, {:?}, JSON {}", request.len, request.framing, request.json);
        let answer = tokio::time::timeout(PATIENCE, send_whole_body_then_read(&service, &request))
            .await
            .unwrap_or_else(|_| panic!("{what}: no answer within {PATIENCE:?}"))
            .unwrap_or_else(|e| panic!("{what}: no answer: {e} ({:?})", e.kind()));
        let answer = Answer::parse(&answer, &what);
        assert_eq!(answer.status, status, "{what}");
        assert_eq!(answer.header("connection"), Some("close"), "{what}");
        assert_eq!(answer.header("content-type"), Some("application/json"), "{what}");
        let body: Value = serde_json::from_slice(&answer.body).unwrap_or_else(|e| panic!("{what}: not JSON: {e}"));
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{what}: {body}");
    }
    // The service still serves, and created nothing.
    assert_eq!(sessions_in_memory(&client(), &service).await, 0);
}

/// A client that asks to be told before it sends its body (`Expect: 100-continue`, as curl
/// does for large bodies) and is refused before anything read that body gets the refusal
/// alone, not a `100 Continue` asking for the body, and then the end of the connection. The
/// service does not drain such a body: it closes as soon as the answer is out. A client that
/// sends its body after the refusal anyway therefore finds the connection closed (a reset),
/// where a service that drained would take the whole body and end the connection in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_waiting_for_100_continue_is_refused_without_being_asked_for_its_body() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let service = Service::start(&tmp.path().join("sessions"), &[]).await;
    let request = WholeBody { framing: Framing::ContentLength, len: 4 * 1024 * 1024, json: false };
    let head = request.head().replacen("\r\n", "\r\nexpect: 100-continue\r\n", 1);
    let what = "Expect: 100-continue without a JSON type";

    // The refusal, then the end of the connection.
    let (mut stream, _) = connect(&service).await;
    let exchange = async {
        stream.write_all(head.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<Vec<u8>, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(PATIENCE, exchange)
        .await
        .unwrap_or_else(|_| panic!("no answer within {PATIENCE:?}"))
        .unwrap_or_else(|e| panic!("no answer: {e} ({:?})", e.kind()));
    let answer = Answer::parse(&answer, what);
    assert_eq!(answer.status, 415, "{}", String::from_utf8_lossy(&answer.body));
    assert_eq!(answer.header("connection"), Some("close"));

    // Nothing waits for the body: sent after the refusal, it meets a closed connection.
    let (mut stream, _) = connect(&service).await;
    let exchange = async {
        stream.write_all(head.as_bytes()).await?;
        let answer = read_one_answer(&mut stream).await?;
        let sent = async {
            for piece in request.pieces() {
                stream.write_all(&piece).await?;
            }
            stream.read_to_end(&mut Vec::new()).await
        };
        Ok::<_, std::io::Error>((answer, sent.await))
    };
    let (answer, sent) = tokio::time::timeout(PATIENCE, exchange)
        .await
        .unwrap_or_else(|_| panic!("{what}, the body sent after the answer: nothing within {PATIENCE:?}"))
        .unwrap_or_else(|e| panic!("{what}: no answer: {e} ({:?})", e.kind()));
    assert_eq!(Answer::parse(&answer, what).status, 415, "{}", String::from_utf8_lossy(&answer));
    match sent {
        Ok(_) => panic!("{what}: the service took a body sent after its refusal and ended in order: it waited for it"),
        Err(e) => assert!(
            matches!(e.kind(), std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset),
            "{what}, the body sent after the answer: {e}"
        ),
    }
}

/// Reads one answer from `stream`: its head and as many bytes of body as its
/// `content-length` says, without waiting for the end of the connection.
async fn read_one_answer(stream: &mut tokio::net::TcpStream) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    loop {
        if let Some(head) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            let body_len = String::from_utf8_lossy(&bytes[..head])
                .split("\r\n")
                .filter_map(|line| line.split_once(':'))
                .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
                .and_then(|(_, value)| value.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if bytes.len() >= head + 4 + body_len {
                return Ok(bytes);
            }
        }
        let mut piece = [0; 4096];
        let n = stream.read(&mut piece).await?;
        if n == 0 {
            return Ok(bytes);
        }
        bytes.extend_from_slice(&piece[..n]);
    }
}

/// The most bytes the kernel may hold for a connection between the client's writes and the
/// server's reads: the server's receive buffer at its largest (`tcp_rmem`'s maximum on Linux,
/// 64 MiB if it cannot be read), the client's send buffer, and a megabyte for the server's
/// own read buffer.
fn bytes_in_between(client_send_buffer: usize) -> usize {
    let receive_max = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_rmem")
        .ok()
        .and_then(|text| text.split_whitespace().nth(2).and_then(|max| max.parse().ok()))
        .unwrap_or(64 * 1024 * 1024);
    receive_max + client_send_buffer + 1024 * 1024
}

/// Past the bound the service stops reading and closes: a client sending a body far larger
/// than `DRAIN_BYTES` is cut off (a reset, which is all a client that does not read early
/// answers can get), and manages to write no more than the bound plus what the kernel holds
/// in between, so the server read at most the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_body_past_the_drain_bound_gets_its_connection_closed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let service = Service::start(&tmp.path().join("sessions"), &[]).await;
    for framing in [Framing::ContentLength, Framing::Chunked] {
        let (mut stream, send_buffer) = connect(&service).await;
        let in_between = bytes_in_between(send_buffer);
        // Twice what the server could have taken in if it kept the bound.
        let request = WholeBody { framing, len: 2 * (DRAIN_BYTES + in_between), json: true };
        let what = format!("a {} byte body, {framing:?}", request.len);
        let mut written = 0;
        let writing = async {
            stream.write_all(request.head().as_bytes()).await?;
            for piece in request.pieces() {
                stream.write_all(&piece).await?;
                written += piece.len();
            }
            Ok::<(), std::io::Error>(())
        };
        match tokio::time::timeout(PATIENCE, writing).await {
            Err(_) => panic!("{what}: the service neither read the body nor closed within {PATIENCE:?}"),
            Ok(Ok(())) => panic!("{what}: the service took all {written} bytes"),
            Ok(Err(e)) => assert!(
                matches!(e.kind(), std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset),
                "{what}: {e}"
            ),
        }
        assert!(
            written <= DRAIN_BYTES + in_between,
            "{what}: {written} bytes written, over the bound {DRAIN_BYTES} plus {in_between} the kernel may hold"
        );
    }
    assert_eq!(sessions_in_memory(&client(), &service).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_follows_recorded_commit_times_and_the_sweep_frees_memory() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("sessions");
    let client = client();

    let mut service = Service::start(&dir, &["--ttl-secs", "3600"]).await;
    let long = create(&client, &service.base, 1).await.expect("create");
    assert!(service.terminate().await.success());

    // Restarted with sessions that expire as they are created, and a sweep every 50 ms.
    let mut service = Service::start(&dir, &["--ttl-secs", "0", "--sweep-secs", "0.05"]).await;
    let before = SystemTime::now();
    let short = create(&client, &service.base, 2).await.expect("create");
    let expires = humantime::parse_rfc3339(&short.expires_at).expect("RFC 3339");
    // The expiry is written in whole milliseconds, rounded down.
    let expires_ceiling = expires + Duration::from_millis(1);
    assert!(expires_ceiling >= before && expires <= SystemTime::now(), "TTL 0: expired on creation, {expires:?}");
    let short_url = service.url(&format!("/sessions/{}", short.token));
    assert_refused(client.get(&short_url), StatusCode::NOT_FOUND, "expired").await;
    assert_refused(client.delete(&short_url), StatusCode::NOT_FOUND, "DELETE of an expired session").await;
    // The long session keeps the lifetime it was created with.
    assert_all_served(&client, &service, std::slice::from_ref(&long), "after restart with TTL 0").await;

    // The sweep removes the expired session from memory within a few of its intervals.
    let deadline = Instant::now() + PATIENCE;
    while sessions_in_memory(&client, &service).await != 1 {
        assert!(Instant::now() < deadline, "the sweep did not remove the expired session");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(service.terminate().await.success());

    // The sweep is a journaled command: replay removes the session again. (The restarted
    // service's own first sweep is a minute away.)
    let service = Service::start(&dir, &[]).await;
    assert_eq!(sessions_in_memory(&client, &service).await, 1);
    assert_all_served(&client, &service, &[long], "after the sweep and a restart").await;
}

/// The value of `name{store="sessions"}` in a Prometheus scrape, if the series is there.
fn series(scrape: &str, name: &str) -> Option<f64> {
    let prefix = format!("{name}{{store=\"sessions\"}} ");
    scrape.lines().find_map(|line| line.strip_prefix(&prefix)).map(|value| value.parse().expect("a number"))
}

async fn scrape(client: &reqwest::Client, service: &Service) -> String {
    let response = client.get(service.url("/metrics")).send().await.expect("GET /metrics");
    assert_eq!(response.status(), StatusCode::OK);
    let kind = response.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_owned);
    assert_eq!(kind.as_deref(), Some("text/plain; version=0.0.4"));
    response.text().await.expect("the scrape's text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_scraped_under_load_show_every_series_with_the_figures_of_the_load() {
    const CLIENTS: u64 = 16;
    const EACH: u64 = 25;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("sessions");
    let client = client();
    let service = Service::start(&dir, &["--snapshot-every", "100"]).await;
    let base = service.base.clone();

    // Scraped while the clients create sessions: the scrape must not disturb them.
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (client, base) = (client.clone(), base.clone());
            tokio::spawn(async move {
                for i in 0..EACH {
                    create(&client, &base, c * EACH + i).await.expect("create");
                }
            })
        })
        .collect();
    let during = scrape(&client, &service).await;
    assert_eq!(series(&during, "airomem_healthy"), Some(1.0), "{during}");
    for task in tasks {
        task.await.expect("a client");
    }
    let created = CLIENTS * EACH;

    // Snapshots are written on their own thread after the commits that trigger them.
    let deadline = Instant::now() + PATIENCE;
    let scraped = loop {
        let scraped = scrape(&client, &service).await;
        if series(&scraped, "airomem_snapshot_seconds_count").is_some_and(|count| count >= 1.0) {
            break scraped;
        }
        assert!(Instant::now() < deadline, "no snapshot within {PATIENCE:?}:\n{scraped}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (status, stats) = get_json(&client, &service.url("/stats")).await;
    assert_eq!(status, StatusCode::OK);
    let stat = |name: &str| stats["store"][name].as_u64().expect(name) as f64;
    let get = |name: &str| series(&scraped, name).unwrap_or_else(|| panic!("no {name} in\n{scraped}"));

    assert_eq!(get("airomem_commits_total"), created as f64);
    assert_eq!(stat("commits"), created as f64);
    assert_eq!(get("airomem_commit_seconds_count"), created as f64, "one latency per commit");
    assert!(get("airomem_commit_seconds_sum") > 0.0);
    // Every command went into exactly one batch, and the batches are the journal's.
    assert_eq!(get("airomem_batch_commands_sum"), created as f64);
    assert_eq!(get("airomem_batch_commands_count"), stat("batches"));
    assert!(stat("batches") <= created as f64);
    // Under `Fsync` every batch is synced (snapshots sync too).
    assert!(get("airomem_fsync_seconds_count") >= stat("batches"));
    assert!(get("airomem_fsync_seconds_sum") > 0.0);
    assert_eq!(get("airomem_journal_bytes_total"), stat("journal_bytes"));
    assert_eq!(get("airomem_journal_segments"), stat("segments"));
    assert!(get("airomem_snapshot_seconds_sum") > 0.0);
    assert!(get("airomem_snapshot_pause_seconds_count") >= 1.0);
    // At least the first hundred sessions, a 16-byte token and more each, were in a snapshot.
    assert!(get("airomem_state_bytes") >= 100.0 * 16.0, "{scraped}");
    assert!(get("airomem_snapshot_bytes") > 0.0);
    assert!(get("airomem_recovery_seconds") >= 0.0);
    assert_eq!(get("airomem_healthy"), 1.0);
}
