use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use airomem_core::{CodecError, Seq};
use airomem_journal::JournalError;
use thiserror::Error;

/// Everything a [`crate::Store`] can report.
#[derive(Error, Clone)]
#[non_exhaustive]
pub enum Error {
    /// Another `Store`, in this process or another, has the directory open. Close it first;
    /// two writers on one journal would interleave records.
    #[error("the store at {dir} is already open (locked by another Store)")]
    Locked {
        /// The store directory.
        dir: PathBuf,
    },
    /// Opening or recovering the journal failed: damage, a format or schema mismatch, missing
    /// files, or I/O. The variant inside says which and what to do.
    #[error(transparent)]
    Journal(Arc<JournalError>),
    /// The disk filled up while this command's batch was being written. The store is
    /// poisoned and acknowledges nothing more. **The command's outcome is unknown**: part or
    /// all of its batch may have reached the disk, and a reopened store may replay it (see
    /// [`Error::WriteFailed`] for how to retry safely). Free space and reopen: every
    /// acknowledged command is kept.
    #[error("the disk is full; the command's outcome is unknown (it may be replayed after a reopen): {}", .0.with_sources())]
    StorageFull(Arc<JournalError>),
    /// Writing or syncing this command's batch failed. The store is poisoned and
    /// acknowledges nothing more; reopen it to recover.
    ///
    /// **The command's outcome is unknown**: a `write` may have landed before its
    /// `fdatasync` failed, and then the reopened store replays the command. A blind retry
    /// can therefore apply it twice. To make retries safe, give each command an idempotency
    /// key (a request id) and let `execute` ignore a key it has already applied; after the
    /// reopen, query whether the key is there before retrying.
    #[error("writing the journal failed; the command's outcome is unknown (it may be replayed after a reopen): {}", .0.with_sources())]
    WriteFailed(Arc<JournalError>),
    /// An earlier write or sync failed, so the store acknowledges nothing more. Reads still
    /// show every acknowledged command. Reopen the store to recover.
    #[error("the store is poisoned by an earlier failure and accepts no commits: {cause}")]
    Poisoned {
        /// The failure that poisoned the store.
        cause: String,
    },
    /// A command or the state could not be encoded by the serializer (a type it cannot
    /// represent, e.g. a map with non-string keys under JSON). Nothing was written.
    #[error("could not encode the {what}: {source}")]
    Encode {
        /// What was being encoded: "command" or "state".
        what: &'static str,
        /// The serializer's error.
        source: Arc<CodecError>,
    },
    /// Bytes that verify (their checksum is right) do not decode with the current types:
    /// the command or state types changed without a new `State::SCHEMA_VERSION` (or the
    /// serializer does not read back what it wrote). This is not damage: nothing is skipped
    /// or repaired. Restore the types the file was written with, or give the change its own
    /// schema version.
    #[error(
        "{} does not decode with the current types ({source}): the types changed without a new \
         State::SCHEMA_VERSION, or the serializer does not read back what it wrote",
        describe_decoded(file.as_deref(), *seq)
    )]
    Decode {
        /// The journal segment or snapshot holding the bytes (none for a command that does not
        /// decode from its own fresh encoding).
        file: Option<PathBuf>,
        /// The journal record (for a snapshot: the last record it includes).
        seq: Option<Seq>,
        /// The serializer's error.
        source: Arc<CodecError>,
    },
    /// A file was written under a schema version that the state's chain of predecessors
    /// ([`crate::State::previous`]) does not reach. Nothing was changed.
    #[error(
        "{file} was written with schema version {found}, but {state} ({current}) {}; add `fn previous()` to \
         {oldest} naming the frozen schema-{found} types it replaced",
        describe_known(known)
    )]
    SchemaUnknown {
        /// The file.
        file: PathBuf,
        /// The schema version recorded in it.
        found: u32,
        /// The state's schema version.
        current: u32,
        /// The state's type.
        state: &'static str,
        /// The older versions the chain reaches, newest first.
        known: Vec<u32>,
        /// The oldest type of the chain: the one whose `previous` would have to name it.
        oldest: &'static str,
    },
    /// A file was written under a newer schema version than the state's: by a newer build
    /// of the application. Opening it with older types is refused. Nothing was changed.
    #[error(
        "{file} was written with schema version {found}, newer than the state's schema version {current}: it was \
         written by a newer build of the application, and going back to older types is not supported"
    )]
    SchemaNewer {
        /// The file.
        file: PathBuf,
        /// The schema version recorded in it.
        found: u32,
        /// The state's schema version.
        current: u32,
    },
    /// A record was written under an older schema than the state replay had already
    /// reached (a snapshot, or records, of a newer schema come before it): files of
    /// different stores were mixed. Nothing was changed.
    #[error(
        "{file} holds records of schema version {found} after files of a newer schema: schema versions never \
         decrease along a store's history, so the files do not belong together"
    )]
    SchemaDecreases {
        /// The file holding the older records.
        file: PathBuf,
        /// Their schema version.
        found: u32,
    },
    /// Converting the state to a newer schema failed: its `TryFrom` returned an error, or
    /// the conversion panicked. Nothing was changed; the store opens again once the
    /// conversion accepts the state.
    #[error(
        "converting the state from schema version {from} to {to} ({conversion}) after record {after} failed: \
         {reason}; nothing on disk was changed"
    )]
    MigrationFailed {
        /// The schema converted from.
        from: u32,
        /// The schema converted to.
        to: u32,
        /// The last record the converted state includes.
        after: Seq,
        /// The two types, `Old -> New`.
        conversion: String,
        /// The conversion's error (with its sources) or the panic's message.
        reason: String,
    },
    /// The chain of predecessors named by [`crate::State::previous`] does not strictly
    /// decrease in schema version. Nothing was read or changed.
    #[error("schema versions must strictly decrease along State::previous, but the chain is {chain}")]
    InvalidMigrationChain {
        /// The chain as walked, `Type (version) -> ...`, up to the offending link.
        chain: String,
    },
    /// The command panicked in `State::execute`. It was journaled, then cancelled with an
    /// abort marker, and the state was rolled back to what it was before it: it had no effect.
    #[error("command {seq} panicked and was rolled back: {message}")]
    CommandPanicked {
        /// The command's sequence number (now marked aborted in the journal).
        seq: Seq,
        /// The panic message.
        message: String,
    },
    /// During recovery, a command that was once applied without panicking panicked. Its
    /// `execute` is not deterministic, or the code changed since. Fix the code and reopen.
    #[error("command {seq} panicked during recovery although it succeeded when committed: {message}")]
    ReplayPanicked {
        /// The command's sequence number.
        seq: Seq,
        /// The panic message.
        message: String,
    },
    /// Writing, verifying or loading a snapshot failed. A failed snapshot write leaves the
    /// store working: the journal still holds every command.
    #[cfg(feature = "snapshot")]
    #[error(transparent)]
    Snapshot(Arc<airomem_snapshot::SnapshotError>),
    /// No snapshot verified and the journal no longer reaches back to the first record, so
    /// the state cannot be rebuilt. Restore a snapshot or the removed segments from a backup.
    #[error("no usable snapshot ({}) and the journal does not reach back far enough: {source}", skipped.join("; "))]
    NoUsableSnapshot {
        /// Why each snapshot was passed over.
        skipped: Vec<String>,
        /// What the journal is missing.
        source: Arc<JournalError>,
    },
    /// A command panicked, and the state it left half changed could not be rebuilt from
    /// disk: reads and commits are refused rather than show it. The files are intact;
    /// reopen the store.
    #[error("the store's state is broken and is not served: {cause}")]
    Broken {
        /// Why the state could not be rebuilt.
        cause: String,
    },
    /// The writer thread panicked: a bug in airomem. Reads and commits are refused; every
    /// acknowledged command is on disk, so a reopened store has them all.
    #[error("the store's writer thread panicked; reopen the store: {message}")]
    WriterPanicked {
        /// The panic message.
        message: String,
    },
    /// The newest snapshot includes commands the journal does not hold: the journal was
    /// cut, replaced or lost after the snapshot was written (or restored from an older
    /// backup than the snapshot). Replaying it would silently lose those commands'
    /// successors, so the store does not open. Restore the journal segments that belong to
    /// the snapshot, or move the snapshot away to open from the journal alone.
    #[error(
        "snapshot {} includes commands up to {snapshot_seq}, but the journal ends at {journal_ends}{}: \
         the journal is behind its snapshot",
        snapshot.display(),
        newest_segment.as_ref().map(|s| format!(" (newest segment {})", s.display())).unwrap_or_else(|| " (no segment)".into())
    )]
    JournalBehindSnapshot {
        /// The snapshot file.
        snapshot: PathBuf,
        /// The last command it includes.
        snapshot_seq: Seq,
        /// The last command the journal holds (0 if none).
        journal_ends: Seq,
        /// The newest journal segment, if there is one.
        newest_segment: Option<PathBuf>,
    },
    /// [`crate::Store::commit_all`] was given no command.
    #[error("an atomic unit must hold at least one command")]
    EmptyUnit,
    /// An atomic unit is larger than the store's whole queue (`max_pending_bytes`), so it
    /// could never be admitted at once. Nothing was written. Split it, or raise the limit.
    #[error(
        "an atomic unit of {commands} commands takes {bytes} bytes, more than max_pending_bytes ({limit}); split it \
         or raise the limit"
    )]
    UnitTooLarge {
        /// Commands in the unit.
        commands: usize,
        /// Its encoded size, with the per-command overhead counted against the limit.
        bytes: u64,
        /// `max_pending_bytes`.
        limit: u64,
    },
    /// [`crate::Store::import`] stopped at a command that failed: every command before it
    /// in the input was committed, it was not, and of those after it exactly the ones
    /// `committed_after` lists were (they were already handed over when it failed). To go
    /// on, mend or drop the failed command and import it with every later one that
    /// `committed_after` does not list: the example on [`crate::Store::import`] does.
    ///
    /// When `source` stopped the store (a failed write, the disk full, the writer thread
    /// gone), the failed command and those after it in its journal batch have an unknown
    /// outcome instead, as [`Error::WriteFailed`] says: reopen, then check before retrying.
    #[error(
        "the import stopped at command {failed_at} of its input, with {committed} committed ({} of them after it): \
         {source}",
        committed.saturating_sub(*failed_at)
    )]
    ImportStopped {
        /// The failed command's index in the input (0 for the first).
        failed_at: u64,
        /// Commands committed by the import: the `failed_at` before the failed one, and
        /// those `committed_after` lists.
        committed: u64,
        /// The sequence number of the last of them.
        last: Option<Seq>,
        /// The indices after `failed_at` whose commands were committed, as sorted ranges that
        /// neither overlap nor touch; empty when none were. Every index from `failed_at` on
        /// that no range holds was not committed.
        committed_after: Vec<std::ops::Range<u64>>,
        /// Why the command failed.
        source: Box<Error>,
    },
    /// The closure given to `commit_with` panicked. The command itself was committed.
    #[error("the query passed to commit_with panicked; the command itself was committed")]
    QueryPanicked,
    /// A read-only open found no store: the directory does not exist, or holds no journal
    /// segment and no snapshot. Nothing was created.
    #[error("{dir} holds no airomem store (no journal segment and no snapshot)")]
    NotAStore {
        /// The directory.
        dir: PathBuf,
    },
    /// A point-in-time read asked for history that is no longer on disk: retention removed
    /// the snapshots and journal segments needed to rebuild the state at that point. Keep
    /// history with [`crate::StoreOptions::keep_history`] to be able to go back further.
    #[error(
        "{dir}: the state after command {wanted} can no longer be rebuilt: retention removed the files it needs (the earliest point still on disk is after command {earliest})"
    )]
    HistoryGone {
        /// The store directory.
        dir: PathBuf,
        /// The point asked for: the last command to include.
        wanted: Seq,
        /// The earliest point that can still be rebuilt.
        earliest: Seq,
    },
    /// A file that was listed was gone when it came to be read. Beside a running store that
    /// is its snapshot retention removing what a newer snapshot covers: reads without the
    /// lock (a point-in-time read, an export, an inspection) start over from the newer
    /// snapshot by themselves, and this is what is left when the store kept removing what
    /// they needed, read after read. With no store running, the file was deleted by hand.
    #[error("{path} was removed while it was being read (by the running store's snapshot retention, or by hand)")]
    RemovedWhileReading {
        /// The file.
        path: PathBuf,
    },
    /// A point-in-time read asked for a command the store has not reached.
    #[error("{dir}: command {wanted} is past the store's last command, {last}")]
    BeyondHistory {
        /// The store directory.
        dir: PathBuf,
        /// The point asked for.
        wanted: Seq,
        /// The last command on disk (`#0`: none).
        last: Seq,
    },
    /// An import (`tool::import`, features `json` and `snapshot`) was pointed at a directory
    /// that already holds a store, or given an input it cannot use; nothing was written.
    #[error("{dir}: {reason}")]
    ImportRefused {
        /// The target directory.
        dir: PathBuf,
        /// Why.
        reason: String,
    },
    /// A salvage (`inspect::salvage`) was refused: the destination already holds files, or
    /// nothing of the damaged store can be rebuilt (no snapshot verifies and the journal
    /// does not reach back to its first record). Nothing was written.
    #[error("cannot salvage into {dest}: {reason}")]
    SalvageRefused {
        /// The destination directory.
        dest: PathBuf,
        /// Why.
        reason: String,
    },
    /// The store was closed.
    #[error("the store is closed")]
    Closed,
    /// A backup could not be taken, verified or restored: [`BackupProblem`] says why. Nothing
    /// was restored; a backup that was being taken has no manifest and is refused by
    /// verification.
    #[error("backup {path}: {problem}")]
    Backup {
        /// The backup (or, when taking one, the store or destination) the problem is in.
        path: PathBuf,
        /// What is wrong.
        problem: BackupProblem,
    },
    /// A file-system operation outside the journal failed (creating the directory, the lock
    /// file). The operating system's error is the [`std::error::Error::source`].
    #[error("{op} {path} failed")]
    Io {
        /// The operation.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The operating system's error.
        source: Arc<std::io::Error>,
    },
}

