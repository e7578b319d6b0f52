//! [`ShardedMap`]: a hash map split into a fixed number of copy-on-write shards.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::collections::hash_map::{self, Entry, RandomState};
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::ops::Index;
use std::slice;
use std::sync::Arc;

use serde::ser::{Serialize, SerializeMap, Serializer};

/// The shard count of [`ShardedMap::new`], [`ShardedMap::default`] and of a decoded map of
/// up to a million entries.
///
/// A freeze clones one `Arc` per shard; the first write to a shard after a freeze copies
/// that shard, 80 to 660 ns per entry with 32-byte string keys (each key is allocated
/// again; the spread is the shared machine's). Measured on 2 cores (`collections_measure`,
/// two runs), 64 / 256 / 1024 shards: a freeze takes 0.1–0.2 / 0.6–0.9 / 3.2–3.9 µs at any
/// size; the first write to a shard takes on average 4.5–10 / 0.6–1.0 / 0.15–0.24 ms at 1M
/// entries and 24–29 / 2.7 / 0.5–0.7 ms at 4M. 256 keeps that write around a millisecond
/// up to a million entries for 16 KiB of shard headers per map (an empty map too); a
/// larger map asks for more with [`ShardedMap::with_shards`], and a decoded one gets about
/// one shard per 4096 entries.
pub const DEFAULT_SHARDS: usize = 256;

/// The most shards a map can have: the shard index takes at most 16 bits of the hash.
pub const MAX_SHARDS: usize = 1 << MAX_SHARD_BITS;

const MAX_SHARD_BITS: u32 = 16;

/// A `HashMap` made of a fixed number of copy-on-write shards: a sharded copy-on-write map.
///
/// Each shard is an `Arc<HashMap<K, V, S>>`. Reads go to the key's shard; a write goes
/// through [`Arc::make_mut`] on it, which copies the shard only when something else (a
/// frozen view, a clone of the map) still holds it. That makes a point-in-time view
/// ([`crate::Freeze`], [`FrozenMap`](super::FrozenMap)) and a [`Clone`] cost one `Arc`
/// clone per shard, whatever the size, and the first write to each shard afterwards pays
/// for copying that one shard, once.
///
/// It serializes as a plain map, so its bytes (and JSON) are those of a `HashMap` with the
/// same entries in the same order, and it decodes from any map.
///
/// Differences from `HashMap`: [`len`](Self::len) and [`is_empty`](Self::is_empty) visit
/// every shard (O(shards)); writes need `K`, `V` and `S` to be [`Clone`] (to copy a shared
/// shard); [`entry`](Self::entry), [`iter_mut`](Self::iter_mut), [`retain`](Self::retain)
/// and [`reserve`](Self::reserve) copy a shared shard even when they end up changing
/// nothing ([`get_mut`](Self::get_mut) and [`remove`](Self::remove) do not on a miss); the
/// owned [`IntoIterator`] clones the entries of a shard something else still holds. A
/// decoded map has [`DEFAULT_SHARDS`] shards, or more when it is large (see its
/// `Deserialize`).
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
    pub(super) shards: Vec<Arc<HashMap<K, V, S>>>,
    pub(super) hasher: S,
    pub(super) shift: u32,
}

/// Bits of a 64-bit hash that choose the shard, as a right shift: the `bits` bits just
/// below the top 7.
///
/// Why those bits: each shard's `HashMap` (hashbrown) takes its bucket index from the low
/// bits of the same hash and the 7-bit tag it compares before any key from the top 7 bits.
/// Keys of one shard all share the shard bits; were those the top bits, every key of a
/// shard would carry the same tag, and each probe would compare keys at every occupied
/// slot of its group. Were they the low bits, each shard would use only a fraction of its
/// buckets. Bits 41 to 56 are neither, until a shard holds 2^41 buckets.
pub(super) fn shard_shift(shards: usize) -> u32 {
    57 - shards.trailing_zeros()
}

