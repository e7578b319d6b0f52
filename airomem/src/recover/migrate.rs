//! Schema migration at open: the chain of older schemas a state names with
//! [`State::previous`], the state of whichever schema replay has reached, and the
//! conversions between them.
//!
//! Replay starts at the schema of the snapshot it loads (or of the first record it meets),
//! runs each record through the `execute` of the schema that wrote it, and converts the
//! state up the chain whenever a record of a newer schema comes, then once more at the end
//! to the current schema. Only the current schema's commands are decoded to their own type;
//! older ones travel boxed, which costs an allocation per record of old history only.

use std::marker::PhantomData;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use airomem_core::migration::{AnyCommand, AnyState};
use airomem_core::storage::Storage;
use airomem_core::{Ancestor, CodecError, CommitContext, Seq, Serializer, State};
use airomem_journal::segment::{self, SEGMENT_HEADER_LEN, SegmentHeader};
use tracing::info;

use crate::Error;
use crate::execute::{execute, panic_message};
use crate::report::Migration;

/// The schemas a store of `S` can read: `S`'s own and its ancestors', newest first.
pub(crate) struct Chain<S, Z> {
    ancestors: Vec<Ancestor<Z>>,
    state: PhantomData<fn() -> S>,
}

impl<S: State, Z: Serializer> Chain<S, Z> {
    /// Walks `S::previous` back to its end, checking that versions strictly decrease (which
    /// also guarantees the walk ends).
    pub(crate) fn new() -> Result<Self, Error> {
        let mut ancestors: Vec<Ancestor<Z>> = Vec::new();
        let mut next = S::previous::<Z>().into_ancestor();
        while let Some(ancestor) = next {
            let newer = ancestors.last().map_or(S::SCHEMA_VERSION, Ancestor::schema_version);
            let bad = ancestor.schema_version() >= newer;
            next = if bad { None } else { ancestor.previous() };
            ancestors.push(ancestor);
            if bad {
                let mut chain = format!("{} ({})", std::any::type_name::<S>(), S::SCHEMA_VERSION);
                for a in &ancestors {
                    chain.push_str(&format!(" -> {} ({})", a.type_name(), a.schema_version()));
                }
                return Err(Error::InvalidMigrationChain { chain });
            }
        }
        Ok(Chain { ancestors, state: PhantomData })
    }

    /// Every schema version the chain reads, newest first.
    pub(crate) fn versions(&self) -> Vec<u32> {
        std::iter::once(S::SCHEMA_VERSION).chain(self.ancestors.iter().map(Ancestor::schema_version)).collect()
    }

    fn position(&self, version: u32) -> Option<usize> {
        self.ancestors.iter().position(|a| a.schema_version() == version)
    }

    /// The error for a file whose schema version the chain does not reach.
    pub(crate) fn unknown(&self, file: &Path, found: u32) -> Error {
        if found > S::SCHEMA_VERSION {
            return Error::SchemaNewer { file: file.to_path_buf(), found, current: S::SCHEMA_VERSION };
        }
        let oldest = self.ancestors.last();
        Error::SchemaUnknown {
            file: file.to_path_buf(),
            found,
            current: S::SCHEMA_VERSION,
            state: std::any::type_name::<S>(),
            known: self.versions()[1..].to_vec(),
            oldest: oldest.map_or(std::any::type_name::<S>(), Ancestor::type_name),
        }
    }

    /// The ancestor of `version`, for decoding a record of `file`.
    fn ancestor(&self, version: u32, file: &Path) -> Result<&Ancestor<Z>, Error> {
        self.position(version).map(|i| &self.ancestors[i]).ok_or_else(|| self.unknown(file, version))
    }

    /// Decodes the image of a snapshot written under `version`.
    #[cfg(feature = "snapshot")]
    pub(crate) fn decode_state(
        &self,
        serializer: &Z,
        version: u32,
        image: &[u8],
        file: &Path,
        seq: Seq,
    ) -> Result<Held<S>, Error> {
        let decode_error = |e: CodecError| Error::decode(Some(file.to_path_buf()), Some(seq), e);
        if version == S::SCHEMA_VERSION {
            return serializer.decode::<S>(image).map(Held::Current).map_err(decode_error);
        }
        let ancestor = self.ancestor(version, file)?;
        ancestor.decode_state(serializer, image).map(|state| Held::Old { version, state }).map_err(decode_error)
    }

    /// Decodes a journaled command written under `version`.
    pub(crate) fn decode_command(
        &self,
        serializer: &Z,
        version: u32,
        payload: &[u8],
        file: &Path,
        seq: Seq,
    ) -> Result<Command<S::Command>, Error> {
        let decode_error = |e: CodecError| Error::decode(Some(file.to_path_buf()), Some(seq), e);
        if version == S::SCHEMA_VERSION {
            return serializer.decode::<S::Command>(payload).map(Command::Current).map_err(decode_error);
        }
        let ancestor = self.ancestor(version, file)?;
        ancestor.decode_command(serializer, payload).map(Command::Old).map_err(decode_error)
    }

    /// Executes `command` (of schema `version`) on `held`, first converting `held` up to
    /// `version` if it is older. A panic in `execute` is returned as its message.
    pub(crate) fn execute(
        &self,
        held: &mut Held<S>,
        version: u32,
        command: Command<S::Command>,
        context: CommitContext,
        file: &Path,
        migrations: &mut Vec<Migration>,
    ) -> Result<Result<(), String>, Error> {
        if held.version().is_none_or(|v| v != version) {
            let before = Seq(context.seq.0.saturating_sub(1));
            let current = std::mem::replace(held, Held::Empty);
            *held = self.upgrade(current, version, before, file, migrations)?;
        }
        Ok(match (held, command) {
            (Held::Current(state), Command::Current(command)) => execute(state, command, context),
            (Held::Old { state, version }, Command::Old(command)) => {
                let ancestor = &self.ancestors[self.position(*version).expect("held versions are in the chain")];
                context
                    .enter(|| panic::catch_unwind(AssertUnwindSafe(|| ancestor.execute(state, command))))
                    .map_err(panic_message)
            }
            _ => unreachable!("the state was converted to the command's schema"),
        })
    }

