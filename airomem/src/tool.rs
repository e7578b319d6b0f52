//! Typed tools for an application to offer its operators (features `json` and `snapshot`):
//! [`export`] a store's state as JSON (now, after a command, or at a time), [`import`] such
//! an export into a new store (moving data between machines, or recovering by hand), and
//! [`compact`] a store offline (a snapshot, then retention).
//!
//! They need the application's own types, so they live in its binary; the `airomem`
//! command-line tool (crate `airomem-cli`) inspects any store without them.
//!
//! An export is one JSON object:
//!
//! ```json
//! {"format": "airomem-export", "version": 1, "schema_version": 1, "seq": 1042,
//!  "committed_at": "2026-11-30T14:03:00.123456789Z", "state": { ... }}
//! ```
//!
//! `seq` is the last command the state includes; an import starts the new store's journal
//! right after it, so sequence numbers go on where they stopped. `committed_at` is that
//! command's recorded commit time (`null` when the journal no longer holds it).

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use airomem_core::{Seq, Serializer, State};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::error::snapshot_error;
use crate::options::StoreOptions;
use crate::park::block_on;
use crate::read_only::inspect::LeftBehind;
use crate::read_only::past::{At, Past};
use crate::report::SnapshotInfo;
use crate::store::Store;
use crate::write::tenure::claim;

/// The `format` field of every export.
pub const EXPORT_FORMAT: &str = "airomem-export";
/// The version of the export layout this build writes and reads.
pub const EXPORT_VERSION: u32 = 1;

#[derive(Serialize)]
struct ExportOut<'a, S> {
    format: &'static str,
    version: u32,
    schema_version: u32,
    seq: u64,
    committed_at: Option<String>,
    state: &'a S,
}

#[derive(Deserialize)]
struct ExportIn<S> {
    format: String,
    version: u32,
    schema_version: u32,
    seq: u64,
    state: S,
}

/// What [`export`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Exported {
    /// The last command the exported state includes (`Seq(0)`: none).
    pub seq: Seq,
    /// Its commit time as written in the export, RFC 3339, if the journal still holds it.
    pub committed_at: Option<String>,
    /// From [`export_intact`]: what the export leaves out of a damaged store (where the
    /// first damage is, the first record lost). Always `None` from [`export`], which fails
    /// on damage instead.
    pub left_behind: Option<LeftBehind>,
}

/// Writes the state of the store in `dir` at `at` to `out` as an export (see the module
/// docs). Reads as [`Past::open`] does: without the lock, beside a running store, changing
/// nothing. A store of an older schema is exported converted to the current one.
pub fn export<S: State, Z: Serializer>(
    serializer: Z,
    dir: impl AsRef<Path>,
    at: At,
    out: impl Write,
) -> Result<Exported, Error> {
    let past: Past<S> = Past::open(serializer, dir.as_ref(), at)?;
    write_export(&past, dir.as_ref(), out)
}

fn write_export<S: State>(past: &Past<S>, dir: &Path, out: impl Write) -> Result<Exported, Error> {
    let committed_at = past.time().map(|t| humantime::format_rfc3339_nanos(t).to_string());
    let document = ExportOut {
        format: EXPORT_FORMAT,
        version: EXPORT_VERSION,
        schema_version: S::SCHEMA_VERSION,
        seq: past.seq().0,
        committed_at: committed_at.clone(),
        state: past.state(),
    };
    let mut out = io::BufWriter::new(out);
    let failed = |e: io::Error| Error::Io { op: "write the export of", path: dir.to_path_buf(), source: Arc::new(e) };
    serde_json::to_writer(&mut out, &document).map_err(|e| failed(e.into()))?;
    out.write_all(b"\n").and_then(|()| out.flush()).map_err(failed)?;
    Ok(Exported { seq: past.seq(), committed_at, left_behind: None })
}

