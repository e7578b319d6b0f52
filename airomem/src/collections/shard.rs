//! [`Shard`]: one shard of a [`ShardedMap`](super::ShardedMap), with the changes made to it
//! while its table was shared kept beside the table rather than in a copy of it.
//!
//! A frozen view holds every shard's table. Copying a table on the first write after a
//! freeze (copy-on-write per shard) costs the writer the whole shard and the process a
//! second copy of every shard written to while the snapshot is taken; keys are spread by
//! hash, so a tenth of the keys changing touches nearly every shard, and memory doubles
//! however few keys change. Here a write to a shared table goes into the shard's overlay
//! instead: the changed entries only, each one key and its new value (or its removal).
//! Reads look in the overlay first. Once the table is no longer shared (the view is gone),
//! the next write to the shard, or the map's settling of one shard per write, folds the
//! overlay back into the table, in place.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::collections::hash_map;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

/// The changes made to a shard while its table was shared: a key's new value, or `None`
/// for a key removed.
pub(super) type Overlay<K, V, S> = HashMap<K, Option<V>, S>;

/// One shard: a table, shared with frozen views (and clones of the map) through its `Arc`,
/// and while it is shared, the overlay of what changed since.
pub(crate) struct Shard<K, V, S> {
    table: Arc<HashMap<K, V, S>>,
    /// Changes on top of `table`, if any were made while it was shared.
    overlay: Option<Arc<Overlay<K, V, S>>>,
    /// Entries as seen through the overlay, while there is one (the table's own count
    /// otherwise).
    len: usize,
}

impl<K, V, S> Clone for Shard<K, V, S> {
    fn clone(&self) -> Self {
        Shard { table: Arc::clone(&self.table), overlay: self.overlay.clone(), len: self.len }
    }
}

impl<K, V, S> Shard<K, V, S> {
    pub(super) fn new(table: HashMap<K, V, S>) -> Self {
        Shard { len: table.len(), table: Arc::new(table), overlay: None }
    }

    pub(super) fn len(&self) -> usize {
        match self.overlay {
            None => self.table.len(),
            Some(_) => self.len,
        }
    }

    /// Whether changes wait beside the table.
    #[cfg(test)]
    pub(super) fn has_overlay(&self) -> bool {
        self.overlay.is_some()
    }

    /// Whether the map has replaced this shard's table since `self` was taken from it: the
    /// frozen view's own copy is then the table's last holder.
    pub(super) fn table_is_only_here(&self) -> bool {
        Arc::strong_count(&self.table) == 1
    }

    /// The entries: the overlay's, then the table's that the overlay does not change.
    pub(super) fn iter(&self) -> ShardIter<'_, K, V, S> {
        ShardIter {
            overlay: self.overlay.as_deref().map(|overlay| (overlay, overlay.iter())),
            table: self.table.iter(),
        }
    }
}

impl<K: Eq + Hash, V, S: BuildHasher> Shard<K, V, S> {
    pub(super) fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get_key_value(key).map(|(_, value)| value)
    }

    pub(super) fn get_key_value<Q>(&self, key: &Q) -> Option<(&K, &V)>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(overlay) = &self.overlay
            && let Some((key, change)) = overlay.get_key_value(key)
        {
            return change.as_ref().map(|value| (key, value));
        }
        self.table.get_key_value(key)
    }
}

/// A write goes to the overlay while it holds fewer entries than the table's count divided
/// by this (a quarter): past that, copying the shard once costs less than looking in both
/// and than the memory the overlay already takes. A table of fewer than four entries is
/// copied at once: that copy costs less than starting an overlay.
const OVERLAY_SHARE: usize = 4;

impl<K: Eq + Hash + Clone, V: Clone, S: BuildHasher + Clone> Shard<K, V, S> {
    /// Whether a write now goes to the overlay: the table is shared and the overlay small.
    fn overlays(&mut self) -> bool {
        if Arc::get_mut(&mut self.table).is_some() {
            return false;
        }
        let overlaid = self.overlay.as_ref().map_or(0, |overlay| overlay.len());
        overlaid < self.table.len() / OVERLAY_SHARE
    }

    /// The shard's own table, with the overlay folded into it: copied first if something
    /// else still holds it.
    pub(super) fn settle(&mut self) -> &mut HashMap<K, V, S> {
        let table = Arc::make_mut(&mut self.table);
        if let Some(overlay) = self.overlay.take() {
            let len = self.len;
            match Arc::try_unwrap(overlay) {
                Ok(owned) => {
                    for (key, change) in owned {
                        match change {
                            Some(value) => table.insert(key, value),
                            None => table.remove(&key),
                        };
                    }
                }
                Err(shared) => {
                    for (key, change) in shared.iter() {
                        match change {
                            Some(value) => table.insert(key.clone(), value.clone()),
                            None => table.remove(key),
                        };
                    }
                }
            }
            debug_assert_eq!(table.len(), len, "the overlay's count and the folded table's");
        }
        table
    }

    /// The table to write to in place, when no view holds it and no overlay is left: the
    /// path of every write outside snapshots, one uniqueness check and nothing else.
    #[inline]
    fn own_table(&mut self) -> Option<&mut HashMap<K, V, S>> {
        if self.overlay.is_some() {
            return None;
        }
        Arc::get_mut(&mut self.table)
    }

    /// Removes every entry: the table cleared in place (keeping its capacity) if it is the
    /// shard's alone, replaced by an empty one otherwise, never copied.
    pub(super) fn clear(&mut self, hasher: &S) {
        self.overlay = None;
        match Arc::get_mut(&mut self.table) {
            Some(table) => table.clear(),
            None => self.table = Arc::new(HashMap::with_hasher(hasher.clone())),
        }
    }

