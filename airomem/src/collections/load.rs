//! Decoding a [`ShardedMap`]: the snapshot-load hot path.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::marker::PhantomData;
use std::mem;
use std::sync::Arc;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};

use super::sharded::{DEFAULT_SHARDS, ShardedMap, per_shard_capacity, shard_index, shard_shift};

/// The most memory a length announced by the input may reserve up front. A corrupted length
/// must not abort the process on allocation; past this, the shards grow as entries arrive.
const MAX_RESERVED_BYTES: usize = 256 << 20;

/// Decodes from any map, into [`DEFAULT_SHARDS`] shards. A known length (postcard's, always)
/// reserves every shard's room up front.
impl<'de, K, V, S> Deserialize<'de> for ShardedMap<K, V, S>
where
    K: Deserialize<'de> + Eq + Hash,
    V: Deserialize<'de>,
    S: BuildHasher + Default + Clone,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(MapVisitor(PhantomData))
    }
}

// Holds no value: names the map type for `Visitor::Value`.
struct MapVisitor<K, V, S>(PhantomData<ShardedMap<K, V, S>>);

impl<'de, K, V, S> Visitor<'de> for MapVisitor<K, V, S>
where
    K: Deserialize<'de> + Eq + Hash,
    V: Deserialize<'de>,
    S: BuildHasher + Default + Clone,
{
    type Value = ShardedMap<K, V, S>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let hasher = S::default();
        let count = DEFAULT_SHARDS;
        let shift = shard_shift(count);
        let mask = count - 1;
        let cap = MAX_RESERVED_BYTES / mem::size_of::<(K, V)>().max(1);
        let each = per_shard_capacity(access.size_hint().unwrap_or(0).min(cap), count);
        // Built unshared and wrapped once at the end: no `Arc::make_mut` check per entry.
        let mut shards: Vec<HashMap<K, V, S>> =
            (0..count).map(|_| HashMap::with_capacity_and_hasher(each, hasher.clone())).collect();
        while let Some((key, value)) = access.next_entry::<K, V>()? {
            let index = shard_index(hasher.hash_one(&key), shift, mask);
            shards[index].insert(key, value);
        }
        Ok(ShardedMap { shards: shards.into_iter().map(Arc::new).collect(), hasher, shift })
    }
}
