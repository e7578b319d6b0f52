//! The replicated session service (`airomem-raft/examples/replicated_sessions.rs`) as a group
//! of node processes on loopback: started in a fresh directory each, killed with SIGKILL,
//! restarted from their directories, joined by a learner. Every wait polls `GET /cluster`
//! (or `/digest`) until a deadline; nothing sleeps to synchronise.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::error::BoxError;

/// How long anything that should happen soon may take before the measurement fails: a
/// wedged group, never a slow one, trips it.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A free loopback address: bound, noted, released.
fn free_addr() -> Result<SocketAddr, BoxError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// One node's process, started and restarted with the same arguments.
struct Node {
    /// `http://ADDR`.
    base: String,
    raft: SocketAddr,
    /// Its arguments but `--init`.
    args: Vec<String>,
    child: Option<Child>,
}

/// A group of `replicated_sessions` processes under one directory, with its cluster secret.
pub struct Cluster {
    binary: PathBuf,
    root: PathBuf,
    /// Arguments every node gets (timings).
    extra: Vec<String>,
    nodes: BTreeMap<u64, Node>,
    client: reqwest::Client,
}

impl Cluster {
    /// Nodes 1..=`n` in fresh directories under `root`, node 1 bootstrapping the group, each
    /// with `extra` arguments; returns once every node serves HTTP.
    pub fn start(binary: &Path, root: &Path, n: u64, extra: &[&str]) -> Result<Cluster, BoxError> {
        std::fs::create_dir_all(root)?;
        std::fs::write(root.join("cluster.secret"), "the bench's cluster secret\n")?;
        let client = reqwest::Client::builder().no_proxy().timeout(PATIENCE).build()?;
        let mut cluster = Cluster {
            binary: binary.to_path_buf(),
            root: root.to_path_buf(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            nodes: BTreeMap::new(),
            client,
        };
        let raft: BTreeMap<u64, SocketAddr> =
            (1..=n).map(|id| Ok((id, free_addr()?))).collect::<Result<_, BoxError>>()?;
        for (&id, &addr) in &raft {
            cluster.add_node(id, addr, &raft)?;
        }
        for id in 1..=n {
            cluster.launch(id, id == 1)?;
        }
        Ok(cluster)
    }

    /// Registers node `id` (not started), its transport at `raft`, knowing `peers`.
    fn add_node(&mut self, id: u64, raft: SocketAddr, peers: &BTreeMap<u64, SocketAddr>) -> Result<(), BoxError> {
        let http = free_addr()?;
        let dir = self.root.join(format!("node-{id}"));
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
            self.root.join("cluster.secret").display().to_string(),
        ];
        for (&peer, addr) in peers {
            if peer != id {
                args.extend(["--peer".into(), format!("{peer}={addr}")]);
            }
        }
        args.extend(self.extra.iter().cloned());
        self.nodes.insert(id, Node { base: format!("http://{http}"), raft, args, child: None });
        Ok(())
    }

