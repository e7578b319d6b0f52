//! Snapshots in the facade (feature `snapshot`): the worker thread that compresses and
//! publishes images, retention and journal pruning, and loading the newest valid snapshot.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use airomem_core::storage::Storage;
use airomem_core::{Seq, Serializer, State};
use airomem_journal::{JournalConfig, segment};
use airomem_snapshot::{SnapshotError, SnapshotHeader};
use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::Error;
use crate::migrate::{Chain, Held};
use crate::stats::Counters;

/// When snapshots are taken and how many are kept.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SnapshotPolicy {
    pub every_commands: Option<u64>,
    pub every_bytes: Option<u64>,
    pub retain: usize,
    pub level: i32,
    /// Retention archives instead of removing.
    pub keep_history: bool,
}

impl Default for SnapshotPolicy {
    fn default() -> Self {
        SnapshotPolicy { every_commands: None, every_bytes: None, retain: 2, level: 3, keep_history: false }
    }
}

/// A snapshot that is durable, from [`crate::Store::snapshot`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SnapshotInfo {
    /// The file.
    pub path: PathBuf,
    /// The last journal record it includes.
    pub seq: Seq,
    /// Bytes of the serialized state.
    pub raw_len: u64,
    /// Bytes of the compressed file.
    pub file_len: u64,
    /// Time spent serializing under the read lock: the only time commits waited.
    pub serialize_time: Duration,
    /// Time spent compressing, writing, syncing and publishing, with no lock held.
    pub write_time: Duration,
    /// Older snapshots removed by retention.
    pub snapshots_removed: u64,
    /// Journal segments removed because the oldest retained snapshot covers them.
    pub segments_removed: u64,
}

pub(crate) type SnapshotReply = oneshot::Sender<Result<SnapshotInfo, Error>>;

struct Job {
    seq: Seq,
    image: Vec<u8>,
    serialize_time: Duration,
    reply: Option<SnapshotReply>,
}

/// The writer's side of snapshotting: triggers, and the worker that does the I/O.
///
/// Automatic snapshots: at most one is in flight (queued or being written) at a time, and
/// after each consecutive failure the trigger doubles (up to 64 times the policy), so a
/// full disk or a state that does not encode costs one attempt per (growing) interval, not a
/// serialization of the whole state after every batch.
pub(crate) struct Snapshotter {
    policy: SnapshotPolicy,
    jobs: Option<Sender<Job>>,
    worker: Option<JoinHandle<()>>,
    commands_since: u64,
    bytes_since: u64,
    /// An automatic snapshot is queued or being written.
    busy: Arc<AtomicBool>,
    /// Automatic snapshots that failed in a row.
    failures: Arc<AtomicU32>,
}

/// The most a failing automatic snapshot's trigger is stretched: 2^6 = 64 times.
const MAX_BACKOFF_SHIFT: u32 = 6;

