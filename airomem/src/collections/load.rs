//! Decoding a [`ShardedMap`]: the snapshot-load hot path.
//!
//! Entries are decoded and sorted into one batch per shard first, and each shard's table
//! is built from its batch afterwards. Inserting in decode order would touch every shard's
//! table in turn, a cache miss per entry once the map outgrows the cache; one batch at a
//! time keeps one table hot while it fills. The batches of a large map are built on two
//! threads.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::marker::PhantomData;
use std::mem;
use std::thread;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use tracing::debug;

use super::sharded::{ShardedMap, per_shard_capacity, shard_index, shards_for};

/// The most memory a length announced by the input may reserve up front. A corrupted length
/// must not abort the process on allocation; past this, the batches grow as entries arrive.
const MAX_RESERVED_BYTES: usize = 256 << 20;

/// From how many entries the shards are built on two threads: below, a thread's start
/// (tens of microseconds) is not worth it. Measured at 800k entries (32-byte string keys,
/// 2 cores): 116 ms against 198 ms on one thread (`collections_measure`).
const PARALLEL_FROM: usize = 1 << 16;

/// Decodes from any map, into shards 3/8 to 3/4 full (see
/// [`SHARD_SPLIT_AT`](super::SHARD_SPLIT_AT)), each with its room reserved: the input's
/// announced length (postcard always announces one) sets the shard count up front; without
/// one, the entries are gathered first and counted. `K`, `V` and `S` are `Send` because a
/// large map's shards are built on two threads.
impl<'de, K, V, S> Deserialize<'de> for ShardedMap<K, V, S>
where
    K: Deserialize<'de> + Eq + Hash + Send,
    V: Deserialize<'de> + Send,
    S: BuildHasher + Default + Clone + Send,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(MapVisitor(PhantomData))
    }
}

// Holds no value: names the map type for `Visitor::Value`.
struct MapVisitor<K, V, S>(PhantomData<ShardedMap<K, V, S>>);

impl<'de, K, V, S> Visitor<'de> for MapVisitor<K, V, S>
where
    K: Deserialize<'de> + Eq + Hash + Send,
    V: Deserialize<'de> + Send,
    S: BuildHasher + Default + Clone + Send,
{
    type Value = ShardedMap<K, V, S>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let hasher = S::default();
        let cap = MAX_RESERVED_BYTES / mem::size_of::<(K, V)>().max(1);
        let Some(hint) = access.size_hint().map(|len| len.min(cap)) else {
            // No length up front: gather, count, then sort into shards.
            let mut entries = Vec::new();
            while let Some(entry) = access.next_entry::<K, V>()? {
                entries.push(entry);
            }
            let count = shards_for(entries.len());
            let each = per_shard_capacity(entries.len(), count);
            let mut batches: Vec<Vec<(K, V)>> = (0..count).map(|_| Vec::with_capacity(each)).collect();
            let total = entries.len();
            for (key, value) in entries {
                batches[shard_index(hasher.hash_one(&key), count)].push((key, value));
            }
            let shards = build(batches, total, &hasher);
            return Ok(ShardedMap::from_tables(shards, hasher));
        };
        let count = shards_for(hint);
        let each = per_shard_capacity(hint, count);
        let mut batches: Vec<Vec<(K, V)>> = (0..count).map(|_| Vec::with_capacity(each)).collect();
        let mut total = 0;
        while let Some((key, value)) = access.next_entry::<K, V>()? {
            batches[shard_index(hasher.hash_one(&key), count)].push((key, value));
            total += 1;
        }
        let shards = build(batches, total, &hasher);
        Ok(ShardedMap::from_tables(shards, hasher))
    }
}

/// Each batch's shard table, in batch order.
fn build<K, V, S>(mut batches: Vec<Vec<(K, V)>>, total: usize, hasher: &S) -> Vec<HashMap<K, V, S>>
where
    K: Eq + Hash + Send,
    V: Send,
    S: BuildHasher + Clone + Send,
{
    let parallel = total >= PARALLEL_FROM && thread::available_parallelism().is_ok_and(|n| n.get() > 1);
    if !parallel {
        return tables(&mut batches, hasher);
    }
    let half = batches.len() / 2;
    let (first, second) = batches.split_at_mut(half);
    let helper_hasher = hasher.clone();
    let built = thread::scope(|scope| {
        let helper = thread::Builder::new()
            .name("sharded-map-load".into())
            .spawn_scoped(scope, move || tables(second, &helper_hasher));
        let helper = match helper {
            Ok(helper) => helper,
            Err(error) => {
                debug!(%error, "no second thread to build the map's shards on; using one");
                return None;
            }
        };
        let mut shards = tables(first, hasher);
        // Only a panic in K's `Hash` or `Eq` gets here: pass it on as it was.
        shards.extend(helper.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
        Some(shards)
    });
    // Without a helper, the batches are all still there: the failed spawn took none.
    built.unwrap_or_else(|| tables(&mut batches, hasher))
}

/// The shard tables of `batches`, emptying them.
fn tables<K: Eq + Hash, V, S: BuildHasher + Clone>(batches: &mut [Vec<(K, V)>], hasher: &S) -> Vec<HashMap<K, V, S>> {
    batches
        .iter_mut()
        .map(|batch| {
            let batch = mem::take(batch);
            let mut shard = HashMap::with_capacity_and_hasher(batch.len(), hasher.clone());
            shard.extend(batch);
            shard
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collections::{MAX_SHARDS, SHARD_SPLIT_AT};

    #[test]
    fn decoded_maps_get_shards_about_half_full() {
        assert_eq!(shards_for(0), 1);
        assert_eq!(shards_for(SHARD_SPLIT_AT * 3 / 4), 1);
        assert_eq!(shards_for(SHARD_SPLIT_AT * 3 / 4 + 1), 2);
        assert_eq!(shards_for(1_000_000), 4096);
        assert_eq!(shards_for(usize::MAX / 2), MAX_SHARDS);
    }
}
