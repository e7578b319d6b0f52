//! What every measurement shares: how many times it is repeated, how the repetitions are
//! summarised, the `sync` that starts each one on a quiet disk, and how disk use is counted.

use std::error::Error;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The error type of every measurement: any error, sendable between threads.
pub type BoxError = Box<dyn Error + Send + Sync>;

/// Every timed figure is measured this many times; the median is reported, with the range.
pub const REPETITIONS: usize = 3;

/// Flushes every file system's dirty pages (`sync(1)`), so that a repetition does not pay
/// for the write-back of whatever ran before it.
pub fn sync_disks() -> io::Result<()> {
    let status = Command::new("sync").status()?;
    if status.success() { Ok(()) } else { Err(io::Error::other(format!("`sync` failed: {status}"))) }
}

/// The median and range of one figure over its repetitions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    /// The middle value (the mean of the two middle ones for an even count).
    pub median: f64,
    /// The smallest value.
    pub min: f64,
    /// The largest value.
    pub max: f64,
}

impl Summary {
    /// Summarises `values`, which must not be empty.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Summary {
        let mut sorted: Vec<f64> = values.into_iter().collect();
        assert!(!sorted.is_empty(), "a summary needs at least one value");
        sorted.sort_by(f64::total_cmp);
        let mid = sorted.len() / 2;
        let median = if sorted.len() % 2 == 1 { sorted[mid] } else { (sorted[mid - 1] + sorted[mid]) / 2.0 };
        Summary { median, min: sorted[0], max: sorted[sorted.len() - 1] }
    }

    /// Summarises a figure derived from each of `runs`.
    pub fn over<T>(runs: &[T], figure: impl Fn(&T) -> f64) -> Summary {
        Summary::of(runs.iter().map(figure))
    }
}

/// `count` events over `elapsed`, per second.
pub fn per_second(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
}

/// The nearest-rank percentile `p` (0 < p <= 100) of `sorted`, which must be sorted and
/// not empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    assert!(!sorted.is_empty(), "a percentile needs at least one value");
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// What a directory takes on disk, counted over every file under it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskUse {
    /// The sum of the files' lengths.
    pub apparent: u64,
    /// The blocks allocated to them (`st_blocks` × 512): what `du` reports.
    pub allocated: u64,
    /// Files counted.
    pub files: u64,
}

/// Counts what `dir` and everything under it takes on disk.
pub fn disk_use(dir: &Path) -> io::Result<DiskUse> {
    let mut total = DiskUse::default();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let metadata = entry.metadata()?;
        if metadata.is_dir() {
            let inner = disk_use(&entry.path())?;
            total.apparent += inner.apparent;
            total.allocated += inner.allocated;
            total.files += inner.files;
        } else {
            total.apparent += metadata.len();
            total.allocated += metadata.blocks() * 512;
            total.files += 1;
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_takes_the_middle_value() {
        let s = Summary::of([3.0, 1.0, 2.0]);
        assert_eq!(s, Summary { median: 2.0, min: 1.0, max: 3.0 });
        assert_eq!(Summary::of([4.0, 1.0]).median, 2.5);
    }

    #[test]
    fn disk_use_counts_nested_files() {
        let dir = tempfile::tempdir().expect("temporary directory");
        std::fs::write(dir.path().join("a"), [0u8; 100]).expect("write a");
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        std::fs::write(dir.path().join("sub/b"), [0u8; 50]).expect("write b");
        let used = disk_use(dir.path()).expect("disk use");
        assert_eq!((used.apparent, used.files), (150, 2));
        assert!(used.allocated >= 150);
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&sorted, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&sorted, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&sorted[..1], 99.0), Duration::from_millis(1));
    }
}