    /// Converts `held` up the chain to `to`, which is `S`'s version or an ancestor's. The
    /// last record the state includes is `after`. An empty `held` (nothing replayed yet)
    /// becomes the empty state of `to`: a store that holds no command has nothing to convert.
    pub(crate) fn upgrade(
        &self,
        held: Held<S>,
        to: u32,
        after: Seq,
        file: &Path,
        migrations: &mut Vec<Migration>,
    ) -> Result<Held<S>, Error> {
        let (mut version, mut state) = match held {
            Held::Empty if to == S::SCHEMA_VERSION => return Ok(Held::Current(S::default())),
            Held::Empty => {
                let ancestor = self.ancestor(to, file)?;
                return Ok(Held::Old { version: to, state: ancestor.empty() });
            }
            Held::Current(state) if to == S::SCHEMA_VERSION => return Ok(Held::Current(state)),
            Held::Current(_) => return Err(self.decreasing(file, to)),
            Held::Old { version, state } => (version, state),
        };
        if to < version {
            return Err(self.decreasing(file, to));
        }
        if to != S::SCHEMA_VERSION {
            self.ancestor(to, file)?;
        }
        while version != to {
            let index = self.position(version).expect("held versions are in the chain");
            let next = if index == 0 { S::SCHEMA_VERSION } else { self.ancestors[index - 1].schema_version() };
            let ancestor = &self.ancestors[index];
            let failed = |reason: String| Error::MigrationFailed {
                from: version,
                to: next,
                after,
                conversion: format!("{} -> {}", ancestor.type_name(), self.name_of(next)),
                reason,
            };
            state = match panic::catch_unwind(AssertUnwindSafe(|| ancestor.convert(state))) {
                Ok(Ok(state)) => state,
                Ok(Err(e)) => return Err(failed(error_chain(&*e))),
                Err(panic) => return Err(failed(format!("the conversion panicked: {}", panic_message(panic)))),
            };
            info!(from = version, to = next, after = after.0, "converted the state to a newer schema");
            migrations.push(Migration { from: version, to: next, after });
            version = next;
        }
        if to == S::SCHEMA_VERSION {
            match state.downcast::<S>() {
                Ok(state) => Ok(Held::Current(*state)),
                Err(_) => unreachable!("the newest conversion of the chain yields the current state"),
            }
        } else {
            Ok(Held::Old { version, state })
        }
    }

    /// Converts whatever replay ended with to the current schema.
    pub(crate) fn finish(
        &self,
        held: Held<S>,
        after: Seq,
        file: &Path,
        migrations: &mut Vec<Migration>,
    ) -> Result<S, Error> {
        match self.upgrade(held, S::SCHEMA_VERSION, after, file, migrations)? {
            Held::Current(state) => Ok(state),
            _ => unreachable!("upgraded to the current schema"),
        }
    }

    fn name_of(&self, version: u32) -> &'static str {
        match self.position(version) {
            Some(i) => self.ancestors[i].type_name(),
            None => std::any::type_name::<S>(),
        }
    }

    fn decreasing(&self, file: &Path, found: u32) -> Error {
        Error::SchemaDecreases { file: file.to_path_buf(), found }
    }
}

/// The state as far as replay has got: of no schema yet, of an older schema, or current.
pub(crate) enum Held<S> {
    /// Nothing loaded or replayed yet.
    Empty,
    /// A state of an older schema.
    Old { version: u32, state: AnyState },
    /// The current state.
    Current(S),
}

impl<S: State> Held<S> {
    fn version(&self) -> Option<u32> {
        match self {
            Held::Empty => None,
            Held::Old { version, .. } => Some(*version),
            Held::Current(_) => Some(S::SCHEMA_VERSION),
        }
    }
}

/// A decoded command: of the current schema, or of an older one.
pub(crate) enum Command<C> {
    Current(C),
    Old(AnyCommand),
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// The schema versions of every segment and snapshot in `dir`, read from their headers
/// alone. A header that does not decode is left out (recovery reports such a file when it
/// needs it); an I/O error is returned, like any at open.
pub(crate) fn schemas_on_disk(storage: &dyn Storage, dir: &Path) -> Result<Vec<(PathBuf, u32)>, Error> {
    let names = storage.list(dir).map_err(Error::io("list", dir))?;
    let mut found = Vec::new();
    for name in names {
        if let Some(first) = segment::parse_file_name(&name) {
            let path = segment::path(dir, first);
            let bytes = storage.read_prefix(&path, SEGMENT_HEADER_LEN).map_err(Error::io("read", &path))?;
            if let Ok(header) = SegmentHeader::decode(&path, &bytes) {
                found.push((path, header.schema_version));
            }
        }
        #[cfg(feature = "snapshot")]
        if let Some(seq) = airomem_snapshot::parse_file_name(&name) {
            match airomem_snapshot::read_header(storage, dir, seq) {
                Ok(header) => found.push((airomem_snapshot::path(dir, seq), header.schema_version)),
                Err(airomem_snapshot::SnapshotError::Io { op, path, source }) => {
                    return Err(Error::Io { op, path, source: std::sync::Arc::new(source) });
                }
                Err(_) => {}
            }
        }
    }
    Ok(found)
}