impl Error {
    /// Whether the failure was the disk running out of space.
    pub fn is_storage_full(&self) -> bool {
        match self {
            Error::StorageFull(_) => true,
            Error::Journal(e) => matches!(**e, JournalError::StorageFull { .. }),
            Error::Io { source, .. } => source.kind() == std::io::ErrorKind::StorageFull,
            #[cfg(feature = "snapshot")]
            Error::Snapshot(e) => e.is_storage_full(),
            _ => false,
        }
    }

    /// Turns an operating system error from `op` on `path` into [`Error::Io`]: the one
    /// constructor of it, for `map_err(Error::io("list", dir))`.
    pub(crate) fn io(op: &'static str, path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + use<> {
        let path = path.to_path_buf();
        move |source| Error::Io { op, path, source: Arc::new(source) }
    }

    pub(crate) fn encode(what: &'static str, source: CodecError) -> Error {
        Error::Encode { what, source: Arc::new(source) }
    }

    pub(crate) fn decode(file: Option<PathBuf>, seq: Option<Seq>, source: CodecError) -> Error {
        Error::Decode { file, seq, source: Arc::new(source) }
    }

    /// The error for the callers of a batch whose write or sync failed.
    pub(crate) fn write_failed(e: JournalError) -> Error {
        match e {
            JournalError::Poisoned { cause } => Error::Poisoned { cause },
            e @ JournalError::StorageFull { .. } => Error::StorageFull(Arc::new(e)),
            e => Error::WriteFailed(Arc::new(e)),
        }
    }
}

