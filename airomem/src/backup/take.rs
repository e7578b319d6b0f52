//! Taking a backup: choose the cut, pin its files into the destination (hard links for the
//! files that never change again, a copy of the prefix of the segment still being appended
//! to), check the copies as one cut, sync them, and publish the manifest last.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use airomem_core::Seq;
use airomem_journal::scan::SegmentScan;
use airomem_journal::segment::{self, SEGMENT_HEADER_LEN};
use tracing::{debug, info};

use crate::backup::BackupReport;
use crate::backup::check::{examine, file_name};
use crate::backup::manifest::{MANIFEST_FILE, MANIFEST_FORMAT, Manifest};
use crate::error::{BackupProblem, Error};

/// How many times a backup from outside the process starts over after retention removed a
/// file it was about to pin. Each restart follows a run of retention, which happens once
/// per snapshot, so running out means snapshots come faster than one attempt takes.
const MAX_ATTEMPTS: u32 = 16;

/// Why one attempt did not finish.
enum Attempt {
    /// A listed file was gone when it was pinned: retention ran. Start over.
    Vanished,
    /// The newest snapshot does not verify: start over from an older one.
    BadSnapshot(Seq),
    Failed(Error),
}

impl From<Error> for Attempt {
    fn from(e: Error) -> Attempt {
        Attempt::Failed(e)
    }
}

/// Backs up the store in `dir` into `dest` from outside its process: without its lock and
/// without its types, beside a running store (or a closed or crashed one). The cut is the
/// newest snapshot that verifies and the journal after it up to the last whole batch found.
///
/// `dest` must not exist or be empty. On an error, whatever this call put into `dest` is
/// removed again; a process killed midway leaves a backup without a manifest, which
/// [`crate::backup::verify`] and [`crate::backup::restore`] refuse.
///
/// Under `Fsync` every batch in the cut was synced before the backup read it; under the
/// other policies the cut may hold batches the store had not yet synced (the backup itself
/// is synced).
pub fn take_beside(dir: &Path, dest: &Path) -> Result<BackupReport, Error> {
    take(dir, dest, None, None, Instant::now())
}

/// Takes a backup of `dir` into `dest` whose cut ends at or before `until`. With `prune`
/// (the store's retention lock), retention cannot remove a file while it is being pinned.
pub(crate) fn take(
    dir: &Path,
    dest: &Path,
    until: Option<Seq>,
    prune: Option<&Mutex<()>>,
    started: Instant,
) -> Result<BackupReport, Error> {
    let created = prepare(dest)?;
    let result = attempts(dir, dest, until, prune, started);
    if result.is_err() {
        clear(dest);
        if created {
            drop(std::fs::remove_dir(dest));
        }
    }
    result
}

fn attempts(
    dir: &Path,
    dest: &Path,
    until: Option<Seq>,
    prune: Option<&Mutex<()>>,
    started: Instant,
) -> Result<BackupReport, Error> {
    let mut bad = BTreeSet::new();
    for attempt in 1..=MAX_ATTEMPTS {
        match once(dir, dest, until, prune, &bad) {
            Ok((manifest, linked)) => {
                let bytes = manifest.files.iter().map(|f| f.len).sum();
                let report = BackupReport {
                    dest: dest.to_path_buf(),
                    seq: manifest.seq,
                    snapshot: manifest.snapshot,
                    files: manifest.files,
                    bytes,
                    linked,
                    duration: started.elapsed(),
                };
                info!(dest = %dest.display(), seq = report.seq.0, bytes, "backup written");
                return Ok(report);
            }
            Err(Attempt::Vanished) => debug!(attempt, "retention removed a file being pinned; starting over"),
            Err(Attempt::BadSnapshot(seq)) => {
                tracing::warn!(seq = seq.0, "backup: the newest snapshot does not verify; using an older one");
                bad.insert(seq);
            }
            Err(Attempt::Failed(e)) => return Err(e),
        }
        clear(dest);
    }
    Err(Error::Backup { path: dir.to_path_buf(), problem: BackupProblem::KeptMoving { attempts: MAX_ATTEMPTS } })
}

