//! [`ShardedMap`]: a hash map split into shards that a frozen view shares, each with an
//! overlay for what changes while the view holds it.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::collections::hash_map::{self, Entry, RandomState};
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::ops::Index;
use std::slice;

use serde::ser::{Serialize, SerializeMap, Serializer};

use super::shard::{Shard, ShardIter};

/// The most entries a shard holds before the map grows by one shard. It bounds what one
/// write can cost the writers when it has to copy a shard a frozen view holds (an `entry`,
/// a split, an overlay past a quarter of the shard: at the 60 to 600 ns per entry measured
/// copying 32-byte string keys, 15 to 300 µs), and sets how many `Arc`s a freeze clones
/// (one per 224 to 448 entries: about 4,000 at a million entries, tens of microseconds).
///
/// The map grows as a linear hash table does: each time a write finds its shard this full,
/// the next shard in turn is split in two by one more bit of the hash, so shards stay
/// between about half this size and this size however large the map gets, and no write
/// ever rehashes more than one shard. A map never has fewer shards than it was made with,
/// nor more than [`MAX_SHARDS`] (past 2^16 × this many entries, shards grow instead).
///
/// Why 448: a `HashMap` holds 7/8 of its power-of-two bucket count before it grows, and
/// 448 is 7/8 of 512. Each half of a split gets room for 448 entries from the start, so a
/// shard is never resized between splits and its table stays between half full and full,
/// as a plain `HashMap`'s does (inserts measured 1.27× a `HashMap`'s; at 512, whose table
/// needs 1,024 buckets, 1.48×).
pub const SHARD_SPLIT_AT: usize = 448;

/// The most shards a map can have: the shard index takes at most 16 bits of the hash.
pub const MAX_SHARDS: usize = 1 << SHARD_BITS;

const SHARD_BITS: u32 = 16;

/// Where the shard bits start in a 64-bit hash: bits 41 to 56, just below the top 7.
///
/// Why those bits: each shard's `HashMap` (hashbrown) takes its bucket index from the low
/// bits of the same hash and the 7-bit tag it compares before any key from the top 7 bits.
/// Keys of one shard all share their shard bits; were those among the top bits, every key
/// of a shard would carry the same tag, and each probe would compare keys at every occupied
/// slot of its group. Were they the low bits, each shard would use only a fraction of its
/// buckets. Bits 41 to 56 are neither, until a shard holds 2^41 buckets.
const SHARD_BITS_AT: u32 = 57 - SHARD_BITS;

