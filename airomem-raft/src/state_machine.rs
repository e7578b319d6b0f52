//! The replicated state machine: the user's [`airomem::State`], fed by committed entries.
//!
//! * **Execution.** A normal entry's command is decoded from the entry's bytes with the
//!   store's serializer and executed inside a [`CommitContext`] whose sequence number is a
//!   dense counter of applied commands (Raft indexes have gaps: blank and membership entries)
//!   and whose time is the leader's stamp made monotonic (`max` with the previous one), so
//!   every replica, and every replay, executes with the same context.
//! * **Snapshots** are airomem snapshot files (`airomem-snapshot`: zstd, checksummed,
//!   published atomically) through the storage seam, named by the number of log entries they
//!   cover (last applied index + 1; 0 for none). The image is a postcard prefix (last applied
//!   log id, membership, counter, time) followed by the state in the store's serializer. The
//!   file is what openraft ships to followers, in chunks read from it ([`SnapshotFile`]); a
//!   follower writes the chunks into a file of its own, verifies it before it replaces
//!   anything and renames it into place (see `snapshot_file` for which code owns which file).
//! * **Panics.** A command that panics may leave the state half changed, and `State` is not
//!   `Clone`: the state is rebuilt from the newest snapshot and the log up to the entry before
//!   it (skipping commands known to panic), and the entry counts as applied with an
//!   `Applied::Panicked` reply, the same on every replica since `execute` is deterministic.
//!   If the rebuild fails, the state machine stops ([`Error::StateMachineStopped`]).
//! * **Retries.** Before a command executes, the deduplication table ([`Sessions`], part of
//!   the replicated progress and of every snapshot) is asked whether its (client, serial) was
//!   applied already; a copy gets the recorded outcome and executes nothing.

use std::collections::BTreeMap;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard};

use airomem::storage::Storage;
use airomem::{CommitContext, Seq, Serializer, SnapshotView, State};
use airomem_snapshot::SnapshotHeader;
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, RaftSnapshotBuilder, SnapshotMeta, StorageIOError};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::Error;
use crate::log::LogReader;
use crate::sessions::{Check, Sessions};
use crate::snapshot_file::{SnapshotDir, SnapshotFile};
use crate::types::{Applied, Entry, LogId, Request, StorageError, StoredMembership, TypeConfig};

/// zstd level of snapshots: fast, and still several times smaller than the image.
const ZSTD_LEVEL: i32 = 3;

/// What the state machine records besides the state; the prefix of every snapshot image.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Progress {
    applied: Option<LogId>,
    membership: StoredMembership,
    /// Normal entries applied so far: the `CommitContext` sequence number of the last one.
    seq: u64,
    /// The monotonic commit time of the last applied command.
    unix_nanos: u64,
    /// Recent outcomes per client, for retries.
    sessions: Sessions,
}

/// Commands known to panic, by entry index and position in the entry, with the message.
type Panicked = BTreeMap<(u64, usize), String>;

/// The state with its progress, behind the state machine's lock.
pub(crate) struct Replica<S> {
    pub(crate) state: S,
    progress: Progress,
    /// Set once a command panicked (its index and message): the state may be half changed.
    broken: Option<(u64, String)>,
}

struct Inner<S: State, Z: Serializer> {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    serializer: Z,
    replica: RwLock<Replica<S>>,
    /// The newest durable snapshot: its meta and file sequence number. Held while a snapshot
    /// is published (written or renamed into place, made current, older ones removed) and
    /// while the current one is opened for reading, so that a reader never looks for a file a
    /// concurrent publish just removed (a leader sending its snapshot while building the next
    /// one). Once open, a reader reads through its handle, whatever is removed meanwhile.
    current: Mutex<Option<(SnapshotMeta<u64, openraft::BasicNode>, u64)>>,
    /// The last log id the newest durable snapshot covers, announced to the log, which purges
    /// nothing past it (see `LogStore::gate_purges`). Raised with `current`, never lowered.
    durable: watch::Sender<Option<LogId>>,
    /// The node's log, replayed when a panicking command forces a rebuild.
    log: LogReader,
    /// Commands that panicked (this process has seen), by entry index and position in the
    /// entry, with the panic's message: a rebuild skips them and records the same outcome.
    panicked: Mutex<Panicked>,
    /// The snapshot directory as snapshot transfers see it, with the flag set when the node is
    /// halted (a simulated kill): no snapshot file is written after it.
    files: Arc<SnapshotDir>,
}

