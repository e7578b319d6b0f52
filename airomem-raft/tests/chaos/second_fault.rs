//! A second fault during a restart, or during the catch-up after one.
//!
//! A follower loses power and halts; the group commits on without it; it restarts on its crash
//! image. Then it loses power again, on purpose at one of these points, and restarts once more:
//!
//! * **During its recovery** ([`a_power_cut_during_recovery_then_a_restart_recovers`]): the
//!   first power cut strikes at a follower's append, between its write and its `fdatasync`,
//!   and the crash image is one that tore the append, so the recovery has a torn tail to cut.
//!   Reopening that image at every operation of its recovery in turn (each on its own copy,
//!   on a network of its own) with the power cut before that operation, then reopening the
//!   second crash image, must recover the same log as an undisturbed recovery; the
//!   interrupted repair is what the real restart of the node then goes through.
//! * **During its catch-up** ([`a_power_cut_during_a_catch_up_then_a_restart_catches_up`]):
//!   restarted, the follower is sent entries and loses power before their write, then before
//!   their `fdatasync`; or it is sent a snapshot (the leader purged past its log) and loses
//!   power once the installed snapshot is durable. Cut earlier in the install
//!   ([`a_power_cut_during_a_snapshot_install_then_a_restart_catches_up`], ignored: it finds
//!   a bug), the follower never restarts.
//!
//! How each knows it got there: the tripwire (or the simulated disk's trace) names the
//! operation the power was cut at; a snapshot round checks that the leader had purged past
//! the follower's log and that the snapshot being written is the leader's (its sequence
//! number beyond that log); an entries round, that the leader had not purged past it and that
//! the follower was behind when the power went. What must hold: every restart recovers, and at
//! the end the history check proves that every acknowledged command is on every node at its
//! place, that none ran twice and that every replica is identical.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use airomem::PostcardSerializer;
use airomem_raft::{Network, NodeConfig};
use airomem_workspace::sim::{SimStorage, SplitMix64};
use futures::future::join_all;

use crate::history::{History, value};
use crate::watched::{Op, Tripwire, is_segment, is_snapshot_of};
use crate::{Live, Node, Snapshots, converge, kill_node, leader_of, node_dir, open_watched, pick, wait_until, write};

/// A group of three nodes on watched simulated disks, committing only when the test says.
struct Group {
    root: tempfile::TempDir,
    network: Network,
    disks: BTreeMap<u64, SimStorage>,
    wires: BTreeMap<u64, Arc<Tripwire>>,
    live: Live,
    history: Arc<History>,
    snapshots: Snapshots,
    written: u64,
    rng: SplitMix64,
}

impl Group {
    async fn start(snapshots: Snapshots) -> Group {
        crate::support::init_tracing();
        let mut group = Group {
            root: tempfile::tempdir().expect("a temporary directory"),
            network: Network::new(),
            disks: (1..=3).map(|id| (id, SimStorage::new())).collect(),
            wires: (1..=3).map(|id| (id, Tripwire::new())).collect(),
            live: Live::default(),
            history: Arc::default(),
            snapshots,
            written: 0,
            rng: SplitMix64::new(1),
        };
        for id in 1..=3 {
            group.restart(id).await;
        }
        let first = Arc::clone(&group.live.lock().expect("live nodes")[&1]);
        first.bootstrap(1..=3).await.expect("bootstraps");
        group
    }

    fn configure(&self) -> impl FnOnce(NodeConfig) -> NodeConfig + use<> {
        let snapshots = self.snapshots;
        move |c: NodeConfig| c.snapshot_every(snapshots.every).logs_kept_after_snapshot(snapshots.kept)
    }

    /// Opens node `id` on its disk, watched by its tripwire, and makes it live.
    async fn restart(&mut self, id: u64) -> Arc<Node> {
        let (root, network, configure) = (self.root.path(), &self.network, self.configure());
        let node = open_watched(id, root, &self.disks[&id], &self.wires[&id], network, configure).await;
        self.live.lock().expect("live nodes").insert(id, Arc::clone(&node));
        node
    }

