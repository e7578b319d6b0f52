//! Retention: once a new snapshot is durable, which older snapshots and journal segments go,
//! removed or moved into the archive.

use std::path::PathBuf;

use airomem_core::Seq;
use airomem_core::storage::Storage;
use airomem_journal::{JournalConfig, segment};
use airomem_snapshot::SnapshotError;

use crate::layout::ARCHIVE_DIR;
use crate::options::MIN_RETAINED;

/// Keeps the newest `keep` snapshots (at least two) and the segments holding records after
/// the oldest of them; removes the rest (or, with `archive`, moves them into
/// [`crate::layout::ARCHIVE_DIR`]), and returns the files it took away. The newest segment
/// is never taken: the writer appends to it.
///
/// The rule that makes this safe: whatever single file is damaged, the state can still be
/// rebuilt. While only one snapshot exists, no segment is removed (the whole journal is the
/// second way); once two or more are kept, segments go only up to the oldest kept one, so a
/// damaged newest snapshot leaves an older one plus the journal after it.
pub(crate) fn retain(
    storage: &dyn Storage,
    config: &JournalConfig,
    keep: usize,
    archive: bool,
) -> Result<Vec<PathBuf>, SnapshotError> {
    let dir = &config.dir;
    let snapshots = airomem_snapshot::list(storage, dir)?;
    let excess = snapshots.len().saturating_sub(keep.max(MIN_RETAINED));
    let kept = &snapshots[excess..];
    let mut doomed: Vec<PathBuf> = snapshots[..excess].iter().map(|&old| airomem_snapshot::path(dir, old)).collect();
    // One snapshot (or none): the journal is its fallback, so it stays whole.
    if let [oldest, _, ..] = kept {
        let names = storage.list(dir).map_err(|e| SnapshotError::io("list", dir, e))?;
        let mut segments: Vec<Seq> = names.iter().filter_map(|n| segment::parse_file_name(n)).collect();
        segments.sort_unstable();
        // A segment holds the records up to the next segment's first one.
        doomed.extend(
            segments.windows(2).filter(|pair| pair[1].0 - 1 <= oldest.0).map(|pair| segment::path(dir, pair[0])),
        );
    }
    if doomed.is_empty() {
        return Ok(doomed);
    }
    if archive {
        let archive_dir = dir.join(ARCHIVE_DIR);
        storage.create_dir_all(&archive_dir).map_err(|e| SnapshotError::io("create directory", &archive_dir, e))?;
        // The archive's own entry must be durable before files are moved into it.
        storage.sync_dir(dir).map_err(|e| SnapshotError::io("sync directory", dir, e))?;
        for file in &doomed {
            let name = file.file_name().unwrap_or_default();
            storage.rename(file, &archive_dir.join(name)).map_err(|e| SnapshotError::io("archive", file, e))?;
        }
        // A rename is one step: a power cut leaves each file in one place or the other, and
        // either way a reader that merges the two (a point-in-time read) finds it.
        storage.sync_dir(&archive_dir).map_err(|e| SnapshotError::io("sync directory", &archive_dir, e))?;
    } else {
        for file in &doomed {
            storage.remove(file).map_err(|e| SnapshotError::io("remove", file, e))?;
        }
    }
    storage.sync_dir(dir).map_err(|e| SnapshotError::io("sync directory", dir, e))?;
    Ok(doomed)
}
