//! Test helpers (feature `testing`).
//!
//! [`assert_schema_recorded`] guards against the one schema mistake no store can detect on
//! its own: changing a `State` or its `Command` without a new [`crate::State::SCHEMA_VERSION`].
//! Under postcard a reordered enum or a retyped field still decodes, as something else:
//! history would be silently rewritten. The helper traces the serialized shape of both types
//! and of every type they reach (every struct, enum and variant, in order, however deep and
//! through `Option`, sequences, maps and boxes, as serde-reflection's formats), keeps it in a
//! file the user commits, and fails a test when the shape changes while the version does not.
//!
//! ```no_run
//! # #[derive(serde::Serialize, serde::Deserialize, Default)] struct Sessions;
//! # impl airomem::State for Sessions { type Command = (); fn execute(&mut self, _: ()) {} }
//! #[test]
//! fn sessions_schema_is_recorded() {
//!     airomem::testing::assert_schema_recorded::<Sessions>("tests/schema/sessions.json");
//! }
//! ```

mod trace;

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_reflection::{ContainerFormat, Format, Registry};

use crate::State;

/// The serialized shape of a `State` and its `Command`, as recorded in the schema file.
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
struct Shape {
    /// `State::SCHEMA_VERSION` when the shape was recorded.
    schema_version: u32,
    /// The state's format (usually a reference into `types`).
    state: Format,
    /// The command's format.
    command: Format,
    /// Every named struct and enum either reaches, by name.
    types: Registry,
}

/// What [`assert_schema_recorded`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchemaCheck {
    /// There was no file: the shape was recorded. Commit the file.
    Recorded,
    /// The shape and the version are as recorded.
    Unchanged,
    /// The version was raised since the shape was recorded: the new shape replaced the old one
    /// in the file. Commit the file (and keep the old types in a frozen module).
    Updated {
        /// The version recorded before.
        from: u32,
        /// The current version.
        to: u32,
    },
    /// The only change is variants appended at the end of enums (and the new types they
    /// carry): old bytes still decode to what they meant, under postcard (variants are
    /// numbered by position) and JSON (named) alike, so no new version is needed. The new
    /// shape replaced the old one in the file. Commit the file.
    Extended {
        /// How many variants were appended.
        variants: usize,
    },
}

/// Checks the serialized shape of `S` and `S::Command` against the one recorded in `file`
/// (created, with its parent directories, on the first run) and panics if the shape changed
/// while `S::SCHEMA_VERSION` did not, or if the version went down. When the version went up,
/// the file is rewritten with the new shape.
///
/// Every type the two reach is traced, with every variant of every enum: a change deep inside
/// a nested enum fails the check like a change to the state itself. A named type is recorded
/// under its serde name; when two Rust types of different shapes share one (a generic struct
/// used with two parameters, or namesakes in two modules), the one met later is recorded
/// under its type name without module paths (`Tagged<Level2>`); namesakes of one shape share
/// the serde name. Recursive types are traced as long as some variant ends the recursion
/// (and it goes through a named type: a `#[serde(transparent)]` type that contains itself
/// has no finite shape).
///
/// Types whose `Deserialize` validates its input (rejects the placeholder values tracing
/// feeds it: zeros, empty strings, `'A'`) cannot be traced, nor types read through
/// `deserialize_any` (untagged and internally tagged enums, `#[serde(flatten)]`); the panic
/// then says which type was being built.
///
/// # Panics
///
/// On a changed shape without a new version, a lower version, a file that cannot be read or
/// written, and a type that cannot be traced: it is meant to fail a test.
pub fn assert_schema_recorded<S: State>(file: impl AsRef<Path>) -> SchemaCheck {
    let file = file.as_ref();
    let current =
        current_shape::<S>().unwrap_or_else(|e| panic!("tracing the shape of the state and its command: {e}"));
    let recorded = match std::fs::read(file) {
        Ok(bytes) => serde_json::from_slice::<Shape>(&bytes)
            .unwrap_or_else(|e| panic!("{} is not a schema file written by airomem: {e}", file.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            write(file, &current);
            return SchemaCheck::Recorded;
        }
        Err(e) => panic!("reading {}: {e}", file.display()),
    };
    let (from, to) = (recorded.schema_version, current.schema_version);
    if to < from {
        panic!(
            "State::SCHEMA_VERSION went down from {from} (recorded in {}) to {to}: versions only go up",
            file.display()
        );
    }
    if to > from {
        write(file, &current);
        return SchemaCheck::Updated { from, to };
    }
    if recorded != current
        && let Some(variants) = appended_variants(&recorded, &current)
    {
        write(file, &current);
        return SchemaCheck::Extended { variants };
    }
    if recorded != current {
        panic!(
            "the serialized shape of the state or its command changed, but State::SCHEMA_VERSION is still {to}.\n\
             Stores written with the old types would decode wrongly or not at all. Keep the old types \
             in a frozen module, raise SCHEMA_VERSION, and run this test again to record the new \
             shape in {}.\n{}",
            file.display(),
            differences(&recorded, &current).join("\n")
        );
    }
    SchemaCheck::Unchanged
}

fn current_shape<S: State>() -> serde_reflection::Result<Shape> {
    let trace::Traced { state, command, types } = trace::trace::<S, S::Command>()?;
    Ok(Shape { schema_version: S::SCHEMA_VERSION, state, command, types })
}

fn write(file: &Path, shape: &Shape) {
    if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("creating {}: {e}", parent.display()));
    }
    let mut text = serde_json::to_string_pretty(shape).unwrap_or_else(|e| panic!("encoding the shape: {e}"));
    text.push('\n');
    std::fs::write(file, text).unwrap_or_else(|e| panic!("writing {}: {e}", file.display()));
}

/// If `current` differs from `recorded` only by variants appended to existing enums (and by
/// types that did not exist before), how many variants; `None` for any other change.
fn appended_variants(recorded: &Shape, current: &Shape) -> Option<usize> {
    if recorded.state != current.state || recorded.command != current.command {
        return None;
    }
    let mut appended = 0;
    for (name, old) in &recorded.types {
        let new = current.types.get(name)?;
        if new == old {
            continue;
        }
        let (ContainerFormat::Enum(old), ContainerFormat::Enum(new)) = (old, new) else { return None };
        // Every old variant keeps its index, name and content; the new ones come after.
        if new.len() <= old.len() || old.iter().any(|(index, variant)| new.get(index) != Some(variant)) {
            return None;
        }
        if new.keys().filter(|i| !old.contains_key(i)).any(|&i| (i as usize) < old.len()) {
            return None;
        }
        appended += new.len() - old.len();
    }
    (appended > 0).then_some(appended)
}

/// One line per type whose shape differs, was added or was removed.
fn differences(recorded: &Shape, current: &Shape) -> Vec<String> {
    let mut lines = Vec::new();
    if recorded.state != current.state {
        lines.push("  the state's top-level format differs".to_string());
    }
    if recorded.command != current.command {
        lines.push("  the command's top-level format differs".to_string());
    }
    for (name, format) in &recorded.types {
        match current.types.get(name) {
            None => lines.push(format!("  {name}: removed")),
            Some(now) if now != format => lines.push(format!("  {name}: changed")),
            Some(_) => {}
        }
    }
    for name in current.types.keys().filter(|n| !recorded.types.contains_key(*n)) {
        lines.push(format!("  {name}: added"));
    }
    lines
}
