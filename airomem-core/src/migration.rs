//! Schema migration: how a [`State`] names the schema it replaced, so that recovery can run
//! history written by older types through those types' own `execute` and convert the state
//! at each version boundary.
//!
//! The user keeps each released schema in a frozen module (its state, its command type and
//! its `impl State`, never edited again) and points the current state at it with
//! [`State::previous`]. Each older schema may point further back, so one open can walk a
//! chain of any length. Everything here is type-erased behind [`Ancestor`], so that a chain
//! has one type however long it is; the generic code is instantiated once per link, in
//! [`Previous::from`] and [`Previous::try_from`].

use std::any::{Any, type_name};
use std::fmt;
use std::marker::PhantomData;

use crate::{CodecError, Serializer, State};

/// A state of some older schema, boxed so that a chain of any length has one type.
pub type AnyState = Box<dyn Any + Send>;
/// A command of some older schema.
pub type AnyCommand = Box<dyn Any + Send>;
/// Why a `TryFrom` conversion between schemas refused a state.
pub type ConvertError = Box<dyn std::error::Error + Send + Sync>;

/// The schema a state replaced, returned by [`State::previous`]: none (the default), or an
/// older state type the current one converts from.
pub struct Previous<S, Z> {
    ancestor: Option<Ancestor<Z>>,
    state: PhantomData<fn() -> S>,
}

impl<S: State, Z: Serializer> Previous<S, Z> {
    /// No predecessor: files written under any other schema version are refused.
    pub fn none() -> Self {
        Previous { ancestor: None, state: PhantomData }
    }

    /// `P` is the schema this one replaced; its state converts with `From`. `P`'s own
    /// [`State::previous`] continues the chain.
    pub fn from<P: State>() -> Self
    where
        S: From<P>,
    {
        Previous { ancestor: Some(Ancestor::of::<P>(convert_from::<P, S>)), state: PhantomData }
    }

    /// `P` is the schema this one replaced; its state converts with `TryFrom`, and a
    /// conversion that fails stops the open with an error that leaves the store unchanged.
    pub fn try_from<P: State>() -> Self
    where
        S: TryFrom<P>,
        <S as TryFrom<P>>::Error: std::error::Error + Send + Sync + 'static,
    {
        Previous { ancestor: Some(Ancestor::of::<P>(convert_try_from::<P, S>)), state: PhantomData }
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

/// One older schema in a chain, with everything recovery needs to run its history: decode
/// its snapshots and commands with the store's serializer, execute its commands with its
/// own `execute`, and convert its state into the next newer schema's.
///
/// Built by [`Previous::from`] and [`Previous::try_from`]; the store drives it.
pub struct Ancestor<Z> {
    version: u32,
    name: &'static str,
    previous: fn() -> Option<Ancestor<Z>>,
    empty: fn() -> AnyState,
    decode_state: fn(&Z, &[u8]) -> Result<AnyState, CodecError>,
    decode_command: fn(&Z, &[u8]) -> Result<AnyCommand, CodecError>,
    execute: fn(&mut AnyState, AnyCommand),
    convert: fn(AnyState) -> Result<AnyState, ConvertError>,
}

impl<Z: Serializer> Ancestor<Z> {
    fn of<P: State>(convert: fn(AnyState) -> Result<AnyState, ConvertError>) -> Self {
        Ancestor {
            version: P::SCHEMA_VERSION,
            name: type_name::<P>(),
            previous: || P::previous::<Z>().into_ancestor(),
            empty: || Box::new(P::default()),
            decode_state: |z, bytes| Ok(Box::new(z.decode::<P>(bytes)?)),
            decode_command: |z, bytes| Ok(Box::new(z.decode::<P::Command>(bytes)?)),
            execute: execute::<P>,
            convert,
        }
    }

    /// The schema version of this older state.
    pub fn schema_version(&self) -> u32 {
        self.version
    }

    /// The Rust type name of this older state, for errors and logs.
    pub fn type_name(&self) -> &'static str {
        self.name
    }

    /// The schema this one replaced, if it names one.
    pub fn previous(&self) -> Option<Ancestor<Z>> {
        (self.previous)()
    }

    /// The empty state of this schema: where a store with no snapshot starts.
    pub fn empty(&self) -> AnyState {
        (self.empty)()
    }

    /// Decodes a snapshot image written under this schema.
    pub fn decode_state(&self, serializer: &Z, bytes: &[u8]) -> Result<AnyState, CodecError> {
        (self.decode_state)(serializer, bytes)
    }

    /// Decodes a journaled command written under this schema.
    pub fn decode_command(&self, serializer: &Z, bytes: &[u8]) -> Result<AnyCommand, CodecError> {
        (self.decode_command)(serializer, bytes)
    }

    /// Executes a command of this schema on a state of this schema, with this schema's own
    /// `execute`. A panic in it propagates to the caller.
    ///
    /// # Panics
    ///
    /// If `state` or `command` is not of this schema: a bug in the caller.
    pub fn execute(&self, state: &mut AnyState, command: AnyCommand) {
        (self.execute)(state, command)
    }

    /// Converts a state of this schema into the next newer schema's state.
    ///
    /// # Panics
    ///
    /// If `state` is not of this schema (a bug in the caller), or if the user's conversion
    /// panics.
    pub fn convert(&self, state: AnyState) -> Result<AnyState, ConvertError> {
        (self.convert)(state)
    }
}

impl<Z> fmt::Debug for Ancestor<Z> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ancestor").field("version", &self.version).field("type", &self.name).finish()
    }
}

fn unbox<T: 'static>(value: AnyState, what: &str) -> T {
    match value.downcast::<T>() {
        Ok(value) => *value,
        Err(_) => panic!("airomem bug: a {what} of another schema was handed to {}", type_name::<T>()),
    }
}

fn execute<P: State>(state: &mut AnyState, command: AnyCommand) {
    let command = unbox::<P::Command>(command, "command");
    match state.downcast_mut::<P>() {
        Some(state) => state.execute(command),
        None => panic!("airomem bug: a state of another schema was handed to {}", type_name::<P>()),
    }
}

fn convert_from<P: State, S: State + From<P>>(state: AnyState) -> Result<AnyState, ConvertError> {
    Ok(Box::new(S::from(unbox::<P>(state, "state"))))
}

fn convert_try_from<P: State, S>(state: AnyState) -> Result<AnyState, ConvertError>
where
    S: State + TryFrom<P>,
    <S as TryFrom<P>>::Error: std::error::Error + Send + Sync + 'static,
{
    match S::try_from(unbox::<P>(state, "state")) {
        Ok(state) => Ok(Box::new(state)),
        Err(e) => Err(Box::new(e)),
    }
}
