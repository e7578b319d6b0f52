//! Membership through the example's admin routes: a fourth process joins a group holding N
//! sessions as a learner, catches up through a snapshot (the log behind it is purged, so
//! nothing else could bring it up to date) and holds exactly the leader's state; promoted,
//! it votes. Then a voter is removed and added back, repeatedly, and one is wiped and added
//! back as a new node; each time every node ends with the same sessions.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{Cluster, PATIENCE, assert_applied_once, count, env_or, free_addr, serial};

/// Snapshots often, and keep little log behind them, so that a learner must get a snapshot.
const NODE_ARGS: &[&str] = &["--snapshot-every", "1000", "--logs-kept", "100"];

/// Creates `n` sessions through the leader, 64 at a time, with user ids from `first_user`.
async fn load(cluster: &Cluster, n: u64, first_user: u64) {
    let leader = cluster.leader().await;
    let url = cluster.node(leader).url("/sessions");
    let failed = futures::stream::iter(first_user..first_user + n)
        .map(|user| {
            let (client, url) = (cluster.client.clone(), url.clone());
            async move { client.post(&url).json(&json!({ "user_id": user })).send().await.map(|r| r.status()) }
        })
        .buffer_unordered(64)
        .filter(|answer| std::future::ready(!matches!(answer, Ok(StatusCode::CREATED))))
        .collect::<Vec<_>>()
        .await;
    assert!(failed.is_empty(), "{} creates failed with no fault injected: {:?}", failed.len(), &failed[..1]);
}