/// Writes the state of a damaged store's intact prefix to `out` as an export: everything
/// up to the last intact record before the first damage (see
/// [`crate::inspect::intact_prefix`]), where [`export`] fails with the damage. The returned
/// [`Exported::left_behind`] says where the damage is and which records are not in the
/// export; it is `None` only if the store has no damage, and then this is [`export`] at
/// [`At::Latest`]. Reads without the lock and changes nothing.
pub fn export_intact<S: State, Z: Serializer>(
    serializer: Z,
    dir: impl AsRef<Path>,
    out: impl Write,
) -> Result<Exported, Error> {
    let (past, left_behind) = Past::<S>::open_intact(serializer, dir.as_ref())?;
    let mut exported = write_export(&past, dir.as_ref(), out)?;
    exported.left_behind = left_behind;
    Ok(exported)
}

/// Builds a new store in `dir` from an export read from `input`: a snapshot of the exported
/// state at the exported sequence number, which the store then opens from (and the open is
/// checked before this returns). Returns that sequence number.
///
/// `dir` must not hold a store already ([`Error::ImportRefused`]); the export must be one
/// of this layout, written under the state's current schema version (export it again with
/// the current build otherwise: an export converts on the way out). Nothing is written
/// before the export has been read and decoded in full.
pub fn import<S: State, Z: Serializer>(
    serializer: Z,
    dir: impl AsRef<Path>,
    input: impl Read,
    options: StoreOptions,
) -> Result<Seq, Error> {
    let dir = dir.as_ref();
    let refuse = |reason: String| Error::ImportRefused { dir: dir.to_path_buf(), reason };
    let export: ExportIn<S> = serde_json::from_reader(io::BufReader::new(input))
        .map_err(|e| refuse(format!("the input is not an export of this state: {e}")))?;
    if export.format != EXPORT_FORMAT || export.version != EXPORT_VERSION {
        return Err(refuse(format!(
            "the input is a {:?} version {} document; this build reads {EXPORT_FORMAT:?} version {EXPORT_VERSION}",
            export.format, export.version
        )));
    }
    if export.schema_version != S::SCHEMA_VERSION {
        return Err(refuse(format!(
            "the export was written under schema version {}, the state's is {}: export it again with this build",
            export.schema_version,
            S::SCHEMA_VERSION
        )));
    }
    let storage = Arc::clone(&options.storage);
    let mut image = Vec::new();
    serializer.encode(&export.state, &mut image).map_err(|e| Error::encode("state", e))?;
    drop(export.state);

    let claim = claim(&*storage, dir)?;
    let names = storage.list(dir).map_err(Error::io("list", dir))?;
    if let Some(name) = names.iter().find(|n| {
        airomem_journal::segment::parse_file_name(n).is_some() || airomem_snapshot::parse_file_name(n).is_some()
    }) {
        return Err(refuse(format!("the directory already holds a store ({name}); import into a new one")));
    }
    let header = airomem_snapshot::SnapshotHeader {
        serializer: Z::ID,
        schema_version: S::SCHEMA_VERSION,
        seq: Seq(export.seq),
        next_record: None,
    };
    airomem_snapshot::write(&*storage, dir, header, &image, options.snapshots.level).map_err(snapshot_error)?;
    drop(image);
    drop(claim);
    let store: Store<S, Z> = Store::open_blocking(serializer, dir.to_path_buf(), options)?;
    block_on(store.close())?;
    Ok(Seq(export.seq))
}

/// Compacts the store in `dir` offline: opens it (taking its lock, so the application must
/// not be running), takes a snapshot, applies the retention of `options` (which may keep
/// history, [`StoreOptions::keep_history`]) and closes it.
pub fn compact<S: State, Z: Serializer>(
    serializer: Z,
    dir: impl AsRef<Path>,
    options: StoreOptions,
) -> Result<SnapshotInfo, Error> {
    let store: Store<S, Z> = Store::open_blocking(serializer, dir.as_ref().to_path_buf(), options)?;
    let snapshot = block_on(store.snapshot());
    let closed = block_on(store.close());
    let info = snapshot?;
    closed?;
    Ok(info)
}