/// The shard of `hash` for a map whose shards are `mask + 1` (a power of two).
#[inline]
pub(super) fn shard_index(hash: u64, shift: u32, mask: usize) -> usize {
    (hash >> shift) as usize & mask
}

/// The shard count a request becomes: a power of two in `1..=MAX_SHARDS`.
pub(super) fn shard_count(requested: usize) -> usize {
    requested.clamp(1, MAX_SHARDS).next_power_of_two()
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
    /// An empty map with [`DEFAULT_SHARDS`] shards.
    pub fn new() -> Self {
        Self::with_shards_and_hasher(DEFAULT_SHARDS, RandomState::new())
    }

    /// An empty map with `shards` shards, rounded up to a power of two and at most
    /// [`MAX_SHARDS`]. More shards make a freeze and a clone slower and the first write to
    /// a shard after one faster.
    pub fn with_shards(shards: usize) -> Self {
        Self::with_shards_and_hasher(shards, RandomState::new())
    }

    /// An empty map with [`DEFAULT_SHARDS`] shards that together hold at least `capacity`
    /// entries without growing, if the keys spread evenly.
    pub fn with_capacity(capacity: usize) -> Self {
        Self::with_capacity_and_hasher(capacity, RandomState::new())
    }
}

impl<K, V, S: Clone> ShardedMap<K, V, S> {
    /// An empty map with [`DEFAULT_SHARDS`] shards that hashes keys with `hasher`.
    pub fn with_hasher(hasher: S) -> Self {
        Self::with_shards_and_hasher(DEFAULT_SHARDS, hasher)
    }

    /// An empty map with `shards` shards (see [`ShardedMap::with_shards`]) hashing with
    /// `hasher`.
    pub fn with_shards_and_hasher(shards: usize, hasher: S) -> Self {
        Self::with_layout(shards, 0, hasher)
    }

    /// An empty map with [`DEFAULT_SHARDS`] shards, room for `capacity` entries, hashing
    /// with `hasher`.
    pub fn with_capacity_and_hasher(capacity: usize, hasher: S) -> Self {
        Self::with_layout(DEFAULT_SHARDS, capacity, hasher)
    }

    pub(super) fn with_layout(shards: usize, capacity: usize, hasher: S) -> Self {
        let count = shard_count(shards);
        let each = per_shard_capacity(capacity, count);
        let shards = (0..count).map(|_| Arc::new(HashMap::with_capacity_and_hasher(each, hasher.clone()))).collect();
        ShardedMap { shards, hasher, shift: shard_shift(count) }
    }
}

impl<K, V, S> ShardedMap<K, V, S> {
    /// The number of entries. Visits every shard.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.len()).sum()
    }

    /// Whether the map has no entries. Visits every shard.
    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(|shard| shard.is_empty())
    }

    /// The number of shards, fixed at construction.
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
        shard_index(self.hasher.hash_one(key), self.shift, self.shards.len() - 1)
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
        self.shards[self.shard_of(key)].contains_key(key)
    }
}

impl<K: Eq + Hash + Clone, V: Clone, S: BuildHasher + Clone> ShardedMap<K, V, S> {
    /// The shard of `key`, copied first if something else still holds it.
    #[inline]
    fn shard_mut<Q: Hash + ?Sized>(&mut self, key: &Q) -> &mut HashMap<K, V, S> {
        let index = self.shard_of(key);
        Arc::make_mut(&mut self.shards[index])
    }