/// A `HashMap` made of shards that split as it grows, whose point-in-time view costs one
/// `Arc` clone per shard and whose writes while the view is held keep only what changed.
///
/// Each shard is an `Arc<HashMap<K, V, S>>` table. A point-in-time view ([`crate::Freeze`],
/// [`FrozenMap`](super::FrozenMap)) and a [`Clone`] share the tables. While something else
/// holds a shard's table, [`insert`](Self::insert), [`remove`](Self::remove) and
/// [`get_mut`](Self::get_mut) write into the shard's overlay instead (the changed key and
/// its new value, or its removal), and reads look there first: a snapshot taken while a
/// tenth of the keys change costs the changed entries, not a second copy of every shard
/// they fall in (keys are spread by hash, so that would be nearly every shard). Once the
/// table is the map's alone again, the overlay folds back into it in place: on the next
/// write to the shard, or as the map settles one shard per write. A shard is copied
/// instead when its overlay would pass a quarter of its entries, and for the operations
/// that hand out the table itself (below). Shards hold at most about [`SHARD_SPLIT_AT`]
/// entries: a new map has one, and the map adds shards one at a time as it grows (see
/// [`SHARD_SPLIT_AT`]).
///
/// It serializes as a plain map, so its bytes (and JSON) are those of a `HashMap` with the
/// same entries in the same order, and it decodes from any map.
///
/// Differences from `HashMap`: [`len`](Self::len) and [`is_empty`](Self::is_empty) visit
/// every shard (O(shards)); writes need `K`, `V` and `S` to be [`Clone`] (to keep a
/// changed entry beside a shared shard, or copy it); [`entry`](Self::entry),
/// [`iter_mut`](Self::iter_mut), [`retain`](Self::retain) and [`reserve`](Self::reserve)
/// copy a shared shard even when they end up changing nothing ([`get_mut`](Self::get_mut)
/// and [`remove`](Self::remove) change nothing on a miss); reading a key of a shard with an
/// overlay looks it up in both; the
/// owned [`IntoIterator`] clones the entries of a shard something else still holds; the
/// order of iteration changes when a shard splits.
///
/// The hasher must spread its hashes over all 64 bits (std's `RandomState` and the common
/// fast hashers do): the shard comes from bits 41 to 56 of the key's hash.
///
/// ```
/// use airomem::collections::ShardedMap;
///
/// let mut sessions: ShardedMap<String, u64> = ShardedMap::new();
/// sessions.insert("t1".to_string(), 1);
/// *sessions.entry("t2".to_string()).or_default() += 2;
/// assert_eq!(sessions.get("t2"), Some(&2));
/// assert_eq!(sessions.len(), 2);
/// ```
pub struct ShardedMap<K, V, S = RandomState> {
    pub(super) shards: Vec<Shard<K, V, S>>,
    pub(super) hasher: S,
    /// A write to a shard of this many entries adds a shard first.
    pub(super) split_at: usize,
    /// The next shard whose overlay a write folds back into its table, if the table is the
    /// map's alone again: one per write, so that overlays left after a snapshot are gone
    /// within a write per shard and reads stop looking in two tables.
    settling: usize,
}

/// The shard of `hash` in a map of `count` shards (`1..=MAX_SHARDS`), laid out as a
/// linear hash table: with `low` the largest power of two not above `count`, shards below
/// `count - low` have been split by one more bit of the hash than the others, and their
/// other halves are the shards from `low` on.
#[inline]
pub(super) fn shard_index(hash: u64, count: usize) -> usize {
    debug_assert!((1..=MAX_SHARDS).contains(&count));
    let bits = (hash >> SHARD_BITS_AT) as usize & (MAX_SHARDS - 1);
    let low = 1usize << (usize::BITS - 1 - count.leading_zeros());
    let index = bits & (low - 1);
    if index < count - low { bits & (2 * low - 1) } else { index }
}

/// The shard count a request becomes: `1..=MAX_SHARDS`.
pub(super) fn shard_count(requested: usize) -> usize {
    requested.clamp(1, MAX_SHARDS)
}

/// The shards a map made for `entries` entries starts with: a power of two, each from 3/8
/// to 3/4 of [`SHARD_SPLIT_AT`] full, so that growth splits none of them soon.
pub(super) fn shards_for(entries: usize) -> usize {
    entries.div_ceil(SHARD_SPLIT_AT * 3 / 4).next_power_of_two().clamp(1, MAX_SHARDS)
}

/// The capacity each of `shards` shards reserves for `total` entries spread over them by
/// hash: the mean plus three standard deviations, so that almost no shard grows again.
pub(super) fn per_shard_capacity(total: usize, shards: usize) -> usize {
    if total == 0 {
        return 0;
    }
    let mean = total.div_ceil(shards);
    mean + 3 * mean.isqrt() + 1
}

impl<K, V> ShardedMap<K, V, RandomState> {
    /// An empty map of one shard; it adds shards as it grows.
    pub fn new() -> Self {
        Self::with_shards_and_hasher(1, RandomState::new())
    }

    /// An empty map that starts with `shards` shards (at most [`MAX_SHARDS`]), for a map
    /// known to grow large; it adds more as it grows.
    pub fn with_shards(shards: usize) -> Self {
        Self::with_shards_and_hasher(shards, RandomState::new())
    }

