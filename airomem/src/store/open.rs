//! `Store::open`: the open sequence. Claim the directory (create it, sync its parent, take the
//! lock), recover the state, repair what a crash left, seal a migration, then start the
//! writer and snapshot threads.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Instant;

#[cfg(feature = "snapshot")]
use airomem_core::Seq;
use airomem_core::{Serializer, State};
use airomem_journal::{JournalConfig, JournalWriter, SyncMode};
use tokio::sync::Semaphore;
use tracing::{error, info};

use super::{Inner, Store, halt};
use crate::Error;
use crate::execute::panic_message;
use crate::meters::Meters;
use crate::options::{Durability, StoreOptions};
use crate::recover::migrate::schemas_on_disk;
use crate::recover::recover;
use crate::report::Counters;
#[cfg(feature = "snapshot")]
use crate::snapshot::worker::{Snapshotter, published, seal};
use crate::write::committer::Committer;
use crate::write::shared::Shared;
use crate::write::tenure::{Claim, Tenure, claim};
use crate::write::writer::{Stopped, Writer};

impl<S: State, Z: Serializer> Store<S, Z> {
    /// Opens (or creates) the store in `dir` with default options, recovering the state
    /// from what is on disk.
    pub async fn open(serializer: Z, dir: impl AsRef<Path>) -> Result<Self, Error> {
        Self::open_with(serializer, dir, StoreOptions::default()).await
    }

    /// Opens (or creates) the store in `dir`, recovering the state from what is on disk.
    ///
    /// Recovery runs on a blocking thread. Errors name what is wrong on disk; nothing is
    /// deleted or rewritten except a torn write at the very end of the journal, which is
    /// cut and kept in a quarantine file (see [`RecoveryReport::torn_tail`](crate::RecoveryReport::torn_tail)).
    pub async fn open_with(serializer: Z, dir: impl AsRef<Path>, options: StoreOptions) -> Result<Self, Error> {
        let dir = dir.as_ref().to_path_buf();
        let named = dir.clone();
        match tokio::task::spawn_blocking(move || Self::open_blocking(serializer, dir, options)).await {
            Ok(opened) => opened,
            // A panic in recovery is a bug; it must surface as one, not as an I/O error.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // The runtime is shutting down and cancelled the open.
            Err(e) => Err(Error::Io { op: "recover", path: named, source: Arc::new(std::io::Error::other(e)) }),
        }
    }