impl Snapshotter {
    pub(crate) fn start(
        policy: SnapshotPolicy,
        config: JournalConfig,
        prune: Arc<Mutex<()>>,
        counters: Arc<Counters>,
    ) -> Result<Self, Error> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let busy = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(AtomicU32::new(0));
        let (worker_busy, worker_failures) = (Arc::clone(&busy), Arc::clone(&failures));
        let worker = thread::Builder::new()
            .name("airomem-snapshot".into())
            .spawn(move || {
                for job in rx {
                    let result = publish(&config, policy, &prune, job.seq, &job.image, job.serialize_time);
                    drop(job.image);
                    let result = result.map(|(info, changed)| {
                        counters.snapshot_published(&info, &changed);
                        info
                    });
                    match (job.reply, result) {
                        (Some(reply), result) => drop(reply.send(result)),
                        (None, Ok(info)) => {
                            worker_failures.store(0, Ordering::Relaxed);
                            worker_busy.store(false, Ordering::Release);
                            info!(seq = info.seq.0, bytes = info.file_len, "automatic snapshot written")
                        }
                        (None, Err(e)) => {
                            let failed = worker_failures.fetch_add(1, Ordering::Relaxed) + 1;
                            worker_busy.store(false, Ordering::Release);
                            warn!(
                                error = %e,
                                failed_in_a_row = failed,
                                "automatic snapshot failed; the journal still holds everything, and the next \
                                 attempt waits longer"
                            )
                        }
                    }
                }
            })
            .map_err(|e| Error::Io { op: "spawn snapshot thread", path: PathBuf::new(), source: Arc::new(e) })?;
        Ok(Snapshotter {
            policy,
            jobs: Some(jobs),
            worker: Some(worker),
            commands_since: 0,
            bytes_since: 0,
            busy,
            failures,
        })
    }

    /// Counts a written batch; true when the policy asks for an automatic snapshot now.
    pub(crate) fn due(&mut self, commands: u64, bytes: u64) -> bool {
        self.commands_since += commands;
        self.bytes_since += bytes;
        if self.busy.load(Ordering::Acquire) {
            return false;
        }
        let stretch = 1u64 << self.failures.load(Ordering::Relaxed).min(MAX_BACKOFF_SHIFT);
        self.policy.every_commands.is_some_and(|n| self.commands_since >= n.saturating_mul(stretch))
            || self.policy.every_bytes.is_some_and(|n| self.bytes_since >= n.saturating_mul(stretch))
    }

    /// Serializes `state` (the caller holds the read lock) and queues the image for the worker.
    pub(crate) fn take<S: State, Z: Serializer>(
        &mut self,
        serializer: &Z,
        state: &S,
        seq: Seq,
        reply: Option<SnapshotReply>,
    ) {
        let started = Instant::now();
        let mut image = Vec::new();
        let automatic = reply.is_none();
        if automatic || !self.busy.load(Ordering::Acquire) {
            // An explicit snapshot also restarts the automatic count.
            self.commands_since = 0;
            self.bytes_since = 0;
        }
        if let Err(e) = serializer.encode(state, &mut image) {
            let error = Error::encode("state", e);
            match reply {
                Some(reply) => drop(reply.send(Err(error))),
                None => {
                    let failed = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
                    warn!(error = %error, failed_in_a_row = failed, "automatic snapshot: the state does not encode");
                }
            }
            return;
        }
        if automatic {
            self.busy.store(true, Ordering::Release);
        }
        let job = Job { seq, image, serialize_time: started.elapsed(), reply };
        if let Some(jobs) = &self.jobs
            && let Err(mpsc::SendError(job)) = jobs.send(job)
        {
            self.busy.store(false, Ordering::Release);
            if let Some(reply) = job.reply {
                drop(reply.send(Err(Error::Closed)));
            }
        }
    }

    /// Waits for queued snapshots to finish.
    pub(crate) fn shutdown(&mut self) {
        self.jobs.take();
        if let Some(worker) = self.worker.take() {
            drop(worker.join());
        }
    }
}

impl Drop for Snapshotter {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn publish(
    config: &JournalConfig,
    policy: SnapshotPolicy,
    prune: &Mutex<()>,
    seq: Seq,
    image: &[u8],
    serialize_time: Duration,
) -> Result<(SnapshotInfo, Vec<PathBuf>), Error> {
    let started = Instant::now();
    let storage = &*config.storage;
    let header = SnapshotHeader { serializer: config.serializer, schema_version: config.schema_version, seq };
    let published =
        airomem_snapshot::write(storage, &config.dir, header, image, policy.level).map_err(snapshot_error)?;
    // Only now that the new snapshot is durable may older files go.
    let _guard = prune.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let removed = retain(storage, config, policy.retain, policy.keep_history).map_err(snapshot_error)?;
    let segments_removed = removed.iter().filter(|p| p.extension().is_some_and(|e| e == "journal")).count() as u64;
    let snapshots_removed = removed.len() as u64 - segments_removed;
    let mut changed = removed;
    changed.push(published.path.clone());
    let info = SnapshotInfo {
        path: published.path,
        seq,
        raw_len: published.raw_len,
        file_len: published.file_len,
        serialize_time,
        write_time: started.elapsed(),
        snapshots_removed,
        segments_removed,
    };
    Ok((info, changed))
}

/// Keeps the newest `keep` snapshots (at least two) and the segments holding records after
/// the oldest of them; removes the rest (or, with `archive`, moves them into
/// [`crate::history::ARCHIVE_DIR`]), and returns the files it took away. The newest segment
/// is never taken: the writer appends to it.
///
/// The rule that makes this safe: whatever single file is damaged, the state can still be
/// rebuilt. While only one snapshot exists, no segment is removed (the whole journal is the
/// second way); once two or more are kept, segments go only up to the oldest kept one, so a
/// damaged newest snapshot leaves an older one plus the journal after it.
fn retain(
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
        let names = storage.list(dir).map_err(|e| SnapshotError::Io { op: "list", path: dir.clone(), source: e })?;
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
    let io = |op: &'static str, path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source| SnapshotError::Io { op, path, source }
    };
    if archive {
        let archive_dir = dir.join(crate::history::ARCHIVE_DIR);
        storage.create_dir_all(&archive_dir).map_err(io("create directory", &archive_dir))?;
        // The archive's own entry must be durable before files are moved into it.
        storage.sync_dir(dir).map_err(io("sync directory", dir))?;
        for file in &doomed {
            let name = file.file_name().unwrap_or_default();
            storage.rename(file, &archive_dir.join(name)).map_err(io("archive", file))?;
        }
        // A rename is one step: a power cut leaves each file in one place or the other, and
        // either way a reader that merges the two (a point-in-time read) finds it.
        storage.sync_dir(&archive_dir).map_err(io("sync directory", &archive_dir))?;
    } else {
        for file in &doomed {
            storage.remove(file).map_err(io("remove", file))?;
        }
    }
    storage.sync_dir(dir).map_err(io("sync directory", dir))?;
    Ok(doomed)
}

