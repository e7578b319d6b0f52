//! One older schema in a chain ([`Ancestor`]), type-erased: the boxed states and commands
//! it passes around and the functions that run them. Nothing here needs the `State` trait;
//! `migration` builds an `Ancestor` from a `State` impl.

use std::any::Any;
use std::fmt;

use crate::error::CodecError;
use crate::serializer::Serializer;

/// A state of some older schema, boxed so that a chain of any length has one type.
pub type AnyState = Box<dyn Any + Send>;
/// A command of some older schema.
pub type AnyCommand = Box<dyn Any + Send>;
/// Why a `TryFrom` conversion between schemas refused a state.
pub type ConvertError = Box<dyn std::error::Error + Send + Sync>;

/// One older schema in a chain, with everything recovery needs to run its history: decode
/// its snapshots and commands with the store's serializer, execute its commands with its
/// own `execute`, and convert its state into the next newer schema's.
///
/// Built by [`Previous::from`](crate::Previous::from) and
/// [`Previous::try_from`](crate::Previous::try_from); the store drives it.
pub struct Ancestor<Z> {
    pub(crate) version: u32,
    pub(crate) name: &'static str,
    pub(crate) previous: fn() -> Option<Ancestor<Z>>,
    pub(crate) empty: fn() -> AnyState,
    pub(crate) decode_state: fn(&Z, &[u8]) -> Result<AnyState, CodecError>,
    pub(crate) decode_command: fn(&Z, &[u8]) -> Result<AnyCommand, CodecError>,
    pub(crate) execute: fn(&mut AnyState, AnyCommand),
    pub(crate) convert: fn(AnyState) -> Result<AnyState, ConvertError>,
}

impl<Z: Serializer> Ancestor<Z> {
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
