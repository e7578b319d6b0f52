use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use airomem_core::storage::{StdStorage, Storage};

/// When a commit is acknowledged, and so what a crash can lose.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// The default. `commit` returns only after the command's bytes are `fdatasync`ed:
    /// neither a process crash nor a power loss loses an acknowledged command. Concurrent
    /// commits share one `fdatasync` (group commit).
    #[default]
    Fsync,
    /// `commit` returns once the bytes are written to the operating system; a background
    /// `fdatasync` runs at most this long after the first unsynced write. A process crash
    /// loses nothing; a power loss or kernel crash loses up to this much time of
    /// acknowledged commands.
    ///
    /// Any interval is accepted. An idle writer sleeps until the next commit (it wakes up
    /// only while something is unsynced), so a zero or tiny interval costs no CPU: it syncs
    /// after every batch, like `Fsync` but without prepared space.
    Periodic(Duration),
    /// `commit` returns once the bytes are written to the operating system, which writes
    /// them back when it likes (segments are synced on rollover and on close). A process
    /// crash loses nothing; a power loss or kernel crash can lose any acknowledged command
    /// not yet written back, typically up to half a minute on Linux.
    OsBuffered,
}

/// How a [`crate::Store`] is opened. Start from `StoreOptions::default()` and change what
/// you need.
#[derive(Clone)]
pub struct StoreOptions {
    pub(crate) segment_size: u64,
    pub(crate) durability: Durability,
    pub(crate) max_batch_bytes: usize,
    pub(crate) max_batch_commands: usize,
    pub(crate) max_pending_bytes: u32,
    pub(crate) spin_limit: Duration,
    pub(crate) preallocate: u64,
    pub(crate) commit_in_caller: bool,
    pub(crate) storage: Arc<dyn Storage>,
    #[cfg(feature = "snapshot")]
    pub(crate) snapshots: SnapshotPolicy,
    /// Whether the store registers its series with the `metrics` recorder.
    #[cfg(feature = "metrics")]
    pub(crate) metrics: bool,
    /// The `store` label of its series.
    #[cfg(feature = "metrics")]
    pub(crate) metrics_label: Option<Arc<str>>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            segment_size: 64 * 1024 * 1024,
            durability: Durability::Fsync,
            max_batch_bytes: 4 * 1024 * 1024,
            max_batch_commands: 8192,
            max_pending_bytes: 64 * 1024 * 1024,
            spin_limit: Duration::from_micros(500),
            preallocate: 1024 * 1024,
            commit_in_caller: true,
            storage: Arc::new(StdStorage::default()),
            #[cfg(feature = "snapshot")]
            snapshots: SnapshotPolicy::default(),
            #[cfg(feature = "metrics")]
            metrics: true,
            #[cfg(feature = "metrics")]
            metrics_label: None,
        }
    }
}

impl StoreOptions {
    /// A journal segment is closed and a new one started when the next batch would take it
    /// past this many bytes (default 64 MiB). Recovery holds one segment in memory at a time.
    ///
    /// Like every size and count setter here, a value below the least that works is raised
    /// to it rather than refused: 0 becomes 1 (each batch then gets a segment of its own).
    #[must_use]
    pub fn segment_size(mut self, bytes: u64) -> Self {
        self.segment_size = bytes.max(1);
        self
    }

    /// When commits are acknowledged (default [`Durability::Fsync`]).
    #[must_use]
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// The most bytes of commands written with one write and one sync (default 4 MiB). A
    /// single larger command is written alone.
    #[must_use]
    pub fn max_batch_bytes(mut self, bytes: usize) -> Self {
        self.max_batch_bytes = bytes.max(1);
        self
    }

    /// The most commands written with one write and one sync (default 8192).
    #[must_use]
    pub fn max_batch_commands(mut self, commands: usize) -> Self {
        self.max_batch_commands = commands.max(1);
        self
    }