    fn node(&self, id: u64) -> Arc<Node> {
        Arc::clone(&self.live.lock().expect("live nodes")[&id])
    }

    /// Eight commits at once through live nodes, until `count` were acknowledged.
    async fn commit(&mut self, count: usize) {
        let target = self.history.acked() + count;
        while self.history.acked() < target {
            let batch: Vec<(Arc<Node>, u64)> =
                (0..8).map(|i| (pick(&self.live, &mut self.rng), value(0, self.written + i))).collect();
            self.written += 8;
            join_all(batch.iter().map(|(node, v)| write(&self.history, node, *v))).await;
        }
    }

    /// Commits until `condition` holds.
    async fn commit_until(&mut self, what: &str, mut condition: impl FnMut(&Group) -> bool) {
        let deadline = std::time::Instant::now() + crate::PATIENCE;
        while !condition(self) {
            assert!(std::time::Instant::now() < deadline, "timed out committing until {what}");
            self.commit(8).await;
        }
    }

    /// A node that follows the leader.
    async fn follower(&self) -> u64 {
        let leader = leader_of(&self.live).await;
        *self.live.lock().expect("live nodes").keys().find(|&&id| id != leader).expect("a follower")
    }

    /// Waits until node `id` has applied everything the leader had committed.
    async fn caught_up(&self, id: u64) {
        let leader = leader_of(&self.live).await;
        let target = self.node(leader).status().commit_index;
        let node = self.node(id);
        wait_until("the restarted node to catch up", || node.status().applied_index >= target).await;
    }

    /// Takes the crash image `seed` of node `id`'s disk as its disk from now on.
    fn crash(&mut self, id: u64, seed: u64) -> SimStorage {
        let image = self.disks[&id].crash(seed);
        self.disks.insert(id, image.clone());
        image
    }

    /// One more commit through every node, then the history check.
    async fn finish(self) {
        let nodes: Vec<Arc<Node>> = self.live.lock().expect("live nodes").values().cloned().collect();
        let replicas = converge(&self.history, &nodes).await;
        let summary = self.history.check(&replicas).unwrap_or_else(|violation| panic!("{violation}"));
        for node in nodes {
            node.halt();
        }
        eprintln!("{summary:?}");
    }
}

/// What a node opened alone recovered.
struct Recovered {
    /// Its log's last index.
    last: u64,
    /// The storage operations its open made.
    ops: u64,
}

/// Opens `disk` as node `id` on a network of its own (so that it changes nothing in the
/// group), waits for its metrics, and halts it: what it recovered, or why its open failed.
async fn open_alone(root: &Path, id: u64, disk: &SimStorage, snapshots: Snapshots) -> Result<Recovered, String> {
    let config = crate::config(id, root, disk).snapshot_every(snapshots.every).logs_kept_after_snapshot(snapshots.kept);
    let node = Node::open(config, PostcardSerializer, &Network::new()).await.map_err(|e| e.to_string())?;
    let ops = disk.ops();
    if disk.is_frozen() {
        // The power went after the last operation whose failure fails the open.
        node.halt();
        return Err("the power went during the open".into());
    }
    wait_until("the metrics of a node opened alone", || node.status().last_log_index.is_some()).await;
    let last = node.status().last_log_index.expect("waited for");
    node.halt();
    Ok(Recovered { last, ops })
}