/// The state machine of one node.
pub(crate) struct StateMachine<S: State, Z: Serializer> {
    inner: Arc<Inner<S, Z>>,
}

impl<S: State, Z: Serializer> Clone for StateMachine<S, Z> {
    /// Another handle on the same state machine (openraft owns one, the store reads another).
    fn clone(&self) -> Self {
        StateMachine { inner: Arc::clone(&self.inner) }
    }
}

/// Builds snapshots for openraft, in a task of its own.
pub(crate) struct SnapshotBuilder<S: State, Z: Serializer> {
    inner: Arc<Inner<S, Z>>,
}

fn snapshot_seq(applied: Option<LogId>) -> u64 {
    applied.map_or(0, |id| id.index + 1)
}

fn snapshot_id(progress: &Progress) -> String {
    match progress.applied {
        Some(id) => format!("{}-{}-{}", id.leader_id.term, id.leader_id.node_id, id.index),
        None => "none".into(),
    }
}

fn sm_error(e: &Error) -> StorageError {
    StorageIOError::write_state_machine(e).into()
}

/// A snapshot's content as the replica's lock released it.
enum Captured<Z> {
    /// The whole image, serialized under the lock: the state offers no frozen view.
    Image(Vec<u8>),
    /// The image's prefix and the state's frozen view, serialized into the file afterwards.
    View { prefix: Vec<u8>, view: SnapshotView<Z> },
}

fn snapshot_error(e: &Error) -> StorageError {
    StorageIOError::write_snapshot(None, e).into()
}

impl<S: State, Z: Serializer> Inner<S, Z> {
    /// The image's prefix: the length of the encoded progress, then the progress.
    fn image_prefix(progress: &Progress) -> Result<Vec<u8>, Error> {
        let encoded = postcard::to_allocvec(progress).map_err(|e| {
            Error::Codec(airomem::CodecError::Encode { serializer: "postcard", message: e.to_string() })
        })?;
        let mut prefix = Vec::with_capacity(encoded.len() + 4);
        prefix.extend_from_slice(&u32::try_from(encoded.len()).expect("a small prefix").to_le_bytes());
        prefix.extend_from_slice(&encoded);
        Ok(prefix)
    }

    /// What a built snapshot's file is made from, taken under the replica's read lock: the
    /// state's frozen view when it offers one (see `airomem::State::snapshot_view`), so the
    /// lock is held only while the view is taken; otherwise the state, serialized there.
    fn capture(&self, replica: &Replica<S>) -> Result<Captured<Z>, Error> {
        let prefix = Self::image_prefix(&replica.progress)?;
        Ok(match replica.state.snapshot_view::<Z>() {
            Some(view) => Captured::View { prefix, view },
            None => {
                let mut image = prefix;
                self.serializer.encode(&replica.state, &mut image)?;
                Captured::Image(image)
            }
        })
    }

    fn decode_image(&self, image: &[u8]) -> Result<(Progress, S), Error> {
        let bad = |message: String| Error::Codec(airomem::CodecError::Decode { serializer: "snapshot image", message });
        let len = image.get(0..4).ok_or_else(|| bad("image shorter than its prefix length".into()))?;
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        let prefix = image.get(4..4 + len).ok_or_else(|| bad("image shorter than its prefix".into()))?;
        let progress: Progress = postcard::from_bytes(prefix).map_err(|e| bad(e.to_string()))?;
        let state = self.serializer.decode(&image[4 + len..])?;
        Ok((progress, state))
    }

