//! A power cut between a log truncation and the appends after it.
//!
//! **The sequence.** A leader is cut off while commands reach it: it appends entries that no
//! other node ever sees. The majority elects a new leader and commits past them. Healed, the
//! old leader follows the new one, and its log truncates the entries that conflict with the
//! new leader's (a `set_len` of the segment, then an `fdatasync`) before it appends the new
//! leader's entries (a write, then an `fdatasync`). Its disk loses power at one of four points
//! of that sequence ([`Point`]), watched through the storage seam ([`crate::watched`]), so that
//! each round reaches its point on purpose.
//!
//! **How each round knows it got there.** The tripwire records the truncation's `set_len` and
//! the operation it cut the power at; the round asserts both, that the operations on the
//! segment after the truncation came in the expected order, and what the crash image holds:
//! the truncated entries still on disk where the truncation was not durable (the crash image is
//! picked so that it lost the truncation), gone where it was.
//!
//! **What must hold.** The node reopens on its crash image (its log files recover). Reopened
//! while still cut off, it has not applied one of the truncated entries, even with them back
//! in its log; healed, it truncates them again, and at the end the history check proves that
//! every acknowledged command is on every node at its place, that none ran twice and that
//! every replica is identical. None of the truncated commands is anywhere.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use airomem_raft::Network;
use airomem_workspace::sim::SimStorage;

use crate::history::{History, Outcome, value};
use crate::watched::{Op, Tripwire, is_segment};
use crate::{Node, converge, node_dir, open_watched, wait_until, write};

/// Where the power is cut, in the order the old leader's log reaches them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Point {
    /// At the truncation's `set_len`: the truncation never reaches the disk.
    AtTruncation,
    /// After the `set_len`, before its `fdatasync`: a crash may keep it or lose it.
    BeforeTruncationSync,
    /// After the truncation is durable, before the first append after it is written.
    BeforeAppend,
    /// The first append after the truncation written, before its `fdatasync`.
    BeforeAppendSync,
}

/// The rounds: each point, for the truncation not yet synced a crash image that lost it and
/// one that kept it, and for the append not yet synced two crash images (of the seeds the
/// rounds' numbers give), each keeping, dropping or tearing it.
const ROUNDS: [(Point, Option<bool>); 6] = [
    (Point::AtTruncation, None),
    (Point::BeforeTruncationSync, Some(true)),
    (Point::BeforeTruncationSync, Some(false)),
    (Point::BeforeAppend, None),
    (Point::BeforeAppendSync, None),
    (Point::BeforeAppendSync, None),
];

