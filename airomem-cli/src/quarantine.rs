//! `airomem quarantine`: the torn tails an open cut off.

use std::path::Path;

use airomem::inspect;
use serde_json::json;

use crate::outcome::{Failure, Outcome};
use crate::output::bytes;

pub(crate) fn list(dir: &Path, as_json: bool) -> Result<Outcome, Failure> {
    let survey = inspect::survey(dir, &mut |_| {})?;
    if as_json {
        let files: Vec<_> = survey.quarantine.iter().map(|f| json!({"file": f.path, "bytes": f.len})).collect();
        println!("{}", serde_json::to_string_pretty(&json!({"dir": dir, "quarantine": files}))?);
    } else {
        for file in &survey.quarantine {
            println!("{}  {}", file.path.display(), bytes(file.len));
        }
        println!("{} quarantine file(s)", survey.quarantine.len());
    }
    Ok(Outcome::Clean)
}

/// Removes the named quarantine files (or all): only files the survey lists as quarantine,
/// so a typo can never delete a segment or a snapshot.
pub(crate) fn remove(dir: &Path, all: bool, names: &[String]) -> Result<Outcome, Failure> {
    let survey = inspect::survey(dir, &mut |_| {})?;
    let quarantined: Vec<_> = survey.quarantine.iter().map(|f| f.path.clone()).collect();
    let chosen = if all {
        quarantined
    } else {
        if names.is_empty() {
            return Err("name the quarantine files to remove, or pass --all".into());
        }
        let mut chosen = Vec::new();
        for name in names {
            let path = dir.join(name);
            if !quarantined.contains(&path) {
                return Err(
                    format!("{} is not a quarantine file of this store; nothing was removed", path.display()).into()
                );
            }
            chosen.push(path);
        }
        chosen
    };
    for path in &chosen {
        std::fs::remove_file(path).map_err(|e| format!("remove {}: {e}", path.display()))?;
        println!("removed {}", path.display());
    }
    if !chosen.is_empty() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| format!("sync directory {}: {e}", dir.display()))?;
    }
    Ok(Outcome::Clean)
}
