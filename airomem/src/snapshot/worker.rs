//! The snapshot thread: the writer hands it a serialized state (the plain path) or a frozen
//! view of it (a state that implements `State::snapshot_view`), and it serializes the view,
//! compresses, writes, syncs and publishes the image, then runs retention. Also the snapshot
//! that seals a migration at open.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use std::io::Write;

use airomem_core::{CodecError, Seq, Serializer, State};
use airomem_journal::JournalConfig;
use airomem_snapshot::{RecordPosition, SnapshotHeader};
use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::Error;
use crate::error::snapshot_error;
use crate::meters::Meters;
use crate::options::SnapshotPolicy;
use crate::report::{Counters, SnapshotInfo};
use crate::snapshot::retain::retain;

pub(crate) type SnapshotReply = oneshot::Sender<Result<SnapshotInfo, Error>>;

/// Writes a frozen view's serialized bytes into the snapshot's body; returns the parts of the
/// view that writers copied meanwhile.
pub(crate) type ViewWriter = Box<dyn FnOnce(&mut dyn Write) -> Result<u64, CodecError> + Send>;

/// What the snapshot thread turns into a file.
enum Body {
    /// The state serialized under the lock (the plain path), and how long that took.
    Image { image: Vec<u8>, serialize_time: Duration },
    /// A frozen view, serialized here while commits go on.
    View(ViewWriter),
}

