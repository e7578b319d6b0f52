//! Which systems really sync: each one runs a tiny commit loop in a child process (this
//! binary with `--probe SYSTEM COMMITS`) under
//! `strace -f -e trace=fdatasync,fsync,sync_file_range`, once with no commit and once with
//! [`PROBE_COMMITS`]; the difference in sync calls, per commit, is what a commit costs.

use std::path::Path;
use std::process::Command;

use crate::measure::BoxError;
use crate::peers::PeerKind;

/// Commits in the probe run.
pub const PROBE_COMMITS: u64 = 200;

/// The system calls counted.
pub const SYNC_CALLS: [&str; 3] = ["fdatasync", "fsync", "sync_file_range"];

/// The `--probe` names of every system, airomem first.
pub fn systems() -> Vec<&'static str> {
    std::iter::once("airomem").chain(PeerKind::ALL.iter().map(|kind| kind.id())).collect()
}

/// What strace saw for one system.
#[derive(Clone, Debug, PartialEq)]
pub enum SyncProbe {
    /// Calls per commit, in the order of [`SYNC_CALLS`].
    Counted([f64; 3]),
    /// strace could not be run, or the probe failed.
    Failed(String),
}

impl SyncProbe {
    /// Sync calls of any kind per commit.
    pub fn total(&self) -> Option<f64> {
        match self {
            SyncProbe::Counted(counts) => Some(counts.iter().sum()),
            SyncProbe::Failed(_) => None,
        }
    }

    /// "1.00 fdatasync", "1.02 fsync + 0.01 fdatasync", "no sync call" or the failure.
    pub fn describe(&self) -> String {
        match self {
            SyncProbe::Counted(counts) => {
                let parts: Vec<String> = SYNC_CALLS
                    .iter()
                    .zip(counts)
                    .filter(|&(_, &n)| n > 0.0)
                    .map(|(call, n)| format!("{n:.2} `{call}`"))
                    .collect();
                if parts.is_empty() { "no sync call".into() } else { parts.join(" + ") }
            }
            SyncProbe::Failed(why) => format!("not checked ({why})"),
        }
    }
}

/// Probes `system` with scratch directories inside `dir`.
pub fn probe(dir: &Path, system: &str) -> SyncProbe {
    let counts = |commits| count_syncs(dir, system, commits);
    match (counts(0), counts(PROBE_COMMITS)) {
        (Ok(base), Ok(loaded)) => {
            let per_commit = |i: usize| loaded[i].saturating_sub(base[i]) as f64 / PROBE_COMMITS as f64;
            SyncProbe::Counted([per_commit(0), per_commit(1), per_commit(2)])
        }
        (Err(e), _) | (_, Err(e)) => SyncProbe::Failed(e.to_string()),
    }
}

/// Runs `--probe system commits` under strace and counts the sync calls it made.
fn count_syncs(dir: &Path, system: &str, commits: u64) -> Result<[u64; 3], BoxError> {
    let trace = dir.join(format!("strace-{system}-{commits}.txt"));
    let exe = std::env::current_exe()?;
    let output = Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=fdatasync,fsync,sync_file_range", "-o"])
        .arg(&trace)
        .arg(exe)
        .args(["--probe", system, &commits.to_string(), "--dir"])
        .arg(dir)
        .output()
        .map_err(|e| format!("cannot run strace: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!("`--probe {system}` under strace failed: {}", stderr.trim()).into());
    }
    let text = std::fs::read_to_string(&trace)?;
    std::fs::remove_file(&trace)?;
    Ok(count_calls(&text))
}

/// Counts the calls of each of [`SYNC_CALLS`] in strace output: a line per call, or per
/// call start when strace splits one that another thread interrupted.
fn count_calls(text: &str) -> [u64; 3] {
    let mut counts = [0; 3];
    for line in text.lines() {
        for (i, call) in SYNC_CALLS.iter().enumerate() {
            let starts_call = line.split_whitespace().any(|word| word.starts_with(&format!("{call}(")));
            if starts_call {
                counts[i] += 1;
            }
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strace_lines_are_counted_by_call() {
        let text = "\
12 fdatasync(3)                         = 0
13 fsync(4 <unfinished ...>
12 fdatasync(3)                         = 0
13 <... fsync resumed>)                 = 0
14 sync_file_range(5, 0, 0, 2)          = 0
";
        assert_eq!(count_calls(text), [2, 1, 1]);
        assert_eq!(SyncProbe::Counted([1.0, 0.0, 0.0]).describe(), "1.00 `fdatasync`");
        assert_eq!(SyncProbe::Counted([0.0; 3]).describe(), "no sync call");
    }
}