    /// Records that a snapshot covering `last` is durable.
    fn announce_durable(&self, last: Option<LogId>) {
        self.durable.send_if_modified(|durable| {
            let raised = last > *durable;
            if raised {
                *durable = last;
            }
            raised
        });
    }

    /// Publishes `image` as the built snapshot `seq` described by `meta`, makes it current
    /// unless a newer one is, removes the others, and returns it opened for reading: opened
    /// before the removal, under the same lock, so that it is readable even when a newer
    /// snapshot displaced it at once.
    fn publish_built(
        &self,
        seq: u64,
        captured: Captured<Z>,
        meta: &SnapshotMeta<u64, openraft::BasicNode>,
    ) -> Result<(SnapshotFile, u64, u64), Error> {
        if self.files.is_halted() {
            return Err(Error::Closed);
        }
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let header =
            SnapshotHeader { serializer: Z::ID, schema_version: S::SCHEMA_VERSION, seq: Seq(seq), next_record: None };
        let storage = self.storage.as_ref();
        let published = match captured {
            Captured::Image(image) => airomem_snapshot::write(storage, &self.dir, header, &image, ZSTD_LEVEL),
            Captured::View { prefix, view } => {
                airomem_snapshot::write_streamed(storage, &self.dir, header, ZSTD_LEVEL, |out| {
                    out.write_all(&prefix)?;
                    view.write_to(&self.serializer, out)?;
                    Ok(())
                })
            }
        }
        .map_err(Error::snapshot)?;
        let file = self.files.open_published(&published.path).map_err(|e| Error::io("open", &published.path, e))?;
        if current.as_ref().is_none_or(|(_, newest)| *newest <= seq) {
            *current = Some((meta.clone(), seq));
            self.announce_durable(meta.last_log_id);
        }
        self.remove_others(&current, seq)?;
        Ok((file, published.raw_len, published.file_len))
    }

    /// Removes every snapshot but the current one (`fallback` if there is none), under the
    /// `current` lock its caller holds.
    fn remove_others(
        &self,
        current: &Option<(SnapshotMeta<u64, openraft::BasicNode>, u64)>,
        fallback: u64,
    ) -> Result<(), Error> {
        let keep = current.as_ref().map_or(fallback, |(_, newest)| *newest);
        let mut removed = false;
        for old in airomem_snapshot::list(self.storage.as_ref(), &self.dir).map_err(Error::snapshot)? {
            if old.0 != keep {
                airomem_snapshot::remove(self.storage.as_ref(), &self.dir, old).map_err(Error::snapshot)?;
                removed = true;
            }
        }
        if removed {
            self.storage.sync_dir(&self.dir).map_err(|e| Error::io("sync directory", &self.dir, e))?;
        }
        Ok(())
    }

    fn build(&self) -> Result<Snapshot<TypeConfig>, Error> {
        let (captured, progress) = {
            let replica = self.replica.read().unwrap_or_else(PoisonError::into_inner);
            if let Some((index, message)) = &replica.broken {
                return Err(Error::StateMachineStopped { index: *index, message: message.clone() });
            }
            (self.capture(&replica)?, replica.progress.clone())
        };
        let seq = snapshot_seq(progress.applied);
        let meta = SnapshotMeta {
            last_log_id: progress.applied,
            last_membership: progress.membership.clone(),
            snapshot_id: snapshot_id(&progress),
        };
        let (file, raw, len) = self.publish_built(seq, captured, &meta)?;
        info!(seq, raw, file = len, "Raft snapshot built");
        Ok(Snapshot { meta, snapshot: Box::new(file) })
    }

