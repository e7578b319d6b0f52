//! How the peers are measured: concurrent writer threads for the commit figures, and the
//! build, recovery and lookup loop on the data set.

use std::path::Path;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;

use super::kind::PeerKind;
use super::peer::Peer;
use crate::commits::{Driven, SessionWorkload, share};
use crate::dataset::Dataset;
use crate::measure::{BoxError, DiskUse, REPETITIONS, Summary, disk_use, per_second, percentile, sync_disks};

/// Commits `total` commands from `writers` threads, writer `i` running
/// [`SessionWorkload::new`]`(i)`; all start together once every thread is up.
fn drive<P: Peer>(peer: &P, writers: usize, total: u64) -> Result<Driven, BoxError> {
    let start = Barrier::new(writers + 1);
    thread::scope(|scope| {
        let threads: Vec<_> = (0..writers)
            .map(|index| {
                let start = &start;
                scope.spawn(move || {
                    let count = share(total, writers, index) as usize;
                    let mut workload = SessionWorkload::new(index as u64);
                    let mut latencies = Vec::with_capacity(count);
                    start.wait();
                    for command in workload.by_ref().take(count) {
                        let sent = Instant::now();
                        peer.commit(command)?;
                        latencies.push(sent.elapsed());
                    }
                    Ok::<_, BoxError>((latencies, workload.live_sessions()))
                })
            })
            .collect();
        start.wait();
        let started = Instant::now();
        let mut latencies = Vec::with_capacity(total as usize);
        let mut expected_sessions = 0;
        for thread in threads {
            let (mine, live) = thread.join().map_err(|_| "a writer thread panicked")??;
            latencies.extend(mine);
            expected_sessions += live;
        }
        let elapsed = started.elapsed();
        latencies.sort_unstable();
        Ok(Driven { elapsed, latencies, expected_sessions })
    })
}

/// One repetition: opens a fresh store in `dir`, syncs, commits `commits` commands from
/// `writers` threads, and checks the sessions left.
pub(super) fn commits_once<P: Peer>(
    dir: &Path,
    runtime: &Handle,
    writers: usize,
    commits: u64,
) -> Result<Driven, BoxError> {
    let peer = P::open(dir, runtime)?;
    sync_disks()?;
    let driven = drive(&peer, writers, commits)?;
    let sessions = peer.sessions()?;
    peer.close()?;
    if sessions != driven.expected_sessions {
        return Err(format!("{sessions} sessions in the store, {} expected", driven.expected_sessions).into());
    }
    Ok(driven)
}

/// A peer's durable commit throughput at one writer count, over the repetitions.
#[derive(Clone, Copy, Debug)]
pub struct PeerCommits {
    /// Concurrent writer threads.
    pub writers: usize,
    /// Commits per repetition.
    pub commits: u64,
    /// Acknowledged commits per second.
    pub rate: Summary,
    /// Median commit latency, microseconds.
    pub p50_micros: Summary,
    /// 99th-percentile commit latency, microseconds.
    pub p99_micros: Summary,
}

impl PeerCommits {
    /// Summarises the repetitions of `commits` commits from `writers` threads.
    pub fn summarise(writers: usize, commits: u64, runs: &[Driven]) -> PeerCommits {
        let micros = |d: Duration| d.as_secs_f64() * 1e6;
        PeerCommits {
            writers,
            commits,
            rate: Summary::over(runs, |r| per_second(commits, r.elapsed)),
            p50_micros: Summary::over(runs, |r| micros(percentile(&r.latencies, 50.0))),
            p99_micros: Summary::over(runs, |r| micros(percentile(&r.latencies, 99.0))),
        }
    }
}