struct Job {
    seq: Seq,
    /// Where the first journal record after `seq` goes, recorded in the snapshot's header.
    next_record: Option<RecordPosition>,
    body: Body,
    /// How long the writers waited: the view's freeze, or the whole serialization.
    freeze_time: Duration,
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

/// The nice value the snapshot thread gives itself: it competes with the writer and the
/// application for the cores while it compresses (and, on the frozen path, serializes), and
/// every millisecond it takes from them shows in commit latency. At 10 the scheduler gives
/// it about a tenth of a core that something else wants, and all of an idle one.
const SNAPSHOT_NICE: i32 = 10;

/// Lowers the calling thread's scheduling priority to [`SNAPSHOT_NICE`] where the platform
/// lets a thread have its own (Linux: `setpriority` on the thread id). Raising a nice value
/// needs no privilege; a refusal is logged and the thread runs at normal priority.
fn yield_to_writers() {
    #[cfg(target_os = "linux")]
    {
        let thread = rustix::thread::gettid();
        if let Err(error) = rustix::process::setpriority_process(Some(thread), SNAPSHOT_NICE) {
            warn!(%error, "the snapshot thread could not lower its priority; it competes with the writers");
        }
    }
}

/// The most a failing automatic snapshot's trigger is stretched: 2^6 = 64 times.
const MAX_BACKOFF_SHIFT: u32 = 6;

impl Snapshotter {
    pub(crate) fn start(
        policy: SnapshotPolicy,
        config: JournalConfig,
        prune: Arc<Mutex<()>>,
        counters: Arc<Counters>,
        meters: Meters,
    ) -> Result<Self, Error> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let busy = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(AtomicU32::new(0));
        let (worker_busy, worker_failures) = (Arc::clone(&busy), Arc::clone(&failures));
        let worker = thread::Builder::new()
            .name("airomem-snapshot".into())
            .spawn(move || {
                yield_to_writers();
                for job in rx {
                    let result = publish(&config, policy, &prune, job.seq, job.next_record, job.body, job.freeze_time);
                    let result = result.map(|(info, changed)| {
                        counters.snapshot_published(&info, &changed);
                        published(&meters, &counters, &info);
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
        next_record: RecordPosition,
        reply: Option<SnapshotReply>,
    ) {
        let started = Instant::now();
        let mut image = Vec::new();
        self.restart_count(reply.is_none());
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
        let serialize_time = started.elapsed();
        let body = Body::Image { image, serialize_time };
        self.queue(Job { seq, next_record: Some(next_record), body, freeze_time: serialize_time, reply });
    }

    /// Queues a frozen view, taken in `freeze_time` under the lock, for the worker to
    /// serialize and write.
    pub(crate) fn take_view(
        &mut self,
        view: ViewWriter,
        seq: Seq,
        next_record: RecordPosition,
        freeze_time: Duration,
        reply: Option<SnapshotReply>,
    ) {
        self.restart_count(reply.is_none());
        self.queue(Job { seq, next_record: Some(next_record), body: Body::View(view), freeze_time, reply });
    }

    /// An explicit snapshot also restarts the automatic count, unless an automatic one is
    /// in flight (whose own count restarted when it was taken).
    fn restart_count(&mut self, automatic: bool) {
        if automatic || !self.busy.load(Ordering::Acquire) {
            self.commands_since = 0;
            self.bytes_since = 0;
        }
    }

    fn queue(&mut self, job: Job) {
        if job.reply.is_none() {
            self.busy.store(true, Ordering::Release);
        }
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

/// Tells `meters` of a snapshot just published (after retention, so the segment count is
/// what remains).
pub(crate) fn published(meters: &Meters, counters: &Counters, info: &SnapshotInfo) {
    // On the plain path the serialization is the pause itself; from a frozen view the
    // stream follows the freeze.
    let took = if info.frozen { info.freeze_time + info.serialize_time } else { info.serialize_time } + info.write_time;
    meters.snapshot(took, info.freeze_time, info.raw_len, info.file_len, counters.segments());
}

fn publish(
    config: &JournalConfig,
    policy: SnapshotPolicy,
    prune: &Mutex<()>,
    seq: Seq,
    next_record: Option<RecordPosition>,
    body: Body,
    freeze_time: Duration,
) -> Result<(SnapshotInfo, Vec<PathBuf>), Error> {
    let started = Instant::now();
    let storage = &*config.storage;
    let header =
        SnapshotHeader { serializer: config.serializer, schema_version: config.schema_version, seq, next_record };
    let (published, serialize_time, shards_copied, frozen) = match body {
        Body::Image { image, serialize_time } => {
            let published =
                airomem_snapshot::write(storage, &config.dir, header, &image, policy.level).map_err(snapshot_error)?;
            (published, serialize_time, 0, false)
        }
        Body::View(view) => {
            let mut copied = 0;
            let published = airomem_snapshot::write_streamed(storage, &config.dir, header, policy.level, |out| {
                copied = view(out)?;
                Ok(())
            })
            .map_err(view_error)?;
            // Serializing, compressing and writing the body are one stream here.
            (published, started.elapsed(), copied, true)
        }
    };
    let body_done = Instant::now();
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
        freeze_time,
        frozen,
        serialize_time,
        write_time: if frozen { body_done.elapsed() } else { started.elapsed() },
        shards_copied,
        snapshots_removed,
        segments_removed,
    };
    Ok((info, changed))
}

/// Writes a snapshot at open, before any commit: the one that seals a migration, or the one
/// taken after replaying past damaged history. `next_record` is where the journal writer
/// will put the next record. For a migration: the state, converted to the current schema,
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
    next_record: Option<RecordPosition>,
) -> Result<(SnapshotInfo, Vec<PathBuf>), Error> {
    let started = Instant::now();
    let mut image = Vec::new();
    serializer.encode(state, &mut image).map_err(|e| Error::encode("state", e))?;
    let serialize_time = started.elapsed();
    publish(config, policy, prune, seq, next_record, Body::Image { image, serialize_time }, serialize_time)
}

/// A failed streamed snapshot: the serializer's own error when the view did not encode, the
/// snapshot crate's (the disk's) otherwise.
fn view_error(e: airomem_snapshot::SnapshotError) -> Error {
    match e {
        airomem_snapshot::SnapshotError::Source { reason } => match reason.downcast::<CodecError>() {
            Ok(codec) => Error::encode("state", *codec),
            Err(reason) => snapshot_error(airomem_snapshot::SnapshotError::Source { reason }),
        },
        e => snapshot_error(e),
    }
}
