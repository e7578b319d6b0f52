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

use std::any::type_name;

pub use crate::ancestor::{Ancestor, AnyCommand, AnyState, ConvertError};
use crate::serializer::Serializer;
pub use crate::state::Previous;
use crate::state::State;

// The types live beside what names them (`Previous` beside `State::previous`, `Ancestor` on
// its own); here is what builds a link from a `State` impl, which needs the trait.
impl<S: State, Z: Serializer> Previous<S, Z> {
    /// `P` is the schema this one replaced; its state converts with `From`. `P`'s own
    /// [`State::previous`] continues the chain.
    pub fn from<P: State>() -> Self
    where
        S: From<P>,
    {
        Previous::with_ancestor(Ancestor::of::<P>(convert_from::<P, S>))
    }

    /// `P` is the schema this one replaced; its state converts with `TryFrom`, and a
    /// conversion that fails stops the open with an error that leaves the store unchanged.
    pub fn try_from<P: State>() -> Self
    where
        S: TryFrom<P>,
        <S as TryFrom<P>>::Error: std::error::Error + Send + Sync + 'static,
    {
        Previous::with_ancestor(Ancestor::of::<P>(convert_try_from::<P, S>))
    }
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
