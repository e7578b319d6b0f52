//! The leader killed with SIGKILL again and again under load from a client written against
//! the HTTP API alone (`load.py`: Python's standard library, 16 threads, every node in
//! turn). Each time a new leader must take over and acknowledge a write within
//! [`FAILOVER_BOUND`]; the killed node is restarted from its directory. At the end every
//! acknowledged session is served by every node, each node holds exactly the acknowledged
//! sessions plus some of those whose outcome the client does not know, and no user id has
//! two sessions (nothing applied twice).

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::Notify;

use crate::{Cluster, FAILOVER_BOUND, PATIENCE, assert_applied_once, count, env_or, serial};

/// What the load client has printed: the (start, end) times of each acknowledged request,
/// in Unix seconds.
#[derive(Default)]
struct Acks {
    times: Mutex<Vec<(f64, f64)>>,
    arrived: Notify,
}

impl Acks {
    /// Waits for the first ack of a request that started after `since`; returns when it
    /// ended.
    async fn first_started_after(&self, since: f64) -> f64 {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let arrived = self.arrived.notified();
            let first = self
                .times
                .lock()
                .expect("acks")
                .iter()
                .filter(|(start, _)| *start > since)
                .map(|(_, end)| *end)
                .reduce(f64::min);
            if let Some(end) = first {
                return end;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(left.min(Duration::from_millis(200)), arrived).await.is_err() {
                assert!(Instant::now() < deadline, "no write acknowledged within {PATIENCE:?} of the kill");
            }
        }
    }
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs_f64()
}

async fn leader_kills(kills: u64) {
    let _serial = serial().await;
    let mut cluster = Cluster::start(3, &[]).await;
    cluster.leader().await;

    let report_dir = tempfile::tempdir().expect("a temporary directory");
    let report_path = report_dir.path().join("report.json");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/processes/load.py");
    let mut load = Command::new("python3")
        .arg(&script)
        .arg(&report_path)
        .args(cluster.nodes.values().map(|n| n.url("")))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs the load client (CI installs it)");
    let acks = Arc::new(Acks::default());
    let reader = {
        let acks = Arc::clone(&acks);
        let stdout = load.stdout.take().expect("stdout");
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut fields = line.split_whitespace();
                if fields.next() == Some("ack") {
                    let mut time = || fields.next().and_then(|t| t.parse::<f64>().ok()).expect("ack START END");
                    let (start, end) = (time(), time());
                    acks.times.lock().expect("acks").push((start, end));
                    acks.arrived.notify_waiters();
                }
            }
        })
    };
    // Under load before the first kill.
    acks.first_started_after(unix_now()).await;

    let mut failovers = Vec::new();
    for kill in 1..=kills {
        let leader = cluster.leader().await;
        let killed_at = unix_now();
        cluster.node_mut(leader).kill().await;
        let first = acks.first_started_after(killed_at).await;
        let failover = Duration::from_secs_f64(first - killed_at);
        let new_leader = cluster.leader().await;
        assert_ne!(new_leader, leader);
        eprintln!(
            "failover {kill}/{kills}: node {leader} killed, node {new_leader} leads, first write acknowledged after {failover:.2?}"
        );
        failovers.push(failover);
        cluster.node_mut(leader).start(false).await;
        // Back in the group (it knows the leader) before the next kill, so that each kill
        // leaves a majority.
        cluster.leader().await;
    }

    // Stop the client: it finishes its requests in flight and writes its report.
    drop(load.stdin.take());
    let status = tokio::time::timeout(PATIENCE, load.wait()).await.expect("the load client stops").expect("waits");
    assert!(status.success(), "the load client failed: {status}");
    reader.await.expect("the ack reader");
    let report: Value = serde_json::from_slice(&std::fs::read(&report_path).expect("the report")).expect("JSON");
    let acked: Vec<(String, u64)> = serde_json::from_value(report["acked"].clone()).expect("acked");
    let unknown = report["unknown"].as_u64().expect("unknown");
    eprintln!("load: {} acknowledged, outcomes {}", acked.len(), report["outcomes"]);
    let outcomes = report["outcomes"].as_object().expect("outcomes");
    for status in outcomes.keys() {
        assert!(!["400", "404", "415", "422", "500"].contains(&status.as_str()), "unexpected answers: {outcomes:?}");
    }
    let users: HashSet<u64> = acked.iter().map(|(_, user)| *user).collect();
    assert_eq!(users.len(), acked.len(), "the client acknowledged a user id twice");

    let digest = cluster.converged().await;
    let sessions = count(&digest);
    let acked_count = acked.len() as u64;
    assert!(
        (acked_count..=acked_count + unknown).contains(&sessions),
        "{sessions} sessions on every node, {acked_count} acknowledged, {unknown} of unknown outcome"
    );
    assert_applied_once(&digest);
    let tokens: Vec<String> = acked.into_iter().map(|(token, _)| token).collect();
    cluster.assert_readable_everywhere(&tokens).await;

    let slowest = failovers.iter().max().copied().unwrap_or_default();
    eprintln!("failovers: {failovers:.2?}; slowest {slowest:.2?}");
    assert!(slowest <= FAILOVER_BOUND, "a failover took {slowest:?}: wedged?");
}

/// `AIROMEM_KILLS` kills (default 5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_killed_under_load_loses_no_acknowledged_session() {
    leader_kills(env_or("AIROMEM_KILLS", 5)).await;
}

/// Fifty kills: `cargo test --release -p airomem-raft --test processes -- --ignored fifty`
/// (build the example in the same profile first; `cargo test` does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: fifty failovers"]
async fn fifty_leader_kills_under_load() {
    leader_kills(env_or("AIROMEM_KILLS", 50)).await;
}