    /// Installs the received snapshot `data` described by `meta`: the file is synced and
    /// verified (checksums, serializer, schema, last log id) and the state decoded from it
    /// before anything changes; then it is renamed into place as the current snapshot, the
    /// others are removed, and the state replaced. A refused file is removed (by its
    /// receiver, dropped on the way out) and leaves the state and the snapshots as they were.
    ///
    /// Decoding needs the image in memory, as opening a store does: the file is read whole
    /// here, once the transfer is over.
    fn install(&self, meta: &SnapshotMeta<u64, openraft::BasicNode>, data: SnapshotFile) -> Result<(), Error> {
        let seq = snapshot_seq(meta.last_log_id);
        let mut incoming =
            data.into_finished(&self.files).map_err(|e| Error::io("receive a snapshot in", &self.dir, e))?;
        let path = incoming.path().to_path_buf();
        let (header, image) = {
            let bytes = self.storage.read(&path).map_err(|e| Error::io("read", &path, e))?;
            airomem_snapshot::verify(&path, &bytes, Seq(seq), Z::ID).map_err(Error::snapshot)?
        };
        if header.schema_version != S::SCHEMA_VERSION {
            return Err(Error::Codec(airomem::CodecError::Decode {
                serializer: "snapshot image",
                message: format!("schema version {}, this build runs {}", header.schema_version, S::SCHEMA_VERSION),
            }));
        }
        let (progress, state) = self.decode_image(&image)?;
        drop(image);
        if progress.applied != meta.last_log_id {
            return Err(Error::Codec(airomem::CodecError::Decode {
                serializer: "snapshot image",
                message: format!("image covers {:?}, its meta says {:?}", progress.applied, meta.last_log_id),
            }));
        }
        {
            // Durable first: a crash after this reopens into the installed snapshot.
            let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
            let target = airomem_snapshot::path(&self.dir, Seq(seq));
            incoming.publish_as(&target).map_err(|e| Error::io("rename", &path, e))?;
            self.storage.sync_dir(&self.dir).map_err(|e| Error::io("sync directory", &self.dir, e))?;
            *current = Some((meta.clone(), seq));
            self.announce_durable(meta.last_log_id);
            self.remove_others(&current, seq)?;
        }
        *self.replica.write().unwrap_or_else(PoisonError::into_inner) = Replica { state, progress, broken: None };
        Ok(())
    }

    /// Applies the commands `from..until` of `entry` (all of a blank or membership entry) to
    /// `replica`, appending their outcomes; the entry counts as applied once its last command
    /// is. Commands in `skip` (by entry index and position) are known to panic: they get
    /// their recorded outcome without executing. A command that panics stops the walk with its
    /// position and message, and may leave `replica` half changed: the caller must not keep it.
    fn apply_entry(
        &self,
        replica: &mut Replica<S>,
        entry: &Entry,
        (from, until): (usize, usize),
        skip: &Panicked,
        outcomes: &mut Vec<Applied>,
    ) -> Result<Option<(usize, String)>, Error> {
        let index = entry.log_id.index;
        match &entry.payload {
            EntryPayload::Blank => {}
            EntryPayload::Membership(membership) => {
                replica.progress.membership = StoredMembership::new(Some(entry.log_id), membership.clone());
            }
            EntryPayload::Normal(command) => {
                let unix_nanos = replica.progress.unix_nanos.max(command.unix_nanos);
                let until = until.min(command.requests.len());
                for (at, request) in command.requests.iter().enumerate().take(until).skip(from) {
                    if let Some(message) = skip.get(&(index, at)) {
                        outcomes.push(Self::apply_panicked(replica, index, request, unix_nanos, message));
                        continue;
                    }
                    match replica.progress.sessions.check(request.client, request.serial, request.low_water, unix_nanos)
                    {
                        Check::Duplicate(recorded) => outcomes.push(recorded),
                        Check::Expired => outcomes.push(Applied::Expired),
                        Check::New => match self.execute(replica, index, request, unix_nanos)? {
                            Ok(applied) => outcomes.push(applied),
                            Err(message) => return Ok(Some((at, message))),
                        },
                    }
                }
                if until < command.requests.len() {
                    return Ok(None);
                }
            }
        }
        replica.progress.applied = Some(entry.log_id);
        Ok(None)
    }

