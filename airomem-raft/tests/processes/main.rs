//! The replicated session service (`examples/replicated_sessions.rs`) run as its users run
//! it: one process per node, on free loopback ports, each with its own directory, killed
//! with SIGKILL, frozen with SIGSTOP, cut off by a proxy, joined by a learner. One scenario
//! per file, one test binary.
//!
//! The binary is the one `cargo test` builds beside this test (`target/<profile>/examples/`).
//! Nodes run with the example's default timings (heartbeat 100 ms, election timeout
//! 800–1600 ms). Nothing sleeps to synchronise: every wait polls `/cluster` (or another
//! route) until a deadline. The scenarios run one at a time (see [`serial`]): each starts
//! three or four processes, and a two-core machine running two scenarios at once would time
//! each against the other's load.

mod leader_kills;
mod learner;
mod partition;
mod paused_leader;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

/// How long anything that should happen soon may take before a test fails: a wedged
/// failover, never a slow one, trips it.
pub const PATIENCE: Duration = Duration::from_secs(30);
/// The bound on a failover (kill → the first acknowledged write after it).
pub const FAILOVER_BOUND: Duration = Duration::from_secs(20);

/// Holds the other scenarios off while one runs (see the module docs). Each test has a
/// runtime of its own, and an async lock works across them; a failed scenario releases it.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}

/// A number from the environment variable `name`, or `default`.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The example's binary, as `cargo test` builds it beside the test binaries.
///
/// # Panics
///
/// If it is missing or older than its source, saying how to build it.
pub fn binary() -> PathBuf {
    let test_binary = std::env::current_exe().expect("the test binary's path");
    let profile_dir =
        test_binary.parent().and_then(Path::parent).expect("the test binary lies in target/<profile>/deps");
    let binary = profile_dir.join("examples").join(format!("replicated_sessions{}", std::env::consts::EXE_SUFFIX));
    let build = "`cargo test -p airomem-raft` builds it; `--test processes` alone does not: run \
                 `cargo build -p airomem-raft --example replicated_sessions` first";
    let built = std::fs::metadata(&binary)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("the example binary {} is missing ({e}): {build}", binary.display()));
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/replicated_sessions.rs");
    let edited = std::fs::metadata(&source).and_then(|m| m.modified()).expect("the example's source");
    assert!(built >= edited, "the example binary {} is older than its source: {build}", binary.display());
    binary
}

/// A free loopback address: bound, noted, released. Another process could take the port
/// in between; on a test machine none does.
pub fn free_addr() -> SocketAddr {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("binds a free port");
    probe.local_addr().expect("has an address")
}

/// One node's process, started and restarted with the same arguments.
pub struct Node {
    /// Its node id.
    pub id: u64,
    /// Its HTTP address.
    pub http: SocketAddr,
    /// The address its transport listens at.
    pub raft: SocketAddr,
    /// Its directory.
    pub dir: PathBuf,
    /// Its arguments but `--init`.
    args: Vec<String>,
    child: Option<Child>,
    /// What every run of it wrote, stdout and stderr.
    output: Arc<Mutex<String>>,
}

impl Node {
    /// Starts the process (with `--init` if `init`) and waits for its `listening on` line.
    pub async fn start(&mut self, init: bool) {
        assert!(self.child.is_none(), "node {} is already running", self.id);
        let mut command = Command::new(binary());
        command
            .args(&self.args)
            .args(if init { &["--init"][..] } else { &[] })
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("start a node");
        let (listening, address) = oneshot::channel();
        let run = format!("--- node {} started\n", self.id);
        self.output.lock().expect("output").push_str(&run);
        tokio::spawn(collect(child.stdout.take().expect("stdout"), Arc::clone(&self.output), Some(listening)));
        tokio::spawn(collect(child.stderr.take().expect("stderr"), Arc::clone(&self.output), None));
        self.child = Some(child);
        if tokio::time::timeout(PATIENCE, address).await.is_err() {
            panic!("node {} did not say where it listens; it wrote:\n{}", self.id, self.output());
        }
    }

    /// Whether its process runs (possibly stopped by SIGSTOP).
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    fn pid(&self) -> rustix::process::Pid {
        let pid = self.child.as_ref().and_then(Child::id).expect("the node is running");
        rustix::process::Pid::from_raw(i32::try_from(pid).expect("a pid fits a pid_t")).expect("a positive pid")
    }

    /// SIGKILL, and waits until the process is gone.
    pub async fn kill(&mut self) {
        let mut child = self.child.take().expect("the node is running");
        child.kill().await.expect("SIGKILL the node");
    }

