use std::fmt;
use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ancestor::Ancestor;
use crate::freeze::SnapshotView;
use crate::serializer::Serializer;

/// The application's whole prevalent system: a value that lives in memory and changes only
/// through [`State::execute`].
///
/// `execute` must be deterministic: given the same state and the same command (and the same
/// [`crate::CommitContext`]), it must make the same change, because recovery rebuilds the
/// state by executing every journaled command again. Read the time and the sequence number
/// from [`crate::CommitContext::current`], never from the system clock or a random source.
///
/// A command that panics is not applied: the store rolls the state back to what it was
/// before the command and the caller receives an error (see the facade's docs).
pub trait State: Default + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The commands that change this state.
    type Command: Serialize + DeserializeOwned + Send + 'static;

    /// Version of the command and state types (and of `execute`'s behaviour), recorded in
    /// every journal segment and snapshot.
    ///
    /// Bump it whenever old bytes would decode differently under the new types, or old
    /// commands would do something else under the new `execute`, and name the schema it
    /// replaces with [`State::previous`]. Files written under a version the chain does not
    /// reach, or under a newer one, are refused with an error naming both versions.
    const SCHEMA_VERSION: u32 = 1;

    /// Applies one command to the state.
    fn execute(&mut self, command: Self::Command);

    /// The schema this one replaced, if any: a frozen copy of the older state type (with its
    /// own command type and `execute`) that this state converts from.
    ///
    /// At open, history written under an older schema is replayed with that schema's types
    /// and `execute`, then the state is converted at each version boundary. The predecessor's
    /// own `previous` continues the chain; versions must strictly decrease along it.
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// # use airomem_core::{Previous, Serializer, State};
    /// mod v1 {
    ///     # use serde::{Deserialize, Serialize};
    ///     #[derive(Default, Serialize, Deserialize)]
    ///     pub struct Counter { pub hits: u32 }
    ///     #[derive(Serialize, Deserialize)]
    ///     pub enum Command { Hit }
    ///     impl airomem_core::State for Counter {
    ///         type Command = Command;
    ///         fn execute(&mut self, Command::Hit: Command) { self.hits += 1 }
    ///     }
    /// }
    ///
    /// #[derive(Default, Serialize, Deserialize)]
    /// pub struct Counter { pub hits: u64, pub misses: u64 }
    /// #[derive(Serialize, Deserialize)]
    /// pub enum Command { Hit, Miss }
    ///
    /// impl From<v1::Counter> for Counter {
    ///     fn from(old: v1::Counter) -> Self { Counter { hits: old.hits.into(), misses: 0 } }
    /// }
    ///
    /// impl State for Counter {
    ///     type Command = Command;
    ///     const SCHEMA_VERSION: u32 = 2;
    ///     fn execute(&mut self, command: Command) {
    ///         match command { Command::Hit => self.hits += 1, Command::Miss => self.misses += 1 }
    ///     }
    ///     fn previous<Z: Serializer>() -> Previous<Self, Z> {
    ///         Previous::from::<v1::Counter>()
    ///     }
    /// }
    /// ```
    fn previous<Z: Serializer>() -> Previous<Self, Z> {
        Previous::none()
    }

    /// Opts into snapshots that do not stall the writers: an immutable view of the state
    /// as it is now, taken in O(1) or O(shards) (see [`crate::Freeze`]).
    ///
    /// The store calls it between two batches, with the state lock held, and then
    /// serializes the view on the snapshot thread while commits go on: the writers wait
    /// only for this call. The default, `None`, keeps the plain path: the state is
    /// serialized under the lock, and writers wait for the whole serialization.
    ///
    /// For a state whose type implements [`crate::Freeze`] (by hand, or with the facade's
    /// `#[derive(Freeze)]`), the body is one line:
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// # use airomem_core::{Freeze, Serializer, SnapshotView, State};
    /// #[derive(Default, Clone, Serialize, Deserialize)]
    /// struct Tiny { hits: u64 }
    /// impl Freeze for Tiny {
    ///     type Frozen = Tiny;
    ///     fn freeze(&self) -> Tiny { self.clone() }
    /// }
    /// # #[derive(Serialize, Deserialize)] enum Hit { Hit }
    /// impl State for Tiny {
    ///     type Command = Hit;
    ///     fn execute(&mut self, _: Hit) { self.hits += 1 }
    ///     fn snapshot_view<Z: Serializer>(&self) -> Option<SnapshotView<Z>> {
    ///         Some(SnapshotView::of(self))
    ///     }
    /// }
    /// ```
    ///
    /// Why a provided method and not a wrapper type or a store option: the store's type,
    /// `Store::open` and every `query()` guard stay as they are, a state opts in where it is
    /// defined, and stable Rust has no specialization to pick the path from a trait bound.
    fn snapshot_view<Z: Serializer>(&self) -> Option<SnapshotView<Z>> {
        None
    }
}

/// The schema a state replaced, returned by [`State::previous`]: none (the default), or an
/// older state type the current one converts from (`migration` builds those).
pub struct Previous<S, Z> {
    ancestor: Option<Ancestor<Z>>,
    state: PhantomData<fn() -> S>,
}

impl<S: State, Z: Serializer> Previous<S, Z> {
    /// No predecessor: files written under any other schema version are refused.
    pub fn none() -> Self {
        Previous { ancestor: None, state: PhantomData }
    }

    /// A link to `ancestor`, for the constructors in `migration`.
    pub(crate) fn with_ancestor(ancestor: Ancestor<Z>) -> Self {
        Previous { ancestor: Some(ancestor), state: PhantomData }
    }

    /// The predecessor, if there is one.
    pub fn into_ancestor(self) -> Option<Ancestor<Z>> {
        self.ancestor
    }
}

impl<S, Z> fmt::Debug for Previous<S, Z> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Previous").field("ancestor", &self.ancestor).finish()
    }
}