    /// Executes one command: its outcome, or the panic's message.
    fn execute(
        &self,
        replica: &mut Replica<S>,
        index: u64,
        request: &Request,
        unix_nanos: u64,
    ) -> Result<Result<Applied, String>, Error> {
        let decoded: S::Command = self.serializer.decode(&request.bytes)?;
        let seq = replica.progress.seq + 1;
        let state = &mut replica.state;
        let executed = CommitContext::new(Seq(seq), unix_nanos)
            .enter(|| panic::catch_unwind(AssertUnwindSafe(|| state.execute(decoded))));
        Ok(match executed {
            Ok(()) => {
                replica.progress.seq = seq;
                replica.progress.unix_nanos = unix_nanos;
                let applied = Applied::Executed { seq, index, unix_nanos };
                replica.progress.sessions.record(request.client, request.serial, applied.clone());
                Ok(applied)
            }
            Err(payload) => Err(payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into())),
        })
    }

    /// Counts `request` (of entry `index`), whose command panicked with `message`, as
    /// applied to a `replica` that holds the state just before it: no sequence number, no
    /// clock, but its client's session records the outcome, exactly as on every other
    /// replica.
    fn apply_panicked(
        replica: &mut Replica<S>,
        index: u64,
        request: &Request,
        unix_nanos: u64,
        message: &str,
    ) -> Applied {
        let outcome = Applied::Panicked { index, message: message.to_string() };
        let sessions = &mut replica.progress.sessions;
        if sessions.check(request.client, request.serial, request.low_water, unix_nanos) == Check::New {
            sessions.record(request.client, request.serial, outcome.clone());
        }
        outcome
    }

    /// The newest snapshot that loads, with its file sequence number; `None` without
    /// snapshots. Snapshots present but none loading is an error: an empty state would
    /// silently stand in for everything the purged log held.
    fn load_newest(&self) -> Result<Option<(Progress, S, u64)>, Error> {
        let mut first_failure = None;
        for seq in airomem_snapshot::list(self.storage.as_ref(), &self.dir).map_err(Error::snapshot)?.into_iter().rev()
        {
            let loaded = airomem_snapshot::load(self.storage.as_ref(), &self.dir, seq, Z::ID)
                .map_err(Error::snapshot)
                .and_then(|(_, image)| self.decode_image(&image));
            match loaded {
                Ok((progress, state)) => return Ok(Some((progress, state, seq.0))),
                Err(e) => {
                    warn!(seq = seq.0, error = %e, "skipping a snapshot that does not load");
                    first_failure.get_or_insert(e);
                }
            }
        }
        first_failure.map_or(Ok(None), Err)
    }

    /// The state just before command `at` of entry `index`: the newest snapshot, then the log
    /// after it, with the commands known to panic skipped. A command found panicking on the
    /// way is added to them and the replay starts again, so the result never holds part of a
    /// panicked command.
    fn rebuild(&self, index: u64, at: usize) -> Result<Replica<S>, Error> {
        let failed = |reason: String| Error::RebuildFailed { index, reason };
        loop {
            // Under the snapshot lock, so that a publish does not remove the file being read
            // (lock order: the replica, then the snapshot lock; nothing takes them the other
            // way round).
            let newest = {
                let _publishing = self.current.lock().unwrap_or_else(PoisonError::into_inner);
                self.load_newest()?
            };
            let (progress, state) = match newest {
                Some((progress, state, _)) => (progress, state),
                None => (Progress::default(), S::default()),
            };
            let mut replica = Replica { state, progress, broken: None };
            let start = replica.progress.applied.map_or(0, |id| id.index + 1);
            if start > index {
                return Err(failed(format!("the newest snapshot already covers entry {}", start - 1)));
            }
            let entries = self.log.entries(start..index + 1);
            let first = entries.first().map_or(index + 1, |e| e.log_id.index);
            // Index 0 may be unused: openraft's first entry can be 1.
            if !(first == start || (start == 0 && first == 1)) || first + entries.len() as u64 != index + 1 {
                return Err(failed(format!("the log does not hold entries {start}..={index}")));
            }
            let skip = self.panicked.lock().unwrap_or_else(PoisonError::into_inner).clone();
            let mut restart = false;
            let mut outcomes = Vec::new();
            for entry in &entries {
                let range = if entry.log_id.index == index { (0, at) } else { (0, usize::MAX) };
                if let Some((position, message)) = self.apply_entry(&mut replica, entry, range, &skip, &mut outcomes)? {
                    self.panicked
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert((entry.log_id.index, position), message);
                    restart = true;
                    break;
                }
            }
            if !restart {
                return Ok(replica);
            }
        }
    }

    fn apply(&self, entries: Vec<Entry>) -> Result<Vec<Vec<Applied>>, Error> {
        let mut replica = self.replica.write().unwrap_or_else(PoisonError::into_inner);
        if let Some((index, message)) = &replica.broken {
            return Err(Error::StateMachineStopped { index: *index, message: message.clone() });
        }
        let mut replies = Vec::with_capacity(entries.len());
        for entry in entries {
            let index = entry.log_id.index;
            let mut outcomes = Vec::new();
            let mut from = 0;
            // Nothing to skip: an entry reaches `apply` once, and the commands of it that
            // panicked so far are behind `from`. (The set is for rebuilds, which replay.)
            let nothing = Panicked::new();
            while let Some((at, message)) =
                self.apply_entry(&mut replica, &entry, (from, usize::MAX), &nothing, &mut outcomes)?
            {
                // Every replica panics on the same command (execute is deterministic), so
                // each one rolls back the same way and answers the same.
                warn!(index, at, %message, "a command panicked; rebuilding the state without it");
                self.panicked.lock().unwrap_or_else(PoisonError::into_inner).insert((index, at), message.clone());
                match self.rebuild(index, at) {
                    Ok(mut rebuilt) => {
                        let EntryPayload::Normal(command) = &entry.payload else {
                            unreachable!("only a command can panic")
                        };
                        let unix_nanos = rebuilt.progress.unix_nanos.max(command.unix_nanos);
                        let request = &command.requests[at];
                        outcomes.push(Self::apply_panicked(&mut rebuilt, index, request, unix_nanos, &message));
                        *replica = rebuilt;
                        from = at + 1;
                    }
                    Err(e) => {
                        let message = format!("{message} (and the state could not be rebuilt: {e})");
                        replica.broken = Some((index, message.clone()));
                        return Err(Error::StateMachineStopped { index, message });
                    }
                }
            }
            replies.push(outcomes);
        }
        Ok(replies)
    }
}