    /// The value of `key`, to change in place. Copies the key's shard if it is shared and
    /// holds the key.
    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let index = self.shard_of(key);
        let shard = &mut self.shards[index];
        // A miss changes nothing: no reason to copy a shard a view still holds.
        if !shard.contains_key(key) {
            return None;
        }
        Arc::make_mut(shard).get_mut(key)
    }

    /// Inserts `value` under `key`, returning the value it replaces.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.shard_mut(&key).insert(key, value)
    }

    /// Removes `key`, returning its value. Copies the key's shard if it is shared and holds
    /// the key.
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
        let index = self.shard_of(key);
        let shard = &mut self.shards[index];
        if !shard.contains_key(key) {
            return None;
        }
        Arc::make_mut(shard).remove_entry(key)
    }

    /// The entry of `key` in its shard, for in-place insertion or update: `HashMap`'s own
    /// [`Entry`]. Copies the key's shard if it is shared, whatever the entry is used for.
    pub fn entry(&mut self, key: K) -> Entry<'_, K, V> {
        self.shard_mut(&key).entry(key)
    }

    /// Keeps only the entries for which `keep` returns true. Copies every shared shard.
    pub fn retain<F: FnMut(&K, &mut V) -> bool>(&mut self, mut keep: F) {
        for shard in &mut self.shards {
            Arc::make_mut(shard).retain(&mut keep);
        }
    }

    /// Removes every entry. A shared shard is replaced by an empty one rather than copied;
    /// an unshared one keeps its capacity.
    pub fn clear(&mut self) {
        for shard in &mut self.shards {
            match Arc::get_mut(shard) {
                Some(owned) => owned.clear(),
                None => *shard = Arc::new(HashMap::with_hasher(self.hasher.clone())),
            }
        }
    }

    /// Makes room for `additional` more entries, spread over the shards. Copies every shared
    /// shard.
    pub fn reserve(&mut self, additional: usize) {
        let each = per_shard_capacity(additional, self.shards.len());
        for shard in &mut self.shards {
            Arc::make_mut(shard).reserve(each);
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
        Self::with_shards_and_hasher(DEFAULT_SHARDS, S::default())
    }
}

/// O(shards): the clone shares every shard with the original until either writes to it.
impl<K, V, S: Clone> Clone for ShardedMap<K, V, S> {
    fn clone(&self) -> Self {
        ShardedMap { shards: self.shards.clone(), hasher: self.hasher.clone(), shift: self.shift }
    }
}

impl<K: fmt::Debug, V: fmt::Debug, S> fmt::Debug for ShardedMap<K, V, S> {
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

impl<'a, K, V, S> IntoIterator for &'a ShardedMap<K, V, S> {
    type Item = (&'a K, &'a V);
    type IntoIter = Iter<'a, K, V, S>;

    fn into_iter(self) -> Iter<'a, K, V, S> {
        self.iter()
    }
}

impl<'a, K: Clone, V: Clone, S: Clone> IntoIterator for &'a mut ShardedMap<K, V, S> {
    type Item = (&'a K, &'a mut V);
    type IntoIter = IterMut<'a, K, V, S>;

    fn into_iter(self) -> IterMut<'a, K, V, S> {
        IterMut { shards: self.shards.iter_mut(), shard: None }
    }
}

/// The owned entries; a shard something else still holds is cloned entry by entry.
impl<K: Clone, V: Clone, S: Clone> IntoIterator for ShardedMap<K, V, S> {
    type Item = (K, V);
    type IntoIter = IntoIter<K, V, S>;

    fn into_iter(self) -> IntoIter<K, V, S> {
        IntoIter { shards: self.shards.into_iter(), shard: None }
    }
}

/// Serializes as a plain map: the exact length, then the entries shard by shard.
impl<K: Serialize, V: Serialize, S> Serialize for ShardedMap<K, V, S> {
    fn serialize<Z: Serializer>(&self, serializer: Z) -> Result<Z::Ok, Z::Error> {
        serialize_shards(&self.shards, serializer)
    }
}

/// The one serialization of a map's shards, shared with the frozen view so that both write
/// the same bytes.
pub(super) fn serialize_shards<K, V, S, Z>(shards: &[Arc<HashMap<K, V, S>>], serializer: Z) -> Result<Z::Ok, Z::Error>
where
    K: Serialize,
    V: Serialize,
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
    shards: slice::Iter<'a, Arc<HashMap<K, V, S>>>,
    shard: Option<hash_map::Iter<'a, K, V>>,
    left: usize,
}