impl From<JournalError> for Error {
    fn from(e: JournalError) -> Self {
        match e {
            // Whichever file says so, a newer schema is the same error for the user.
            JournalError::SchemaNewer { file, found, current } => Error::SchemaNewer { file, found, current },
            // Like a snapshot gone between listing and loading: one error for either file.
            JournalError::SegmentVanished { file } => Error::RemovedWhileReading { path: file },
            e => Error::Journal(Arc::new(e)),
        }
    }
}

fn describe_known(known: &[u32]) -> String {
    match known {
        [] => "migrates from no older schema".to_string(),
        [one] => format!("migrates only from {one}"),
        more => {
            let list: Vec<String> = more.iter().map(u32::to_string).collect();
            format!("migrates only from {}", list.join(", "))
        }
    }
}

/// Names what did not decode, for [`Error::Decode`].
fn describe_decoded(file: Option<&std::path::Path>, seq: Option<Seq>) -> String {
    match (file, seq) {
        (Some(file), Some(seq)) if file.extension().is_some_and(|e| e == "snapshot") => {
            format!("snapshot {} (through record {seq})", file.display())
        }
        (Some(file), Some(seq)) => format!("record {seq} of {}", file.display()),
        (Some(file), None) => file.display().to_string(),
        (None, Some(seq)) => format!("record {seq}"),
        (None, None) => "a command, re-read from its own encoding,".to_string(),
    }
}

