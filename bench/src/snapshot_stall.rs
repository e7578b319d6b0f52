//! Commit latency while a snapshot is written, on the plain path and the frozen ones
//! ([`crate::frozen_states`]), side by side: [`WRITERS`] writers commit durably
//! (`Durability::Fsync`) to a store of `sessions` sessions while `Store::snapshot` runs,
//! against the same load for as long without a snapshot.
//!
//! Two loads, each over every [`Variant`], variants interleaved within each round:
//!
//! * **Closed loop**: each writer commits as fast as its commits come back. Its rate without
//!   a snapshot is the ceiling the paced load is set against. A stalled writer sends nothing,
//!   so its stall shows as one long commit, however long it lasts.
//! * **Paced** (open loop): each writer sends on a fixed schedule at its share of half the
//!   closed-loop rate, and a commit's latency counts from its *scheduled* send time, so a
//!   stall also delays every commit that should have been sent during it (no coordinated
//!   omission). A writer that falls behind sends back to back until it has caught up.
//!
//! On the plain path the snapshot serializes the state under the read lock, between two
//! batches (the commits wait for that), then compresses, writes and syncs it on the snapshot
//! thread. On the frozen paths the writers wait only for the view's freeze; the snapshot
//! thread serializes the view while commits go on (and competes with them for the cores).
//! A commit counts towards a window if it was in flight at any moment of it. Rounds alternate
//! which window of a pair runs first.
//!
//! The rest of the frozen-path figures (freeze times by size, memory, insert cost, recovery)
//! are in [`crate::freeze_cost`]; [`run`] runs both and [`print()`] prints them.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use airomem::{Durability, PostcardSerializer, PostcardStore, SnapshotInfo, Store, StoreOptions};
use airomem_workspace::{SessionsCommand, token};
use tokio::task::JoinSet;

use crate::commits::{SessionStore, SessionWorkload, share};
use crate::freeze_cost::{self, FreezeCost, FreezePlan};
use crate::frozen_states::{AnyStore, SessionState, Variant, on_store};
use crate::measure::{BoxError, Summary, percentile, sync_disks};
use crate::stall_figures::{BUILD_STREAM, BUILD_WRITERS, SnapshotFigures, copied};
use crate::table::{Table, number, range, ratio, seconds};

/// Concurrent writers during every window.
pub const WRITERS: usize = 16;
/// First stream of the paced windows; the closed-loop windows use those below it.
const PACED_STREAM: u64 = 1 << 16;
/// Writers commit this long before a window opens, so that it starts under steady load.
const WARM_UP: Duration = Duration::from_millis(200);
/// The paced writers run this long before a window opens.
const PACED_WARM_UP: Duration = Duration::from_millis(500);
/// The paced load's share of the closed-loop rate.
const PACE: f64 = 0.5;

/// How much a [`run`] does.
#[derive(Clone, Debug)]
pub struct StallPlan {
    /// Sessions in the store of the latency windows.
    pub sessions: u64,
    /// Closed-loop rounds (one window with and one without a snapshot per variant each).
    pub closed_rounds: usize,
    /// Paced rounds.
    pub paced_rounds: usize,
    /// The rest of the frozen-path measurements.
    pub freeze: FreezePlan,
    /// The states whose latency windows run (all of [`Variant::ALL`] unless narrowed).
    pub variants: Vec<Variant>,
    /// Only the latency windows: no freeze times by size, memory, insert cost or recovery.
    pub windows_only: bool,
}

impl StallPlan {
    /// The plan of a `--quick` run (`quick`) or a full one, with `sessions` sessions.
    pub fn new(sessions: u64, quick: bool) -> StallPlan {
        StallPlan {
            sessions,
            closed_rounds: 3,
            paced_rounds: if quick { 3 } else { 7 },
            freeze: if quick { FreezePlan::quick(sessions) } else { FreezePlan::full(sessions) },
            variants: Variant::ALL.to_vec(),
            windows_only: false,
        }
    }
}

/// What [`run`] measured.
#[derive(Clone, Debug)]
pub struct SnapshotStall {
    /// Sessions in the store when the first snapshot starts.
    pub sessions: u64,
    /// Each variant's latency windows, in [`Variant::ALL`] order.
    pub variants: Vec<VariantStall>,
    /// Freeze times by size, memory, insert cost and recovery.
    pub freeze: FreezeCost,
}