    /// An empty map with room for `capacity` entries without growing, if the keys spread
    /// evenly: shards enough for them, each with room reserved.
    pub fn with_capacity(capacity: usize) -> Self {
        Self::with_capacity_and_hasher(capacity, RandomState::new())
    }
}

impl<K, V, S: Clone> ShardedMap<K, V, S> {
    /// An empty map of one shard that hashes keys with `hasher`.
    pub fn with_hasher(hasher: S) -> Self {
        Self::with_shards_and_hasher(1, hasher)
    }

    /// An empty map of `shards` shards (see [`ShardedMap::with_shards`]) hashing with
    /// `hasher`.
    pub fn with_shards_and_hasher(shards: usize, hasher: S) -> Self {
        Self::with_layout(shards, 0, hasher)
    }

    /// An empty map with room for `capacity` entries (see [`ShardedMap::with_capacity`]),
    /// hashing with `hasher`.
    pub fn with_capacity_and_hasher(capacity: usize, hasher: S) -> Self {
        Self::with_layout(shards_for(capacity), capacity, hasher)
    }

    pub(super) fn with_layout(shards: usize, capacity: usize, hasher: S) -> Self {
        let count = shard_count(shards);
        let each = per_shard_capacity(capacity, count);
        let shards = (0..count).map(|_| HashMap::with_capacity_and_hasher(each, hasher.clone())).collect();
        Self::from_tables(shards, hasher)
    }

    /// A map of these shard tables, laid out as [`shard_index`] places keys among that
    /// many shards.
    pub(super) fn from_tables(tables: Vec<HashMap<K, V, S>>, hasher: S) -> Self {
        let shards = tables.into_iter().map(Shard::new).collect();
        ShardedMap { shards, hasher, split_at: SHARD_SPLIT_AT, settling: 0 }
    }
}

impl<K, V, S> ShardedMap<K, V, S> {
    /// The number of entries. Visits every shard.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.len()).sum()
    }

    /// Whether the map has no entries. Visits every shard.
    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(|shard| shard.len() == 0)
    }

    /// The map with its shards split at `entries` entries instead of [`SHARD_SPLIT_AT`] (at
    /// least 1): smaller shards make the first write to each after a freeze cheaper and a
    /// freeze dearer (more of them), larger ones the other way round. Applies to the
    /// map's growth from now on; a decoded map starts with the default.
    pub fn split_at(mut self, entries: usize) -> Self {
        self.split_at = entries.max(1);
        self
    }

    /// The number of shards: at least as many as the map was made with, more as it grew.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The map's hasher.
    pub fn hasher(&self) -> &S {
        &self.hasher
    }

    /// The entries, shard by shard, in no particular order within a shard.
    pub fn iter(&self) -> Iter<'_, K, V, S> {
        Iter::new(&self.shards)
    }

    /// The keys, in [`iter`](Self::iter)'s order.
    pub fn keys(&self) -> Keys<'_, K, V, S> {
        Keys { inner: self.iter() }
    }

    /// The values, in [`iter`](Self::iter)'s order.
    pub fn values(&self) -> Values<'_, K, V, S> {
        Values { inner: self.iter() }
    }
}

impl<K: Eq + Hash, V, S: BuildHasher> ShardedMap<K, V, S> {
    #[inline]
    fn shard_of<Q: Hash + ?Sized>(&self, key: &Q) -> usize {
        shard_index(self.hasher.hash_one(key), self.shards.len())
    }

    /// The value of `key`.
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shards[self.shard_of(key)].get(key)
    }

    /// The stored key equal to `key`, and its value.
    pub fn get_key_value<Q>(&self, key: &Q) -> Option<(&K, &V)>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shards[self.shard_of(key)].get_key_value(key)
    }

    /// Whether the map holds `key`.
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shards[self.shard_of(key)].get(key).is_some()
    }
}