impl<'a, K, V, S> Iter<'a, K, V, S> {
    pub(super) fn new(shards: &'a [Arc<HashMap<K, V, S>>]) -> Self {
        Iter { shards: shards.iter(), shard: None, left: shards.iter().map(|shard| shard.len()).sum() }
    }
}

impl<'a, K, V, S> Iterator for Iter<'a, K, V, S> {
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

impl<K, V, S> ExactSizeIterator for Iter<'_, K, V, S> {}

impl<K, V, S> Clone for Iter<'_, K, V, S> {
    fn clone(&self) -> Self {
        Iter { shards: self.shards.clone(), shard: self.shard.clone(), left: self.left }
    }
}

impl<K: fmt::Debug, V: fmt::Debug, S> fmt::Debug for Iter<'_, K, V, S> {
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

impl<'a, K, V, S> Iterator for Keys<'a, K, V, S> {
    type Item = &'a K;

    fn next(&mut self) -> Option<&'a K> {
        self.inner.next().map(|(key, _)| key)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl<K, V, S> ExactSizeIterator for Keys<'_, K, V, S> {}

/// The values of a [`ShardedMap`]: [`ShardedMap::values`].
pub struct Values<'a, K, V, S> {
    inner: Iter<'a, K, V, S>,
}

impl<K, V, S> Clone for Values<'_, K, V, S> {
    fn clone(&self) -> Self {
        Values { inner: self.inner.clone() }
    }
}

impl<'a, K, V, S> Iterator for Values<'a, K, V, S> {
    type Item = &'a V;

    fn next(&mut self) -> Option<&'a V> {
        self.inner.next().map(|(_, value)| value)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl<K, V, S> ExactSizeIterator for Values<'_, K, V, S> {}

/// The entries of a [`ShardedMap`] with mutable values: [`ShardedMap::iter_mut`].
pub struct IterMut<'a, K, V, S> {
    shards: slice::IterMut<'a, Arc<HashMap<K, V, S>>>,
    shard: Option<hash_map::IterMut<'a, K, V>>,
}

impl<'a, K: Clone, V: Clone, S: Clone> Iterator for IterMut<'a, K, V, S> {
    type Item = (&'a K, &'a mut V);

    fn next(&mut self) -> Option<(&'a K, &'a mut V)> {
        loop {
            if let Some(entry) = self.shard.as_mut().and_then(Iterator::next) {
                return Some(entry);
            }
            // Copied only once reached: an iteration stopped early leaves the rest shared.
            self.shard = Some(Arc::make_mut(self.shards.next()?).iter_mut());
        }
    }
}

/// The values of a [`ShardedMap`], to change in place: [`ShardedMap::values_mut`].
pub struct ValuesMut<'a, K, V, S> {
    inner: IterMut<'a, K, V, S>,
}

impl<'a, K: Clone, V: Clone, S: Clone> Iterator for ValuesMut<'a, K, V, S> {
    type Item = &'a mut V;

    fn next(&mut self) -> Option<&'a mut V> {
        self.inner.next().map(|(_, value)| value)
    }
}

/// The owned entries of a [`ShardedMap`]: its `IntoIterator`.
pub struct IntoIter<K, V, S> {
    shards: std::vec::IntoIter<Arc<HashMap<K, V, S>>>,
    shard: Option<hash_map::IntoIter<K, V>>,
}

impl<K: Clone, V: Clone, S: Clone> Iterator for IntoIter<K, V, S> {
    type Item = (K, V);

    fn next(&mut self) -> Option<(K, V)> {
        loop {
            if let Some(entry) = self.shard.as_mut().and_then(Iterator::next) {
                return Some(entry);
            }
            self.shard = Some(Arc::unwrap_or_clone(self.shards.next()?).into_iter());
        }
    }
}
