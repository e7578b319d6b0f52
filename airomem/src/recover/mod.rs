//! The state from the files: at open, after a live command panicked, and for a point in time.
//! This path reads snapshots and the journal. It changes no file and never takes the lock.
//!
//! [`recover`] plans the repair of the journal after a crash, loads the newest valid snapshot
//! (feature `snapshot`), and replays the journal after it through the schema chain. It aborts
//! a command that panics if and only if a crash may have stopped it from being aborted when it
//! was committed. [`rebuild`] rebuilds the state after a live command panicked.
//!
//! The repair is returned, not done. The caller carries it out ([`Recovered::apply_repair`])
//! once the state is built, so a failed open leaves the directory as it found it.

pub(crate) mod migrate;
pub(crate) mod replay;
#[cfg(feature = "snapshot")]
pub(crate) mod snapshot;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use airomem_core::{Seq, Serializer, State};
use airomem_journal::{JournalConfig, JournalError, Repair, ReplayError, ReplayOutcome, ReplayRange, segment};
use tracing::{info, warn};

use crate::Error;
use crate::layout::{DAMAGED_DIR, snapshot_path};
use crate::recover::migrate::Chain;
#[cfg(not(feature = "snapshot"))]
use crate::recover::migrate::Held;
use crate::recover::replay::{Base, Stop, replay_into, stop_error};
use crate::report::{DamagedHistory, RecoveryReport};

pub(crate) struct Recovered<S> {
    pub state: S,
    pub outcome: ReplayOutcome,
    pub report: RecoveryReport,
    /// What replay planned to repair; not done yet.
    pub repair: Repair,
}

impl<S> Recovered<S> {
    /// Carries out the planned repair: unfinished segment and snapshot files removed, a torn
    /// tail cut into quarantine. Must run before anything is written.
    pub(crate) fn apply_repair(&mut self, config: &JournalConfig) -> Result<(), Error> {
        self.repair.apply(config)?;
        #[cfg(feature = "snapshot")]
        {
            self.report.snapshot_temp_files_removed =
                airomem_snapshot::remove_temp_files(&*config.storage, &config.dir)
                    .map_err(crate::error::snapshot_error)?;
        }
        Ok(())
    }
}

impl<S> Recovered<S> {
    /// Keeps a copy of a segment whose history the loaded snapshot covers but which is
    /// damaged, in [`DAMAGED_DIR`]: retention will remove the segment itself once snapshots
    /// cover all of it, and the evidence must outlive that. Runs after the state is built,
    /// like the repair. A copy that cannot be written is logged and the open goes on: the
    /// segment itself is still in place, and the next open tries again.
    pub(crate) fn keep_damaged(&mut self, config: &JournalConfig) {
        let Some(damage) = self.report.damaged_history.as_mut() else { return };
        match keep_copy(config, &damage.segment) {
            Ok(kept) => {
                warn!(
                    segment = %damage.segment.display(),
                    offset = damage.offset,
                    seq = damage.seq.0,
                    kept = %kept.display(),
                    "journal history the snapshot covers is damaged; a copy of the segment is kept"
                );
                damage.kept = Some(kept);
            }
            Err(e) => {
                warn!(error = %e, segment = %damage.segment.display(), "could not keep a copy of a damaged segment")
            }
        }
    }
}

