//! Core vocabulary of airomem, shared by the journal, the snapshot store and the facade.
//!
//! * [`State`]: the application's in-memory system and the command type that changes it.
//! * [`CommitContext`]: the sequence number and recorded time of the command being executed.
//! * [`Serializer`]: how commands (and, with snapshots, states) become bytes.
//! * [`storage`]: the one seam through which every file-system operation passes.
//!
//! Nothing in this crate performs I/O except [`storage::StdStorage`].
//!
//! # Features
//!
//! * `json` (off by default): `JsonSerializer`, commands and states as JSON through
//!   serde_json. [`PostcardSerializer`] is always there.

mod ancestor;
mod context;
mod dir_lock;
mod error;
mod freeze;
#[cfg(feature = "imbl")]
mod freeze_imbl;
mod freeze_std;
pub mod migration;
mod seq;
mod serializer;
mod state;
pub mod storage;

pub use ancestor::Ancestor;
pub use context::CommitContext;
pub use error::CodecError;
pub use freeze::{Freeze, SnapshotView};
pub use seq::Seq;
#[cfg(feature = "json")]
pub use serializer::JsonSerializer;
pub use serializer::{PostcardSerializer, Serializer, SerializerId};
pub use state::{Previous, State};
