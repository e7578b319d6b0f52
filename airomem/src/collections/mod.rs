//! Collections whose point-in-time view ([`Freeze`](crate::Freeze)) is cheap, so that a
//! state built from them snapshots without stalling the writers.
//!
//! * [`ShardedMap`]: a `HashMap` of shards of at most about [`SHARD_SPLIT_AT`] entries
//!   each, added one by one as it grows. A freeze costs one `Arc` clone per shard; while the
//!   view is held, writes keep the entries they change beside the shard they fall in.
//! * [`FrozenMap`]: a `ShardedMap` as it was when frozen, readable and serializable.
//! * [`ByClone`]: any `Clone` value, frozen by cloning it: for small values only, since the
//!   writers wait for the clone.
//!
//! `airomem-core` implements [`Freeze`](crate::Freeze) for the scalars (integers, floats,
//! `bool`, `char`, `()`, `Duration`), whose copy is the view, and passes it through
//! `Option`, `Box`, `Arc` and tuples of freezable values. Not for `String`, `Vec`,
//! `HashMap` or other std collections: their clone is O(entries), a stall that grows with
//! the data; wrap such a field in [`ByClone`] to accept that cost explicitly.
//!
//! A state opts into snapshots that do not stall the writers with
//! [`State::snapshot_view`](crate::State::snapshot_view), and with the `derive` feature its
//! `Freeze` is one derive away:
//!
//! ```
//! # #[cfg(feature = "derive")] {
//! use airomem::collections::ShardedMap;
//! use airomem::{Freeze, Serializer, SnapshotView, State};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, Default, Freeze)]
//! struct Sessions {
//!     tokens: ShardedMap<String, u64>,
//!     created: u64,
//! }
//!
//! #[derive(Serialize, Deserialize)]
//! struct Create(String, u64);
//!
//! impl State for Sessions {
//!     type Command = Create;
//!     fn execute(&mut self, Create(token, user): Create) {
//!         self.tokens.insert(token, user);
//!         self.created += 1;
//!     }
//!     fn snapshot_view<Z: Serializer>(&self) -> Option<SnapshotView<Z>> {
//!         Some(SnapshotView::of(self))
//!     }
//! }
//! # }
//! ```

mod by_clone;
mod frozen;
mod load;
mod shard;
mod sharded;

pub use by_clone::ByClone;
pub use frozen::FrozenMap;
pub use sharded::{IntoIter, Iter, IterMut, Keys, MAX_SHARDS, SHARD_SPLIT_AT, ShardedMap, Values, ValuesMut};
