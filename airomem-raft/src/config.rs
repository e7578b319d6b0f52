//! How one node is set up: [`NodeConfig`].

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use airomem::storage::{StdStorage, Storage};

use crate::Error;
use crate::sessions::SESSION_IDLE_NANOS;

/// The longest `commit_timeout` allowed: a retry must reach the cluster while the
/// deduplication table still remembers its client (idle clients are forgotten after an hour).
const MAX_COMMIT_TIMEOUT: Duration = Duration::from_secs(10 * 60);
const _: () = assert!(MAX_COMMIT_TIMEOUT.as_nanos() * 4 <= SESSION_IDLE_NANOS as u128);

/// The default size of the pieces a snapshot is sent in.
const DEFAULT_SNAPSHOT_CHUNK: u64 = 1024 * 1024;
/// The smallest piece allowed: below it the per-RPC cost dominates any transfer.
const MIN_SNAPSHOT_CHUNK: u64 = 4 * 1024;

/// The settings of one node of a replicated store: its id, its directory and its timing.
///
/// ```
/// use std::time::Duration;
/// use airomem_raft::NodeConfig;
///
/// let config = NodeConfig::new(1, "/var/lib/app/node-1")
///     .heartbeat(Duration::from_millis(50))
///     .election_timeout(Duration::from_millis(300), Duration::from_millis(600))
///     .snapshot_every(10_000)
///     .commit_timeout(Duration::from_secs(5));
/// assert_eq!(config.id(), 1);
/// ```
#[derive(Clone)]
pub struct NodeConfig {
    pub(crate) id: u64,
    pub(crate) dir: PathBuf,
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) heartbeat: Duration,
    pub(crate) election_min: Duration,
    pub(crate) election_max: Duration,
    pub(crate) snapshot_every: u64,
    pub(crate) logs_kept_after_snapshot: u64,
    pub(crate) commit_timeout: Duration,
    pub(crate) election_timer: bool,
    pub(crate) watchdog: bool,
    pub(crate) min_voters: usize,
    pub(crate) snapshot_chunk_size: u64,
}

impl fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeConfig")
            .field("id", &self.id)
            .field("dir", &self.dir)
            .field("heartbeat", &self.heartbeat)
            .field("election_timeout", &(self.election_min..self.election_max))
            .field("snapshot_every", &self.snapshot_every)
            .field("logs_kept_after_snapshot", &self.logs_kept_after_snapshot)
            .field("commit_timeout", &self.commit_timeout)
            .field("election_timer", &self.election_timer)
            .field("watchdog", &self.watchdog)
            .field("min_voters", &self.min_voters)
            .field("snapshot_chunk_size", &self.snapshot_chunk_size)
            .finish_non_exhaustive()
    }
}

impl NodeConfig {
    /// Node `id` (unique in its cluster), keeping its Raft log in `dir/log` and its snapshots
    /// in `dir/snapshots`, on the real file system. Defaults: heartbeat 50 ms, election
    /// timeout 150–300 ms, a snapshot every 5,000 log entries with 1,000 entries kept behind
    /// it, commit timeout 10 s, the election timer and the watchdog on.
    pub fn new(id: u64, dir: impl Into<PathBuf>) -> NodeConfig {
        NodeConfig {
            id,
            dir: dir.into(),
            storage: Arc::new(StdStorage::default()),
            heartbeat: Duration::from_millis(50),
            election_min: Duration::from_millis(150),
            election_max: Duration::from_millis(300),
            snapshot_every: 5_000,
            logs_kept_after_snapshot: 1_000,
            commit_timeout: Duration::from_secs(10),
            election_timer: true,
            watchdog: true,
            min_voters: 3,
            snapshot_chunk_size: DEFAULT_SNAPSHOT_CHUNK,
        }
    }

    /// The node's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The file system the node's files go through (default: the real one). Tests pass a
    /// simulated disk that can lose power.
    pub fn storage(mut self, storage: Arc<dyn Storage>) -> NodeConfig {
        self.storage = storage;
        self
    }

    /// How often a leader sends heartbeats (default 50 ms). Keep it well below the minimum
    /// election timeout.
    pub fn heartbeat(mut self, interval: Duration) -> NodeConfig {
        self.heartbeat = interval;
        self
    }

    /// The range a follower's election timeout is drawn from (default 150–300 ms): how long
    /// it waits without hearing from a leader before it stands for election. Failover takes
    /// roughly the maximum plus one election round; raise both on a loaded machine so that a
    /// late heartbeat does not depose a healthy leader.
    pub fn election_timeout(mut self, min: Duration, max: Duration) -> NodeConfig {
        self.election_min = min;
        self.election_max = max;
        self
    }