    /// How many bytes of encoded commands may wait for the writer before `commit` itself
    /// waits (default 64 MiB): back-pressure instead of an unbounded queue.
    #[must_use]
    pub fn max_pending_bytes(mut self, bytes: u32) -> Self {
        self.max_pending_bytes = bytes.max(1);
        self
    }

    /// The longest a waiting thread busy-polls before it sleeps (default 500 µs;
    /// `Duration::ZERO` never spins).
    ///
    /// Waking a sleeping thread costs tens of microseconds, more on virtual machines where
    /// an idle CPU halts, and a lone committer pays two such wake-ups per commit (the writer
    /// thread's, then its own task's): on a disk whose `fdatasync` takes 100 µs that is most
    /// of the cost of a commit. So when a commit is the only one in flight and the disk's
    /// last sync was short enough that the whole wait fits within this limit, the committing
    /// task polls for its receipt (yielding to other tasks in between, after a first 25 µs
    /// in place when no sync is awaited; a thread committing through
    /// [`crate::blocking::Store`] yields to other threads) instead of sleeping,
    /// and after it the idle writer thread polls for the next commit for as long as the last
    /// sync took. Concurrent commits never spin: group commit already shares the wake-ups.
    #[must_use]
    pub fn spin_limit(mut self, limit: Duration) -> Self {
        self.spin_limit = limit;
        self
    }

    /// Whether a commit awaited alone may be written and applied in the caller's own thread
    /// (default true; only under [`Durability::OsBuffered`] and [`Durability::Periodic`]).
    ///
    /// When no other commit is in flight and nothing queued is still unwritten, handing the
    /// command to the writer thread and its receipt back costs more than the work itself:
    /// the caller then takes the journal's lock and writes the command to the page cache,
    /// applies it and returns, with the same order, atomicity and durability as a batch of
    /// one. That `write` call usually takes microseconds, but while the kernel throttles a
    /// process that dirties pages faster than the disk takes them it can hold the calling
    /// thread (an async runtime's worker, for a task) for milliseconds. Set false to keep
    /// every write on the writer thread. Under `Fsync`, where the caller would wait for the
    /// sync itself, commits always go through the writer thread.
    #[must_use]
    pub fn commit_in_caller(mut self, allowed: bool) -> Self {
        self.commit_in_caller = allowed;
        self
    }

    /// How much zeroed space the journal keeps ready ahead of its records under
    /// [`Durability::Fsync`] (default 1 MiB; 0 appends instead).
    ///
    /// A commit then writes over bytes the file already has, so its `fdatasync` need not
    /// also make a new file size durable: on ext4 and XFS that is the difference between one
    /// device write per commit and a file-system journal commit per commit. The space is
    /// written (not `fallocate`d, whose unwritten extents need the same metadata update on
    /// first write), one chunk at a time, so the newest segment is up to this much larger
    /// than its records. The other policies always append, since they leave more than one
    /// batch unsynced and recovery can only tell a torn overwrite from damage within one.
    #[must_use]
    pub fn preallocate(mut self, bytes: u64) -> Self {
        self.preallocate = bytes;
        self
    }

    /// Permission bits for the directories and files the store creates (defaults `0o700`
    /// and `0o600`: journals of session stores hold secrets). Replaces any custom storage.
    #[must_use]
    pub fn permissions(mut self, dir_mode: u32, file_mode: u32) -> Self {
        self.storage = Arc::new(StdStorage { dir_mode, file_mode });
        self
    }

    /// Takes a snapshot automatically after this many commands since the last one (default:
    /// never; snapshots are then taken only by [`crate::Store::snapshot`]).
    #[cfg(feature = "snapshot")]
    #[must_use]
    pub fn snapshot_every_commands(mut self, commands: u64) -> Self {
        self.snapshots.every_commands = Some(commands.max(1));
        self
    }

    /// Takes a snapshot automatically after this many journal bytes since the last one
    /// (default: never). Bounds recovery time by bounding the journal tail to replay.
    #[cfg(feature = "snapshot")]
    #[must_use]
    pub fn snapshot_every_bytes(mut self, bytes: u64) -> Self {
        self.snapshots.every_bytes = Some(bytes.max(1));
        self
    }

