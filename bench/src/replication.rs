//! Replication: three `airomem-raft` nodes in this one process (in-process network, each
//! node's log and snapshots on the bench's disk, `fdatasync` on every node) against a
//! single-node store in the same run, both committing the session workload:
//!
//! * durable commits per second with 1 and 64 writers (through the leader's handle);
//! * commit latency p50 and p99 at each writer count;
//! * failover: the leader halted as a killed process is, then the time until a surviving
//!   node acknowledges a commit, over a series of kills; each killed node restarts on its
//!   directory and catches up before the next kill;
//! * failover after a partition, with snapshots every 200 entries: the leader cut off while
//!   commands wait on it, then the time until the majority acknowledges a commit; the
//!   majority purges its log past the old leader's before the heal, so that the old leader
//!   catches up from a snapshot (the case that once left it unable to commit when elected
//!   again, issue 22). Printed as p50 and max, over as many partitions as kills.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use airomem::{PostcardSerializer, Store};
use airomem_raft::{Network, NodeConfig, ReplicatedStore, Role};
use airomem_workspace::Sessions;
use tokio::task::JoinSet;

use crate::commits::{SessionStore, SessionWorkload, share};
use crate::measure::{BoxError, REPETITIONS, Summary, per_second, percentile};

type Replicated = ReplicatedStore<Sessions, PostcardSerializer>;

/// How much the measurement does.
#[derive(Clone, Copy, Debug)]
pub struct ReplicationPlan {
    /// Commits per repetition with one writer.
    pub lone: u64,
    /// Commits per repetition with 64 writers.
    pub many: u64,
    /// Leader kills for the failover figures (one series, after the repetitions, on a
    /// cluster of its own).
    pub kills: usize,
}

/// One writer count's figures for one system.
#[derive(Clone, Copy, Debug)]
pub struct Figures {
    /// Commits per second.
    pub rate: Summary,
    /// Median latency, in microseconds.
    pub p50: Summary,
    /// 99th percentile latency, in microseconds.
    pub p99: Summary,
}

/// The replication figures.
#[derive(Clone, Debug)]
pub struct ReplicationResult {
    /// (writers, single node, three nodes).
    pub commits: Vec<(usize, Figures, Figures)>,
    /// Kill → first acknowledged commit, sorted.
    pub failovers: Vec<Duration>,
}

/// The writer counts measured.
const WRITERS: [usize; 2] = [1, 64];

/// Timings for a quiet machine: a 50 ms heartbeat and a 150–300 ms election timeout
/// (openraft's defaults).
fn node_config(id: u64, dir: &Path) -> NodeConfig {
    NodeConfig::new(id, dir.join(format!("node-{id}")))
        .heartbeat(Duration::from_millis(50))
        .election_timeout(Duration::from_millis(150), Duration::from_millis(300))
}

/// Runs the measurement in `dir`.
pub async fn run(dir: &Path, plan: ReplicationPlan) -> Result<ReplicationResult, BoxError> {
    eprintln!("replication: 3 nodes against one, {REPETITIONS} runs; then {} leader kills", plan.kills);
    let mut runs: Vec<[Vec<(f64, Duration, Duration)>; 2]> = WRITERS.iter().map(|_| Default::default()).collect();
    for rep in 0..REPETITIONS {
        for (w, &writers) in WRITERS.iter().enumerate() {
            let commits = if writers == 1 { plan.lone } else { plan.many };
            let single_dir = dir.join(format!("single-{writers}-{rep}"));
            let store: SessionStore = Store::open(PostcardSerializer, &single_dir).await?;
            // `Store` is a handle: each commit takes a clone.
            let s = drive(writers, commits, {
                let store = store.clone();
                move |command| {
                    let store = store.clone();
                    async move { store.commit(command).await.map(drop).map_err(BoxError::from) }
                }
            })
            .await?;
            store.close().await?;
            std::fs::remove_dir_all(&single_dir)?;
            runs[w][0].push(s);

            let cluster_dir = dir.join(format!("cluster-{writers}-{rep}"));
            let cluster = Cluster::start(&cluster_dir, |c| c).await?;
            let leader = cluster.leader().await?;
            let r = drive(writers, commits, {
                let leader = Arc::clone(&leader);
                move |command| {
                    let leader = Arc::clone(&leader);
                    async move { leader.commit(command).await.map(drop).map_err(BoxError::from) }
                }
            })
            .await?;
            drop(leader);
            cluster.close().await?;
            std::fs::remove_dir_all(&cluster_dir)?;
            runs[w][1].push(r);
        }
    }
    let summarise = |runs: &[(f64, Duration, Duration)]| Figures {
        rate: Summary::of(runs.iter().map(|r| r.0)),
        p50: Summary::of(runs.iter().map(|r| r.1.as_secs_f64() * 1e6)),
        p99: Summary::of(runs.iter().map(|r| r.2.as_secs_f64() * 1e6)),
    };
    let commits = WRITERS.iter().zip(&runs).map(|(&w, [s, r])| (w, summarise(s), summarise(r))).collect();
    let failovers = failovers(&dir.join("failover"), plan.kills).await?;
    std::fs::remove_dir_all(dir.join("failover"))?;
    let partitions = partition_failovers(&dir.join("partition"), plan.kills).await?;
    std::fs::remove_dir_all(dir.join("partition"))?;
    if let Some(max) = partitions.last() {
        eprintln!(
            "replication: failover after a partition (snapshots every {PARTITION_SNAPSHOT_EVERY} entries), over {} \
             partitions: p50 {:.3} s, max {:.3} s",
            partitions.len(),
            percentile(&partitions, 50.0).as_secs_f64(),
            max.as_secs_f64()
        );
    }
    Ok(ReplicationResult { commits, failovers })
}