impl<S: State, Z: Serializer> StateMachine<S, Z> {
    /// The last log id covered by the newest durable snapshot, as it changes.
    pub(crate) fn durable_snapshots(&self) -> watch::Receiver<Option<LogId>> {
        self.inner.durable.subscribe()
    }

    /// Opens the state machine whose snapshots live in `dir`: loads the newest snapshot that
    /// verifies (older ones are the fallback), or starts from `S::default()`. `log` is the
    /// node's Raft log, which the state is rebuilt from after a panicking command.
    pub(crate) fn open(storage: Arc<dyn Storage>, dir: &Path, serializer: Z, log: LogReader) -> Result<Self, Error> {
        storage.create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
        airomem_snapshot::remove_temp_files(storage.as_ref(), dir).map_err(Error::snapshot)?;
        let files = Arc::new(SnapshotDir::new(Arc::clone(&storage), dir));
        files.remove_leftovers().map_err(|e| Error::io("remove unfinished snapshot transfers in", dir, e))?;
        let inner = Inner {
            storage,
            dir: dir.to_path_buf(),
            serializer,
            replica: RwLock::new(Replica { state: S::default(), progress: Progress::default(), broken: None }),
            current: Mutex::new(None),
            durable: watch::Sender::new(None),
            log,
            panicked: Mutex::new(BTreeMap::new()),
            files,
        };
        if let Some((progress, state, seq)) = inner.load_newest()? {
            let meta = SnapshotMeta {
                last_log_id: progress.applied,
                last_membership: progress.membership.clone(),
                snapshot_id: snapshot_id(&progress),
            };
            inner.announce_durable(meta.last_log_id);
            *inner.current.lock().unwrap_or_else(PoisonError::into_inner) = Some((meta, seq));
            *inner.replica.write().unwrap_or_else(PoisonError::into_inner) = Replica { state, progress, broken: None };
        }
        Ok(StateMachine { inner: Arc::new(inner) })
    }