/// See the module docs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_during_recovery_then_a_restart_recovers() {
    let snapshots = Snapshots { every: 30, kept: 5 };
    let mut group = Group::start(snapshots).await;
    group.commit(40).await;
    let victim = group.follower().await;

    // The first fault: the victim's disk loses power with an append written, not synced.
    let wire = Arc::clone(&group.wires[&victim]);
    let mut written = false;
    wire.arm(vec![group.disks[&victim].clone()], move |op, path| {
        written |= op == Op::WriteAt && is_segment(path);
        written && op == Op::SyncData && is_segment(path)
    });
    group.commit_until("the victim's power cut mid-append", |_| wire.tripped().is_some()).await;
    kill_node(&group.live, &group.disks[&victim], victim);
    group.commit(10).await;

    // A crash image that tore the append: its recovery cuts a torn tail (a set_len of the
    // newest segment, found in the trace of an undisturbed recovery).
    let root = group.root.path().to_path_buf();
    let mut chosen = None;
    for seed in 0..64 {
        let image = group.disks[&victim].crash(seed);
        let dry = image.crash(0);
        dry.trace();
        let undisturbed = open_alone(&root, victim, &dry, snapshots).await.expect("an undisturbed recovery");
        // The trace numbers operations from the first after `trace`: the open's first.
        let traced: Vec<String> = dry.traced().into_iter().take(undisturbed.ops as usize).collect();
        if let Some(repair) = traced.iter().position(|op| op.contains("set_len")) {
            chosen = Some((seed, image, undisturbed, repair as u64, traced));
            break;
        }
    }
    let (seed, image, undisturbed, repair, traced) = chosen.expect("a crash image with a torn tail within 64 seeds");

    // The second fault, at every operation of the recovery in turn: the next recovery, from a
    // crash image of what the interrupted one left, recovers the same log.
    let mut failed = 0;
    for k in 0..undisturbed.ops {
        let attempt = image.crash(0);
        attempt.freeze_after(k);
        if open_alone(&root, victim, &attempt, snapshots).await.is_err() {
            failed += 1;
        }
        let again = attempt.crash(seed * 1_000 + k);
        let recovered = open_alone(&root, victim, &again, snapshots)
            .await
            .unwrap_or_else(|e| panic!("cut at {}: the next recovery failed: {e}", traced[k as usize]));
        assert_eq!(
            recovered.last, undisturbed.last,
            "cut at {}: the next recovery found another log",
            traced[k as usize]
        );
    }
    assert!(failed > 0, "no cut made a recovery fail");

    // The victim itself: its recovery cut at the repair of its torn tail, then restarted on
    // what that left, rejoins and catches up.
    let attempt = image.crash(0);
    attempt.freeze_after(repair);
    assert!(open_alone(&root, victim, &attempt, snapshots).await.is_err(), "the cut repair did not fail the open");
    group.disks.insert(victim, attempt);
    group.crash(victim, seed + 7);
    group.restart(victim).await;
    group.caught_up(victim).await;
    group.commit(10).await;
    eprintln!(
        "recovery cut at each of its {} operations ({failed} failed the open), the victim's at {}",
        undisturbed.ops, traced[repair as usize]
    );
    group.finish().await;
}

/// Where a restarted follower's catch-up loses power.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CatchUp {
    /// Installing a snapshot, at the first operation of this kind on its snapshots after the
    /// install's file was created (`Create`: at that creation).
    Snapshot(Op),
    /// Appending entries: before the first write of the catch-up.
    BeforeWrite,
    /// Appending entries: the first write made, before its `fdatasync`.
    BeforeSync,
}

/// See the module docs: the catch-ups from entries, and a snapshot install cut once the
/// installed snapshot is durable (at the removal of the snapshot it replaces).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_during_a_catch_up_then_a_restart_catches_up() {
    catch_ups(&[CatchUp::BeforeWrite, CatchUp::BeforeSync, CatchUp::Snapshot(Op::Remove)]).await;
}

/// See the module docs: a snapshot install cut before the installed snapshot is durable (at
/// its file's creation, its `fdatasync`, its rename, the directory sync after the rename).
///
/// It failed before the log waited for durable snapshots (`LogStore::gate_purges`):
/// openraft 0.9.25's `FollowingHandler::install_full_snapshot` queues the install to the
/// state machine worker and, with no condition, a `PurgeLog` up to the snapshot's last log
/// id. The purge point reached `raft.meta` before the snapshot reached the disk; a power cut
/// in between left a log purged past the newest snapshot (entries between them in neither),
/// and the next start panicked in openraft's state validation
/// (`purge_upto <= snapshot_last_log_id`): the node never came back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_during_a_snapshot_install_then_a_restart_catches_up() {
    catch_ups(&[
        CatchUp::Snapshot(Op::Create),
        CatchUp::Snapshot(Op::SyncData),
        CatchUp::Snapshot(Op::Rename),
        CatchUp::Snapshot(Op::SyncDir),
    ])
    .await;
}

