//! `airomem archive`: the history a store keeps (`StoreOptions::keep_history`) in its
//! `archive/` subdirectory, which the store itself never reads.

use std::path::{Path, PathBuf};

use airomem::inspect;
use airomem::{ARCHIVE_DIR, Seq};
use serde_json::json;

use crate::outcome::{Failure, Outcome};
use crate::output::bytes;

/// An archived file, with the sequence number its name carries.
struct Archived {
    path: PathBuf,
    len: u64,
    seq: Seq,
    snapshot: bool,
}

fn archived(dir: &Path) -> Result<Vec<Archived>, Failure> {
    let survey = inspect::survey(dir, &mut |_| {})?;
    let mut files: Vec<Archived> = survey
        .archived
        .iter()
        .filter_map(|f| {
            let name = f.path.file_name()?.to_str()?;
            let (digits, snapshot) = match (name.strip_suffix(".journal"), name.strip_suffix(".snapshot")) {
                (Some(d), _) => (d, false),
                (_, Some(d)) => (d, true),
                _ => return None,
            };
            Some(Archived { path: f.path.clone(), len: f.len, seq: Seq(digits.parse().ok()?), snapshot })
        })
        .collect();
    files.sort_by_key(|f| (f.seq, f.snapshot));
    Ok(files)
}

pub(crate) fn list(dir: &Path, as_json: bool) -> Result<Outcome, Failure> {
    let files = archived(dir)?;
    if as_json {
        let entries: Vec<_> = files
            .iter()
            .map(|f| json!({"file": f.path, "bytes": f.len, "kind": if f.snapshot { "snapshot" } else { "segment" }, "seq": f.seq.0}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&json!({"dir": dir, "archive": entries}))?);
    } else {
        for f in &files {
            let what = if f.snapshot { format!("snapshot after {}", f.seq) } else { format!("segment from {}", f.seq) };
            println!("{}  {what}  {}", f.path.display(), bytes(f.len));
        }
        println!("{} archived file(s), {}", files.len(), bytes(files.iter().map(|f| f.len).sum()));
    }
    Ok(Outcome::Clean)
}

/// Removes the archived history before `before`, keeping what a point-in-time read at
/// `before` or later needs: the newest snapshot at or before it (archived or not) and every
/// segment from that snapshot on. Changes only `archive/`.
pub(crate) fn prune(dir: &Path, before: Seq) -> Result<Outcome, Failure> {
    let files = archived(dir)?;
    let survey = inspect::survey(dir, &mut |_| {})?;
    // The base a read at `before` starts from: without one, nothing may go.
    let base = files
        .iter()
        .filter(|f| f.snapshot)
        .map(|f| f.seq)
        .chain(survey.snapshots.iter().map(|s| s.seq))
        .filter(|&s| s <= before)
        .max();
    let Some(base) = base else {
        println!("no snapshot at or before {before}: the archive holds the only way there; nothing removed");
        return Ok(Outcome::Clean);
    };
    // Segment i ends where the next one (archived or live) begins.
    let mut starts: Vec<Seq> = files.iter().filter(|f| !f.snapshot).map(|f| f.seq).collect();
    starts.extend(survey.segments.iter().filter_map(|s| s.header.as_ref().ok().map(|h| h.first_seq)));
    starts.sort_unstable();
    let doomed: Vec<&Archived> = files
        .iter()
        .filter(|f| {
            if f.snapshot {
                f.seq < base
            } else {
                let next = starts.iter().copied().find(|&s| s > f.seq);
                next.is_some_and(|next| next.0 - 1 <= base.0)
            }
        })
        .collect();
    for f in &doomed {
        std::fs::remove_file(&f.path).map_err(|e| format!("remove {}: {e}", f.path.display()))?;
        println!("removed {}", f.path.display());
    }
    let archive = dir.join(ARCHIVE_DIR);
    if !doomed.is_empty() {
        std::fs::File::open(&archive)
            .and_then(|d| d.sync_all())
            .map_err(|e| format!("sync directory {}: {e}", archive.display()))?;
    }
    println!(
        "{} file(s) removed ({}); the history from {base} on is kept",
        doomed.len(),
        bytes(doomed.iter().map(|f| f.len).sum())
    );
    Ok(Outcome::Clean)
}
