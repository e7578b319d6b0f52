//! [`ByClone`]: a freeze that clones, the explicit opt-in for small values.

use std::ops::{Deref, DerefMut};

use airomem_core::Freeze;
use serde::{Deserialize, Serialize};

/// A value whose frozen view is a clone of it: [`Freeze`] for any `Clone` type, in the
/// clone's time.
///
/// The freeze runs with the store's state lock held, so the writers wait for the whole
/// clone: meant for values small enough that this is nothing (a config, a counter table of
/// a few hundred entries), or whose clone is O(1) by construction (an `Arc<T>` of a value
/// without interior mutability). For anything that grows with the data, use a collection
/// that freezes in O(1) or O(shards) ([`ShardedMap`](super::ShardedMap), `imbl`'s).
///
/// Transparent: it serializes and decodes exactly as `T`, so wrapping a field in it changes
/// no byte of a snapshot or a command.
///
/// ```
/// use airomem::Freeze;
/// use airomem::collections::ByClone;
///
/// let mut limits = ByClone(vec![10, 20]);
/// let frozen = limits.freeze();
/// limits.push(30);
/// assert_eq!(frozen, vec![10, 20]);
/// ```
#[derive(Serialize, Deserialize, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
#[serde(transparent)]
pub struct ByClone<T>(pub T);

impl<T> ByClone<T> {
    /// The wrapped value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> From<T> for ByClone<T> {
    fn from(value: T) -> Self {
        ByClone(value)
    }
}

impl<T> Deref for ByClone<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> DerefMut for ByClone<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

/// O(the clone), under the state lock.
impl<T: Clone + Serialize + Send + 'static> Freeze for ByClone<T> {
    type Frozen = T;

    fn freeze(&self) -> T {
        self.0.clone()
    }
}
