//! `airomem backup`, `airomem restore`, and `airomem verify` on a backup: the library's
//! `airomem::backup`, from outside the store's process.

use std::path::Path;

use airomem::backup::{self, Manifest};
use airomem::{BackupProblem, Error};
use serde_json::json;

use crate::outcome::{Failure, Outcome};
use crate::output::bytes;

/// Whether `dir` looks like a backup (it has a manifest), for `verify` to pick its check.
pub(crate) fn is_backup(dir: &Path) -> bool {
    dir.join(backup::MANIFEST_FILE).exists()
}

/// Whether a refusal means the backup itself is damaged or unfinished (exit 1), rather
/// than a usage problem (exit 2).
fn is_damage(problem: &BackupProblem) -> bool {
    matches!(
        problem,
        BackupProblem::NoManifest
            | BackupProblem::ManifestDamaged { .. }
            | BackupProblem::FileMissing { .. }
            | BackupProblem::FileDamaged { .. }
            | BackupProblem::FileUnlisted { .. }
            | BackupProblem::Inconsistent { .. }
    )
}

fn describe(manifest: &Manifest) -> serde_json::Value {
    json!({
        "format": manifest.format,
        "serializer": manifest.serializer.0,
        "schema": manifest.schema,
        "seq": manifest.seq.0,
        "snapshot": manifest.snapshot.map(|s| s.0),
        "created_unix_nanos": manifest.created_unix_nanos,
        "files": manifest.files.iter().map(|f| json!({"name": f.name, "len": f.len, "crc32c": format!("{:08x}", f.crc)})).collect::<Vec<_>>(),
    })
}

/// `airomem backup DIR DEST`.
pub(crate) fn take(dir: &Path, dest: &Path, as_json: bool) -> Result<Outcome, Failure> {
    let report = backup::take_beside(dir, dest)?;
    if as_json {
        let out = json!({
            "dest": report.dest,
            "seq": report.seq.0,
            "snapshot": report.snapshot.map(|s| s.0),
            "files": report.files.len(),
            "linked": report.linked,
            "bytes": report.bytes,
            "duration_ms": report.duration.as_secs_f64() * 1e3,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{}: backup of {} up to #{} (snapshot {}), {} file(s) ({} linked), {}, in {:.1?}",
            dest.display(),
            dir.display(),
            report.seq.0,
            report.snapshot.map_or("none".to_string(), |s| format!("#{}", s.0)),
            report.files.len(),
            report.linked,
            bytes(report.bytes),
            report.duration
        );
    }
    Ok(Outcome::Clean)
}

/// `airomem verify BACKUP` (a directory with a manifest, or `--backup`).
pub(crate) fn verify(dir: &Path, as_json: bool) -> Result<Outcome, Failure> {
    match backup::verify(dir) {
        Ok(manifest) => {
            if as_json {
                let mut out = describe(&manifest);
                out["dir"] = json!(dir);
                out["intact"] = json!(true);
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                let total: u64 = manifest.files.iter().map(|f| f.len).sum();
                println!(
                    "{}: backup up to #{}, schema {}, {} file(s), {}; intact",
                    dir.display(),
                    manifest.seq.0,
                    manifest.schema,
                    manifest.files.len(),
                    bytes(total)
                );
            }
            Ok(Outcome::Clean)
        }
        Err(e @ Error::Backup { .. }) => {
            if as_json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({"dir": dir, "intact": false, "problem": e.to_string()}))?
                );
            } else {
                println!("DAMAGE {e}");
                println!("{}: not a restorable backup", dir.display());
            }
            Ok(Outcome::Damaged)
        }
        Err(e) => Err(e.into()),
    }
}

/// `airomem restore BACKUP DIR`.
pub(crate) fn restore(backup_dir: &Path, dir: &Path, max_schema: Option<u32>) -> Result<Outcome, Failure> {
    match backup::restore(backup_dir, dir, max_schema) {
        Ok(manifest) => {
            println!(
                "{}: restored from {} up to #{} (schema {}); open it with the application",
                dir.display(),
                backup_dir.display(),
                manifest.seq.0,
                manifest.schema
            );
            Ok(Outcome::Clean)
        }
        Err(Error::Backup { path, problem }) if is_damage(&problem) => {
            println!("DAMAGE backup {}: {problem}", path.display());
            println!("nothing restored; {} unchanged", dir.display());
            Ok(Outcome::Damaged)
        }
        Err(e) => Err(e.into()),
    }
}
