//! `airomem info`: what a store holds.

use std::collections::BTreeSet;
use std::path::Path;

use airomem::inspect::{self, LockState, Survey};
use serde_json::{Value, json};

use crate::outcome::{Failure, Outcome};
use crate::output::{bytes, progress, store_bytes, time};

pub(crate) fn run(dir: &Path, as_json: bool) -> Result<Outcome, Failure> {
    let bar = progress(store_bytes(dir), "reading");
    let survey = inspect::survey(dir, &mut |n| bar.inc(n))?;
    bar.finish_and_clear();
    if as_json {
        println!("{}", serde_json::to_string_pretty(&to_json(&survey))?);
    } else {
        print_text(&survey);
    }
    Ok(if damaged(&survey) { Outcome::Damaged } else { Outcome::Clean })
}

/// A header that does not read, or damage before the newest segment's end: what `verify`
/// would report in detail. Damage at the newest segment's end may be a torn tail.
fn damaged(survey: &Survey) -> bool {
    let last = survey.segments.len().saturating_sub(1);
    survey.segments.iter().enumerate().any(|(i, s)| s.header.is_err() || (i < last && s.damage.is_some()))
        || survey.snapshots.iter().any(|s| s.header.is_err() || s.raw_len.is_none())
}

fn serializers(survey: &Survey) -> BTreeSet<String> {
    let ids = survey
        .segments
        .iter()
        .filter_map(|s| s.header.as_ref().ok().map(|h| h.serializer))
        .chain(survey.snapshots.iter().filter_map(|s| s.header.as_ref().ok().map(|h| h.0)));
    ids.map(|id| inspect::serializer_name(id).map_or_else(|| format!("unknown ({})", id.0), str::to_string)).collect()
}

fn schemas(survey: &Survey) -> BTreeSet<u32> {
    survey
        .segments
        .iter()
        .filter_map(|s| s.header.as_ref().ok().map(|h| h.schema_version))
        .chain(survey.snapshots.iter().filter_map(|s| s.header.as_ref().ok().map(|h| h.1)))
        .collect()
}

fn lock_text(lock: LockState) -> String {
    match lock {
        LockState::Free => "free: no process has the store open".into(),
        LockState::Held { pid: Some(pid) } => format!("held: open in process {pid}"),
        LockState::Held { pid: None } => "held: open in another process".into(),
        _ => "unknown on this system".into(),
    }
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

fn print_text(survey: &Survey) {
    println!("store       {}", survey.dir.display());
    println!("lock        {}", lock_text(survey.lock));
    println!("serializer  {}", serializers(survey).into_iter().collect::<Vec<_>>().join(", "));
    let schemas: Vec<String> = schemas(survey).iter().map(u32::to_string).collect();
    println!("schema      {}", schemas.join(", "));
    match &survey.head {
        Some(head) => println!(
            "head        newest segment starts at {}{}",
            head.newest,
            head.synced_through.map_or_else(String::new, |s| format!("; synced through {s}"))
        ),
        None => println!("head        none"),
    }
    let total: u64 = survey.segments.iter().map(|s| s.len).sum();
    println!("segments    {} ({})", survey.segments.len(), bytes(total));
    for segment in &survey.segments {
        let range = segment.seqs.map_or_else(|| "empty".to_string(), |(a, b)| format!("{a}..{b}"));
        let times = segment.times.map_or_else(String::new, |(a, b)| format!("  {} .. {}", time(a), time(b)));
        let header = match &segment.header {
            Ok(h) => format!("schema {}", h.schema_version),
            Err(e) => format!("UNREADABLE HEADER: {e}"),
        };
        println!(
            "  {}  {range}  {} records ({} cancelled)  {}  {header}{times}",
            file_name(&segment.path),
            segment.records,
            segment.aborted,
            bytes(segment.len)
        );
        if let Some((offset, why)) = &segment.damage {
            println!("    records stop verifying at offset {offset}: {why}");
        }
    }
    println!("snapshots   {}", survey.snapshots.len());
    for snapshot in &survey.snapshots {
        let header = match &snapshot.header {
            Ok((_, schema)) => format!("schema {schema}"),
            Err(e) => format!("UNREADABLE HEADER: {e}"),
        };
        let ratio = snapshot.raw_len.filter(|_| snapshot.len > 0).map_or_else(
            || "footer does not verify".to_string(),
            |raw| format!("{} serialized, {:.1}x compressed", bytes(raw), raw as f64 / snapshot.len as f64),
        );
        println!("  {}  after {}  {}  {ratio}  {header}", file_name(&snapshot.path), snapshot.seq, bytes(snapshot.len));
    }
    for (label, files) in [
        ("quarantine", &survey.quarantine),
        ("unfinished", &survey.unfinished),
        ("archive", &survey.archived),
        ("damaged", &survey.damaged),
        ("other", &survey.other),
    ] {
        if files.is_empty() {
            continue;
        }
        println!("{label:<11} {} ({})", files.len(), bytes(files.iter().map(|f| f.len).sum()));
        for file in files {
            println!("  {}  {}", file_name(&file.path), bytes(file.len));
        }
    }
}

fn to_json(survey: &Survey) -> Value {
    let files = |files: &[inspect::FileSummary]| -> Value {
        files.iter().map(|f| json!({"file": f.path, "bytes": f.len})).collect()
    };
    json!({
        "dir": survey.dir,
        "lock": match survey.lock {
            LockState::Free => json!({"held": false}),
            LockState::Held { pid } => json!({"held": true, "pid": pid}),
            _ => json!({"held": null}),
        },
        "serializers": serializers(survey),
        "schema_versions": schemas(survey),
        "head": survey.head.map(|h| json!({"newest_segment": h.newest.0, "synced_through": h.synced_through.map(|s| s.0)})),
        "segments": survey.segments.iter().map(|s| json!({
            "file": s.path,
            "bytes": s.len,
            "header_error": s.header.as_ref().err(),
            "serializer": s.header.as_ref().ok().map(|h| h.serializer.0),
            "schema_version": s.header.as_ref().ok().map(|h| h.schema_version),
            "records": s.records,
            "cancelled": s.aborted,
            "first_seq": s.seqs.map(|r| r.0.0),
            "last_seq": s.seqs.map(|r| r.1.0),
            "first_time": s.times.map(|t| time(t.0)),
            "last_time": s.times.map(|t| time(t.1)),
            "damage": s.damage.as_ref().map(|(offset, why)| json!({"offset": offset, "reason": why})),
        })).collect::<Vec<_>>(),
        "snapshots": survey.snapshots.iter().map(|s| json!({
            "file": s.path,
            "seq": s.seq.0,
            "bytes": s.len,
            "serialized_bytes": s.raw_len,
            "header_error": s.header.as_ref().err(),
            "serializer": s.header.as_ref().ok().map(|h| h.0.0),
            "schema_version": s.header.as_ref().ok().map(|h| h.1),
        })).collect::<Vec<_>>(),
        "quarantine": files(&survey.quarantine),
        "unfinished": files(&survey.unfinished),
        "archive": files(&survey.archived),
        "damaged": files(&survey.damaged),
        "other": files(&survey.other),
    })
}