/// Adds node `id` (running) as a learner through node `via`, waits until it has applied
/// everything committed when it was added, then promotes it; returns how long the catch-up
/// took.
///
/// `add_learner` itself does not wait for that: it returns once openraft's leader counts the
/// learner within `replication_lag_threshold` entries of its log (5,000 by default, each
/// entry a batch of commands), which a learner that has nothing at all can be.
async fn join(cluster: &Cluster, via: u64, id: u64, raft_addr: SocketAddr) -> Duration {
    let started = Instant::now();
    let (status, body) = cluster.post(via, "/cluster/learners", &json!({ "id": id, "raft_addr": raft_addr })).await;
    assert_eq!(status, StatusCode::OK, "adding learner {id}: {body}");
    assert!(body["learners"].get(id.to_string()).is_some(), "{body}");
    let voters: Vec<u64> = cluster.running().into_iter().filter(|&other| other != id).collect();
    let leader = cluster.leader_among(&voters).await;
    let committed = cluster.status(leader).await.and_then(|s| s["commit_index"].as_u64()).expect("a commit index");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let status = cluster.status(id).await;
        if status.as_ref().and_then(|s| s["last_applied"].as_u64()) >= Some(committed) {
            break;
        }
        assert!(Instant::now() < deadline, "node {id} did not catch up to {committed} in {PATIENCE:?}: {status:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let caught_up = started.elapsed();
    let (status, body) = cluster.post(via, "/cluster/promote", &json!({ "ids": [id] })).await;
    assert_eq!(status, StatusCode::OK, "promoting {id}: {body}");
    assert!(body["voters"].get(id.to_string()).is_some(), "{body}");
    caught_up
}

/// Removes node `id` through node `via`.
async fn remove(cluster: &Cluster, via: u64, id: u64) {
    let response = cluster
        .client
        .delete(cluster.node(via).url(&format!("/cluster/nodes/{id}")))
        .send()
        .await
        .expect("DELETE /cluster/nodes");
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(status, StatusCode::OK, "removing {id}: {body}");
    assert!(body["voters"].get(id.to_string()).is_none() && body["learners"].get(id.to_string()).is_none(), "{body}");
}

/// The voters, as node `via` reports them.
async fn voters(cluster: &Cluster, via: u64) -> Vec<u64> {
    let (status, body) = cluster.get(via, "/cluster/members").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["voters"].as_object().expect("voters").keys().map(|k| k.parse().expect("an id")).collect()
}

async fn learner_and_membership(sessions: u64, rounds: u64) {
    let _serial = serial().await;
    let mut cluster = Cluster::start(3, NODE_ARGS).await;
    let started = Instant::now();
    load(&cluster, sessions, 0).await;
    let mut total = sessions;
    let leader = cluster.leader().await;
    let status = cluster.status(leader).await.expect("the leader's status");
    eprintln!("{sessions} sessions created in {:.2?}; leader {status}", started.elapsed());
    let purged = status["purged_index"].as_u64().expect("the leader's log was purged behind a snapshot");

    // Node 4 knows the others; they learn of it from the admin call.
    let raft = free_addr();
    cluster.add_node(4, raft, NODE_ARGS).start(false).await;
    let via = (1..=3).find(|&id| id != leader).expect("a follower");
    let caught_up = join(&cluster, via, 4, raft).await;
    let learner = cluster.status(4).await.expect("node 4's status");
    eprintln!("learner 4 caught up with {sessions} sessions in {caught_up:.2?} (log purged to {purged}): {learner}");
    assert!(learner["snapshot_index"].as_u64() >= Some(purged), "node 4 installed a snapshot: {learner}");
    let digest = cluster.converged().await;
    assert_eq!(count(&digest), total, "{digest}");
    assert_eq!(voters(&cluster, 4).await, [1, 2, 3, 4]);

    // Removed and added back with its directory, `rounds` times, a different voter each time.
    for round in 0..rounds {
        let leader = cluster.leader().await;
        let candidates: Vec<u64> = cluster.running().into_iter().filter(|&id| id != leader).collect();
        let victim = candidates[round as usize % candidates.len()];
        remove(&cluster, leader, victim).await;
        cluster.node_mut(victim).kill().await;
        load(&cluster, 50, total).await;
        total += 50;
        cluster.node_mut(victim).start(false).await;
        let took = join(&cluster, leader, victim, cluster.public[&victim]).await;
        eprintln!("round {}/{rounds}: node {victim} removed and added back in {took:.2?}", round + 1);
        let digest = cluster.converged().await;
        assert_eq!(count(&digest), total, "round {round}: {digest}");
        assert_eq!(voters(&cluster, victim).await, [1, 2, 3, 4], "round {round}");
    }

    // Wiped, and added back with nothing.
    let leader = cluster.leader().await;
    let victim = cluster.running().into_iter().find(|&id| id != leader).expect("a follower");
    remove(&cluster, leader, victim).await;
    cluster.node_mut(victim).kill().await;
    std::fs::remove_dir_all(&cluster.node(victim).dir).expect("wipe the node's directory");
    load(&cluster, 50, total).await;
    total += 50;
    cluster.node_mut(victim).start(false).await;
    let took = join(&cluster, leader, victim, cluster.public[&victim]).await;
    eprintln!("node {victim} wiped and added back in {took:.2?}");
    let digest = cluster.converged().await;
    assert_eq!(count(&digest), total, "{digest}");
    assert_applied_once(&digest);
    assert!(cluster.status(victim).await.is_some_and(|s| s["role"] == "follower"));
}

/// `AIROMEM_LEARNER_SESSIONS` sessions (default 20,000), `AIROMEM_READD_ROUNDS` rounds
/// (default 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_catches_up_by_snapshot_and_nodes_are_removed_and_added_back() {
    learner_and_membership(env_or("AIROMEM_LEARNER_SESSIONS", 20_000), env_or("AIROMEM_READD_ROUNDS", 3)).await;
}

/// A million sessions, twenty rounds:
/// `cargo test --release -p airomem-raft --test processes -- --ignored a_million`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: a million sessions"]
async fn a_million_sessions_learner_and_twenty_rounds() {
    learner_and_membership(env_or("AIROMEM_LEARNER_SESSIONS", 1_000_000), env_or("AIROMEM_READD_ROUNDS", 20)).await;
}