/// `writers` tasks committing `total` session commands through `commit`: (commits/s, p50,
/// p99).
async fn drive<F, Fut>(writers: usize, total: u64, commit: F) -> Result<(f64, Duration, Duration), BoxError>
where
    F: Fn(airomem_workspace::SessionsCommand) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), BoxError>> + Send,
{
    let mut tasks = JoinSet::new();
    let started = Instant::now();
    for index in 0..writers {
        let commit = commit.clone();
        let count = share(total, writers, index) as usize;
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(count);
            for command in SessionWorkload::new(index as u64).take(count) {
                let sent = Instant::now();
                commit(command).await?;
                latencies.push(sent.elapsed());
            }
            Ok::<_, BoxError>(latencies)
        });
    }
    let mut latencies = Vec::with_capacity(total as usize);
    while let Some(joined) = tasks.join_next().await {
        latencies.extend(joined??);
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    Ok((per_second(total, elapsed), percentile(&latencies, 50.0), percentile(&latencies, 99.0)))
}

/// Three nodes on one in-process network, each in its own directory.
struct Cluster {
    network: Network,
    dir: std::path::PathBuf,
    nodes: Vec<Option<Arc<Replicated>>>,
}

impl Cluster {
    /// Nodes 1..=3 with `configure` applied to [`node_config`], bootstrapped by node 1.
    async fn start(dir: &Path, configure: impl Fn(NodeConfig) -> NodeConfig) -> Result<Cluster, BoxError> {
        let network = Network::new();
        let mut nodes = Vec::new();
        for id in 1..=3 {
            let config = configure(node_config(id, dir));
            nodes.push(Some(Arc::new(Replicated::open(config, PostcardSerializer, &network).await?)));
        }
        nodes[0].as_ref().expect("opened").bootstrap(1..=3).await?;
        Ok(Cluster { network, dir: dir.to_path_buf(), nodes })
    }

    fn live(&self) -> impl Iterator<Item = &Arc<Replicated>> {
        self.nodes.iter().flatten()
    }

    /// The leader every live node follows, once there is one.
    async fn leader(&self) -> Result<Arc<Replicated>, BoxError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let statuses: Vec<_> = self.live().map(|n| n.status()).collect();
            if let Some(l) = statuses.iter().find(|s| s.role == Role::Leader)
                && statuses.iter().all(|s| s.leader == Some(l.id))
            {
                return Ok(Arc::clone(self.nodes[l.id as usize - 1].as_ref().expect("live")));
            }
            if Instant::now() > deadline {
                return Err("no leader within 30 s".into());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    async fn close(self) -> Result<(), BoxError> {
        for node in self.nodes.into_iter().flatten() {
            Arc::try_unwrap(node).map_err(|_| "a node is still in use")?.close().await?;
        }
        Ok(())
    }
}

/// Reopens node `id` after a halt: its log's writer releases the directory's lock only once
/// it has stopped, which `halt` does not wait for.
async fn reopen(id: u64, dir: &Path, network: &Network) -> Result<Replicated, BoxError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match Replicated::open(node_config(id, dir), PostcardSerializer, network).await {
            Err(airomem_raft::Error::Io { op: "lock", source, .. })
                if source.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            opened => return Ok(opened?),
        }
    }
}