impl<K: Eq + Hash + Clone, V: Clone, S: BuildHasher + Clone> ShardedMap<K, V, S> {
    /// The shard of `key`, to add to. If that shard is full, the map first grows by one
    /// shard.
    #[inline]
    fn shard_mut<Q: Hash + ?Sized>(&mut self, key: &Q) -> &mut Shard<K, V, S> {
        self.settle_next();
        let hash = self.hasher.hash_one(key);
        let mut index = shard_index(hash, self.shards.len());
        if self.shards[index].len() >= self.split_at && self.shards.len() < MAX_SHARDS {
            self.split_next();
            index = shard_index(hash, self.shards.len());
        }
        &mut self.shards[index]
    }

    /// The shard of `key`, to change an entry that may be there (no growth).
    #[inline]
    fn shard_of_mut<Q: Hash + ?Sized>(&mut self, key: &Q) -> &mut Shard<K, V, S> {
        self.settle_next();
        let index = self.shard_of(key);
        &mut self.shards[index]
    }

    /// Folds the next shard's overlay, if any, into its table if the map alone holds it.
    #[inline]
    fn settle_next(&mut self) {
        let index = if self.settling < self.shards.len() { self.settling } else { 0 };
        self.shards[index].settle_if_free();
        self.settling = index + 1;
    }

    /// Adds one shard: splits the next shard in turn (the first one not yet split at the
    /// current bit) by the next bit of the hash, its upper half becoming the new last
    /// shard. A shard something else still holds is copied into its halves, as a write
    /// would have copied it; the holder keeps the original.
    #[cold]
    fn split_next(&mut self) {
        let count = self.shards.len();
        let low = 1usize << (usize::BITS - 1 - count.leading_zeros());
        let at = count - low;
        let old = std::mem::replace(&mut self.shards[at], Shard::new(HashMap::with_hasher(self.hasher.clone())));
        // Each half gets room to grow back to the split point: it is never resized before
        // its own split, so an entry is rehashed once per split and never in between.
        let each = self.split_at.max(per_shard_capacity(old.len(), 2));
        let mut lower = HashMap::with_capacity_and_hasher(each, self.hasher.clone());
        let mut upper = HashMap::with_capacity_and_hasher(each, self.hasher.clone());
        let goes_up = |hasher: &S, key: &K| (hasher.hash_one(key) >> SHARD_BITS_AT) as usize & low != 0;
        match old.into_own_table() {
            Ok(owned) => {
                for (key, value) in owned {
                    let half = if goes_up(&self.hasher, &key) { &mut upper } else { &mut lower };
                    half.insert(key, value);
                }
            }
            Err(shared) => {
                for (key, value) in shared.iter() {
                    let half = if goes_up(&self.hasher, key) { &mut upper } else { &mut lower };
                    half.insert(key.clone(), value.clone());
                }
            }
        }
        self.shards[at] = Shard::new(lower);
        self.shards.push(Shard::new(upper));
    }