/// One variant's windows.
#[derive(Clone, Copy, Debug)]
pub struct VariantStall {
    /// Which state.
    pub variant: Variant,
    /// Closed loop, during `store.snapshot()`.
    pub closed_with: Latencies,
    /// Closed loop, windows of the same length without a snapshot.
    pub closed_without: Latencies,
    /// Length of the closed-loop snapshot windows, seconds.
    pub closed_window: Summary,
    /// The paced load: commits per second from all writers together (the same for every
    /// state).
    pub target_rate: f64,
    /// Paced, during `store.snapshot()`.
    pub paced_with: Latencies,
    /// Paced, windows of the same length without a snapshot.
    pub paced_without: Latencies,
    /// Length of the paced snapshot windows, seconds.
    pub paced_window: Summary,
    /// What the snapshots of both loads cost.
    pub snapshots: SnapshotFigures,
}

/// What the writers saw in one window.
#[derive(Debug)]
struct Window {
    length: Duration,
    /// Latencies of the commits in flight during the window, sorted (from the scheduled
    /// send time on the paced load).
    latencies: Vec<Duration>,
    /// Commits acknowledged within the window.
    completed: usize,
}

/// Commit latency figures of a set of windows: each the median (and range) over the
/// windows of that window's own percentile.
#[derive(Clone, Copy, Debug)]
pub struct Latencies {
    /// Median, microseconds.
    pub p50_micros: Summary,
    /// 99th percentile, microseconds.
    pub p99_micros: Summary,
    /// 99.9th percentile, microseconds.
    pub p999_micros: Summary,
    /// Longest, microseconds.
    pub max_micros: Summary,
    /// Commits acknowledged per second of window.
    pub rate: Summary,
    /// Commits in flight during a window (the sample each percentile is taken over).
    pub commits: Summary,
}

impl Latencies {
    fn of(windows: &[Window]) -> Latencies {
        let micros = |d: Duration| d.as_secs_f64() * 1e6;
        Latencies {
            p50_micros: Summary::over(windows, |w| micros(percentile(&w.latencies, 50.0))),
            p99_micros: Summary::over(windows, |w| micros(percentile(&w.latencies, 99.0))),
            p999_micros: Summary::over(windows, |w| micros(percentile(&w.latencies, 99.9))),
            max_micros: Summary::over(windows, |w| micros(percentile(&w.latencies, 100.0))),
            rate: Summary::over(windows, completed_rate),
            commits: Summary::over(windows, |w| w.latencies.len() as f64),
        }
    }
}

/// Runs everything: the freeze times and the stores they need ([`freeze_cost`]), the
/// latency windows on a store of `plan.sessions` sessions, memory, insert cost, recovery.
pub async fn run(dir: &Path, plan: &StallPlan) -> Result<SnapshotStall, BoxError> {
    let started = Instant::now();
    let base_of = |size: u64| dir.join(format!("stall-base-{size}"));
    let mut freeze = freeze_cost::FreezeCost::default();
    if plan.windows_only {
        let base = base_of(plan.sessions);
        build(&base, plan.sessions).await?;
        let variants = latency_windows(dir, &base, plan).await?;
        std::fs::remove_dir_all(&base)?;
        freeze.elapsed_secs = started.elapsed().as_secs_f64();
        return Ok(SnapshotStall { sessions: plan.sessions, variants, freeze });
    }
    for &size in &plan.freeze.sizes {
        build(&base_of(size), size).await?;
        freeze.times.extend(freeze_cost::freeze_times(dir, &base_of(size), size, &plan.freeze).await?);
        if size != plan.sessions {
            std::fs::remove_dir_all(base_of(size))?;
        }
    }
    let base = base_of(plan.sessions);
    if !plan.freeze.sizes.contains(&plan.sessions) {
        build(&base, plan.sessions).await?;
    }
    eprintln!("frozen snapshots: freeze times done after {:.0} s", started.elapsed().as_secs_f64());
    let variants = latency_windows(dir, &base, plan).await?;
    eprintln!("frozen snapshots: latency windows done after {:.0} s", started.elapsed().as_secs_f64());
    freeze.memory = freeze_cost::memory(dir, &base, plan.sessions)?;
    std::fs::remove_dir_all(&base)?;
    eprintln!("frozen snapshots: memory done after {:.0} s", started.elapsed().as_secs_f64());
    freeze.inserts = freeze_cost::insert_cost(&plan.freeze);
    freeze.recovery = Some(freeze_cost::recovery(dir, &plan.freeze).await?);
    freeze.elapsed_secs = started.elapsed().as_secs_f64();
    eprintln!("frozen snapshots: all done after {:.0} s", freeze.elapsed_secs);
    Ok(SnapshotStall { sessions: plan.sessions, variants, freeze })
}

