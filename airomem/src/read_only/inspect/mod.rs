//! Looking inside a store without its types, its lock, or changing anything: what files it
//! has ([`survey`]), whether they are intact ([`verify`]), and what its journal records say
//! ([`records`]), and what of a damaged store is intact ([`intact_prefix`]), with a new store
//! built from it ([`salvage`], the one function here that writes, and only to a new
//! directory). The `airomem` command-line tool (crate `airomem-cli`) is built on this.
//!
//! Everything here reads through a storage that refuses every write, so it is safe beside a
//! running store: a batch the store is writing at that moment shows as a torn tail (what an
//! open after a crash would cut), never as damage. It holds one journal segment in memory at
//! a time, however large the store.

mod files;
mod follow;
mod records;
mod salvage;
mod survey;
mod verify;

pub use follow::{Follow, follow};
pub use records::{Kind, RecordInfo, Records, records};
pub use salvage::{IntactPrefix, LeftBehind, Piece, Salvaged, intact_prefix, salvage};
pub use survey::{
    FileSummary, HeadSummary, LockState, SegmentSummary, SnapshotSummary, Survey, serializer_name, survey,
};
pub use verify::{Problem, Verification, verify};
