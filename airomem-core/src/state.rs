use serde::Serialize;
use serde::de::DeserializeOwned;

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

    /// Version of the command and state types, recorded in every journal segment.
    ///
    /// Opening a store written under another version fails with an error naming both, so
    /// bump it whenever a change to the types would make old bytes decode differently.
    const SCHEMA_VERSION: u32 = 1;

    /// Applies one command to the state.
    fn execute(&mut self, command: Self::Command);
}
