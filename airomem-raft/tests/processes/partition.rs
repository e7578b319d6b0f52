//! Partitions between processes: every node reaches every other through a TCP proxy of the
//! test, which can cut the traffic between two nodes. Cut off from both others, the leader
//! acknowledges nothing (its writes fail within its commit timeout), the other two elect a
//! leader and acknowledge writes; healed, all converge, and each write the old leader never
//! acknowledged is applied once or not at all.
//!
//! The proxies. Node k's peers reach it at the address of proxy k (`--advertise`, and the
//! others' `--peer`), which forwards to node k's transport. The membership records one
//! address per node, the same for everyone, so a proxy learns which node connects from the
//! connection itself: the first frame of every connection is the handshake's `Hello`, which
//! carries the magic `AIRORAFT`, the protocol version and the caller's node id (postcard
//! varints). A cut between a and b refuses and closes every connection between them, whoever
//! opened it, since each carries calls one way and answers the other.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::{Cluster, PATIENCE, assert_applied_once, count, free_addr, serial};

/// The proxies in front of every node's transport, and the cuts between nodes.
struct Proxies {
    cuts: Arc<Mutex<HashSet<(u64, u64)>>>,
    changed: watch::Sender<()>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Proxies {
    /// A proxy for each node of `targets` (its transport's address); returns their addresses.
    async fn start(targets: &BTreeMap<u64, SocketAddr>) -> (Proxies, BTreeMap<u64, SocketAddr>) {
        let cuts = Arc::new(Mutex::new(HashSet::new()));
        let (changed, _) = watch::channel(());
        let mut public = BTreeMap::new();
        let mut tasks = Vec::new();
        for (&to, &target) in targets {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("a proxy binds");
            public.insert(to, listener.local_addr().expect("an address"));
            let (cuts, changed) = (Arc::clone(&cuts), changed.subscribe());
            tasks.push(tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    tokio::spawn(forward(client, to, target, Arc::clone(&cuts), changed.clone()));
                }
            }));
        }
        (Proxies { cuts, changed, tasks }, public)
    }

    /// Cuts `a` off from each of `others`, both ways.
    fn isolate(&self, a: u64, others: &[u64]) {
        self.cuts.lock().expect("cuts").extend(others.iter().flat_map(|&b| [(a, b), (b, a)]));
        self.changed.send_replace(());
    }

    fn heal(&self) {
        self.cuts.lock().expect("cuts").clear();
        self.changed.send_replace(());
    }
}

impl Drop for Proxies {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn blocked(cuts: &Mutex<HashSet<(u64, u64)>>, a: u64, b: u64) -> bool {
    let cuts = cuts.lock().expect("cuts");
    cuts.contains(&(a, b)) || cuts.contains(&(b, a))
}

/// Forwards one connection to node `to` until either end closes or the two get cut apart.
async fn forward(
    mut client: TcpStream,
    to: u64,
    target: SocketAddr,
    cuts: Arc<Mutex<HashSet<(u64, u64)>>>,
    mut changed: watch::Receiver<()>,
) {
    let Some((from, hello)) = caller(&mut client).await else { return };
    if blocked(&cuts, from, to) {
        return;
    }
    let Ok(mut server) = TcpStream::connect(target).await else { return };
    if server.write_all(&hello).await.is_err() {
        return;
    }
    let cut = async {
        while changed.changed().await.is_ok() {
            if blocked(&cuts, from, to) {
                return;
            }
        }
        std::future::pending::<()>().await;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        () = cut => {}
    }
}

/// Reads the start of a connection up to the caller's node id in its `Hello` (0, never cut,
/// for admin clients and anything that is not a node); returns it with the bytes read.
async fn caller(client: &mut TcpStream) -> Option<(u64, Vec<u8>)> {
    const MAGIC: &[u8] = b"AIRORAFT";
    let mut bytes = Vec::new();
    let mut piece = [0; 1024];
    loop {
        if let Some(at) = bytes.windows(MAGIC.len()).position(|w| w == MAGIC) {
            let mut varints = bytes[at + MAGIC.len()..].iter();
            // The version, then the caller's id.
            if let (Some(_), Some(from)) = (varint(&mut varints), varint(&mut varints)) {
                return Some((from, bytes));
            }
        }
        if bytes.len() > 4096 {
            return Some((0, bytes));
        }
        let n = client.read(&mut piece).await.ok()?;
        if n == 0 {
            return None;
        }
        bytes.extend_from_slice(&piece[..n]);
    }
}

/// A postcard (LEB128) unsigned varint, if complete.
fn varint<'a>(bytes: &mut impl Iterator<Item = &'a u8>) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.next()?;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_acknowledges_nothing_and_the_majority_goes_on() {
    let _serial = serial().await;
    let raft: BTreeMap<u64, SocketAddr> = (1..=3).map(|id| (id, free_addr())).collect();
    let (proxies, public) = Proxies::start(&raft).await;
    // A short commit timeout: the cut-off leader's writes fail within it.
    let cluster = Cluster::start_behind(raft, public, &["--commit-timeout-ms", "3000"]).await;
    let old = cluster.leader().await;
    let others: Vec<u64> = cluster.nodes.keys().copied().filter(|&id| id != old).collect();
    let mut acked = Vec::new();
    let mut user = 0;
    for id in [1, 2, 3, 1, 2, 3] {
        user += 1;
        acked.push(cluster.create(id, user).await.unwrap_or_else(|e| panic!("create before the cut: {e:?}")));
    }

    proxies.isolate(old, &others);
    let cut_at = Instant::now();
    // Writes to the isolated leader, all at once: none may be acknowledged.
    let cluster = Arc::new(cluster);
    let minority: Vec<_> = (0..4)
        .map(|_| {
            user += 1;
            let (cluster, user) = (Arc::clone(&cluster), user);
            tokio::spawn(async move {
                let url = cluster.node(old).url("/sessions");
                let response = cluster.client.post(url).json(&json!({ "user_id": user })).send().await;
                response.map(|r| r.status()).map_err(|e| e.to_string())
            })
        })
        .collect();
    let new = cluster.leader_among(&others).await;
    eprintln!("node {old} cut off; node {new} leads after {:.2?}", cut_at.elapsed());
    for i in 0..20 {
        user += 1;
        let via = others[i % others.len()];
        let token = cluster.create(via, user).await.unwrap_or_else(|e| panic!("the majority refused a write: {e:?}"));
        acked.push(token);
    }
    let unacked = minority.len() as u64;
    for write in minority {
        let answer = write.await.expect("a write task");
        eprintln!("a write to the cut-off leader: {answer:?}");
        assert!(
            matches!(answer, Ok(StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT)),
            "the cut-off leader answered {answer:?}"
        );
    }
    assert!(cut_at.elapsed() < PATIENCE);

    proxies.heal();
    let digest = cluster.converged().await;
    let leader = cluster.leader().await;
    eprintln!("healed: node {leader} leads, {digest}");
    let sessions = count(&digest);
    let acked_count = acked.len() as u64;
    assert!(
        (acked_count..=acked_count + unacked).contains(&sessions),
        "{sessions} sessions, {acked_count} acknowledged, {unacked} sent to the cut-off leader"
    );
    assert_applied_once(&digest);
    cluster.assert_readable_everywhere(&acked).await;
    for id in cluster.running() {
        let status = cluster.status(id).await.expect("a status");
        assert_eq!(status["refused_connections"], 0, "node {id}: {status}");
    }
    // Writes go on through every node.
    for id in cluster.running() {
        user += 1;
        cluster.create(id, user).await.unwrap_or_else(|e| panic!("after the heal, node {id}: {e:?}"));
    }
}