/// A peer's recovery, lookup and disk-use figures.
#[derive(Clone, Copy, Debug)]
pub struct PeerRecovery {
    /// Commands per second of the (untimed) build.
    pub build_rate: f64,
    /// Wall time of [`Peer::recover`], seconds.
    pub recover_secs: Summary,
    /// Nanoseconds per lookup of an existing token.
    pub lookup_nanos: Summary,
    /// Disk use after the build, with the store closed.
    pub disk: DiskUse,
    /// With a snapshot `tail` commands before the end, if the peer has snapshots: recovery
    /// seconds and disk use.
    pub snapshot: Option<(Summary, DiskUse)>,
}

/// Builds the data set in `dir`, then times recovery and lookups [`REPETITIONS`] times; then
/// the same with a snapshot before the last `tail` commands, if the peer has snapshots.
pub(super) fn recovery<P: Peer>(
    kind: PeerKind,
    dir: &Path,
    runtime: &Handle,
    data: &Dataset,
    tail: u64,
) -> Result<PeerRecovery, BoxError> {
    let (name, records) = (kind.name(), data.records);
    let store_dir = dir.join(format!("{}-recovery", kind.id()));
    std::fs::create_dir_all(&store_dir)?;
    eprintln!("recovery: {name}: building {records} commands");
    let started = Instant::now();
    P::build(&store_dir, runtime, Box::new(data.commands()))?;
    let build_rate = per_second(records, started.elapsed());
    let disk = disk_use(&store_dir)?;

    let mut recover_secs = Vec::with_capacity(REPETITIONS);
    let mut lookup_nanos = Vec::with_capacity(REPETITIONS);
    for rep in 0..REPETITIONS {
        eprintln!("recovery: {name}: recover and look up, repetition {}/{REPETITIONS}", rep + 1);
        let (secs, peer) = timed_recover::<P>(&store_dir, runtime, data, records)?;
        recover_secs.push(secs);
        sync_disks()?;
        let started = Instant::now();
        let sum = peer.lookup_sum(&data.probes)?;
        lookup_nanos.push(started.elapsed().as_secs_f64() * 1e9 / data.probes.len() as f64);
        if sum != data.probe_sum {
            return Err(format!("{name}: lookups summed to {sum}, expected {}", data.probe_sum).into());
        }
        peer.close()?;
    }

    let snapshot_dir = dir.join(format!("{}-recovery-snapshot", kind.id()));
    std::fs::create_dir_all(&snapshot_dir)?;
    eprintln!("recovery: {name}: building {records} commands with a snapshot {tail} before the end");
    let snapshot_after = records.checked_sub(tail).ok_or("the tail is longer than the data set")?;
    let snapshot = if P::build_with_snapshot(&snapshot_dir, runtime, Box::new(data.commands()), snapshot_after)? {
        let disk = disk_use(&snapshot_dir)?;
        let mut secs = Vec::with_capacity(REPETITIONS);
        for rep in 0..REPETITIONS {
            eprintln!("recovery: {name}: snapshot + tail, repetition {}/{REPETITIONS}", rep + 1);
            let (elapsed, peer) = timed_recover::<P>(&snapshot_dir, runtime, data, records)?;
            secs.push(elapsed);
            peer.close()?;
        }
        Some((Summary::of(secs), disk))
    } else {
        std::fs::remove_dir_all(&snapshot_dir)?;
        None
    };

    Ok(PeerRecovery {
        build_rate,
        recover_secs: Summary::of(recover_secs),
        lookup_nanos: Summary::of(lookup_nanos),
        disk,
        snapshot,
    })
}

/// Syncs, times [`Peer::recover`] and checks what it recovered.
fn timed_recover<P: Peer>(dir: &Path, runtime: &Handle, data: &Dataset, records: u64) -> Result<(f64, P), BoxError> {
    sync_disks()?;
    let started = Instant::now();
    let peer = P::recover(dir, runtime)?;
    let elapsed = started.elapsed().as_secs_f64();
    if !peer.recovered_equals(&data.expected)? {
        return Err(
            format!("recovering {records} commands from {} did not rebuild the expected state", dir.display()).into()
        );
    }
    Ok((elapsed, peer))
}