/// Kills the leader `kills` times: the time from each kill to the first commit a survivor
/// acknowledges, sorted.
async fn failovers(dir: &Path, kills: usize) -> Result<Vec<Duration>, BoxError> {
    let mut cluster = Cluster::start(dir, |c| c).await?;
    let mut times = Vec::with_capacity(kills);
    let mut workload = SessionWorkload::new(0);
    for _ in 0..kills {
        let leader = cluster.leader().await?;
        // Some work under this leader first.
        for command in workload.by_ref().take(100) {
            leader.commit(command).await?;
        }
        let id = leader.status().id;
        drop(leader);
        let node = cluster.nodes[id as usize - 1].take().expect("the leader is live");
        let survivor = Arc::clone(cluster.live().next().expect("two survivors"));
        let killed = Instant::now();
        Arc::try_unwrap(node).map_err(|_| "the leader is still in use")?.halt();
        let command = workload.next().expect("an endless workload");
        loop {
            // Refused (no leader yet) means not applied: trying again is safe.
            match survivor.commit(command.clone()).await {
                Ok(_) => break,
                Err(airomem_raft::Error::Unavailable { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        times.push(killed.elapsed());
        // The killed node restarts on its directory and catches up before the next kill.
        let node = Arc::new(reopen(id, &cluster.dir, &cluster.network).await?);
        let target = survivor.status().commit_index;
        poll_until(&format!("node {id} to catch up"), Duration::from_secs(30), || {
            node.status().applied_index >= target
        })
        .await?;
        cluster.nodes[id as usize - 1] = Some(node);
    }
    cluster.close().await?;
    times.sort_unstable();
    Ok(times)
}

/// Log entries between snapshots in the partition series, and entries kept behind one.
const PARTITION_SNAPSHOT_EVERY: u64 = 200;
const PARTITION_KEPT_AFTER_SNAPSHOT: u64 = 20;
/// Commands that wait on the leader while it is cut off.
const WAITING_ON_THE_CUT_OFF_LEADER: usize = 8;

/// Cuts the leader off `partitions` times while commands wait on it: the time from each cut to
/// the first commit the majority acknowledges, sorted. Before each heal the majority commits
/// until every node of it has purged its log past the last entry the old leader holds, so
/// that the old leader can only catch up from a snapshot, which it must do before the next
/// partition.
async fn partition_failovers(dir: &Path, partitions: usize) -> Result<Vec<Duration>, BoxError> {
    // A short commit timeout: the commands sent to the cut-off leader give up within it.
    let cluster = Cluster::start(dir, |c| {
        c.snapshot_every(PARTITION_SNAPSHOT_EVERY)
            .logs_kept_after_snapshot(PARTITION_KEPT_AFTER_SNAPSHOT)
            .commit_timeout(Duration::from_secs(1))
    })
    .await?;
    let mut times = Vec::with_capacity(partitions);
    let mut workload = SessionWorkload::new(1);
    for _ in 0..partitions {
        let leader = cluster.leader().await?;
        for command in workload.by_ref().take(100) {
            leader.commit(command).await?;
        }
        let id = leader.status().id;
        let survivor = Arc::clone(cluster.live().find(|n| n.status().id != id).expect("two other nodes"));
        cluster.network.isolate(id);
        let cut = Instant::now();
        // Nothing the cut-off leader appends from now on reaches another node.
        let holds = leader.status().last_log_index;
        let mut waiting = JoinSet::new();
        for command in workload.by_ref().take(WAITING_ON_THE_CUT_OFF_LEADER) {
            let leader = Arc::clone(&leader);
            // Its outcome is unknown (it cannot commit while cut off): not measured.
            waiting.spawn(async move { drop(leader.commit(command).await) });
        }
        drop(leader);
        commit_on(&survivor, &mut workload).await?;
        times.push(cut.elapsed());

        let deadline = Instant::now() + Duration::from_secs(60);
        while !cluster.live().filter(|n| n.status().id != id).all(|n| n.status().purged_index >= holds) {
            if Instant::now() > deadline {
                return Err(format!("the majority did not purge past node {id}'s log within 60 s").into());
            }
            commit_on(&survivor, &mut workload).await?;
        }
        while let Some(joined) = waiting.join_next().await {
            joined?;
        }
        let old = Arc::clone(cluster.live().find(|n| n.status().id == id).expect("the old leader is live"));
        let installed_before = old.status().snapshot_index;
        cluster.network.heal();
        let target = survivor.status().commit_index;
        poll_until(&format!("node {id} to catch up from a snapshot"), Duration::from_secs(60), || {
            let status = old.status();
            status.applied_index >= target && status.snapshot_index > installed_before
        })
        .await?;
    }
    cluster.close().await?;
    times.sort_unstable();
    Ok(times)
}

/// Waits until `done` holds, checking every millisecond; fails after `patience`, naming what
/// it waited `for_what`.
async fn poll_until(for_what: &str, patience: Duration, mut done: impl FnMut() -> bool) -> Result<(), BoxError> {
    let deadline = Instant::now() + patience;
    while !done() {
        if Instant::now() > deadline {
            return Err(format!("waited {patience:?} for {for_what}").into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

/// Commits the workload's next command through `node`, trying new commands until one is
/// acknowledged: a command with an unknown outcome may be applied as well, which only adds a
/// session to the state.
async fn commit_on(node: &Replicated, workload: &mut SessionWorkload) -> Result<(), BoxError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let command = workload.next().expect("an endless workload");
        match node.commit(command).await {
            Ok(_) => return Ok(()),
            Err(airomem_raft::Error::Unavailable { .. } | airomem_raft::Error::Indeterminate { .. })
                if Instant::now() < deadline => {}
            Err(e) => return Err(e.into()),
        }
    }
}
