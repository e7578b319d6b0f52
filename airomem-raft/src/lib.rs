//! Replicated airomem: an airomem [`State`](airomem::State) on every node of a Raft group
//! (behind [openraft](https://docs.rs/openraft) 0.9, whose types stay inside this crate).
//!
//! Each node is a [`ReplicatedStore`]: commands committed on any node go to the leader, are
//! appended to a majority's logs (each `fdatasync`ed) and executed by every replica in the
//! same order with the same [`CommitContext`](airomem::CommitContext) (a dense sequence
//! number and the leader's time). Reads are local. Retries are deduplicated by the
//! replicated state, so a command whose answer was lost runs once.
//!
//! This step connects the nodes of one process through an in-process [`Network`] with fault
//! controls (partitions, one-way blocks, delays, loss), for tests and benchmarks.
//!
//! ```
//! use airomem::{PostcardSerializer, State};
//! use airomem_raft::{Network, NodeConfig, ReplicatedStore};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Default, Serialize, Deserialize)]
//! struct Counter {
//!     total: u64,
//! }
//!
//! impl State for Counter {
//!     type Command = u64;
//!     fn execute(&mut self, add: u64) {
//!         self.total += add;
//!     }
//! }
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let network = Network::new();
//! let mut nodes = Vec::new();
//! for id in 1..=3 {
//!     let config = NodeConfig::new(id, dir.path().join(format!("node-{id}")));
//!     nodes.push(ReplicatedStore::<Counter>::open(config, PostcardSerializer, &network).await?);
//! }
//! nodes[0].bootstrap([1, 2, 3]).await?; // once, when the group is created; idempotent
//!
//! let receipt = nodes[2].commit(5).await?; // forwarded to the leader
//! assert_eq!(receipt.seq, 1);
//! assert_eq!(nodes[2].query()?.total, 5); // applied here before commit returned
//! assert_eq!(nodes[0].query_linearizable().await?.total, 5);
//!
//! network.isolate(3); // faults: partitions, one-way blocks, delays, loss
//! network.heal();
//! for node in nodes {
//!     node.close().await?;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! The Raft log is a journal of its own (see `DESIGN.md` in this crate), snapshots are
//! airomem snapshots, and every file goes through airomem's storage seam, so the power-loss
//! tests run the whole group on a simulated disk.

// The guide's replication chapter compiles and runs as a doctest of this crate.
#[cfg(doctest)]
#[doc = include_str!("../../docs/guide/replication.md")]
pub struct GuideReplication;

mod config;
mod error;
mod log;
mod proposer;
mod reads;
mod sessions;
mod snapshot_file;
mod state_machine;
mod status;
mod store;
mod transport;
mod types;
mod watchdog;
mod wire;

#[cfg(test)]
mod tests;

pub use config::NodeConfig;
pub use error::{Error, SnapshotError};
pub use status::{Members, Role, Status};
pub use store::{ReadGuard, Receipt, ReplicatedStore, SnapshotInfo};
pub use transport::Transport;
pub use transport::memory::Network;
pub use transport::tcp::{AdminClient, TcpConfig, TcpTransport};
pub use wire::Secret;
#[doc(hidden)]
pub use wire::fuzzing;