/// Snapshots always kept, whatever the policy asks: the newest, and one to fall back on.
pub(crate) const MIN_RETAINED: usize = 2;

pub(crate) fn snapshot_error(e: SnapshotError) -> Error {
    Error::Snapshot(Arc::new(e))
}

/// A state loaded from a snapshot (or nothing and `Seq(0)` if none verified), and what was
/// passed over to find it.
pub(crate) struct Loaded<S> {
    pub state: Held<S>,
    pub seq: Seq,
    pub skipped: Vec<String>,
    /// The newest snapshot file no later than `until`, usable or not: every command up to it
    /// was committed, so a state rebuilt short of it is missing acknowledged commands.
    pub newest_on_disk: Seq,
}

/// Loads the newest snapshot that verifies and decodes, with a sequence number no higher
/// than `until`, whichever schema of `chain` wrote it. Damaged snapshots are passed over
/// with a warning; a snapshot written with another serializer or format version, under a
/// schema the chain does not reach, or one that verifies but does not decode with the
/// types of its schema, is an error, since older ones would be too.
pub(crate) fn load_newest<S: State, Z: Serializer>(
    config: &JournalConfig,
    serializer: &Z,
    chain: &Chain<S, Z>,
    until: Option<Seq>,
) -> Result<Loaded<S>, Error> {
    let storage = &*config.storage;
    let mut skipped = Vec::new();
    let candidates = airomem_snapshot::list(storage, &config.dir).map_err(snapshot_error)?;
    // A name past the bound no journal reaches is no proof of anything: it is damage, passed
    // over below like any other.
    let newest_on_disk = candidates
        .iter()
        .rev()
        .copied()
        .find(|&s| s.0 <= airomem_snapshot::format::MAX_SEQ && until.is_none_or(|u| s <= u))
        .unwrap_or(Seq(0));
    for &seq in candidates.iter().rev().filter(|&&s| until.is_none_or(|u| s <= u)) {
        let loaded = airomem_snapshot::load(storage, &config.dir, seq, config.serializer);
        let reason = match loaded {
            // The image verified (checksums, lengths, zstd's own checksum): bytes that do not
            // decode are a type change, not damage, and an older snapshot written by the same
            // types would not decode either.
            Ok((header, image)) => {
                let file = airomem_snapshot::path(&config.dir, seq);
                let state = chain.decode_state(serializer, header.schema_version, &image, &file, seq)?;
                return Ok(Loaded { state, seq, skipped, newest_on_disk });
            }
            Err(e @ SnapshotError::Damaged { .. }) => e.to_string(),
            // Listed a moment ago: a reader without the lock raced the store's retention. It
            // is no damage, and an older snapshot would only lead to more removed files.
            Err(SnapshotError::Io { path, source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::RemovedWhileReading { path });
            }
            // The reason is kept as text: the operating system's error goes into it too.
            Err(SnapshotError::Io { op, path, source }) => format!("{op} {}: {source}", path.display()),
            Err(e) => return Err(snapshot_error(e)),
        };
        warn!(reason, "skipping a snapshot that does not verify; falling back to an older one");
        skipped.push(reason);
    }
    // No snapshot verified (or there is none): replay from the start.
    Ok(Loaded { state: Held::Empty, seq: Seq(0), skipped, newest_on_disk })
}

/// Writes the snapshot that seals a migration: the state, converted to the current schema,
/// as of `seq`, the journal's last record (synced). Retention then runs as after any
/// snapshot. If a snapshot of an older schema already sits at `seq`, this one replaces it
/// (atomically, by rename): it holds the same history, converted, and the fallback that
/// retention keeps (an older snapshot, or the whole journal) is unchanged. Returns the
/// snapshot and the files it changed (itself, and those retention removed).
pub(crate) fn seal<S: State, Z: Serializer>(
    config: &JournalConfig,
    policy: SnapshotPolicy,
    prune: &Mutex<()>,
    serializer: &Z,
    state: &S,
    seq: Seq,
) -> Result<(SnapshotInfo, Vec<PathBuf>), Error> {
    let started = Instant::now();
    let mut image = Vec::new();
    serializer.encode(state, &mut image).map_err(|e| Error::encode("state", e))?;
    publish(config, policy, prune, seq, &image, started.elapsed())
}
