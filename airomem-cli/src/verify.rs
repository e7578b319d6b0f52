//! `airomem verify`: every problem, with file, offset and record.

use std::path::Path;

use airomem::inspect::{self, Problem};
use serde_json::json;

use crate::outcome::{Failure, Outcome};
use crate::output::{bytes, progress, store_bytes};

pub(crate) fn run(dir: &Path, as_json: bool) -> Result<Outcome, Failure> {
    let bar = progress(store_bytes(dir), "verifying");
    let found = inspect::verify(dir, &mut |n| bar.inc(n))?;
    bar.finish_and_clear();
    let problem = |p: &Problem| json!({"file": p.file, "offset": p.offset, "seq": p.seq.map(|s| s.0), "message": p.message, "blocks_open": p.blocks_open});
    if as_json {
        let report = json!({
            "dir": dir,
            "intact": found.problems.is_empty(),
            "problems": found.problems.iter().map(problem).collect::<Vec<_>>(),
            "torn_tail": found.torn_tail.as_ref().map(problem),
            "segments": found.segments,
            "snapshots": found.snapshots,
            "records": found.records,
            "bytes": found.bytes,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for p in &found.problems {
            println!("DAMAGE {p}");
        }
        if let Some(torn) = &found.torn_tail {
            println!("torn tail (not damage: a crash interrupted this write, or the store is writing it now) {torn}");
        }
        println!(
            "{}: {} segment(s), {} record(s), {} snapshot(s), {} read; {}",
            dir.display(),
            found.segments,
            found.records,
            found.snapshots,
            bytes(found.bytes),
            match found.problems.len() {
                0 => "intact".to_string(),
                n => format!("{n} problem(s)"),
            }
        );
    }
    Ok(if found.problems.is_empty() { Outcome::Clean } else { Outcome::Damaged })
}