/// What `fn main() -> Result<(), airomem::Error>`, `unwrap()` and `expect()` print, so what a
/// user sees first: the message, then each cause not already in it (the operating system's
/// error is a cause, not part of the message), as `anyhow` prints them. `{:#?}` prints the
/// variant and its fields, as a derived `Debug` would.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() {
            return self.fmt_fields(f);
        }
        let message = self.to_string();
        let mut causes: Vec<String> = Vec::new();
        for cause in std::iter::successors(std::error::Error::source(self), |e| e.source()) {
            let text = cause.to_string();
            if !message.contains(&text) && !causes.iter().any(|shown| shown.contains(&text)) {
                causes.push(text);
            }
        }
        f.write_str(&message)?;
        match causes.as_slice() {
            [] => Ok(()),
            [one] => write!(f, "\n\nCaused by:\n    {one}"),
            several => {
                f.write_str("\n\nCaused by:")?;
                several.iter().enumerate().try_for_each(|(i, cause)| write!(f, "\n    {i}: {cause}"))
            }
        }
    }
}

impl Error {
    /// The derived-`Debug` form: the variant and every field.
    fn fmt_fields(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        macro_rules! fields {
            ($variant:literal $(, $field:ident)*) => {
                f.debug_struct($variant)$(.field(stringify!($field), $field))*.finish()
            };
        }
        match self {
            Error::Locked { dir } => fields!("Locked", dir),
            Error::Journal(e) => f.debug_tuple("Journal").field(e).finish(),
            Error::StorageFull(e) => f.debug_tuple("StorageFull").field(e).finish(),
            Error::WriteFailed(e) => f.debug_tuple("WriteFailed").field(e).finish(),
            Error::Poisoned { cause } => fields!("Poisoned", cause),
            Error::Encode { what, source } => fields!("Encode", what, source),
            Error::Decode { file, seq, source } => fields!("Decode", file, seq, source),
            Error::SchemaUnknown { file, found, current, state, known, oldest } => {
                fields!("SchemaUnknown", file, found, current, state, known, oldest)
            }
            Error::SchemaNewer { file, found, current } => fields!("SchemaNewer", file, found, current),
            Error::SchemaDecreases { file, found } => fields!("SchemaDecreases", file, found),
            Error::MigrationFailed { from, to, after, conversion, reason } => {
                fields!("MigrationFailed", from, to, after, conversion, reason)
            }
            Error::InvalidMigrationChain { chain } => fields!("InvalidMigrationChain", chain),
            Error::CommandPanicked { seq, message } => fields!("CommandPanicked", seq, message),
            Error::ReplayPanicked { seq, message } => fields!("ReplayPanicked", seq, message),
            #[cfg(feature = "snapshot")]
            Error::Snapshot(e) => f.debug_tuple("Snapshot").field(e).finish(),
            Error::NoUsableSnapshot { skipped, source } => fields!("NoUsableSnapshot", skipped, source),
            Error::Broken { cause } => fields!("Broken", cause),
            Error::WriterPanicked { message } => fields!("WriterPanicked", message),
            Error::JournalBehindSnapshot { snapshot, snapshot_seq, journal_ends, newest_segment } => {
                fields!("JournalBehindSnapshot", snapshot, snapshot_seq, journal_ends, newest_segment)
            }
            Error::EmptyUnit => fields!("EmptyUnit"),
            Error::UnitTooLarge { commands, bytes, limit } => fields!("UnitTooLarge", commands, bytes, limit),
            Error::ImportStopped { failed_at, committed, last, committed_after, source } => {
                fields!("ImportStopped", failed_at, committed, last, committed_after, source)
            }
            Error::QueryPanicked => fields!("QueryPanicked"),
            Error::NotAStore { dir } => fields!("NotAStore", dir),
            Error::HistoryGone { dir, wanted, earliest } => fields!("HistoryGone", dir, wanted, earliest),
            Error::RemovedWhileReading { path } => fields!("RemovedWhileReading", path),
            Error::BeyondHistory { dir, wanted, last } => fields!("BeyondHistory", dir, wanted, last),
            Error::ImportRefused { dir, reason } => fields!("ImportRefused", dir, reason),
            Error::SalvageRefused { dest, reason } => fields!("SalvageRefused", dest, reason),
            Error::Closed => fields!("Closed"),
            Error::Io { op, path, source } => fields!("Io", op, path, source),
            Error::Backup { path, problem } => fields!("Backup", path, problem),
        }
    }
}