    /// Builds a snapshot once this many log entries were applied since the last one
    /// (default 5,000); the log behind it is then purged, keeping
    /// [`NodeConfig::logs_kept_after_snapshot`] entries.
    pub fn snapshot_every(mut self, entries: u64) -> NodeConfig {
        self.snapshot_every = entries;
        self
    }

    /// How many entries already in a snapshot stay in the log (default 1,000), so that a
    /// follower a little behind catches up from the log instead of a whole snapshot.
    pub fn logs_kept_after_snapshot(mut self, entries: u64) -> NodeConfig {
        self.logs_kept_after_snapshot = entries;
        self
    }

    /// How long [`crate::ReplicatedStore::commit`] keeps retrying (and a linearizable read
    /// keeps trying) before it gives up (default 10 s, at most 10 minutes, since the
    /// deduplication table must still remember the client when a retry lands).
    pub fn commit_timeout(mut self, timeout: Duration) -> NodeConfig {
        self.commit_timeout = timeout;
        self
    }

    /// Whether a follower that stops hearing from the leader stands for election on its own
    /// timer (default `true`). With `false` only the election watchdog starts elections, 2×
    /// the maximum election timeout plus a jitter after the last contact: slower failover.
    /// This exists to test the watchdog.
    pub fn election_timer(mut self, enabled: bool) -> NodeConfig {
        self.election_timer = enabled;
        self
    }

    /// Whether the election watchdog runs (default `true`): when the node has heard from no
    /// leader for 2× the maximum election timeout, it waits a random jitter (up to the
    /// maximum election timeout) and stands for election, breaking the repeated split votes
    /// two survivors with similar timeouts can fall into. Turn it off only to test it.
    pub fn watchdog(mut self, enabled: bool) -> NodeConfig {
        self.watchdog = enabled;
        self
    }

    /// The fewest voters a removal may leave when this node leads (default 3: a group of
    /// three survives one failure; of two, none). [`crate::ReplicatedStore::remove_forced`]
    /// goes below it.
    pub fn min_voters(mut self, voters: usize) -> NodeConfig {
        self.min_voters = voters.max(1);
        self
    }

    /// The openraft configuration these settings make.
    pub(crate) fn raft_config(&self) -> Result<openraft::Config, Error> {
        let invalid = |reason: String| Error::InvalidConfig { reason };
        if self.commit_timeout > MAX_COMMIT_TIMEOUT {
            return Err(invalid(format!("commit_timeout {:?} exceeds {MAX_COMMIT_TIMEOUT:?}", self.commit_timeout)));
        }
        if self.snapshot_every == 0 {
            return Err(invalid("snapshot_every must be at least 1".into()));
        }
        if self.snapshot_chunk_size < MIN_SNAPSHOT_CHUNK || usize::try_from(self.snapshot_chunk_size).is_err() {
            return Err(invalid(format!(
                "snapshot_chunk_size {} is below {MIN_SNAPSHOT_CHUNK} bytes or too large",
                self.snapshot_chunk_size
            )));
        }
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let config = openraft::Config {
            cluster_name: "airomem".into(),
            heartbeat_interval: millis(self.heartbeat),
            election_timeout_min: millis(self.election_min),
            election_timeout_max: millis(self.election_max),
            // Per snapshot chunk; the last one's answer waits for the whole install, which on a
            // loaded machine may take a while, and openraft's 200 ms default would cancel it
            // again and again.
            install_snapshot_timeout: millis(self.election_max).max(2_000),
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.logs_kept_after_snapshot,
            enable_elect: self.election_timer,
            snapshot_max_chunk_size: self.snapshot_chunk_size,
            ..openraft::Config::default()
        };
        config.validate().map_err(|e| invalid(e.to_string()))
    }

    /// The size of the pieces a snapshot is sent in (default 1 MiB, at least 4 KiB): each
    /// `install_snapshot` message carries one, read from the leader's snapshot file and
    /// written into the follower's at its offset, so neither side holds a whole snapshot in
    /// memory to send or receive it. Each piece must arrive (and the last be installed)
    /// within the maximum election timeout or 2 s, whichever is longer.
    pub fn snapshot_chunk_size(mut self, bytes: u64) -> NodeConfig {
        self.snapshot_chunk_size = bytes;
        self
    }
}
