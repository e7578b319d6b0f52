//! airomem keeps an application's whole state in memory and makes every change durable
//! before acknowledging it: the Prevalent System pattern.
//!
//! Changes are commands. [`Store::commit`] encodes a command, appends it to a journal on
//! disk, `fdatasync`s it (sharing the sync with concurrent commits), executes it on the
//! state and returns. [`Store::query`] is a plain read lock on the state. On restart,
//! [`Store::open`] rebuilds the state by executing the journaled commands again.
//!
//! ```
//! use std::collections::HashMap;
//! use airomem::{JsonSerializer, JsonStore, Store};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, Default, Debug)]
//! struct Sessions {
//!     tokens: HashMap<String, usize>,
//! }
//!
//! #[derive(Serialize, Deserialize, Debug)]
//! enum SessionsCommand {
//!     CreateSession { token: String, user_id: usize },
//!     DeleteSession { token: String },
//! }
//!
//! impl airomem::State for Sessions {
//!     type Command = SessionsCommand;
//!     fn execute(&mut self, command: SessionsCommand) {
//!         match command {
//!             SessionsCommand::CreateSession { token, user_id } => {
//!                 self.tokens.insert(token, user_id);
//!             }
//!             SessionsCommand::DeleteSession { token } => {
//!                 self.tokens.remove(&token);
//!             }
//!         }
//!     }
//! }
//!
//! # #[tokio::main(flavor = "multi_thread")]
//! # async fn main() -> Result<(), airomem::Error> {
//! # let tmp = tempfile::tempdir().expect("tempdir");
//! # let dir = tmp.path().join("sessions");
//! let store: JsonStore<Sessions> = Store::open(JsonSerializer, &dir).await?;
//! store.commit(SessionsCommand::CreateSession { token: "t1".into(), user_id: 1 }).await?;
//! assert_eq!(store.query()?.tokens.get("t1"), Some(&1));
//! drop(store);
//!
//! // Reopening replays the journal: the state is what was acknowledged.
//! let store: JsonStore<Sessions> = Store::open(JsonSerializer, &dir).await?;
//! assert_eq!(store.query()?.tokens.len(), 1);
//! # Ok(())
//! # }
//! ```
//!
//! Programs without an async runtime use [`blocking::Store`]: a handle on the same kind of
//! store whose methods block the calling thread instead of returning futures.
//!
//! When the types change, bump [`State::SCHEMA_VERSION`], keep the released types in a
//! frozen module and name them with [`State::previous`]: an open replays history written
//! under each older schema with that schema's own types and `execute`, converts the state
//! with `From` or `TryFrom`, and seals the result with a snapshot at the new schema
//! ([`RecoveryReport::migrations`], [`Stats::oldest_schema_on_disk`]).
//!
//! # Features
//!
//! * `json` (default): commands and snapshots as JSON through serde_json: `JsonSerializer`,
//!   `JsonStore` and `blocking::JsonStore`. Without it, stores use postcard
//!   ([`PostcardStore`]).
//! * `metrics` (default): commit, sync, batch, snapshot and recovery figures, the state's
//!   serialized size and the store's health through the `metrics` facade, for whatever
//!   recorder the application installs (see the guide's chapter on metrics); the
//!   `metrics` and `metrics_label` options.
//! * `snapshot`: compressed, checksummed state snapshots (the `airomem-snapshot` crate), so
//!   recovery loads the newest snapshot plus the journal after it: `Store::snapshot`,
//!   `SnapshotInfo`, and the `snapshot_every_commands`, `snapshot_every_bytes`,
//!   `snapshots_retained`, `snapshot_compression_level` and `keep_history` options.
//! * `imbl`: [`Freeze`] for imbl's persistent maps, sets and vectors, and `imbl` itself
//!   re-exported.
//! * `derive`: `#[derive(Freeze)]` for structs whose fields all implement [`Freeze`].
//! * `testing`: the `testing` module, whose `assert_schema_recorded` fails a test when a
//!   state's or command's serialized shape changes without a new [`State::SCHEMA_VERSION`].
//!
//! With both `json` and `snapshot`, the `tool` module offers an application's operators
//! export, import and offline compaction.

/// The README's quick start compiles and runs as a doctest (the guide's chapters are
/// doctested by the workspace's root package).
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

#[cfg(feature = "snapshot")]
pub mod backup;
pub mod collections;
mod error;
mod execute;
mod layout;
mod meters;
mod options;
mod park;
mod read_only;
mod recover;
mod report;
#[cfg(feature = "snapshot")]
mod snapshot;
mod store;
#[cfg(feature = "testing")]
pub mod testing;
#[cfg(all(feature = "json", feature = "snapshot"))]
pub mod tool;
mod write;

#[cfg(feature = "json")]
pub use airomem_core::JsonSerializer;
pub use airomem_core::migration;
pub use airomem_core::storage;
pub use airomem_core::{CodecError, CommitContext, PostcardSerializer, Previous, Seq, Serializer, SerializerId, State};
pub use airomem_core::{Freeze, SnapshotView};
/// `#[derive(Freeze)]`: see the `airomem-derive` crate. Through this path only: the code it
/// writes names `::airomem::Freeze`.
#[cfg(feature = "derive")]
pub use airomem_derive::Freeze;
/// The persistent collections whose `Freeze` the `imbl` feature brings.
#[cfg(feature = "imbl")]
pub use imbl;

/// What `#[derive(Freeze)]`'s code names through the facade, so that a deriving crate needs
/// no `serde` of its own under that name.
#[cfg(feature = "derive")]
#[doc(hidden)]
pub mod __private {
    pub use serde;
}
/// The largest encoded command the journal takes; a larger one is refused with
/// [`JournalError::RecordTooLarge`].
pub use airomem_journal::MAX_PAYLOAD_LEN;
pub use airomem_journal::{Corruption, JournalError, TornTail};
pub use error::{BackupProblem, Error};
pub use layout::{ARCHIVE_DIR, DAMAGED_DIR};
pub use options::{Durability, StoreOptions};
pub use read_only::follower::{DEFAULT_POLL_INTERVAL, Follower};
pub use read_only::inspect;
pub use read_only::past::{At, Past};
#[cfg(feature = "snapshot")]
pub use report::SnapshotInfo;
pub use report::{DamagedHistory, Migration, RecoveryReport, Stats};
pub use store::blocking;
pub use store::import::Imported;
pub use store::{Query, Store};
pub use write::request::{Committed, CommittedUnit};

/// A store that journals commands as postcard, the compact default.
pub type PostcardStore<S> = Store<S, PostcardSerializer>;

/// A store that journals commands as JSON.
#[cfg(feature = "json")]
pub type JsonStore<S> = Store<S, JsonSerializer>;