    /// The value of `key`, to change in place. While a view holds the key's shard, the
    /// entry is first copied into the shard's overlay.
    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shard_of_mut(key).get_mut(key)
    }

    /// Inserts `value` under `key`, returning the value it replaces.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.shard_mut(&key).insert(key, value)
    }

    /// Removes `key`, returning its value.
    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.remove_entry(key).map(|(_, value)| value)
    }

    /// Removes `key`, returning the stored key and its value.
    pub fn remove_entry<Q>(&mut self, key: &Q) -> Option<(K, V)>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shard_of_mut(key).remove_entry(key)
    }

    /// The entry of `key` in its shard, for in-place insertion or update: `HashMap`'s own
    /// [`Entry`]. Copies the key's shard if it is shared, whatever the entry is used for.
    pub fn entry(&mut self, key: K) -> Entry<'_, K, V> {
        self.shard_mut(&key).settle().entry(key)
    }

    /// Keeps only the entries for which `keep` returns true. Copies every shared shard.
    pub fn retain<F: FnMut(&K, &mut V) -> bool>(&mut self, mut keep: F) {
        for shard in &mut self.shards {
            shard.settle().retain(&mut keep);
        }
    }

    /// Removes every entry. A shared shard is replaced by an empty one rather than copied;
    /// an unshared one keeps its capacity.
    pub fn clear(&mut self) {
        for shard in &mut self.shards {
            shard.clear(&self.hasher);
        }
    }

    /// Makes room for `additional` more entries, spread over the shards. Copies every shared
    /// shard.
    pub fn reserve(&mut self, additional: usize) {
        let each = per_shard_capacity(additional, self.shards.len());
        for shard in &mut self.shards {
            shard.settle().reserve(each);
        }
    }

    /// The entries with mutable values. Copies each shared shard as the iteration reaches it.
    pub fn iter_mut(&mut self) -> IterMut<'_, K, V, S> {
        IterMut { shards: self.shards.iter_mut(), shard: None }
    }

    /// The values, to change in place. Copies each shared shard as the iteration reaches it.
    pub fn values_mut(&mut self) -> ValuesMut<'_, K, V, S> {
        ValuesMut { inner: self.iter_mut() }
    }
}

impl<K, V, S: Default + Clone> Default for ShardedMap<K, V, S> {
    fn default() -> Self {
        Self::with_shards_and_hasher(1, S::default())
    }
}

/// O(shards): the clone shares every shard with the original until either writes to it.
impl<K, V, S: Clone> Clone for ShardedMap<K, V, S> {
    fn clone(&self) -> Self {
        ShardedMap {
            shards: self.shards.clone(),
            hasher: self.hasher.clone(),
            split_at: self.split_at,
            settling: self.settling,
        }
    }
}

impl<K: fmt::Debug + Eq + Hash, V: fmt::Debug, S: BuildHasher> fmt::Debug for ShardedMap<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// Equal when both hold the same entries, whatever their shard counts.
impl<K: Eq + Hash, V: PartialEq, S: BuildHasher> PartialEq for ShardedMap<K, V, S> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(key, value)| other.get(key) == Some(value))
    }
}

impl<K: Eq + Hash, V: Eq, S: BuildHasher> Eq for ShardedMap<K, V, S> {}

/// Panics if the key is absent, like `HashMap`'s.
impl<K, Q, V, S> Index<&Q> for ShardedMap<K, V, S>
where
    K: Eq + Hash + Borrow<Q>,
    Q: Eq + Hash + ?Sized,
    S: BuildHasher,
{
    type Output = V;

    fn index(&self, key: &Q) -> &V {
        self.get(key).expect("key not in the ShardedMap")
    }
}

impl<K, V, S> Extend<(K, V)> for ShardedMap<K, V, S>
where
    K: Eq + Hash + Clone,
    V: Clone,
    S: BuildHasher + Clone,
{
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, entries: I) {
        for (key, value) in entries {
            self.insert(key, value);
        }
    }
}

impl<'a, K, V, S> Extend<(&'a K, &'a V)> for ShardedMap<K, V, S>
where
    K: Eq + Hash + Copy,
    V: Copy,
    S: BuildHasher + Clone,
{
    fn extend<I: IntoIterator<Item = (&'a K, &'a V)>>(&mut self, entries: I) {
        self.extend(entries.into_iter().map(|(key, value)| (*key, *value)));
    }
}

impl<K, V, S> FromIterator<(K, V)> for ShardedMap<K, V, S>
where
    K: Eq + Hash + Clone,
    V: Clone,
    S: BuildHasher + Clone + Default,
{
    fn from_iter<I: IntoIterator<Item = (K, V)>>(entries: I) -> Self {
        let mut map = Self::default();
        map.extend(entries);
        map
    }
}

impl<'a, K: Eq + Hash, V, S: BuildHasher> IntoIterator for &'a ShardedMap<K, V, S> {
    type Item = (&'a K, &'a V);
    type IntoIter = Iter<'a, K, V, S>;

