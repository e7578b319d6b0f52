//! Memory bounds, measured: what `Store::open`, `store.snapshot()` and a flood of commits
//! hold beyond the state itself.
//!
//! The measurements run in a fresh child process (`airomem-bench --memory DIR SEGMENT_SIZE`)
//! over a copy of the recovery data set's store (journal only), so that nothing an earlier measurement
//! allocated (and the allocator kept) hides in the figures. The child reads its resident
//! set from `/proc/self/status`: `VmRSS` now, and `VmHWM`, the peak since the last reset
//! (writing `5` to `/proc/self/clear_refs` resets it).

use std::path::Path;
use std::process::Command;

use airomem::{PostcardSerializer, Store, StoreOptions};
use tokio::runtime::Runtime;

use airomem_workspace::{SessionsCommand, token};

use crate::commits::SessionStore;
use crate::measure::BoxError;

/// Writers in the commit flood.
const FLOOD_WRITERS: usize = 64;
/// Commits in the commit flood.
const FLOOD_COMMITS: u64 = 200_000;

/// Bytes, as the child measured them.
#[derive(Clone, Copy, Debug, Default)]
pub struct MemoryUse {
    /// Resident growth from before `Store::open` to after it: the recovered state (and
    /// whatever the allocator keeps around it).
    pub state: u64,
    /// Peak resident growth during `Store::open`: the state, plus recovery's transient
    /// memory (a segment, decoded commands in flight).
    pub recovery_peak: u64,
    /// The journal segment size the store was written with.
    pub segment_size: u64,
    /// Peak resident bytes during `store.snapshot()` above the resident set before it.
    pub snapshot_transient: u64,
    /// Bytes of the serialized state (the image the snapshot holds while compressing it).
    pub snapshot_image: u64,
    /// Peak resident bytes during a flood of commits above the resident set before it. Each
    /// writer creates a session and deletes it again, so the state does not grow: this is
    /// the commit path's own memory.
    pub flood_transient: u64,
    /// Commits in the flood, from [`FLOOD_WRITERS`] writers.
    pub flood_commits: u64,
    /// The store's bound on queued commands, `max_pending_bytes`, plus one batch buffer.
    pub queue_bound: u64,
}

/// Measures the store in `store_dir` (a copy, which the child changes) in a child process.
pub fn measure(store_dir: &Path, segment_size: u64) -> Result<MemoryUse, BoxError> {
    eprintln!("memory: open, snapshot and a commit flood in a fresh process");
    let output =
        Command::new(std::env::current_exe()?).arg("--memory").arg(store_dir).arg(segment_size.to_string()).output()?;
    if !output.status.success() {
        return Err(format!("memory child failed: {}", String::from_utf8_lossy(&output.stderr)).into());
    }
    let line = String::from_utf8(output.stdout)?;
    let n: Vec<u64> = line.split_whitespace().map(str::parse).collect::<Result<_, _>>()?;
    let [state, recovery_peak, snapshot_transient, snapshot_image, flood_transient, queue_bound] = n[..] else {
        return Err(format!("memory child printed `{line}`").into());
    };
    Ok(MemoryUse {
        state,
        recovery_peak,
        segment_size,
        snapshot_transient,
        snapshot_image,
        flood_transient,
        flood_commits: FLOOD_COMMITS,
        queue_bound,
    })
}

/// The child: measures the store in `dir` and prints the figures on one line.
pub fn child(runtime: &Runtime, dir: &Path, segment_size: u64) -> Result<(), BoxError> {
    let options = StoreOptions::default().segment_size(segment_size).snapshots_retained(1);
    let before_open = resident()?;
    reset_peak()?;
    let store: SessionStore = runtime.block_on(Store::open_with(PostcardSerializer, dir, options))?;
    let (after_open, open_peak) = (resident()?, peak()?);

    reset_peak()?;
    let before_snapshot = resident()?;
    let info = runtime.block_on(store.snapshot())?;
    let snapshot_peak = peak()?;

    reset_peak()?;
    let before_flood = resident()?;
    runtime.block_on(flood(&store))?;
    let flood_peak = peak()?;
    runtime.block_on(store.close())?;

    let queue_bound = 64 * 1024 * 1024 + 4 * 1024 * 1024;
    println!(
        "{} {} {} {} {} {queue_bound}",
        after_open.saturating_sub(before_open),
        open_peak.saturating_sub(before_open),
        snapshot_peak.saturating_sub(before_snapshot),
        info.raw_len,
        flood_peak.saturating_sub(before_flood),
    );
    Ok(())
}

/// [`FLOOD_WRITERS`] writers committing [`FLOOD_COMMITS`] in all, each creating one session
/// of its own and deleting it again.
async fn flood(store: &SessionStore) -> Result<(), BoxError> {
    let mut tasks = tokio::task::JoinSet::new();
    for writer in 0..FLOOD_WRITERS as u64 {
        let store = store.clone();
        tasks.spawn(async move {
            let token = token(u64::MAX - writer);
            for i in 0..FLOOD_COMMITS / FLOOD_WRITERS as u64 {
                let command = if i % 2 == 0 {
                    SessionsCommand::CreateSession { token: token.clone(), user_id: i }
                } else {
                    SessionsCommand::DeleteSession { token: token.clone() }
                };
                store.commit(command).await?;
            }
            Ok::<_, airomem::Error>(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    Ok(())
}

fn status_field(name: &str) -> Result<u64, BoxError> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status.lines().find(|l| l.starts_with(name)).ok_or_else(|| format!("no {name} in /proc/self/status"))?;
    let kib: u64 = line.split_whitespace().nth(1).ok_or("no value")?.parse()?;
    Ok(kib * 1024)
}

pub fn resident() -> Result<u64, BoxError> {
    status_field("VmRSS:")
}

pub fn peak() -> Result<u64, BoxError> {
    status_field("VmHWM:")
}

pub fn reset_peak() -> Result<(), BoxError> {
    std::fs::write("/proc/self/clear_refs", "5")?;
    Ok(())
}

/// Copies a closed store's files (not its lock file) into a new directory `to`.
pub fn copy_store(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_type()?.is_file() && entry.file_name() != "airomem.lock" {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}
