//! The disk's own limits, measured with plain `write` + `fdatasync` loops and no airomem
//! code: what a durable commit can cost at best.
//!
//! * **append**: one 64-byte record per `write` to an `O_APPEND` file, then `fdatasync`:
//!   the best a store can do when every commit pays its own sync. Each sync also commits
//!   the file's new size, as a journal append must.
//! * **group**: 64 records (64 × 64 bytes) per `write`, then `fdatasync`: the best a store
//!   can do when 64 commits share each sync.
//! * **overwrite**: one 64-byte record per `write` over a file that was filled with zeros
//!   and synced beforehand, then `fdatasync`: the sync needs no metadata, only the data
//!   block, so this is the device's floor for a small durable write.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::measure::{REPETITIONS, Summary, per_second, sync_disks};

/// Bytes in one record: about what a journaled `CreateSession` takes (a 25-byte frame
/// header and a ~36-byte postcard payload).
pub const RECORD_LEN: usize = 64;

/// Records per `write` in the group-commit measurement.
pub const GROUP: usize = 64;

/// How much work each measurement does.
#[derive(Clone, Copy, Debug)]
pub struct RawDiskPlan {
    /// Records (one `write` + `fdatasync` each) in the append measurement.
    pub append_records: u64,
    /// `write` + `fdatasync` calls, of [`GROUP`] records each, in the group measurement.
    pub group_writes: u64,
    /// Records (one `write` + `fdatasync` each) in the overwrite measurement.
    pub overwrite_records: u64,
}

/// Durable records per second, each over [`REPETITIONS`] runs.
#[derive(Clone, Copy, Debug)]
pub struct RawDiskResults {
    /// One record per `write` + `fdatasync`, appending.
    pub append: Summary,
    /// [`GROUP`] records per `write` + `fdatasync`, appending.
    pub group: Summary,
    /// One record per `write` + `fdatasync`, overwriting a pre-zeroed file.
    pub overwrite: Summary,
}

/// One repetition of the three measurements, in durable records per second.
#[derive(Clone, Copy, Debug)]
pub struct RawDiskSample {
    append: f64,
    group: f64,
    overwrite: f64,
}

/// Runs repetition `rep` of the three measurements in `dir`, removing their files
/// afterwards.
pub fn run_once(dir: &Path, plan: &RawDiskPlan, rep: usize) -> io::Result<RawDiskSample> {
    eprintln!("raw disk: repetition {}/{REPETITIONS}", rep + 1);
    let append = per_second(plan.append_records, appending(&scratch(dir, "append", rep), plan.append_records, 1)?);
    let group_records = plan.group_writes * GROUP as u64;
    let group = per_second(group_records, appending(&scratch(dir, "group", rep), plan.group_writes, GROUP)?);
    let overwrite =
        per_second(plan.overwrite_records, overwriting(&scratch(dir, "overwrite", rep), plan.overwrite_records)?);
    Ok(RawDiskSample { append, group, overwrite })
}

/// Summarises the repetitions.
pub fn summarise(samples: &[RawDiskSample]) -> RawDiskResults {
    RawDiskResults {
        append: Summary::over(samples, |s| s.append),
        group: Summary::over(samples, |s| s.group),
        overwrite: Summary::over(samples, |s| s.overwrite),
    }
}

fn scratch(dir: &Path, what: &str, rep: usize) -> PathBuf {
    dir.join(format!("raw-{what}-{rep}.dat"))
}

/// Appends `writes` writes of `per_write` records each, syncing after every write, and
/// returns the time the loop took.
fn appending(path: &Path, writes: u64, per_write: usize) -> io::Result<Duration> {
    let mut file = OpenOptions::new().create_new(true).append(true).open(path)?;
    file.sync_all()?;
    let buf = vec![0xa5; RECORD_LEN * per_write];
    sync_disks()?;
    let started = Instant::now();
    for _ in 0..writes {
        file.write_all(&buf)?;
        file.sync_data()?;
    }
    let elapsed = started.elapsed();
    drop(file);
    fs::remove_file(path)?;
    Ok(elapsed)
}

/// Overwrites `records` records of a pre-zeroed, synced file in order, syncing after every
/// write, and returns the time the loop took.
fn overwriting(path: &Path, records: u64) -> io::Result<Duration> {
    let mut file: File = OpenOptions::new().create_new(true).read(true).write(true).open(path)?;
    let total = records as usize * RECORD_LEN;
    let zeros = vec![0; total.min(1 << 20)];
    let mut left = total;
    while left > 0 {
        let n = left.min(zeros.len());
        file.write_all(&zeros[..n])?;
        left -= n;
    }
    file.sync_all()?;
    let buf = [0xa5; RECORD_LEN];
    sync_disks()?;
    let started = Instant::now();
    for i in 0..records {
        file.write_all_at(&buf, i * RECORD_LEN as u64)?;
        file.sync_data()?;
    }
    let elapsed = started.elapsed();
    drop(file);
    fs::remove_file(path)?;
    Ok(elapsed)
}