/// Commands that reach the cut-off leader only.
const STRANDED: u64 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_between_a_truncation_and_the_appends_after_it_resurrects_nothing_and_loses_nothing() {
    crate::support::init_tracing();
    let mut rounds = tokio::task::JoinSet::new();
    for (round, (point, lost)) in ROUNDS.into_iter().enumerate() {
        rounds.spawn(one_round(round as u64, point, lost));
    }
    while let Some(joined) = rounds.join_next().await {
        if let Err(e) = joined {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

/// The rule that cuts the power at `point`; `seen` gets every segment operation from the
/// truncation on.
fn cut_at(point: Point, seen: Arc<Mutex<Vec<Op>>>) -> impl FnMut(Op, &std::path::Path) -> bool + Send + 'static {
    // How far the old leader's log has come: the next point it reaches.
    let mut next = Point::AtTruncation;
    let mut done = false;
    move |op, path| {
        if !is_segment(path) || done {
            return false;
        }
        if next > Point::AtTruncation || op == Op::SetLen {
            seen.lock().expect("seen").push(op);
        }
        let reached = match (next, op) {
            (Point::AtTruncation, Op::SetLen) => Point::AtTruncation,
            (Point::BeforeTruncationSync, Op::SyncData) => Point::BeforeTruncationSync,
            (Point::BeforeAppend, Op::WriteAt) => Point::BeforeAppend,
            (Point::BeforeAppendSync, Op::SyncData) => Point::BeforeAppendSync,
            _ => return false,
        };
        if reached == point {
            done = true;
            return true;
        }
        next = match reached {
            Point::AtTruncation => Point::BeforeTruncationSync,
            Point::BeforeTruncationSync => Point::BeforeAppend,
            Point::BeforeAppend | Point::BeforeAppendSync => Point::BeforeAppendSync,
        };
        false
    }
}

async fn one_round(round: u64, point: Point, lost: Option<bool>) {
    let what = format!("round {round} ({point:?}, truncation lost: {lost:?})");
    let root = tempfile::tempdir().expect("a temporary directory");
    let network = Network::new();
    let disks: BTreeMap<u64, SimStorage> = (1..=3).map(|id| (id, SimStorage::new())).collect();
    let wires: BTreeMap<u64, Arc<Tripwire>> = (1..=3).map(|id| (id, Tripwire::new())).collect();
    let mut nodes: BTreeMap<u64, Arc<Node>> = BTreeMap::new();
    for id in 1..=3 {
        nodes.insert(id, open_watched(id, root.path(), &disks[&id], &wires[&id], &network, |c| c).await);
    }
    nodes[&1].bootstrap(1..=3).await.expect("bootstraps");
    let history = Arc::new(History::default());
    let old = agreed_leader(&nodes, &[]).await;
    let old_node = Arc::clone(&nodes[&old]);
    for i in 0..5 {
        let outcome = write(&history, &old_node, value(0, i)).await;
        assert!(matches!(outcome, Outcome::Acked(_)), "{what}: {outcome:?}");
    }
    let committed = old_node.status().commit_index.expect("committed");
    wait_until("every node to apply the first commands", || {
        nodes.values().all(|n| n.status().applied_index >= Some(committed))
    })
    .await;

    // Cut off, the leader appends what reaches it, and nobody else ever sees it.
    network.isolate(old);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut stranded = tokio::task::JoinSet::new();
    for i in 0..STRANDED {
        let (history, node, mut stopped) = (Arc::clone(&history), Arc::clone(&old_node), stopped.clone());
        stranded.spawn(async move {
            let pending = history.invoke(value(1, i));
            tokio::select! {
                outcome = node.commit(value(1, i)) => assert!(outcome.is_err(), "a cut-off leader committed"),
                _ = stopped.wait_for(|&stop| stop) => {}
            }
            history.wrote(pending, Outcome::Unknown);
        });
    }
    drop(stopped);
    wait_until("the cut-off leader to append entries of its own", || {
        old_node.status().last_log_index >= Some(committed + 2)
    })
    .await;

    // The majority elects a leader and commits past them.
    let new = agreed_leader(&nodes, &[old]).await;
    let others: Vec<Arc<Node>> = nodes.iter().filter(|&(&id, _)| id != old).map(|(_, n)| Arc::clone(n)).collect();
    for i in 0..10 {
        let outcome = write(&history, &others[i as usize % 2], value(2, i)).await;
        assert!(matches!(outcome, Outcome::Acked(_)), "{what}: the majority commits: {outcome:?}");
    }
    stop.send(true).expect("the stranded commands listen");
    while let Some(joined) = stranded.join_next().await {
        joined.expect("a stranded command");
    }
    let tail = old_node.status().last_log_index.expect("the old leader's log");
    assert!(tail > committed, "{what}: the old leader holds entries the others lack");

    // Healed, the old leader truncates them and appends the new leader's entries: the power
    // is cut at `point`.
    let seen = Arc::new(Mutex::new(Vec::new()));
    wires[&old].arm(vec![disks[&old].clone()], cut_at(point, Arc::clone(&seen)));
    network.heal();
    wait_until("the power cut between the truncation and the appends", || wires[&old].tripped().is_some()).await;
    let unsynced = disks[&old].unsynced();
    old_node.halt();
    nodes.remove(&old);
    drop(old_node);

    // It got there: a truncation, then the segment operations in the expected order.
    let cuts = wires[&old].segment_cuts();
    let truncated_to = *cuts.first().unwrap_or_else(|| panic!("{what}: the old leader's log never truncated"));
    let seen = seen.lock().expect("seen").clone();
    let expected: &[Op] = match point {
        Point::AtTruncation => &[Op::SetLen],
        Point::BeforeTruncationSync => &[Op::SetLen, Op::SyncData],
        Point::BeforeAppend => &[Op::SetLen, Op::SyncData, Op::WriteAt],
        Point::BeforeAppendSync => &[Op::SetLen, Op::SyncData, Op::WriteAt],
    };
    assert!(seen.starts_with(expected), "{what}: the segment saw {seen:?}, not {expected:?} first");
    let last = if point == Point::BeforeAppendSync { Some(&Op::SyncData) } else { expected.last() };
    assert_eq!(seen.last(), last, "{what}: the power was cut at another operation: {seen:?}");
    if matches!(point, Point::BeforeTruncationSync | Point::BeforeAppendSync) {
        assert!(unsynced > 0, "{what}: nothing was pending at the cut");
    }

    // The crash image: for a truncation not synced, one that lost it or kept it.
    let segment_len = |image: &SimStorage| -> u64 {
        let log = node_dir(root.path(), old).join("log");
        image.contents().iter().filter(|(p, _)| p.starts_with(&log) && is_segment(p)).map(|(_, c)| c.len() as u64).sum()
    };
    let seed = match lost {
        None => round,
        Some(lost) => (0..256)
            .find(|&seed| (segment_len(&disks[&old].crash(seed)) > truncated_to) == lost)
            .unwrap_or_else(|| panic!("{what}: no crash image with the truncation lost = {lost}")),
    };
    let image = disks[&old].crash(seed);
    let len = segment_len(&image);
    let resurrected = match point {
        Point::AtTruncation => true,
        Point::BeforeTruncationSync => lost.expect("chosen"),
        Point::BeforeAppend | Point::BeforeAppendSync => false,
    };
    if resurrected {
        assert!(len > truncated_to, "{what}: the truncated entries are not on disk ({len} bytes)");
    } else if point == Point::BeforeAppendSync {
        assert!(len >= truncated_to, "{what}: the durable truncation cut more ({len} < {truncated_to})");
    } else {
        assert_eq!(len, truncated_to, "{what}: the durable truncation is undone");
    }

    // Reopened still cut off, the old leader's log recovers, with the truncated entries back
    // if the truncation was lost, and none of them applied.
    network.isolate(old);
    let reopened = open_watched(old, root.path(), &image, &Tripwire::new(), &network, |c| c).await;
    // openraft publishes its metrics (the log's last index among them) once it has started.
    wait_until("the reopened node's metrics", || reopened.status().last_log_index.is_some()).await;
    let status = reopened.status();
    if resurrected {
        assert!(status.last_log_index >= Some(tail), "{what}: the truncated entries were not recovered: {status:?}");
    } else if len == truncated_to {
        // (An append after the truncation that the crash image kept may reach past the old
        // tail with the new leader's entries: only a log cut at the truncation is checked.)
        assert!(status.last_log_index < Some(tail), "{what}: a durable truncation came back: {status:?}");
    }
    let applied = reopened.query().expect("reads").values.clone();
    assert!(applied.iter().all(|&v| v >> 32 != 1), "{what}: a truncated entry was applied: {applied:?}");
    nodes.insert(old, reopened);
    network.heal();

    let nodes: Vec<Arc<Node>> = nodes.into_values().collect();
    let replicas = converge(&history, &nodes).await;
    let summary = history.check(&replicas).unwrap_or_else(|violation| panic!("{what}: {violation}"));
    assert!(replicas[0].iter().all(|&v| v >> 32 != 1), "{what}: a truncated command ran");
    assert_eq!(summary.acked, 5 + 10 + 1, "{what}: {summary:?}");
    for node in nodes {
        node.halt();
    }
    eprintln!(
        "{what}: new leader {new}, truncated to {truncated_to} bytes, cut at {:?} after {} segment operations, seed {seed}",
        seen.last(),
        seen.len()
    );
}

/// The node every node not in `excluded` follows.
async fn agreed_leader(nodes: &BTreeMap<u64, Arc<Node>>, excluded: &[u64]) -> u64 {
    let mut leader = None;
    wait_until("a leader", || {
        let statuses: Vec<_> = nodes.iter().filter(|(id, _)| !excluded.contains(id)).map(|(_, n)| n.status()).collect();
        leader = crate::support::agreed_leader(&statuses);
        leader.is_some()
    })
    .await;
    leader.expect("waited for")
}
