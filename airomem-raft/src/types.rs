//! The openraft type configuration; nothing here leaves the crate.

use std::io::Cursor;

use serde::{Deserialize, Serialize};

/// A node's id in the cluster.
pub(crate) type NodeId = u64;

/// A command as it travels in a normal log entry: the user's command encoded with the store's
/// serializer, and the time the leader stamped on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Command {
    /// Nanoseconds since the Unix epoch, read from the leader's clock when it accepted the
    /// command. The state machine makes it monotonic (`max` with the previous one).
    pub(crate) unix_nanos: u64,
    /// The encoded command; the state executes what decodes from these bytes.
    pub(crate) bytes: Vec<u8>,
}

/// What applying one entry produced, identical on every replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Applied {
    /// A blank or membership entry: nothing for the state.
    Internal,
    /// The command executed as the `seq`-th applied command.
    Executed {
        /// The dense sequence number it executed with.
        seq: u64,
    },
    /// The command panicked; the state is as if it had never been sent (it took no sequence
    /// number).
    Panicked {
        /// The panic's message.
        message: String,
    },
}

openraft::declare_raft_types!(
    /// The type configuration of airomem's Raft group.
    pub(crate) TypeConfig:
        D = Command,
        R = Applied,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
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