    pub(crate) fn open_blocking(serializer: Z, dir: PathBuf, options: StoreOptions) -> Result<Self, Error> {
        let started = Instant::now();
        let storage = Arc::clone(&options.storage);
        // The writer thread owns the lock and the registration from here on (see
        // `crate::write::tenure`); until it is running, this function does.
        let Claim { lock, tenure } = claim(&*storage, &dir)?;

        let config = JournalConfig {
            storage,
            dir: dir.clone(),
            serializer: Z::ID,
            schema_version: S::SCHEMA_VERSION,
            segment_size: options.segment_size,
            preallocate: if options.durability == Durability::Fsync { options.preallocate } else { 0 },
        };
        // Nothing in the directory changes until the state is built: a failed recovery (a
        // state that does not convert, a schema the chain does not reach) leaves it as it was.
        let mut recovered = recover::<S, Z>(&config, &serializer, None)?;
        recovered.apply_repair(&config)?;
        recovered.keep_damaged(&config);
        let mode = if options.durability == Durability::Fsync { SyncMode::EveryBatch } else { SyncMode::Deferred };
        // Opening the writer syncs what recovery read. Abort markers go next to the commands
        // they cancel, in the newest segment whatever its schema; only then does a segment of
        // the current schema start, if the newest was written under another.
        let mut journal = JournalWriter::open_with(config.clone(), &recovered.outcome, mode)?;
        for &seq in &recovered.report.aborted_now {
            journal.append_abort(seq)?;
        }
        let replaced = journal.start_current_schema()?;
        let prune = Arc::new(Mutex::new(()));
        #[cfg(feature = "snapshot")]
        let mut sealed = None;
        #[cfg(feature = "snapshot")]
        let past_damage = recovered.report.damaged_history.is_some()
            && recovered.report.snapshot.is_some_and(|base| base.next() < journal.next_seq());
        #[cfg(feature = "snapshot")]
        if !recovered.report.migrations.is_empty() || past_damage {
            // Sealed before any commit, so that the next open starts at the current schema,
            // or after the records replayed past damaged history. Only synced records may be
            // in a snapshot: the writer's open synced the journal and each abort marker was
            // synced as it was written.
            journal.sync()?;
            let seq = Seq(journal.next_seq().0 - 1);
            let (segment, offset) = journal.next_record_position();
            let next_record = Some(airomem_snapshot::RecordPosition { segment, offset });
            match seal(&config, options.snapshots, &prune, &serializer, &recovered.state, seq, next_record) {
                Ok((info, changed)) => {
                    info!(seq = info.seq.0, bytes = info.file_len, "snapshot taken at open");
                    if !recovered.report.migrations.is_empty() {
                        recovered.report.sealed = Some(info.seq);
                    }
                    if let Some(damage) = recovered.report.damaged_history.as_mut() {
                        damage.fresh_snapshot = Some(info.seq);
                    }
                    sealed = Some((info, changed));
                }
                // The journal still holds everything: the next open migrates again, or
                // passes over the damage again.
                Err(e) => tracing::warn!(error = %e, "could not write the snapshot at open"),
            }
        }

        let segments = recovered.outcome.segments.len() as u64 - u64::from(replaced);
        // Read after the seal, which may have removed or replaced files of older schemas.
        let on_disk = schemas_on_disk(&*config.storage, &config.dir)?;
        let counters = Arc::new(Counters::at_open(&recovered.report, segments, S::SCHEMA_VERSION, on_disk));
        counters.record(0, 0, journal.counters(), journal.next_seq());
        let meters = Meters::for_store(&options);
        meters.opened(recovered.report.duration, journal.counters().bytes, counters.segments());
        #[cfg(feature = "snapshot")]
        if let Some((info, changed)) = &sealed {
            counters.snapshot_published(info, changed);
            published(&meters, &counters, info);
        }
        let shared = Arc::new(Shared::new(recovered.state, counters, meters));
        let serializer = Arc::new(serializer);
        let (sender, rx) = mpsc::channel();
        #[cfg(feature = "snapshot")]
        let snapshotter = Snapshotter::start(
            options.snapshots,
            config.clone(),
            Arc::clone(&prune),
            Arc::clone(&shared.counters),
            shared.meters.clone(),
        )?;
        let committer = Arc::new(Mutex::new(Committer::new(
            journal,
            config,
            Arc::clone(&serializer),
            Arc::clone(&shared),
            &options,
            recovered.report.aborted_now.iter().copied().collect::<BTreeSet<_>>(),
            Arc::clone(&prune),
            #[cfg(feature = "snapshot")]
            snapshotter,
        )));
        let writer = Writer::new(Arc::clone(&committer), Arc::clone(&shared), rx, &options);
        let life = tenure.as_ref().map(Tenure::life);
        let watched = Arc::clone(&shared);
        let halted = Arc::clone(&committer);
        thread::Builder::new()
            .name("airomem-writer".into())
            .spawn(move || {
                let stopped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || writer.run()));
                if stopped.is_err() {
                    // The journal and the snapshot thread live in the committer, which the
                    // handles share and so outlive this thread: a snapshot in flight could
                    // still publish and run retention. Stop them before the lock goes.
                    halt(&halted);
                }
                // Nothing of this store writes any more (a closed committer refuses to, and
                // its snapshot thread has ended): only now may another store take the
                // directory.
                drop(lock);
                drop(tenure);
                match stopped {
                    Ok(Stopped { result, reply: Some(reply) }) => drop(reply.send(result)),
                    Ok(Stopped { reply: None, .. }) => {}
                    Err(panic) => {
                        let message = panic_message(panic);
                        error!(message, "the writer thread panicked; the store refuses reads and commits");
                        watched.health.writer_panicked(&message);
                    }
                }
            })
            .map_err(Error::io("spawn writer thread", &dir))?;
        info!(dir = %dir.display(), elapsed_ms = started.elapsed().as_millis() as u64, "store open");
        Ok(Store {
            inner: Arc::new(Inner {
                shared,
                serializer,
                committer,
                lone_in_caller: options.durability != Durability::Fsync && options.commit_in_caller,
                sender,
                closed: AtomicBool::new(false),
                pending: Arc::new(Semaphore::new(options.max_pending_bytes as usize)),
                max_pending: options.max_pending_bytes,
                life,
                dir,
                report: recovered.report,
                prune,
                payload_hint: AtomicUsize::new(0),
            }),
        })
    }
}