    /// Runs `f` on the state as of the last applied entry.
    #[cfg(test)]
    pub(crate) fn query<R>(&self, f: impl FnOnce(&S) -> R) -> R {
        f(&self.inner.replica.read().unwrap_or_else(PoisonError::into_inner).state)
    }

    /// A read lock on the replica; an error once a command broke the state machine.
    pub(crate) fn read(&self) -> Result<RwLockReadGuard<'_, Replica<S>>, Error> {
        let replica = self.inner.replica.read().unwrap_or_else(PoisonError::into_inner);
        match &replica.broken {
            Some((index, message)) => Err(Error::StateMachineStopped { index: *index, message: message.clone() }),
            None => Ok(replica),
        }
    }

    /// The last applied log index and the number of commands executed so far.
    pub(crate) fn progress(&self) -> (Option<u64>, u64) {
        let replica = self.inner.replica.read().unwrap_or_else(PoisonError::into_inner);
        (replica.progress.applied.map(|id| id.index), replica.progress.seq)
    }

    /// The store's serializer.
    pub(crate) fn serializer(&self) -> &Z {
        &self.inner.serializer
    }

    /// From now on, write no snapshot file (the node is being halted as if killed).
    pub(crate) fn halt(&self) {
        self.inner.files.halt();
    }
}

impl<S: State, Z: Serializer> RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder<S, Z> {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let inner = Arc::clone(&self.inner);
        // Serializing, compressing and syncing are blocking work: off the async workers.
        tokio::task::spawn_blocking(move || inner.build())
            .await
            .map_err(|e| snapshot_error(&Error::io("build a snapshot in", PathBuf::new(), std::io::Error::other(e))))?
            .map_err(|e| snapshot_error(&e))
    }
}

impl<S: State, Z: Serializer> RaftStateMachine<TypeConfig> for StateMachine<S, Z> {
    type SnapshotBuilder = SnapshotBuilder<S, Z>;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let replica = self.inner.replica.read().unwrap_or_else(PoisonError::into_inner);
        Ok((replica.progress.applied, replica.progress.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<Applied>>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        self.inner.apply(entries.into_iter().collect()).map_err(|e| sm_error(&e))
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder<S, Z> {
        SnapshotBuilder { inner: Arc::clone(&self.inner) }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotFile>, StorageError> {
        // Only leftovers are listed and removed here; the file comes with the first chunk.
        Ok(Box::new(self.inner.files.receive()))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, openraft::BasicNode>,
        snapshot: Box<SnapshotFile>,
    ) -> Result<(), StorageError> {
        let inner = Arc::clone(&self.inner);
        let meta = meta.clone();
        tokio::task::spawn_blocking(move || inner.install(&meta, *snapshot))
            .await
            .map_err(|e| snapshot_error(&Error::io("install a snapshot in", PathBuf::new(), std::io::Error::other(e))))?
            .map_err(|e| snapshot_error(&e))
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        // Opened under the lock: a concurrent publish must not remove the file before it is
        // open; once open, the handle reads it whatever a publish removes.
        let current = self.inner.current.lock().unwrap_or_else(PoisonError::into_inner);
        let Some((meta, seq)) = current.clone() else { return Ok(None) };
        let path = airomem_snapshot::path(&self.inner.dir, Seq(seq));
        let file = self.inner.files.open_published(&path).map_err(|e| snapshot_error(&Error::io("open", &path, e)))?;
        drop(current);
        Ok(Some(Snapshot { meta, snapshot: Box::new(file) }))
    }
}