    /// Starts node `id` (with `--init` if `init`) and waits for its `listening on` line. Its
    /// log (stderr) is appended to `node-ID.log` beside the nodes' directories.
    fn launch(&mut self, id: u64, init: bool) -> Result<(), BoxError> {
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.root.join(format!("node-{id}.log")))?;
        let node = self.nodes.get_mut(&id).ok_or("no such node")?;
        let mut child = Command::new(&self.binary)
            .args(&node.args)
            .args(if init { &["--init"][..] } else { &[] })
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()?;
        let stdout = child.stdout.take().ok_or("the node's stdout")?;
        let (listening, heard) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            for line in lines.by_ref().map_while(Result::ok) {
                if line.starts_with("listening on ") {
                    let _ = listening.send(());
                    break;
                }
            }
            // Read to the end, so that the node never finds its stdout closed.
            lines.for_each(drop);
        });
        node.child = Some(child);
        heard.recv_timeout(PATIENCE).map_err(|_| format!("node {id} did not listen within {PATIENCE:?}"))?;
        Ok(())
    }

    /// Restarts node `id` from its directory (without `--init`).
    pub fn restart(&mut self, id: u64) -> Result<(), BoxError> {
        self.launch(id, false)
    }

    /// SIGKILL to node `id`, and waits until its process is gone.
    pub fn kill(&mut self, id: u64) -> Result<(), BoxError> {
        let mut child = self.nodes.get_mut(&id).and_then(|node| node.child.take()).ok_or("the node is not running")?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Node `id`'s `http://ADDR`.
    pub fn base(&self, id: u64) -> &str {
        self.nodes.get(&id).map_or("", |node| node.base.as_str())
    }

    /// Every node's `http://ADDR`, by id.
    pub fn bases(&self) -> Vec<String> {
        self.nodes.values().map(|node| node.base.clone()).collect()
    }

    /// The ids of the nodes whose process runs.
    fn running(&self) -> Vec<u64> {
        self.nodes.iter().filter(|(_, node)| node.child.is_some()).map(|(&id, _)| id).collect()
    }

    /// `GET path` on node `id` as JSON, or `None` if it does not answer within two seconds.
    pub async fn get(&self, id: u64, path: &str) -> Option<Value> {
        let request = self.client.get(format!("{}{path}", self.base(id))).timeout(Duration::from_secs(2));
        request.send().await.ok()?.json().await.ok()
    }

    /// Waits until every running node names the same leader, which says it leads; returns it.
    pub async fn leader(&self) -> Result<u64, BoxError> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let mut statuses = Vec::new();
            for id in self.running() {
                statuses.push((id, self.get(id, "/cluster").await));
            }
            let leaders: Vec<Option<u64>> =
                statuses.iter().map(|(_, s)| s.as_ref().and_then(|s| s["leader"].as_u64())).collect();
            if let Some(&Some(leader)) = leaders.first()
                && leaders.iter().all(|l| *l == Some(leader))
                && statuses.iter().any(|(id, s)| *id == leader && s.as_ref().is_some_and(|s| s["role"] == "leader"))
            {
                return Ok(leader);
            }
            if Instant::now() > deadline {
                return Err(format!("no leader every running node agrees on within {PATIENCE:?}: {statuses:?}").into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the group is whole: every running node names the same leader and node
    /// `id` has applied what the leader had committed when the wait began.
    pub async fn whole(&self, id: u64) -> Result<(), BoxError> {
        let leader = self.leader().await?;
        let committed = self.get(leader, "/cluster").await.and_then(|s| s["commit_index"].as_u64()).unwrap_or(0);
        let deadline = Instant::now() + PATIENCE;
        loop {
            let applied = self.get(id, "/cluster").await.and_then(|s| s["last_applied"].as_u64());
            if applied >= Some(committed) {
                self.leader().await?;
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("node {id} did not apply up to {committed} within {PATIENCE:?}").into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Adds node `id` with a fresh directory and starts it (without `--init`); the group
    /// learns of it only through [`Cluster::add_learner`].
    pub fn start_new_node(&mut self, id: u64) -> Result<(), BoxError> {
        let mut peers: BTreeMap<u64, SocketAddr> = self.nodes.iter().map(|(&id, node)| (id, node.raft)).collect();
        peers.insert(id, free_addr()?);
        self.add_node(id, peers[&id], &peers)?;
        self.launch(id, false)
    }

    /// `POST /cluster/learners` for node `id` through node `via`; the members it answers.
    pub async fn add_learner(&self, via: u64, id: u64) -> Result<Value, BoxError> {
        let raft = self.nodes.get(&id).ok_or("no such node")?.raft;
        let url = format!("{}/cluster/learners", self.base(via));
        let response = self.client.post(url).json(&json!({ "id": id, "raft_addr": raft })).send().await?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status != reqwest::StatusCode::OK {
            return Err(format!("adding learner {id}: {status} {body}").into());
        }
        Ok(body)
    }

    /// The largest published snapshot file (`*.snapshot`) in node `id`'s directory, in bytes.
    pub fn snapshot_bytes(&self, id: u64) -> Option<u64> {
        fn walk(dir: &Path, largest: &mut Option<u64>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, largest);
                } else if path.extension().is_some_and(|e| e == "snapshot")
                    && let Ok(meta) = entry.metadata()
                {
                    *largest = (*largest).max(Some(meta.len()));
                }
            }
        }
        let mut largest = None;
        walk(&self.root.join(format!("node-{id}")), &mut largest);
        largest
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