/// A store in `store_dir` (removed first if there) of `sessions` sessions, created from
/// [`BUILD_WRITERS`] tasks with `Durability::OsBuffered`, then snapshotted, so that each
/// variant's copy opens from the snapshot. Session `i`'s token is [`built_token`](crate::stall_figures::built_token)`(i,
/// sessions)`.
pub async fn build(store_dir: &Path, sessions: u64) -> Result<(), BoxError> {
    eprintln!("frozen snapshots: building a store of {sessions} sessions");
    if store_dir.exists() {
        std::fs::remove_dir_all(store_dir)?;
    }
    let options = StoreOptions::default().durability(Durability::OsBuffered).snapshots_retained(1);
    let store: SessionStore = Store::open_with(PostcardSerializer, store_dir, options).await?;
    let mut tasks = JoinSet::new();
    for index in 0..BUILD_WRITERS {
        let store = store.clone();
        let first = (BUILD_STREAM + index as u64) << 32;
        let count = share(sessions, BUILD_WRITERS, index);
        tasks.spawn(async move {
            for n in first..first + count {
                store.commit(SessionsCommand::CreateSession { token: token(n), user_id: n }).await?;
            }
            Ok::<_, airomem::Error>(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    store.snapshot().await?;
    let held = store.query()?.tokens.len() as u64;
    store.close().await?;
    if held != sessions {
        return Err(format!("the built store holds {held} sessions, {sessions} expected").into());
    }
    Ok(())
}

/// Opens a copy of `base` for each variant (all at once, so that rounds interleave them),
/// runs the closed-loop rounds, sets each variant's pace from its closed-loop rate, runs the
/// paced rounds.
async fn latency_windows(dir: &Path, base: &Path, plan: &StallPlan) -> Result<Vec<VariantStall>, BoxError> {
    let mut stores = Vec::with_capacity(plan.variants.len());
    for &variant in &plan.variants {
        let copy = dir.join(format!("stall-{}", variant.id()));
        crate::memory::copy_store(base, &copy)?;
        let options = StoreOptions::default().snapshots_retained(1);
        let store = AnyStore::open(variant, &copy, options).await?;
        if store.sessions()? as u64 != plan.sessions {
            return Err(format!("the {} store holds {} sessions", variant.id(), store.sessions()?).into());
        }
        stores.push(store);
    }
    let n = stores.len();
    let mut closed: Vec<[Vec<Window>; 2]> = (0..n).map(|_| [Vec::new(), Vec::new()]).collect();
    let mut paced: Vec<[Vec<Window>; 2]> = (0..n).map(|_| [Vec::new(), Vec::new()]).collect();
    let mut infos: Vec<Vec<SnapshotInfo>> = vec![Vec::new(); n];
    // The last snapshot window's length, per state: a window without one that runs first
    // lasts as long.
    let mut lengths = vec![Duration::ZERO; n];
    for round in 0..plan.closed_rounds {
        for (i, store) in stores.iter().enumerate() {
            eprintln!(
                "snapshot stall: closed loop, {WRITERS} writers, {}, round {}/{}",
                store.variant().id(),
                round + 1,
                plan.closed_rounds
            );
            let streams = 2 * (round * WRITERS) as u64;
            let info = pair(store, None, streams, round, &mut lengths[i], &mut closed[i]).await?;
            infos[i].push(info);
        }
    }
    // One offered load for every state, so that they compare side by side: half the median
    // closed-loop rate without a snapshot, over every state's windows.
    let ceiling = Summary::of(closed.iter().flat_map(|[_, without]| without.iter().map(completed_rate))).median;
    let rates = vec![PACE * ceiling; n];
    for round in 0..plan.paced_rounds {
        for (i, store) in stores.iter().enumerate() {
            eprintln!(
                "snapshot stall: paced at {:.0} commits/s, {}, round {}/{}",
                rates[i],
                store.variant().id(),
                round + 1,
                plan.paced_rounds
            );
            let streams = PACED_STREAM + 2 * (round * WRITERS) as u64;
            let info = pair(store, Some(rates[i]), streams, round, &mut lengths[i], &mut paced[i]).await?;
            infos[i].push(info);
        }
    }
    let mut variants = Vec::with_capacity(n);
    for (i, store) in stores.into_iter().enumerate() {
        let variant = store.variant();
        let copy = dir.join(format!("stall-{}", variant.id()));
        store.close().await?;
        std::fs::remove_dir_all(copy)?;
        let secs = |w: &Window| w.length.as_secs_f64();
        variants.push(VariantStall {
            variant,
            closed_with: Latencies::of(&closed[i][0]),
            closed_without: Latencies::of(&closed[i][1]),
            closed_window: Summary::over(&closed[i][0], secs),
            target_rate: rates[i],
            paced_with: Latencies::of(&paced[i][0]),
            paced_without: Latencies::of(&paced[i][1]),
            paced_window: Summary::over(&paced[i][0], secs),
            snapshots: SnapshotFigures::of(&infos[i]),
        });
    }
    Ok(variants)
}

/// One window with a snapshot and one as long without, closed loop (`rate` is `None`) or
/// paced; in even rounds the snapshot window first, in odd ones the other, so that what a
/// snapshot leaves behind (file deletions, write-back) falls on both kinds alike. Pushes the
/// windows onto `windows` (with, without) and returns the snapshot's figures.
async fn pair(
    store: &AnyStore,
    rate: Option<f64>,
    streams: u64,
    round: usize,
    length: &mut Duration,
    windows: &mut [Vec<Window>; 2],
) -> Result<SnapshotInfo, BoxError> {
    let run = |first_stream: u64, hold: Option<Duration>| async move {
        match rate {
            None => on_store!(store, s => closed_window(s, first_stream, hold).await),
            Some(rate) => on_store!(store, s => paced_window(s, first_stream, rate, hold).await),
        }
    };
    let without_first = round % 2 == 1;
    if without_first {
        sync_disks()?;
        windows[1].push(run(streams + WRITERS as u64, Some(*length)).await?.0);
    }
    sync_disks()?;
    let (window, info) = run(streams, None).await?;
    *length = window.length;
    windows[0].push(window);
    if !without_first {
        sync_disks()?;
        windows[1].push(run(streams + WRITERS as u64, Some(*length)).await?.0);
    }
    info.ok_or_else(|| "a snapshot window without a snapshot".into())
}

/// What a window does while the writers run: a `store.snapshot()` (`None`) or a plain wait.
async fn hold_window<S: SessionState>(
    store: &PostcardStore<S>,
    hold: Option<Duration>,
) -> Result<(Instant, Instant, Option<SnapshotInfo>), BoxError> {
    let start = Instant::now();
    let info = match hold {
        None => Some(store.snapshot().await?),
        Some(hold) => {
            tokio::time::sleep(hold).await;
            None
        }
    };
    Ok((start, Instant::now(), info))
}

/// Commits acknowledged per second of `window`.
fn completed_rate(window: &Window) -> f64 {
    window.completed as f64 / window.length.as_secs_f64()
}

/// The window of `commits` (scheduled or sent, acknowledged) between `start` and `end`.
fn window_of(
    commits: impl IntoIterator<Item = (Instant, Instant)>,
    start: Instant,
    end: Instant,
) -> Result<Window, BoxError> {
    let mut latencies = Vec::new();
    let mut completed = 0;
    for (sent, done) in commits {
        if sent < end && done > start {
            latencies.push(done - sent);
            completed += usize::from(done <= end);
        }
    }
    if latencies.is_empty() {
        return Err("no commit was in flight during the window".into());
    }
    latencies.sort_unstable();
    Ok(Window { length: end - start, latencies, completed })
}

/// Closed loop: [`WRITERS`] committing tasks on streams from `first_stream`; after
/// [`WARM_UP`], the window is a `store.snapshot()` (`hold` is `None`) or a plain wait of
/// `hold`.
async fn closed_window<S: SessionState>(
    store: &PostcardStore<S>,
    first_stream: u64,
    hold: Option<Duration>,
) -> Result<(Window, Option<SnapshotInfo>), BoxError> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = JoinSet::new();
    for index in 0..WRITERS {
        let store = store.clone();
        let stop = Arc::clone(&stop);
        tasks.spawn(async move {
            let mut commits = Vec::new();
            for command in SessionWorkload::new(first_stream + index as u64) {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let sent = Instant::now();
                store.commit(command).await?;
                commits.push((sent, Instant::now()));
            }
            Ok::<_, airomem::Error>(commits)
        });
    }
    tokio::time::sleep(WARM_UP).await;
    let held = hold_window(store, hold).await;
    stop.store(true, Ordering::Relaxed);
    let mut commits = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        commits.extend(joined??);
    }
    let (start, end, info) = held?;
    Ok((window_of(commits, start, end)?, info))
}

/// Paced: [`WRITERS`] tasks each sending every `WRITERS / rate` seconds, staggered; latency
/// counts from the scheduled send. After [`PACED_WARM_UP`] (long enough for a backlog of
/// the start to drain) the window opens as in [`closed_window`]; once it has closed, each
/// writer still sends every command scheduled before its end. Tasks, as in the closed loop:
/// 16 parked threads cost the 2-core machine more than the commits do. tokio's timer ticks
/// in milliseconds, so a send leaves up to 1 ms after its schedule, with or without a
/// snapshot alike.
async fn paced_window<S: SessionState>(
    store: &PostcardStore<S>,
    first_stream: u64,
    rate: f64,
    hold: Option<Duration>,
) -> Result<(Window, Option<SnapshotInfo>), BoxError> {
    let interval = Duration::from_secs_f64(WRITERS as f64 / rate);
    let stop: Arc<OnceLock<Instant>> = Arc::new(OnceLock::new());
    let origin = Instant::now() + Duration::from_millis(5);
    let mut tasks = JoinSet::new();
    for index in 0..WRITERS {
        let store = store.clone();
        let stop = Arc::clone(&stop);
        let mut scheduled = origin + interval.mul_f64(index as f64 / WRITERS as f64);
        tasks.spawn(async move {
            let mut commits = Vec::new();
            for command in SessionWorkload::new(first_stream + index as u64) {
                if stop.get().is_some_and(|&end| scheduled >= end) {
                    break;
                }
                tokio::time::sleep_until(scheduled.into()).await;
                store.commit(command).await?;
                commits.push((scheduled, Instant::now()));
                scheduled += interval;
            }
            Ok::<_, airomem::Error>(commits)
        });
    }
    tokio::time::sleep(PACED_WARM_UP).await;
    let held = hold_window(store, hold).await;
    // The end of a failed window stops the writers as well.
    let end = held.as_ref().map_or_else(|_| Instant::now(), |&(_, end, _)| end);
    stop.set(end).map_err(|_| "the window ended twice")?;
    let mut commits = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        commits.extend(joined??);
    }
    let (start, end, info) = held?;
    Ok((window_of(commits, start, end)?, info))
}

/// Prints every table of a [`run`].
pub fn print(stall: &SnapshotStall) {
    closed_table(stall).print();
    paced_table(stall).print();
    snapshot_table(stall).print();
    if !stall.freeze.times.is_empty() {
        freeze_cost::print(&stall.freeze);
    }
}

/// A latency in microseconds, median with its range.
fn micros(s: Summary) -> String {
    format!("{} ({})", seconds(s.median / 1e6), range(s, |v| seconds(v / 1e6)))
}

fn latency_row(table: &mut Table, name: String, l: &Latencies) {
    table.row(vec![
        name,
        micros(l.p50_micros),
        micros(l.p99_micros),
        micros(l.p999_micros),
        micros(l.max_micros),
        format!("{} ({})", number(l.rate.median), range(l.rate, number)),
        number(l.commits.median),
    ]);
}

const LATENCY_HEADERS: [&str; 7] = ["state, window", "p50", "p99", "p99.9", "max", "commits/s in window", "commits"];

fn closed_table(stall: &SnapshotStall) -> Table {
    let title = format!(
        "Closed loop: commit latency of {WRITERS} writers (Durability::Fsync) while a snapshot of {} sessions is \
         written, vs the same load for as long without one (median over windows of each window's figure, min–max)",
        number(stall.sessions as f64)
    );
    let mut table = Table::new(&title, &LATENCY_HEADERS);
    for v in &stall.variants {
        let window = seconds(v.closed_window.median);
        latency_row(&mut table, format!("{}: no snapshot", v.variant.name()), &v.closed_without);
        latency_row(&mut table, format!("{}: during `store.snapshot()` ({window})", v.variant.name()), &v.closed_with);
    }
    table
}

fn paced_table(stall: &SnapshotStall) -> Table {
    let title = format!(
        "Paced (open loop): {WRITERS} writers (Fsync) offering {:.0}% of the median closed-loop rate without a \
         snapshot (all states' windows), latency from the scheduled send, {} sessions; targets for the frozen paths: p99 during ≤ p99 without + 2 ms, \
         p99.9 during ≤ p99.9 without + 5 ms",
        PACE * 100.0,
        number(stall.sessions as f64)
    );
    let mut table = Table::new(&title, &LATENCY_HEADERS);
    for v in &stall.variants {
        let window = seconds(v.paced_window.median);
        let name = v.variant.name();
        latency_row(
            &mut table,
            format!("{name}: no snapshot, {} commits/s offered", number(v.target_rate)),
            &v.paced_without,
        );
        latency_row(&mut table, format!("{name}: during `store.snapshot()` ({window})"), &v.paced_with);
        let (with, without) = (&v.paced_with, &v.paced_without);
        let p99 = (with.p99_micros.median - without.p99_micros.median) / 1e6;
        let p999 = (with.p999_micros.median - without.p999_micros.median) / 1e6;
        let verdict = |delta: f64, limit: f64| {
            if !v.variant.frozen() {
                "(plain path)".to_string()
            } else if delta <= limit {
                "target met".to_string()
            } else {
                "target missed".to_string()
            }
        };
        table.row(vec![
            format!("{name}: during − without (medians)"),
            signed((with.p50_micros.median - without.p50_micros.median) / 1e6),
            format!("{} {}", signed(p99), verdict(p99, 2e-3)),
            format!("{} {}", signed(p999), verdict(p999, 5e-3)),
            signed((with.max_micros.median - without.max_micros.median) / 1e6),
            ratio(with.rate.median / without.rate.median),
            "—".into(),
        ]);
    }
    table
}

/// A difference of times, with its sign.
fn signed(secs: f64) -> String {
    if secs < 0.0 { format!("−{}", seconds(-secs)) } else { format!("+{}", seconds(secs)) }
}

fn snapshot_table(stall: &SnapshotStall) -> Table {
    let title = format!(
        "The snapshots of those windows ({} sessions, {WRITERS} writers committing): the writers' stall is \
         `freeze_time`",
        number(stall.sessions as f64)
    );
    let mut table = Table::new(
        &title,
        &["state", "snapshots", "freeze (stall)", "max freeze", "serialize", "write", "raw → file", "shards copied"],
    );
    for v in &stall.variants {
        let s = &v.snapshots;
        table.row(vec![
            v.variant.name().into(),
            s.count.to_string(),
            micros(Summary {
                median: s.freeze_secs.median * 1e6,
                min: s.freeze_secs.min * 1e6,
                max: s.freeze_secs.max * 1e6,
            }),
            seconds(s.freeze_secs.max),
            format!("{} ({})", seconds(s.serialize_secs.median), range(s.serialize_secs, seconds)),
            format!("{} ({})", seconds(s.write_secs.median), range(s.write_secs, seconds)),
            format!("{:.1} → {:.1} MB", s.raw_len.median / 1e6, s.file_len.median / 1e6),
            copied(v.variant, s.shards_copied),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stall_figures::built_token;

    #[test]
    fn built_tokens_follow_the_build() {
        let sessions = 1_000;
        let mut expected = Vec::new();
        for index in 0..BUILD_WRITERS {
            let first = (BUILD_STREAM + index as u64) << 32;
            expected.extend((first..first + share(sessions, BUILD_WRITERS, index)).map(token));
        }
        let built: Vec<String> = (0..sessions).map(|i| built_token(i, sessions)).collect();
        assert_eq!(built, expected);
    }

    #[test]
    fn windows_count_commits_in_flight() {
        let t = Instant::now();
        let ms = |n: u64| t + Duration::from_millis(n);
        let commits = [(ms(0), ms(5)), (ms(8), ms(30)), (ms(12), ms(14)), (ms(25), ms(40)), (ms(41), ms(42))];
        let window = window_of(commits, ms(10), ms(30)).expect("a window");
        assert_eq!(window.latencies.len(), 3);
        assert_eq!(window.completed, 2);
        assert_eq!(window.latencies[2], Duration::from_millis(22));
    }
}
