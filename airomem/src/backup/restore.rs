//! Restoring a backup into a new store directory: verify, copy into a temporary directory
//! beside the target, sync, rename into place, sync the parent. Nothing appears under the
//! target's name unless the whole restore succeeded.

use std::io::Write;
use std::path::Path;

use tracing::info;

use crate::backup::check::verify;
use crate::backup::manifest::Manifest;
use crate::backup::take::{create_private_dir, create_private_file, parent, sync_dir};
use crate::error::{BackupProblem, Error};

/// Restores the backup in `backup` into a new store at `dir` and returns its manifest.
///
/// Refuses, writing nothing: a `dir` that exists and is not empty (never overwrites a
/// store), a backup that does not verify against its manifest ([`crate::backup::verify`]),
/// a newer backup format, and, with `max_schema`, a schema newer than the restoring
/// application knows. The files are copied, never linked (the restored store appends to its
/// newest segment; the backup must not change with it) into a temporary directory beside
/// `dir`, each checked against the manifest as it is copied and synced; the directory is
/// synced, renamed to `dir`, and the parent synced. On an error the temporary directory is
/// removed.
pub fn restore(backup: &Path, dir: &Path, max_schema: Option<u32>) -> Result<Manifest, Error> {
    let manifest = verify(backup)?;
    if let Some(supported) = max_schema.filter(|&s| manifest.schema > s) {
        return Err(Error::Backup {
            path: backup.to_path_buf(),
            problem: BackupProblem::SchemaNewer { found: manifest.schema, supported },
        });
    }
    let replaces_empty = match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::Backup { path: dir.to_path_buf(), problem: BackupProblem::TargetNotEmpty });
            }
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(Error::io("list", dir)(e)),
    };
    let parent = parent(dir).ok_or_else(|| Error::io("restore into", dir)(std::io::ErrorKind::InvalidInput.into()))?;
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = parent.join(format!(".{name}.restoring-{}", std::process::id()));
    // One left by a restore of this same process id that was killed or lost power: no live
    // process has this id but this one, so it is nobody's.
    if temp.exists() {
        std::fs::remove_dir_all(&temp).map_err(Error::io("remove a stale restore", &temp))?;
    }
    create_private_dir(&temp)?;
    // The temporary directory is this call's until the rename: removed on every error.
    let result = fill(backup, &temp, &manifest).and_then(|()| {
        // rename(2) replaces an empty directory in one step; elsewhere it is removed first.
        if replaces_empty && cfg!(not(unix)) {
            std::fs::remove_dir(dir).map_err(Error::io("remove empty directory", dir))?;
        }
        std::fs::rename(&temp, dir).map_err(Error::io("rename", &temp))
    });
    if let Err(e) = result {
        drop(std::fs::remove_dir_all(&temp));
        return Err(e);
    }
    sync_dir(&parent)?;
    info!(backup = %backup.display(), dir = %dir.display(), seq = manifest.seq.0, "backup restored");
    Ok(manifest)
}

/// Copies every listed file into `temp`, checking each against the manifest from the bytes
/// copied (the backup could change after it was verified), syncs them and the directory.
fn fill(backup: &Path, temp: &Path, manifest: &Manifest) -> Result<(), Error> {
    for file in &manifest.files {
        let from = backup.join(&file.name);
        let to = temp.join(&file.name);
        let bytes = std::fs::read(&from).map_err(Error::io("read", &from))?;
        if bytes.len() as u64 != file.len || crc32c::crc32c(&bytes) != file.crc {
            return Err(Error::Backup {
                path: from,
                problem: BackupProblem::FileDamaged {
                    name: file.name.clone(),
                    what: "changed after it was verified".into(),
                },
            });
        }
        let mut out = create_private_file(&to)?;
        out.write_all(&bytes).map_err(Error::io("write", &to))?;
        out.sync_all().map_err(Error::io("sync", &to))?;
    }
    sync_dir(temp)
}