/// Copies `segment` into the damaged folder durably (temporary file, sync, rename, directory
/// sync), unless a copy of it is already there (the segment still holds all of the copy's
/// bytes); returns the copy's path.
fn keep_copy(config: &JournalConfig, segment: &Path) -> Result<PathBuf, Error> {
    let storage = &*config.storage;
    let folder = config.dir.join(DAMAGED_DIR);
    let bytes = storage.read(segment).map_err(Error::io("read", segment))?;
    let name = segment.file_name().and_then(|n| n.to_str()).unwrap_or("segment");
    let mut kept = folder.join(name);
    match storage.read(&kept) {
        // The segment still holds every byte of the copy (the writer may have appended
        // since, over what were zeros): the evidence is kept already.
        Ok(existing) if bytes.starts_with(&existing[..existing.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1)]) => {
            return Ok(kept);
        }
        // Another copy of a segment with that name (damaged differently since): keep both.
        Ok(_) => {
            let stamp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
            kept = folder.join(format!("{name}.{stamp}"));
        }
        Err(_) => {}
    }
    storage.create_dir_all(&folder).map_err(Error::io("create directory", &folder))?;
    storage.sync_dir(&config.dir).map_err(Error::io("sync directory", &config.dir))?;
    let temp = folder.join(format!("{}.tmp", kept.file_name().and_then(|n| n.to_str()).unwrap_or(name)));
    // A copy a crash interrupted: started afresh.
    match storage.remove(&temp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("remove", &temp)(e)),
    }
    let mut file = storage.create(&temp).map_err(Error::io("create", &temp))?;
    file.write_all(&bytes).map_err(Error::io("write", &temp))?;
    file.sync_data().map_err(Error::io("fdatasync", &temp))?;
    drop(file);
    storage.rename(&temp, &kept).map_err(Error::io("rename", &temp))?;
    storage.sync_dir(&folder).map_err(Error::io("sync directory", &folder))?;
    Ok(kept)
}

/// The newest usable snapshot no later than `until`, or the empty state.
pub(crate) fn base<S: State, Z: Serializer>(
    config: &JournalConfig,
    serializer: &Z,
    chain: &Chain<S, Z>,
    until: Option<Seq>,
) -> Result<Base<S>, Error> {
    #[cfg(feature = "snapshot")]
    {
        snapshot::load_newest::<S, Z>(config, serializer, chain, until)
    }
    #[cfg(not(feature = "snapshot"))]
    {
        let _ = (config, serializer, chain, until);
        Ok(Base { state: Held::Empty, seq: Seq(0), skipped: Vec::new(), newest_on_disk: Seq(0), next_record: None })
    }
}