    fn into_iter(self) -> Iter<'a, K, V, S> {
        self.iter()
    }
}

impl<'a, K: Eq + Hash + Clone, V: Clone, S: BuildHasher + Clone> IntoIterator for &'a mut ShardedMap<K, V, S> {
    type Item = (&'a K, &'a mut V);
    type IntoIter = IterMut<'a, K, V, S>;

    fn into_iter(self) -> IterMut<'a, K, V, S> {
        IterMut { shards: self.shards.iter_mut(), shard: None }
    }
}

/// The owned entries; a shard something else still holds is cloned entry by entry.
impl<K: Eq + Hash + Clone, V: Clone, S: BuildHasher + Clone> IntoIterator for ShardedMap<K, V, S> {
    type Item = (K, V);
    type IntoIter = IntoIter<K, V, S>;

    fn into_iter(self) -> IntoIter<K, V, S> {
        IntoIter { shards: self.shards.into_iter(), shard: None }
    }
}

/// Serializes as a plain map: the exact length, then the entries shard by shard.
impl<K: Serialize + Eq + Hash, V: Serialize, S: BuildHasher> Serialize for ShardedMap<K, V, S> {
    fn serialize<Z: Serializer>(&self, serializer: Z) -> Result<Z::Ok, Z::Error> {
        serialize_shards(&self.shards, serializer)
    }
}

/// The one serialization of a map's shards, shared with the frozen view so that both write
/// the same bytes.
pub(super) fn serialize_shards<K, V, S, Z>(shards: &[Shard<K, V, S>], serializer: Z) -> Result<Z::Ok, Z::Error>
where
    K: Serialize + Eq + Hash,
    V: Serialize,
    S: BuildHasher,
    Z: Serializer,
{
    let len = shards.iter().map(|shard| shard.len()).sum();
    let mut map = serializer.serialize_map(Some(len))?;
    for shard in shards {
        for (key, value) in shard.iter() {
            map.serialize_entry(key, value)?;
        }
    }
    map.end()
}

/// The entries of a [`ShardedMap`] or a [`FrozenMap`](super::FrozenMap): [`ShardedMap::iter`].
pub struct Iter<'a, K, V, S> {
    shards: slice::Iter<'a, Shard<K, V, S>>,
    shard: Option<ShardIter<'a, K, V, S>>,
    left: usize,
}

impl<'a, K, V, S> Iter<'a, K, V, S> {
    pub(super) fn new(shards: &'a [Shard<K, V, S>]) -> Self {
        Iter { shards: shards.iter(), shard: None, left: shards.iter().map(|shard| shard.len()).sum() }
    }
}

impl<'a, K: Eq + Hash, V, S: BuildHasher> Iterator for Iter<'a, K, V, S> {
    type Item = (&'a K, &'a V);

    fn next(&mut self) -> Option<(&'a K, &'a V)> {
        loop {
            if let Some(entry) = self.shard.as_mut().and_then(Iterator::next) {
                self.left -= 1;
                return Some(entry);
            }
            self.shard = Some(self.shards.next()?.iter());
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl<K: Eq + Hash, V, S: BuildHasher> ExactSizeIterator for Iter<'_, K, V, S> {}

impl<K, V, S> Clone for Iter<'_, K, V, S> {
    fn clone(&self) -> Self {
        Iter { shards: self.shards.clone(), shard: self.shard.clone(), left: self.left }
    }
}

impl<K: fmt::Debug + Eq + Hash, V: fmt::Debug, S: BuildHasher> fmt::Debug for Iter<'_, K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.clone()).finish()
    }
}

/// The keys of a [`ShardedMap`]: [`ShardedMap::keys`].
pub struct Keys<'a, K, V, S> {
    inner: Iter<'a, K, V, S>,
}

impl<K, V, S> Clone for Keys<'_, K, V, S> {
    fn clone(&self) -> Self {
        Keys { inner: self.inner.clone() }
    }
}