    /// SIGTERM, and its exit status.
    pub async fn terminate(&mut self) -> ExitStatus {
        // Our own child, not yet reaped: the pid names no other process.
        rustix::process::kill_process(self.pid(), rustix::process::Signal::TERM).expect("SIGTERM");
        let mut child = self.child.take().expect("the node is running");
        match tokio::time::timeout(PATIENCE, child.wait()).await {
            Ok(status) => status.expect("wait for the node"),
            Err(_) => panic!("node {} did not exit within {PATIENCE:?} of SIGTERM", self.id),
        }
    }

    /// SIGSTOP: the process freezes, its sockets stay open.
    pub fn pause(&self) {
        rustix::process::kill_process(self.pid(), rustix::process::Signal::STOP).expect("SIGSTOP");
    }

    /// SIGCONT.
    pub fn resume(&self) {
        rustix::process::kill_process(self.pid(), rustix::process::Signal::CONT).expect("SIGCONT");
    }

    /// The URL of `path` on its HTTP address.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// What it wrote so far, over all its runs.
    pub fn output(&self) -> String {
        self.output.lock().expect("output").clone()
    }
}

/// Appends each line of `pipe` to `output`; the `listening on` line is announced.
async fn collect(pipe: impl AsyncRead + Unpin, output: Arc<Mutex<String>>, mut listening: Option<oneshot::Sender<()>>) {
    let mut lines = BufReader::new(pipe).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.starts_with("listening on ")
            && let Some(listening) = listening.take()
        {
            let _ = listening.send(());
        }
        let mut output = output.lock().expect("output");
        output.push_str(&line);
        output.push('\n');
    }
}

/// A group of node processes, in a temporary directory with its cluster secret.
pub struct Cluster {
    /// The nodes' directories and the secret file.
    pub root: tempfile::TempDir,
    /// Every node, running or not.
    pub nodes: BTreeMap<u64, Node>,
    /// Where each node's peers reach it: its transport's address, or a proxy's.
    pub public: BTreeMap<u64, SocketAddr>,
    /// An HTTP client (no proxy, [`PATIENCE`] per request).
    pub client: reqwest::Client,
}

impl Cluster {
    /// Nodes 1..=n with `extra` arguments each, node 1 bootstrapping, their peers reaching
    /// them directly.
    pub async fn start(n: u64, extra: &[&str]) -> Cluster {
        let raft: BTreeMap<u64, SocketAddr> = (1..=n).map(|id| (id, free_addr())).collect();
        Cluster::start_behind(raft.clone(), raft, extra).await
    }

    /// Nodes whose transports listen at `raft` and whose peers reach them at `public` (a
    /// proxy's address, say).
    pub async fn start_behind(
        raft: BTreeMap<u64, SocketAddr>,
        public: BTreeMap<u64, SocketAddr>,
        extra: &[&str],
    ) -> Cluster {
        let root = tempfile::tempdir().expect("a temporary directory");
        std::fs::write(root.path().join("cluster.secret"), "the process tests' cluster secret\n").expect("secret");
        let client = reqwest::Client::builder().no_proxy().timeout(PATIENCE).build().expect("HTTP client");
        let mut cluster = Cluster { root, nodes: BTreeMap::new(), public, client };
        for (&id, &addr) in &raft {
            cluster.add_node(id, addr, extra);
        }
        for (&id, node) in &mut cluster.nodes {
            node.start(id == 1).await;
        }
        cluster
    }

    /// Adds node `id` (not started) listening at `raft`, reached there, knowing the others.
    pub fn add_node(&mut self, id: u64, raft: SocketAddr, extra: &[&str]) -> &mut Node {
        self.public.entry(id).or_insert(raft);
        let dir = self.root.path().join(format!("node-{id}"));
        let http = free_addr();
        let mut args: Vec<String> = vec![
            "--id".into(),
            id.to_string(),
            "--listen".into(),
            http.to_string(),
            "--raft".into(),
            raft.to_string(),
            "--dir".into(),
            dir.display().to_string(),
            "--secret-file".into(),
            self.root.path().join("cluster.secret").display().to_string(),
        ];
        if self.public[&id] != raft {
            args.extend(["--advertise".into(), self.public[&id].to_string()]);
        }
        for (&peer, addr) in &self.public {
            if peer != id {
                args.extend(["--peer".into(), format!("{peer}={addr}")]);
            }
        }
        args.extend(extra.iter().map(|s| (*s).to_string()));
        let node = Node { id, http, raft, dir, args, child: None, output: Arc::default() };
        self.nodes.insert(id, node);
        self.nodes.get_mut(&id).expect("just added")
    }

    /// Node `id`.
    pub fn node(&self, id: u64) -> &Node {
        &self.nodes[&id]
    }

    /// Node `id`, to start or stop it.
    pub fn node_mut(&mut self, id: u64) -> &mut Node {
        self.nodes.get_mut(&id).expect("a node of the cluster")
    }