/// Builds the state from what is on disk, up to and including command `until` (all of it
/// for `None`), planning the repair a crash calls for without carrying it out.
pub(crate) fn recover<S: State, Z: Serializer>(
    config: &JournalConfig,
    serializer: &Z,
    until: Option<Seq>,
) -> Result<Recovered<S>, Error> {
    let started = Instant::now();
    let chain = Chain::<S, Z>::new()?;
    let mut repaired = Repair::default();
    let mut aborted_now = BTreeSet::new();
    loop {
        let Base { state: mut held, seq: base, skipped, newest_on_disk, next_record } =
            base::<S, Z>(config, serializer, &chain, until)?;
        let range = ReplayRange { from: base.next(), until, skip: &aborted_now, beside_writer: false, next_record };
        let mut migrations = Vec::new();
        let replayed = replay_into(config, serializer, &chain, range, Some(&mut repaired), &mut held, &mut migrations);
        let finished = replayed.and_then(|outcome| {
            let last = Seq(outcome.next_seq.0.saturating_sub(1));
            let last = until.map_or(last, |until| last.min(until));
            // A snapshot file proves its commands were committed, even one that does not
            // verify: a fallback that stops short of it would serve a state without them,
            // and journal new commands under their numbers.
            if last < newest_on_disk {
                let file = outcome.segments.last().map_or(config.dir.clone(), |&s| segment::path(&config.dir, s));
                let gap = JournalError::MissingRecords { file, expected: last.next(), found: newest_on_disk.next() };
                return Err(ReplayError::Journal(gap));
            }
            let newest = outcome.segments.last().map_or(config.dir.clone(), |&s| segment::path(&config.dir, s));
            chain
                .finish(held, last, &newest, &mut migrations)
                .map(|state| (outcome, state))
                .map_err(|e| ReplayError::Visit(Stop::Failed(e)))
        });
        match finished {
            Ok((outcome, state)) => {
                let report = RecoveryReport {
                    segments_read: outcome.segments_read,
                    bytes_read: outcome.bytes_read,
                    records_replayed: outcome.records_replayed,
                    records_skipped: outcome.records_skipped,
                    aborted_now: aborted_now.into_iter().collect(),
                    temp_files_removed: repaired.temp_files_removed,
                    snapshot: (base.0 > 0).then_some(base),
                    snapshots_skipped: skipped,
                    snapshot_temp_files_removed: 0,
                    torn_tail: repaired.torn_tail.clone(),
                    damaged_history: outcome.covered_damage.as_ref().map(DamagedHistory::found),
                    next_seq: outcome.next_seq,
                    duration: started.elapsed(),
                    migrations,
                    sealed: None,
                };
                info!(
                    dir = %config.dir.display(),
                    snapshot = base.0,
                    segments = report.segments_read,
                    bytes = report.bytes_read,
                    records = report.records_replayed,
                    next_seq = report.next_seq.0,
                    elapsed_ms = report.duration.as_millis() as u64,
                    torn_tail = report.torn_tail.is_some(),
                    migrations = report.migrations.len(),
                    "store recovered"
                );
                return Ok(Recovered { state, outcome, report, repair: repaired });
            }
            // A crash can come after a batch is durable but before the abort marker of a
            // command in it that panicked: no caller heard of that command, so aborting it
            // now is what would have happened. Start over without it, since the state is
            // half changed. Anywhere else a panic means `execute` is not deterministic.
            Err(ReplayError::Visit(Stop::Panicked { seq, message, in_final_batch: true })) => {
                warn!(seq = seq.0, message, "a command of the last batch panicked during recovery; aborting it");
                aborted_now.insert(seq);
            }
            // The journal ends before the snapshot does: it was cut or replaced after the
            // snapshot was written. Saying that records are "missing before" the first
            // segment would send the user looking for the wrong files.
            Err(ReplayError::Journal(JournalError::MissingRecords { file, expected, found }))
                if base.0 > 0 && found == base.next() && expected < found =>
            {
                return Err(Error::JournalBehindSnapshot {
                    snapshot: snapshot_path(&config.dir, base),
                    snapshot_seq: base,
                    journal_ends: Seq(expected.0 - 1),
                    newest_segment: Some(file),
                });
            }
            // The same, caught by the journal head: the segment's records end before what the
            // head records as synced, and the snapshot is past that end too.
            Err(ReplayError::Journal(JournalError::Corrupt {
                file,
                seq,
                kind: airomem_journal::Corruption::SyncedRecordsMissing { .. },
                ..
            })) if base.0 > 0 && seq <= base => {
                return Err(Error::JournalBehindSnapshot {
                    snapshot: snapshot_path(&config.dir, base),
                    snapshot_seq: base,
                    journal_ends: Seq(seq.0 - 1),
                    newest_segment: Some(file),
                });
            }
            Err(ReplayError::Journal(e @ JournalError::MissingRecords { .. })) if !skipped.is_empty() => {
                return Err(Error::NoUsableSnapshot { skipped, source: Arc::new(e) });
            }
            Err(e) => return Err(stop_error(e)),
        }
    }
}

/// Builds the state as it was after `until` (and says how many commands it replayed), skipping `skip`, from the newest snapshot at or
/// before `until` and the journal. Used after a live command panicked, while the writer
/// still holds the journal; the caller keeps snapshot retention from removing files meanwhile.
pub(crate) fn rebuild<S: State, Z: Serializer>(
    config: &JournalConfig,
    serializer: &Z,
    until: Seq,
    skip: &BTreeSet<Seq>,
) -> Result<(S, u64), Error> {
    let chain = Chain::<S, Z>::new()?;
    let Base { state: mut held, seq, next_record, .. } = base::<S, Z>(config, serializer, &chain, Some(until))?;
    let range = ReplayRange { from: seq.next(), until: Some(until), skip, beside_writer: false, next_record };
    let mut migrations = Vec::new();
    let outcome =
        replay_into(config, serializer, &chain, range, None, &mut held, &mut migrations).map_err(stop_error)?;
    let state = chain.finish(held, until, &config.dir, &mut migrations)?;
    Ok((state, outcome.records_replayed))
}
