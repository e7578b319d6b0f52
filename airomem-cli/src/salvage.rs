//! `airomem salvage DIR DEST`: a new store from everything intact in a damaged one.
//!
//! The one subcommand that writes a store, and only into DEST: a copy of the newest snapshot
//! that verifies and the journal's intact records after it, rewritten into fresh segments.
//! DIR is read only and stays byte-identical. The report says exactly what was left behind.

use std::path::Path;

use airomem::inspect::{self, LeftBehind};
use serde_json::json;

use crate::outcome::{Failure, Outcome};
use crate::output::bytes;

pub(crate) fn run(dir: &Path, dest: &Path, as_json: bool) -> Result<Outcome, Failure> {
    let salvaged = inspect::salvage(dir, dest)?;
    let prefix = &salvaged.prefix;
    let left = prefix.left_behind.as_ref();
    if as_json {
        let left_json = |l: &LeftBehind| {
            json!({
                "first_lost": l.first_lost.0,
                "segment": l.segment,
                "offset": l.offset,
                "bytes_after": l.bytes_after,
                "reason": l.reason,
                "later_segments": l.later_segments,
            })
        };
        let report = json!({
            "dir": dir,
            "dest": dest,
            "snapshot": prefix.snapshot.map(|s| s.0),
            "last": prefix.last.0,
            "snapshots_passed_over": prefix.snapshots_passed_over,
            "left_behind": left.map(left_json),
            "written": salvaged.written,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for reason in &prefix.snapshots_passed_over {
            println!("passed over a snapshot that does not verify: {reason}");
        }
        match prefix.snapshot {
            Some(seq) => println!("from snapshot #{}", seq.0),
            None => println!("from the start of the journal (no snapshot verifies)"),
        }
        println!(
            "salvaged {} into {}: {} file(s), every record through #{}",
            dir.display(),
            dest.display(),
            salvaged.written.len(),
            prefix.last.0
        );
        match left {
            Some(l) => {
                println!(
                    "LEFT BEHIND every record from #{} on: {} at byte {} ({}), {} of record bytes from there",
                    l.first_lost.0,
                    l.segment.display(),
                    l.offset,
                    l.reason,
                    bytes(l.bytes_after)
                );
                for later in &l.later_segments {
                    println!("LEFT BEHIND whole segment {}", later.display());
                }
            }
            None => println!("nothing left behind: the journal has no damage"),
        }
    }
    Ok(if left.is_some() { Outcome::Damaged } else { Outcome::Clean })
}
