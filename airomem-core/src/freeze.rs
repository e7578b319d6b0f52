//! Snapshots that do not stop the writers: a state hands out an immutable view of itself
//! as it is at one sequence number, in time independent of its size, and the snapshot
//! thread serializes that view while commits go on.
//!
//! The name: the writer *freezes* the state for as long as the view takes to make (the
//! writers' stall, [`crate::State::snapshot_view`]'s cost), never for as long as the state
//! takes to serialize.

use std::fmt;
use std::io::Write;

use serde::Serialize;

use crate::{CodecError, Serializer};

/// A value that can hand out an immutable, point-in-time view of itself cheaply: in O(1) or
/// in O(parts) (shards, chunks), never in O(entries).
///
/// The view is what a snapshot serializes, on another thread and with no lock held, while
/// the value it came from goes on changing. Two rules make that safe:
///
/// * **Same bytes.** `freeze(&x)` must serialize to exactly the bytes `x` serializes to,
///   with every serializer, because a snapshot is decoded as the value's own type.
/// * **Really frozen.** Changes to the value after `freeze` must not show in the view. A
///   persistent collection gets this for free (a clone shares structure and never changes);
///   a sharded map keeps what is written to a shard a view still holds beside that shard
///   (or copies the shard), never in it.
///
/// Implemented for the collections in `airomem::collections` and, with the facade's `imbl`
/// feature, for `imbl`'s maps, sets and vectors. For a struct whose fields all implement it,
/// `#[derive(Freeze)]` (facade feature `derive`) writes the implementation. A small state
/// can opt in by cloning (`airomem::collections::ByClone`): the stall is then the clone's
/// time, often a fraction of the serialization's.
pub trait Freeze {
    /// The frozen view.
    type Frozen: Serialize + Send + 'static;

    /// Takes the view. Called with the store's state lock held: it must be cheap.
    fn freeze(&self) -> Self::Frozen;

    /// How many parts (shards) of `frozen` writers had to copy because the view held them,
    /// asked once the snapshot is written: what the snapshot cost the writers besides the
    /// freeze. Types that cannot tell answer 0.
    fn copied(frozen: &Self::Frozen) -> u64 {
        let _ = frozen;
        0
    }
}

/// A state's frozen view on its way to a snapshot written by serializer `Z`: what
/// [`crate::State::snapshot_view`] returns when a state opts in.
///
/// It owns the view; the store moves it to the snapshot thread, which writes it and then
/// drops it (releasing the parts the writers share with it).
pub struct SnapshotView<Z> {
    write: WriteView<Z>,
}

/// Serializes a view with the given serializer; returns [`Freeze::copied`] of it.
type WriteView<Z> = Box<dyn FnOnce(&Z, &mut dyn Write) -> Result<u64, CodecError> + Send>;

impl<Z: Serializer> SnapshotView<Z> {
    /// The view of `value`, taken now by [`Freeze::freeze`].
    pub fn of<T: Freeze + ?Sized>(value: &T) -> SnapshotView<Z> {
        let frozen = value.freeze();
        SnapshotView {
            write: Box::new(move |serializer, out| {
                serializer.encode_to(&frozen, &mut *out)?;
                Ok(T::copied(&frozen))
            }),
        }
    }

    /// A view already taken: anything that serializes to the bytes of the state it stands
    /// for, as of the moment it was made.
    pub fn new<V: Serialize + Send + 'static>(view: V) -> SnapshotView<Z> {
        SnapshotView {
            write: Box::new(move |serializer, out| {
                serializer.encode_to(&view, &mut *out)?;
                Ok(0)
            }),
        }
    }

    /// Serializes the view into `out` with `serializer`, and returns how many of its parts
    /// writers copied meanwhile ([`Freeze::copied`]). Consumes the view: its parts are
    /// released when this returns.
    pub fn write_to(self, serializer: &Z, out: &mut dyn Write) -> Result<u64, CodecError> {
        (self.write)(serializer, out)
    }
}

impl<Z> fmt::Debug for SnapshotView<Z> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SnapshotView")
    }
}