/// A round per catch-up of `rounds`, one group for all.
async fn catch_ups(rounds: &[CatchUp]) {
    // A snapshot every 30 entries with 25 kept: the few entries an entries round commits
    // never let the leader purge past the victim's log; the many a snapshot round commits do.
    let snapshots = Snapshots { every: 30, kept: 25 };
    let mut group = Group::start(snapshots).await;
    group
        .commit_until("every node has a snapshot", |group| {
            group.live.lock().expect("live nodes").values().all(|n| n.status().snapshot_index.is_some())
        })
        .await;
    for (round, &catch_up) in rounds.iter().enumerate() {
        let round = round as u64;
        let victim = group.follower().await;
        let status = group.node(victim).status();
        let end = status.last_log_index.expect("a log");
        assert!(status.snapshot_index.is_some(), "round {round}: the victim has a snapshot to replace");
        kill_node(&group.live, &group.disks[&victim], victim);
        let leader = leader_of(&group.live).await;
        let leader_node = group.node(leader);
        if let CatchUp::Snapshot(_) = catch_up {
            group
                .commit_until("the leader purges past the victim's log", |_| {
                    leader_node.status().purged_index.is_some_and(|p| p > end)
                })
                .await;
        } else {
            group.commit(5).await;
            let purged = leader_node.status().purged_index;
            // With a margin for the entries the victim's crash image may lose.
            assert!(purged < Some(end - 10), "round {round}: the leader purged past the victim's log");
        }

        // Restarted, the victim is sent what it lacks, and loses power on the way.
        let image = group.crash(victim, round);
        // The leader purged past the victim's log: what it sends is its snapshot.
        let dir = node_dir(group.root.path(), victim);
        let installing = Arc::new(Mutex::new(None));
        let rule = {
            let installing = Arc::clone(&installing);
            let mut started = false;
            move |op: Op, path: &Path| match catch_up {
                CatchUp::Snapshot(at) => {
                    if !started {
                        // The leader's snapshot arriving: only a transfer creates an incoming
                        // file (a snapshot the victim builds of its own log is written as a
                        // temporary file of its own name).
                        let Some(name) = incoming_name(path).filter(|_| op == Op::Create && is_snapshot_of(&dir, path))
                        else {
                            return false;
                        };
                        *installing.lock().expect("installing") = Some(name);
                        started = true;
                    }
                    op == at && is_snapshot_of(&dir, path)
                }
                CatchUp::BeforeWrite => op == Op::WriteAt && is_segment(path),
                CatchUp::BeforeSync => {
                    started |= op == Op::WriteAt && is_segment(path);
                    started && op == Op::SyncData && is_segment(path)
                }
            }
        };
        let wire = Arc::clone(&group.wires[&victim]);
        wire.arm(vec![image], rule);
        let restarted = group.restart(victim).await;
        wait_until("the power cut during the catch-up", || wire.tripped().is_some()).await;
        let behind = restarted.status().applied_index < leader_node.status().commit_index;
        let cut = wire.tripped().expect("tripped");
        kill_node(&group.live, &group.disks[&victim], victim);
        drop(restarted);
        if let CatchUp::Snapshot(_) = catch_up {
            let file = installing.lock().expect("installing").clone().expect("the install started");
            eprintln!("round {round}: {catch_up:?} cut at {cut} receiving {file} (the log ended at {end})");
        } else {
            assert!(behind, "round {round}: the victim was not behind when the power went");
            eprintln!("round {round}: {catch_up:?} cut at {cut} catching up from entry {end}");
        }

        // Restarted once more, it catches up.
        group.crash(victim, round + 100);
        group.restart(victim).await;
        group.caught_up(victim).await;
        group.commit(8).await;
    }
    group.finish().await;
}

/// The name of a snapshot being received (`incoming-<n>.part`), if `path` is one.
fn incoming_name(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    (name.starts_with("incoming-") && name.ends_with(".part")).then(|| name.to_owned())
}