impl<'a, K: Eq + Hash, V, S: BuildHasher> Iterator for Keys<'a, K, V, S> {
    type Item = &'a K;

    fn next(&mut self) -> Option<&'a K> {
        self.inner.next().map(|(key, _)| key)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl<K: Eq + Hash, V, S: BuildHasher> ExactSizeIterator for Keys<'_, K, V, S> {}

/// The values of a [`ShardedMap`]: [`ShardedMap::values`].
pub struct Values<'a, K, V, S> {
    inner: Iter<'a, K, V, S>,
}

impl<K, V, S> Clone for Values<'_, K, V, S> {
    fn clone(&self) -> Self {
        Values { inner: self.inner.clone() }
    }
}

impl<'a, K: Eq + Hash, V, S: BuildHasher> Iterator for Values<'a, K, V, S> {
    type Item = &'a V;

    fn next(&mut self) -> Option<&'a V> {
        self.inner.next().map(|(_, value)| value)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl<K: Eq + Hash, V, S: BuildHasher> ExactSizeIterator for Values<'_, K, V, S> {}

/// The entries of a [`ShardedMap`] with mutable values: [`ShardedMap::iter_mut`].
pub struct IterMut<'a, K, V, S> {
    shards: slice::IterMut<'a, Shard<K, V, S>>,
    shard: Option<hash_map::IterMut<'a, K, V>>,
}

impl<'a, K: Eq + Hash + Clone, V: Clone, S: BuildHasher + Clone> Iterator for IterMut<'a, K, V, S> {
    type Item = (&'a K, &'a mut V);

    fn next(&mut self) -> Option<(&'a K, &'a mut V)> {
        loop {
            if let Some(entry) = self.shard.as_mut().and_then(Iterator::next) {
                return Some(entry);
            }
            // Copied only once reached: an iteration stopped early leaves the rest shared.
            self.shard = Some(self.shards.next()?.settle().iter_mut());
        }
    }
}

/// The values of a [`ShardedMap`], to change in place: [`ShardedMap::values_mut`].
pub struct ValuesMut<'a, K, V, S> {
    inner: IterMut<'a, K, V, S>,
}

impl<'a, K: Eq + Hash + Clone, V: Clone, S: BuildHasher + Clone> Iterator for ValuesMut<'a, K, V, S> {
    type Item = &'a mut V;

    fn next(&mut self) -> Option<&'a mut V> {
        self.inner.next().map(|(_, value)| value)
    }
}

/// The owned entries of a [`ShardedMap`]: its `IntoIterator`.
pub struct IntoIter<K, V, S> {
    shards: std::vec::IntoIter<Shard<K, V, S>>,
    shard: Option<hash_map::IntoIter<K, V>>,
}

impl<K: Eq + Hash + Clone, V: Clone, S: BuildHasher + Clone> Iterator for IntoIter<K, V, S> {
    type Item = (K, V);

    fn next(&mut self) -> Option<(K, V)> {
        loop {
            if let Some(entry) = self.shard.as_mut().and_then(Iterator::next) {
                return Some(entry);
            }
            self.shard = Some(self.shards.next()?.into_table().into_iter());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Freeze;

    /// Once the view is gone, one write per shard folds every overlay back, wherever the
    /// writes land: reads stop looking in two tables.
    #[test]
    fn writes_fold_every_overlay_back_once_the_view_is_gone() {
        let mut map: ShardedMap<u32, u32> = ShardedMap::with_shards(4).split_at(usize::MAX);
        map.extend((0..400).map(|i| (i, i)));
        let view = map.freeze();
        for i in 0..40 {
            map.insert(i, i + 1);
        }
        assert!(map.shards.iter().all(Shard::has_overlay));
        drop(view);
        // Four writes, all to one key: its shard folds on the write, the others in turn.
        for _ in 0..map.shard_count() {
            map.insert(0, 0);
        }
        assert!(!map.shards.iter().any(Shard::has_overlay));
    }
}