/// The facade's error for a failure of the snapshot crate.
#[cfg(feature = "snapshot")]
pub(crate) fn snapshot_error(e: airomem_snapshot::SnapshotError) -> Error {
    Error::Snapshot(Arc::new(e))
}

/// Why a backup was refused (see [`Error::Backup`]). Each says what to do.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum BackupProblem {
    /// The backup's destination exists and is not empty. Choose a new directory.
    #[error("the destination is not empty; a backup goes into a new or empty directory")]
    DestinationNotEmpty,
    /// The restore's target already holds something (a store, or any file). Restore into a
    /// new directory, or move the old one away first.
    #[error("the target directory exists and is not empty; restore never overwrites a store")]
    TargetNotEmpty,
    /// The backup has no manifest: it was never finished (the process taking it stopped),
    /// or this is not a backup. Take a new one.
    #[error("no manifest: the backup was never finished, or this is not a backup")]
    NoManifest,
    /// The manifest does not parse or fails its checksum. Take a new backup.
    #[error("the manifest is damaged: {reason}")]
    ManifestDamaged {
        /// What did not parse or check.
        reason: String,
    },
    /// The manifest's format is newer than this build reads. Use a newer airomem.
    #[error("backup format {found} is newer than this build reads ({supported})")]
    FormatNewer {
        /// The manifest's format version.
        found: u32,
        /// The newest this build reads.
        supported: u32,
    },
    /// The backup's state has a newer schema than the application restoring it knows:
    /// opening it would fail. Restore with the newer application.
    #[error("the backup's schema {found} is newer than {supported}, the newest the restoring side knows")]
    SchemaNewer {
        /// The backup's newest schema version.
        found: u32,
        /// The newest the restoring side accepts.
        supported: u32,
    },
    /// A file the manifest lists is missing. The backup is damaged: take a new one.
    #[error("{name} is missing")]
    FileMissing {
        /// The file's name.
        name: String,
    },
    /// A file's length or checksum differs from the manifest's. The backup is damaged.
    #[error("{name} differs from the manifest ({what})")]
    FileDamaged {
        /// The file's name.
        name: String,
        /// Length or checksum, with both values.
        what: String,
    },
    /// A file the manifest does not list sits in the backup. Something other than airomem
    /// wrote there: check before restoring.
    #[error("{name} is not listed in the manifest")]
    FileUnlisted {
        /// The file's name.
        name: String,
    },
    /// The files agree with the manifest but not with each other or with its claims (a
    /// damaged snapshot, a gap in the journal, a journal that does not end at the manifest's
    /// sequence number); when taking a backup, the store's own files are damaged (run
    /// `airomem verify` on it).
    #[error("inconsistent: {reason}")]
    Inconsistent {
        /// What does not fit.
        reason: String,
    },
    /// The store kept removing the files a backup from outside the process was copying
    /// (retention ran after every attempt). Retry when snapshots are less frequent, or use
    /// `Store::backup` inside the process.
    #[error("retention removed the files being copied in each of {attempts} attempts")]
    KeptMoving {
        /// Attempts made.
        attempts: u32,
    },
}