/// One attempt: pin, check, sync, publish the manifest. Returns it and how many files were
/// linked.
fn once(
    dir: &Path,
    dest: &Path,
    until: Option<Seq>,
    prune: Option<&Mutex<()>>,
    bad: &BTreeSet<Seq>,
) -> Result<(Manifest, usize), Attempt> {
    // Held while files are chosen and pinned: retention takes it before it removes any, so
    // nothing listed here goes before it is linked or open. Released once every file is
    // pinned (a link shares the inode; the open tail segment stays readable if removed), so
    // the tail is read and copied without it: neither retention nor the writer's rollback,
    // which take the same lock, waits for that copy.
    let guard = prune.map(|p| p.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    let (snapshots, segments) = listing(dir)?;
    // At or before the cut: automatic snapshots go on while `Store::backup` copies, and one
    // taken after its cut covers commands the cut leaves out.
    let snapshot = snapshots.iter().rev().find(|&&s| !bad.contains(&s) && until.is_none_or(|u| s <= u)).copied();
    let after = snapshot.map_or(Seq(1), Seq::next);
    let Some(start) = segments.iter().rposition(|&first| first <= after) else {
        return Err(Attempt::Failed(Error::Backup {
            path: dir.to_path_buf(),
            problem: BackupProblem::Inconsistent { reason: format!("no journal segment holds #{}", after.0) },
        }));
    };
    if snapshot.is_none() && segments[start] != Seq(1) {
        return Err(Attempt::Failed(Error::Backup {
            path: dir.to_path_buf(),
            problem: BackupProblem::Inconsistent { reason: "no snapshot, and the journal does not start at #1".into() },
        }));
    }
    let last = match until {
        Some(until) => segments.iter().rposition(|&first| first <= until).unwrap_or(start).max(start),
        None => segments.len() - 1,
    };
    let chosen = &segments[start..=last];
    let (&tail, sealed) = chosen.split_last().expect("start <= last");
    let files = snapshot.map(|seq| airomem_snapshot::path(dir, seq)).into_iter();
    let files = files.chain(sealed.iter().map(|&first| segment::path(dir, first)));
    let pinned = files.map(|src| pin(&src, dest)).collect::<Result<Vec<_>, _>>()?;
    let tail_path = segment::path(dir, tail);
    let tail_file = open(&tail_path)?;
    drop(guard);
    let mut linked = 0;
    for pinned in pinned {
        match pinned {
            Pinned::Linked => linked += 1,
            Pinned::Open(mut from, to) => {
                let mut out = create_private_file(&to)?;
                std::io::copy(&mut from, &mut out).map_err(Error::io("copy", &to))?;
            }
        }
    }
    copy_prefix(tail_file, &tail_path, dest, until)?;

    let examined = match examine(dest, snapshot, chosen, None) {
        Ok(examined) => examined,
        Err(Error::Backup { path, .. }) if snapshot.is_some_and(|s| path == airomem_snapshot::path(dest, s)) => {
            return Err(Attempt::BadSnapshot(snapshot.expect("checked")));
        }
        Err(e) => return Err(e.into()),
    };
    for file in &examined.files {
        sync_file(&dest.join(&file.name))?;
    }
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        serializer: examined.serializer,
        schema: examined.schema,
        seq: examined.seq,
        snapshot,
        created_unix_nanos: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64),
        files: examined.files,
    };
    publish_manifest(dest, &manifest)?;
    Ok((manifest, linked))
}

/// The snapshots and segments in `dir`, each sorted.
fn listing(dir: &Path) -> Result<(Vec<Seq>, Vec<Seq>), Error> {
    let (mut snapshots, mut segments) = (Vec::new(), Vec::new());
    for entry in std::fs::read_dir(dir).map_err(Error::io("list", dir))? {
        let name = entry.map_err(Error::io("list", dir))?.file_name();
        let name = name.to_string_lossy();
        if let Some(seq) = airomem_snapshot::parse_file_name(&name) {
            snapshots.push(seq);
        } else if let Some(first) = segment::parse_file_name(&name) {
            segments.push(first);
        }
    }
    snapshots.sort_unstable();
    segments.sort_unstable();
    Ok((snapshots, segments))
}

/// A store file held for the backup: linked into it, or open to be copied there once
/// retention's lock is released (the open handle reads it even if retention removes it).
enum Pinned {
    Linked,
    Open(File, PathBuf),
}

