//! The openraft type configuration; nothing here leaves the crate.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A node's id in the cluster.
pub(crate) type NodeId = u64;

/// What a normal log entry carries: the commands one leader accepted together, executed in
/// order, each as if it had come alone, and the time the leader stamped on them.
///
/// Batching is what makes group commit possible above openraft 0.9, whose core waits for
/// each append to be flushed before it takes the next client write: one command per entry
/// would cost the leader one `fdatasync` per command (see `proposer`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Command {
    /// Nanoseconds since the Unix epoch, read from the leader's clock when it proposed the
    /// batch. The state machine makes it monotonic (`max` with the previous one).
    pub(crate) unix_nanos: u64,
    /// The commands, in the order they execute. Shared: openraft clones an entry each time
    /// it reads one from the log to replicate it, and a batch is large.
    pub(crate) requests: Arc<[Request]>,
}

/// One client's command in a batch: who sent it (for deduplication) and the user's command
/// encoded with the store's serializer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Request {
    /// The sending client (a `ReplicatedStore` handle), drawn at random when it opened.
    pub(crate) client: u128,
    /// The client's number for this command; a retry sends the same one.
    pub(crate) serial: u64,
    /// Every serial of this client below this one is finished (its caller has an outcome or
    /// gave up), so the replicated state may forget their outcomes.
    pub(crate) low_water: u64,
    /// The encoded command; the state executes what decodes from these bytes.
    pub(crate) bytes: Vec<u8>,
}

/// What applying one command produced, identical on every replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Applied {
    /// The command executed as the `seq`-th applied command.
    Executed {
        /// The dense sequence number it executed with.
        seq: u64,
        /// The log index of the entry it executed in (a retried copy answers with the
        /// original's).
        index: u64,
        /// The commit time it executed with (the leader's stamp made monotonic).
        unix_nanos: u64,
    },
    /// The command panicked; the state is as if it had never been sent (it took no sequence
    /// number).
    Panicked {
        /// The log index of the entry whose command panicked.
        index: u64,
        /// The panic's message.
        message: String,
    },
    /// A copy of a command whose serial is below its client's low water: the client already
    /// has (or gave up on) its outcome, which the state has forgotten. Not executed.
    Expired,
}

openraft::declare_raft_types!(
    /// The type configuration of airomem's Raft group.
    pub(crate) TypeConfig:
        D = Command,
        // One outcome per command of the entry; none for blank and membership entries.
        R = Vec<Applied>,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        // A snapshot file, streamed in chunks: see `snapshot_file`.
        SnapshotData = crate::snapshot_file::SnapshotFile,
        AsyncRuntime = openraft::TokioRuntime,
);

pub(crate) type Entry = openraft::Entry<TypeConfig>;
pub(crate) type LogId = openraft::LogId<NodeId>;
pub(crate) type Vote = openraft::Vote<NodeId>;
pub(crate) type Membership = openraft::Membership<NodeId, openraft::BasicNode>;
pub(crate) type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
pub(crate) type StorageError = openraft::StorageError<NodeId>;

/// The `LogId` of `term`, `leader` and `index`.
pub(crate) fn log_id(term: u64, leader: NodeId, index: u64) -> LogId {
    openraft::LogId::new(openraft::CommittedLeaderId::new(term, leader), index)
}
