//! The leader frozen with SIGSTOP for longer than an election timeout, then thawed with
//! SIGCONT: the others elect a new leader meanwhile, the old one steps down once it runs
//! again, and no linearizable read, on any node, misses a session whose create was
//! acknowledged before the read began, above all not the reads the old leader finds waiting
//! when it wakes, still believing it leads.
//!
//! The check is a real-time one, enough for this register-like workload: each read asks for
//! a token whose create had been answered `201` before the read was sent, so a linearizable
//! read must find it. (`tests/chaos/history.rs` checks whole histories of in-process nodes
//! for linearizability.)

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Cluster, PATIENCE, assert_applied_once, serial};

/// One read: which node, which token, and what it answered.
#[derive(Debug)]
struct Read {
    node: u64,
    token: String,
    answer: Result<StatusCode, String>,
    /// Whether it was sent to the frozen leader while it was frozen.
    to_frozen: bool,
}

/// The shared history.
#[derive(Default)]
struct History {
    /// Tokens whose create was acknowledged, in order of acknowledgement.
    acked: Mutex<Vec<String>>,
    reads: Mutex<Vec<Read>>,
    next_user: AtomicU64,
    /// The node frozen (0: none): the workers send it nothing new meanwhile, or each would
    /// wait on it in turn until none is left to load the others.
    frozen: AtomicU64,
}

/// Creates and reads against `nodes` in turn until `stop`.
async fn worker(cluster: Arc<Cluster>, history: Arc<History>, index: usize, stop: Arc<AtomicBool>) {
    let nodes: Vec<u64> = cluster.nodes.keys().copied().collect();
    let mut step = index;
    while !stop.load(Ordering::Acquire) {
        let node = nodes[step % nodes.len()];
        step += 1;
        if history.frozen.load(Ordering::Acquire) == node {
            continue;
        }
        if step.is_multiple_of(2) {
            let user = history.next_user.fetch_add(1, Ordering::Relaxed);
            let url = cluster.node(node).url("/sessions");
            if let Ok(response) = cluster.client.post(url).json(&json!({ "user_id": user })).send().await
                && response.status() == StatusCode::CREATED
                && let Ok(body) = response.json::<serde_json::Value>().await
            {
                history.acked.lock().expect("acked").push(body["token"].as_str().expect("a token").to_owned());
            }
        } else {
            // A token acknowledged before this read is sent.
            let token = {
                let acked = history.acked.lock().expect("acked");
                if acked.is_empty() {
                    continue;
                }
                acked[(step * 7919) % acked.len()].clone()
            };
            read(&cluster, &history, node, token).await;
        }
    }
}

async fn read(cluster: &Cluster, history: &History, node: u64, token: String) {
    let url = cluster.node(node).url(&format!("/sessions/{token}"));
    let answer = cluster.client.get(url).send().await.map(|r| r.status()).map_err(|e| e.to_string());
    history.reads.lock().expect("reads").push(Read { node, token, answer, to_frozen: false });
}

/// Waits until `history` holds `more` acknowledged creates beyond `from`.
async fn acked_beyond(history: &History, from: usize, more: usize) -> usize {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let now = history.acked.lock().expect("acked").len();
        if now >= from + more {
            return now;
        }
        assert!(Instant::now() < deadline, "no writes acknowledged: {now} of {}", from + more);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_steps_down_and_serves_no_stale_linearizable_read() {
    let _serial = serial().await;
    let cluster = Arc::new(Cluster::start(3, &[]).await);
    let old = cluster.leader().await;
    let others: Vec<u64> = cluster.nodes.keys().copied().filter(|&id| id != old).collect();
    let history = Arc::new(History::default());
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..6)
        .map(|i| tokio::spawn(worker(Arc::clone(&cluster), Arc::clone(&history), i, Arc::clone(&stop))))
        .collect();
    let before = acked_beyond(&history, 0, 50).await;

    history.frozen.store(old, Ordering::Release);
    cluster.node(old).pause();
    let frozen_at = Instant::now();
    let new = cluster.leader_among(&others).await;
    eprintln!("node {old} frozen; node {new} leads after {:.2?}", frozen_at.elapsed());
    // Sessions created under the new leader only, then reads of them sent to the frozen
    // one: they wait in its socket buffers and are the first thing it sees when it wakes.
    let during = acked_beyond(&history, before, 20).await;
    let fresh: Vec<String> = history.acked.lock().expect("acked")[before..during].to_vec();
    // Written by hand on raw connections, so that each request is known to sit in the
    // frozen process's socket before it is thawed (the kernel accepts connections for it).
    let mut waiting = Vec::new();
    for token in fresh {
        let mut stream = tokio::net::TcpStream::connect(cluster.node(old).http).await.expect("connects");
        let request = format!("GET /sessions/{token} HTTP/1.1\r\nhost: node\r\nconnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("the request is written");
        waiting.push((token, stream));
    }

    cluster.node(old).resume();
    history.frozen.store(0, Ordering::Release);
    eprintln!("node {old} thawed after {:.2?}", frozen_at.elapsed());
    for (token, mut stream) in waiting {
        let mut answer = Vec::new();
        let answer = match tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer)).await {
            Ok(Ok(_)) => {
                let head = String::from_utf8_lossy(&answer);
                let code = head.split_whitespace().nth(1).and_then(|c| c.parse::<u16>().ok());
                code.and_then(|c| StatusCode::from_u16(c).ok()).ok_or_else(|| format!("not HTTP: {head}"))
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {PATIENCE:?}")),
        };
        history.reads.lock().expect("reads").push(Read { node: old, token, answer, to_frozen: true });
    }
    // The old leader steps down and follows the new one.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let status = cluster.status(old).await;
        if status.as_ref().is_some_and(|s| s["role"] == "follower" && s["leader"].as_u64().is_some_and(|l| l != old)) {
            break;
        }
        assert!(Instant::now() < deadline, "node {old} did not step down: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = history.acked.lock().expect("acked").len();
    acked_beyond(&history, after, 20).await;
    stop.store(true, Ordering::Release);
    for worker in workers {
        worker.await.expect("a worker");
    }

    let reads = std::mem::take(&mut *history.reads.lock().expect("reads"));
    let stale: Vec<&Read> = reads.iter().filter(|r| r.answer == Ok(StatusCode::NOT_FOUND)).collect();
    let missed: Vec<(u64, &str)> = stale.iter().map(|r| (r.node, r.token.as_str())).collect();
    assert!(missed.is_empty(), "linearizable reads (node, token) missed acknowledged sessions: {missed:?}");
    let to_frozen: Vec<&Read> = reads.iter().filter(|r| r.to_frozen).collect();
    let served = to_frozen.iter().filter(|r| r.answer == Ok(StatusCode::OK)).count();
    eprintln!(
        "{} reads, {} sent to the frozen leader ({served} answered 200, the others refused: {:?})",
        reads.len(),
        to_frozen.len(),
        to_frozen.iter().filter(|r| r.answer != Ok(StatusCode::OK)).map(|r| &r.answer).collect::<Vec<_>>()
    );
    // Refusing (503) would be correct too, but the old leader, once following, serves them.
    assert!(served > 0, "the reads sent to the frozen leader were not served: {to_frozen:?}");
    let digest = cluster.converged().await;
    assert_applied_once(&digest);
    let acked = history.acked.lock().expect("acked").clone();
    cluster.assert_readable_everywhere(&acked).await;
    eprintln!(
        "read nodes: {:?}",
        reads.iter().fold([0; 4], |mut n, r| {
            n[r.node as usize] += 1;
            n
        })
    );
}