/// Holds `src` for `dest`: a hard link where the file system allows one, else the open file
/// and where its copy goes.
fn pin(src: &Path, dest: &Path) -> Result<Pinned, Attempt> {
    let to = dest.join(src.file_name().expect("a store file has a name"));
    match std::fs::hard_link(src, &to) {
        Ok(()) => return Ok(Pinned::Linked),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Attempt::Vanished),
        Err(e) => debug!(error = %e, file = %src.display(), "hard link refused; copying"),
    }
    Ok(Pinned::Open(open(src)?, to))
}

fn open(src: &Path) -> Result<File, Attempt> {
    File::open(src).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Attempt::Vanished,
        _ => Attempt::Failed(Error::io("open", src)(e)),
    })
}

/// Copies the segment `src` into `dest` up to the end of its last whole batch of records at
/// or before `until` (outside an atomic unit), never a link: the writer appends to it, and
/// an open after a crash may cut its tail in place.
fn copy_prefix(mut file: File, src: &Path, dest: &Path, until: Option<Seq>) -> Result<(), Attempt> {
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut bytes).map_err(Error::io("read", src))?;
    let scan = SegmentScan::read(src, &bytes).map_err(|e| Error::Backup {
        path: src.to_path_buf(),
        problem: BackupProblem::Inconsistent { reason: e.to_string() },
    })?;
    let cut = scan
        .frames(&bytes)
        .filter(|f| f.batch_end && !f.unit_next && until.is_none_or(|u| f.seq <= u))
        .last()
        .map_or(SEGMENT_HEADER_LEN, |f| f.end());
    let to = dest.join(file_name(src));
    let mut out = create_private_file(&to)?;
    out.write_all(&bytes[..cut]).map_err(Error::io("write", &to))?;
    Ok(())
}

pub(crate) fn sync_file(path: &Path) -> Result<(), Error> {
    File::open(path).and_then(|f| f.sync_all()).map_err(Error::io("sync", path))
}

pub(crate) fn sync_dir(path: &Path) -> Result<(), Error> {
    File::open(path).and_then(|f| f.sync_all()).map_err(Error::io("sync directory", path))
}

/// The manifest appears whole or not at all: temporary file, sync, rename, directory sync.
fn publish_manifest(dest: &Path, manifest: &Manifest) -> Result<(), Error> {
    let temp = dest.join(format!(".{MANIFEST_FILE}.tmp"));
    let path = dest.join(MANIFEST_FILE);
    let mut out = create_private_file(&temp)?;
    out.write_all(&manifest.encode()).map_err(Error::io("write", &temp))?;
    out.sync_all().map_err(Error::io("sync", &temp))?;
    drop(out);
    std::fs::rename(&temp, &path).map_err(Error::io("rename", &temp))?;
    sync_dir(dest)
}

/// Makes `dest` an empty directory whose entry is durable; true if this call created it.
fn prepare(dest: &Path) -> Result<bool, Error> {
    match std::fs::read_dir(dest) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::Backup { path: dest.to_path_buf(), problem: BackupProblem::DestinationNotEmpty });
            }
            Ok(false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            create_private_dir(dest)?;
            if let Some(parent) = parent(dest) {
                sync_dir(&parent)?;
            }
            Ok(true)
        }
        Err(e) => Err(Error::io("list", dest)(e)),
    }
}

pub(crate) fn create_private_dir(path: &Path) -> Result<(), Error> {
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path).map_err(Error::io("create directory", path))
}

/// A new file only its owner can read (`0o600` on Unix), as the store's own files are:
/// a backup holds the same secrets.
pub(crate) fn create_private_file(path: &Path) -> Result<File, Error> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map_err(Error::io("create", path))
}

pub(crate) fn parent(path: &Path) -> Option<PathBuf> {
    match path.parent() {
        Some(p) if p.as_os_str().is_empty() => Some(PathBuf::from(".")),
        other => other.map(Path::to_path_buf),
    }
}

/// Removes everything in `dest` (only this backup's own files are ever there).
fn clear(dest: &Path) {
    let Ok(entries) = std::fs::read_dir(dest) else { return };
    for entry in entries.flatten() {
        if let Err(e) = std::fs::remove_file(entry.path()) {
            tracing::warn!(error = %e, file = %entry.path().display(), "could not remove a file of an unfinished backup");
        }
    }
}
