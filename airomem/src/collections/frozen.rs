//! [`FrozenMap`]: a [`ShardedMap`] as it was when frozen, and the map's [`Freeze`].

use std::borrow::Borrow;
use std::fmt;
use std::hash::{BuildHasher, Hash};

use airomem_core::Freeze;
use serde::{Serialize, Serializer};

use super::shard::Shard;
use super::sharded::{Iter, ShardedMap, serialize_shards, shard_index};

/// A [`ShardedMap`] as it was at one moment: what [`Freeze::freeze`] returns for it.
///
/// It holds the map's shards themselves (one `Arc` each), so taking it costs O(shards), and
/// it never changes: while a view holds a shard, the map keeps its changes to that shard in
/// an overlay of its own, or copies the shard. It
/// serializes to exactly the bytes the map serialized to at that moment, and answers reads
/// as of then.
pub struct FrozenMap<K, V, S> {
    shards: Vec<Shard<K, V, S>>,
    hasher: S,
}

impl<K, V, S> FrozenMap<K, V, S> {
    /// The number of entries. Visits every shard.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.len()).sum()
    }

    /// Whether the view has no entries.
    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(|shard| shard.len() == 0)
    }

    /// The entries, in the order the map had (and serialized) them.
    pub fn iter(&self) -> Iter<'_, K, V, S> {
        Iter::new(&self.shards)
    }

    /// The number of shards the map had when frozen.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// How many of the view's shards the map has since copied (or dropped): those only the
    /// view still holds.
    pub fn copied_shards(&self) -> usize {
        self.shards.iter().filter(|shard| shard.table_is_only_here()).count()
    }
}

impl<K: Eq + Hash, V, S: BuildHasher> FrozenMap<K, V, S> {
    /// The value `key` had.
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let index = shard_index(self.hasher.hash_one(key), self.shards.len());
        self.shards[index].get(key)
    }

    /// Whether the map held `key`.
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get(key).is_some()
    }
}

/// O(shards), like the freeze.
impl<K, V, S: Clone> Clone for FrozenMap<K, V, S> {
    fn clone(&self) -> Self {
        FrozenMap { shards: self.shards.clone(), hasher: self.hasher.clone() }
    }
}

impl<K: fmt::Debug + Eq + Hash, V: fmt::Debug, S: BuildHasher> fmt::Debug for FrozenMap<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// The bytes of the map at the moment of the freeze.
impl<K: Serialize + Eq + Hash, V: Serialize, S: BuildHasher> Serialize for FrozenMap<K, V, S> {
    fn serialize<Z: Serializer>(&self, serializer: Z) -> Result<Z::Ok, Z::Error> {
        serialize_shards(&self.shards, serializer)
    }
}

/// O(shards): one `Arc` clone per shard (two for a shard with an overlay). Writes made while
/// the view is held go into overlays, or copy a shard (see [`ShardedMap`]).
impl<K, V, S> Freeze for ShardedMap<K, V, S>
where
    K: Serialize + Eq + Hash + Send + Sync + 'static,
    V: Serialize + Send + Sync + 'static,
    S: BuildHasher + Clone + Send + Sync + 'static,
{
    type Frozen = FrozenMap<K, V, S>;

    fn freeze(&self) -> FrozenMap<K, V, S> {
        FrozenMap { shards: self.shards.clone(), hasher: self.hasher.clone() }
    }

    fn copied(frozen: &FrozenMap<K, V, S>) -> u64 {
        frozen.copied_shards() as u64
    }
}
