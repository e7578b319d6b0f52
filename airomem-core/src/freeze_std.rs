//! [`Freeze`] for std's scalars, and through `Option`, `Box`, `Arc` and tuples.
//!
//! Here and not in the facade: the orphan rule lets only the trait's crate implement it for
//! std's types.
//!
//! Deliberately absent: `String`, `Vec`, `HashMap` and the other std collections. Their only
//! view is a clone, O(entries) under the state lock, a stall that grows with the data; the
//! facade's `ByClone` wrapper is the explicit way to accept that for a small field.

use std::sync::Arc;
use std::time::Duration;

use crate::Freeze;

/// Types whose copy is their view.
macro_rules! freeze_by_copy {
    ($($t:ty),* $(,)?) => {$(
        /// The copy is the view.
        impl Freeze for $t {
            type Frozen = $t;

            fn freeze(&self) -> $t {
                *self
            }
        }
    )*};
}

freeze_by_copy!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, f32, f64, bool, char, (), Duration);

/// The inner value's view: `Option` serializes as `Some(view)` or `None` either way.
impl<T: Freeze> Freeze for Option<T> {
    type Frozen = Option<T::Frozen>;

    fn freeze(&self) -> Option<T::Frozen> {
        self.as_ref().map(T::freeze)
    }

    fn copied(frozen: &Option<T::Frozen>) -> u64 {
        frozen.as_ref().map_or(0, T::copied)
    }
}

/// The boxed value's view: serde serializes a `Box<T>` as the `T`.
impl<T: Freeze + ?Sized> Freeze for Box<T> {
    type Frozen = T::Frozen;

    fn freeze(&self) -> T::Frozen {
        (**self).freeze()
    }

    fn copied(frozen: &T::Frozen) -> u64 {
        T::copied(frozen)
    }
}

/// The shared value's view, not the `Arc` itself: an `Arc` of a value with interior
/// mutability (a `Mutex`, atomics) would go on changing under a view that merely cloned it.
/// serde (feature `rc`) serializes an `Arc<T>` as the `T`.
impl<T: Freeze + ?Sized> Freeze for Arc<T> {
    type Frozen = T::Frozen;

    fn freeze(&self) -> T::Frozen {
        (**self).freeze()
    }

    fn copied(frozen: &T::Frozen) -> u64 {
        T::copied(frozen)
    }
}

/// Tuples of freezable values: a tuple of views serializes as the tuple.
macro_rules! freeze_tuple {
    ($($name:ident $index:tt),+) => {
        /// Each element's view.
        impl<$($name: Freeze),+> Freeze for ($($name,)+) {
            type Frozen = ($($name::Frozen,)+);

            fn freeze(&self) -> Self::Frozen {
                ($(self.$index.freeze(),)+)
            }

            fn copied(frozen: &Self::Frozen) -> u64 {
                0 $(+ $name::copied(&frozen.$index))+
            }
        }
    };
}

freeze_tuple!(A 0);
freeze_tuple!(A 0, B 1);
freeze_tuple!(A 0, B 1, C 2);
freeze_tuple!(A 0, B 1, C 2, D 3);