    /// How many snapshots to keep (default 2; a smaller count is raised to 2). Once a
    /// snapshot is durable, older ones beyond this count are removed, and so are the journal
    /// segments that hold only records the oldest kept snapshot includes. Two is the least
    /// that leaves a second way to rebuild the state when the newest snapshot is damaged;
    /// while only one snapshot exists, no segment is removed.
    #[cfg(feature = "snapshot")]
    #[must_use]
    pub fn snapshots_retained(mut self, count: usize) -> Self {
        self.snapshots.retain = count.max(MIN_RETAINED);
        self
    }

    /// Keeps history instead of deleting it (default off): the snapshots and journal segments
    /// that retention would remove are moved into the store's `archive/` subdirectory, where
    /// a point-in-time read ([`crate::Past`]) still finds them, so the state at any commit
    /// since the store was created can be rebuilt. The store itself never reads the archive;
    /// its disk use then grows with its history, and pruning the archive (oldest files first)
    /// is the owner's call.
    #[cfg(feature = "snapshot")]
    #[must_use]
    pub fn keep_history(mut self, keep: bool) -> Self {
        self.snapshots.keep_history = keep;
        self
    }

    /// The zstd compression level of snapshots (default 3; 1 is fastest, 19 smallest).
    #[cfg(feature = "snapshot")]
    #[must_use]
    pub fn snapshot_compression_level(mut self, level: i32) -> Self {
        self.snapshots.level = level;
        self
    }

    /// Whether the store reports its figures through the `metrics` facade (default on; see
    /// the guide's chapter on metrics for the series). Off, it registers nothing and reads no
    /// clock for them. With no recorder installed in the process, the series go nowhere
    /// either way.
    #[cfg(feature = "metrics")]
    #[must_use]
    pub fn metrics(mut self, enabled: bool) -> Self {
        self.metrics = enabled;
        self
    }

    /// Labels every series of this store `store="<name>"`, so that two stores in one process
    /// are told apart (default: no label). Two stores open under the same label, or both
    /// without one, feed the same series.
    #[cfg(feature = "metrics")]
    #[must_use]
    pub fn metrics_label(mut self, name: impl Into<String>) -> Self {
        self.metrics_label = Some(Arc::from(name.into()));
        self
    }

    /// Routes every file-system operation through `storage` instead of `std::fs`: for tests
    /// that simulate power loss or failing disks.
    #[must_use]
    pub fn storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = storage;
        self
    }
}

impl fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreOptions")
            .field("segment_size", &self.segment_size)
            .field("durability", &self.durability)
            .field("max_batch_bytes", &self.max_batch_bytes)
            .field("max_batch_commands", &self.max_batch_commands)
            .field("max_pending_bytes", &self.max_pending_bytes)
            .field("spin_limit", &self.spin_limit)
            .field("preallocate", &self.preallocate)
            .field("commit_in_caller", &self.commit_in_caller)
            .field("storage", &self.storage)
            .finish_non_exhaustive()
    }
}

/// When snapshots are taken and how many are kept.
#[cfg(feature = "snapshot")]
#[derive(Clone, Copy, Debug)]
pub(crate) struct SnapshotPolicy {
    pub every_commands: Option<u64>,
    pub every_bytes: Option<u64>,
    pub retain: usize,
    pub level: i32,
    /// Retention archives instead of removing.
    pub keep_history: bool,
}

#[cfg(feature = "snapshot")]
impl Default for SnapshotPolicy {
    fn default() -> Self {
        SnapshotPolicy { every_commands: None, every_bytes: None, retain: 2, level: 3, keep_history: false }
    }
}

/// Snapshots always kept, whatever the policy asks: the newest, and one to fall back on.
#[cfg(feature = "snapshot")]
pub(crate) const MIN_RETAINED: usize = 2;
