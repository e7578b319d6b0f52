//! Collections whose point-in-time view ([`Freeze`](crate::Freeze)) is cheap, so that a
//! state built from them snapshots without stalling the writers.
//!
//! * [`ShardedMap`]: a `HashMap` of copy-on-write shards. A freeze costs one `Arc` clone
//!   per shard; the first write to a shard afterwards copies that shard.
//! * [`FrozenMap`]: a `ShardedMap` as it was when frozen, readable and serializable.

mod frozen;
mod load;
mod sharded;

pub use frozen::FrozenMap;
pub use sharded::{DEFAULT_SHARDS, IntoIter, Iter, IterMut, Keys, MAX_SHARDS, ShardedMap, Values, ValuesMut};