    /// Folds the overlay into the table if nothing else holds the table any more, without
    /// copying anything. Returns whether there was an overlay to fold.
    pub(super) fn settle_if_free(&mut self) -> bool {
        if self.overlay.is_some() && Arc::get_mut(&mut self.table).is_some() {
            self.settle();
            return true;
        }
        false
    }

    /// The overlay, to change: started (counting the table's entries) if there is none,
    /// copied first if a frozen view holds it.
    fn overlay_mut(&mut self) -> &mut Overlay<K, V, S> {
        if self.overlay.is_none() {
            self.len = self.table.len();
            self.overlay = Some(Arc::new(HashMap::with_hasher(self.table.hasher().clone())));
        }
        Arc::make_mut(self.overlay.as_mut().expect("just made"))
    }

    /// The shard's table as its own, overlay folded in, copied if something else holds it.
    pub(super) fn into_table(mut self) -> HashMap<K, V, S> {
        self.settle();
        // Unique after `settle`: no copy here.
        Arc::unwrap_or_clone(self.table)
    }

    /// The table itself if nothing else holds it (overlay folded in first); otherwise the
    /// shard back, to be read.
    pub(super) fn into_own_table(mut self) -> Result<HashMap<K, V, S>, Self> {
        self.settle_if_free();
        if self.overlay.is_some() {
            return Err(self);
        }
        Arc::try_unwrap(self.table).map_err(|table| Shard { table, overlay: None, len: 0 })
    }

    /// Drops an overlay left empty, so that `None` stays the only empty overlay.
    fn drop_empty_overlay(&mut self) {
        if self.overlay.as_ref().is_some_and(|overlay| overlay.is_empty()) {
            self.overlay = None;
        }
    }

    /// Inserts `value` under `key`, returning the value it replaces.
    pub(super) fn insert(&mut self, key: K, value: V) -> Option<V> {
        if let Some(table) = self.own_table() {
            return table.insert(key, value);
        }
        if !self.overlays() {
            return self.settle().insert(key, value);
        }
        // The value replaced: the overlay's own, or a copy of the table's.
        let old = match self.overlay.as_ref().and_then(|overlay| overlay.get(&key)) {
            Some(change) => change.clone(),
            None => self.table.get(&key).cloned(),
        };
        self.overlay_mut().insert(key, Some(value));
        self.len += usize::from(old.is_none());
        old
    }

    /// Removes `key`, returning the stored key and its value.
    pub(super) fn remove_entry<Q>(&mut self, key: &Q) -> Option<(K, V)>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(table) = self.own_table() {
            return table.remove_entry(key);
        }
        // A miss changes nothing: no reason to copy a table or start an overlay.
        self.get(key)?;
        if !self.overlays() {
            return self.settle().remove_entry(key);
        }
        let in_table = self.table.get_key_value(key).map(|(key, value)| (key.clone(), value.clone()));
        // Started (and counted) first, so that the count taken is the one before the removal.
        self.overlay_mut();
        self.len -= 1;
        let overlay = self.overlay_mut();
        match (overlay.remove_entry(key), in_table) {
            // Changed since the freeze: the overlay's value is the one removed, and the
            // table's entry must stay hidden.
            (Some((key, Some(value))), Some(_)) => {
                overlay.insert(key.clone(), None);
                Some((key, value))
            }
            // Added since the freeze: gone from the overlay, nothing to hide.
            (Some((key, Some(value))), None) => {
                self.drop_empty_overlay();
                Some((key, value))
            }
            // As in the table: hidden from now on.
            (None, Some((key, value))) => {
                overlay.insert(key.clone(), None);
                Some((key, value))
            }
            (Some((_, None)), _) | (None, None) => unreachable!("`get` found the key"),
        }
    }

    /// The value of `key`, to change in place: a shared table's entry is first copied into
    /// the overlay.
    pub(super) fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if self.own_table().is_some() {
            return self.own_table().and_then(|table| table.get_mut(key));
        }
        // A miss changes nothing.
        self.get(key)?;
        if !self.overlays() {
            return self.settle().get_mut(key);
        }
        let in_overlay = self.overlay.as_ref().is_some_and(|overlay| overlay.contains_key(key));
        if !in_overlay {
            let (key, value) = self.table.get_key_value(key).map(|(key, value)| (key.clone(), value.clone()))?;
            self.overlay_mut().insert(key, Some(value));
        }
        self.overlay_mut().get_mut(key).and_then(Option::as_mut)
    }
}

/// An overlay, to look keys of the table up in, and its entries still to go.
type OverlayWalk<'a, K, V, S> = (&'a Overlay<K, V, S>, hash_map::Iter<'a, K, Option<V>>);

/// The entries of one [`Shard`]: [`Shard::iter`].
pub(crate) struct ShardIter<'a, K, V, S> {
    overlay: Option<OverlayWalk<'a, K, V, S>>,
    table: hash_map::Iter<'a, K, V>,
}

impl<K, V, S> Clone for ShardIter<'_, K, V, S> {
    fn clone(&self) -> Self {
        ShardIter { overlay: self.overlay.clone(), table: self.table.clone() }
    }
}

impl<'a, K: Eq + Hash, V, S: BuildHasher> Iterator for ShardIter<'a, K, V, S> {
    type Item = (&'a K, &'a V);

    fn next(&mut self) -> Option<(&'a K, &'a V)> {
        if let Some((_, changes)) = &mut self.overlay {
            for (key, change) in changes.by_ref() {
                if let Some(value) = change {
                    return Some((key, value));
                }
            }
        }
        match &self.overlay {
            None => self.table.next(),
            Some((overlay, _)) => self.table.by_ref().find(|(key, _)| !overlay.contains_key(*key)),
        }
    }
}
