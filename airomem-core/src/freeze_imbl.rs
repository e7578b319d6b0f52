//! [`Freeze`] for imbl's persistent collections (feature `imbl`): the view is a clone, O(1),
//! since a clone shares the whole tree and neither side ever changes a node the other
//! holds.
//!
//! Here and not in the facade: the orphan rule lets only the trait's crate (or imbl)
//! implement it. Every shared-pointer kind works whose collection can cross to the snapshot
//! thread (`Send`), so imbl's default (`Arc`) and not `Rc`.

use imbl::shared_ptr::SharedPointerKind;
use imbl::{GenericHashMap, GenericHashSet, GenericOrdMap, GenericOrdSet, GenericVector};
use serde::Serialize;

use crate::Freeze;

macro_rules! freeze_by_clone {
    ($([$($param:ident),*] $t:ty;)*) => {$(
        /// O(1): the clone shares the tree. A clone iterates, so serializes, as the original.
        impl<$($param,)* P: SharedPointerKind> Freeze for $t
        where
            Self: Clone + Serialize + Send + 'static,
        {
            type Frozen = Self;

            fn freeze(&self) -> Self {
                self.clone()
            }
        }
    )*};
}

freeze_by_clone! {
    [K, V, S] GenericHashMap<K, V, S, P>;
    [K, V] GenericOrdMap<K, V, P>;
    [A, S] GenericHashSet<A, S, P>;
    [A] GenericOrdSet<A, P>;
    [A] GenericVector<A, P>;
}