    /// The ids of the nodes whose process runs.
    pub fn running(&self) -> Vec<u64> {
        self.nodes.values().filter(|n| n.running()).map(|n| n.id).collect()
    }

    /// `GET /cluster` of node `id`, or `None` if it does not answer within two seconds (dead,
    /// stopped).
    pub async fn status(&self, id: u64) -> Option<Value> {
        let request = self.client.get(self.node(id).url("/cluster")).timeout(Duration::from_secs(2));
        let response = request.send().await.ok()?;
        response.json().await.ok()
    }

    /// Waits until every node of `ids` names the same leader, itself among `ids`, which says
    /// it leads; returns it.
    pub async fn leader_among(&self, ids: &[u64]) -> u64 {
        let deadline = Instant::now() + PATIENCE;
        let mut last = Vec::new();
        loop {
            last.clear();
            for &id in ids {
                last.push(self.status(id).await);
            }
            let leaders: Vec<Option<u64>> =
                last.iter().map(|s| s.as_ref().and_then(|s| s["leader"].as_u64())).collect();
            if let Some(Some(leader)) = leaders.first()
                && leaders.iter().all(|l| *l == Some(*leader))
                && let Some(position) = ids.iter().position(|id| id == leader)
                && last[position].as_ref().is_some_and(|s| s["role"] == "leader")
            {
                return *leader;
            }
            assert!(Instant::now() < deadline, "no leader all of {ids:?} agree on within {PATIENCE:?}: {last:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The leader every running node agrees on.
    pub async fn leader(&self) -> u64 {
        self.leader_among(&self.running()).await
    }

    /// `GET path` on node `id`: the status and the JSON body (`Null` if none).
    pub async fn get(&self, id: u64, path: &str) -> (StatusCode, Value) {
        let response =
            self.client.get(self.node(id).url(path)).send().await.unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// `POST path` with a JSON body on node `id`.
    pub async fn post(&self, id: u64, path: &str, body: &Value) -> (StatusCode, Value) {
        let response = self
            .client
            .post(self.node(id).url(path))
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Creates a session for `user_id` through node `id`: its token, or the status refused.
    pub async fn create(&self, id: u64, user_id: u64) -> Result<String, (StatusCode, Value)> {
        match self.post(id, "/sessions", &json!({ "user_id": user_id })).await {
            (StatusCode::CREATED, body) => Ok(body["token"].as_str().expect("a token").to_owned()),
            other => Err(other),
        }
    }

    /// Waits until every running node has applied the same sessions (its local `/digest`
    /// equal to the others' and its applied index to the leader's commit index); returns
    /// the digest.
    pub async fn converged(&self) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let leader = self.leader().await;
            let commit = self.status(leader).await.and_then(|s| s["commit_index"].as_u64());
            let mut digests = Vec::new();
            let mut caught_up = true;
            for id in self.running() {
                let applied = self.status(id).await.and_then(|s| s["last_applied"].as_u64());
                caught_up &= applied.is_some() && applied >= commit;
                digests.push(self.get(id, "/digest?consistency=local").await.1);
            }
            if caught_up && digests.windows(2).all(|w| w[0] == w[1]) {
                return digests.swap_remove(0);
            }
            assert!(Instant::now() < deadline, "the nodes did not converge within {PATIENCE:?}: {digests:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every token in `tokens` reads `200` (linearizable) from every running node.
    pub async fn assert_readable_everywhere(&self, tokens: &[String]) {
        use futures::StreamExt;
        for id in self.running() {
            let reads = futures::stream::iter(tokens.iter().map(|token| {
                let url = self.node(id).url(&format!("/sessions/{token}"));
                let client = self.client.clone();
                async move {
                    let response = client.get(&url).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
                    (response.status(), url)
                }
            }))
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await;
            for (status, url) in reads {
                assert_eq!(status, StatusCode::OK, "an acknowledged session is not served: GET {url}");
            }
        }
    }
}

impl Drop for Cluster {
    /// A failing test shows the end of what each node wrote.
    fn drop(&mut self) {
        if std::thread::panicking() {
            for node in self.nodes.values() {
                let output = node.output();
                let lines: Vec<&str> = output.lines().collect();
                let tail = lines[lines.len().saturating_sub(60)..].join("\n");
                eprintln!("=== node {} wrote (last 60 lines):\n{tail}", node.id);
            }
        }
    }
}

/// The digest's session count.
pub fn count(digest: &Value) -> u64 {
    digest["count"].as_u64().expect("a count")
}

/// Asserts that no user id has two sessions: every create the clients sent carried a user
/// id of its own, so a second session with one would be a command applied twice.
pub fn assert_applied_once(digest: &Value) {
    assert_eq!(digest["users"], digest["count"], "a user id has two sessions: a command ran twice: {digest}");
}
