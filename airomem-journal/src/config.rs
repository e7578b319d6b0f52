use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use airomem_core::SerializerId;
use airomem_core::storage::Storage;

/// Where a journal lives and what its segments must say about themselves.
#[derive(Clone)]
pub struct JournalConfig {
    /// The file-system seam every operation goes through.
    pub storage: Arc<dyn Storage>,
    /// The store directory.
    pub dir: PathBuf,
    /// Serializer the payloads are written with; segments written with another are refused.
    pub serializer: SerializerId,
    /// The user's schema version; segments written under another are refused.
    pub schema_version: u32,
    /// A segment is closed and the next one started when a batch would take it past this
    /// many bytes. A batch larger than this gets a segment of its own.
    pub segment_size: u64,
    /// Zeroed space the writer keeps ready ahead of its records, in bytes; zero appends
    /// instead.
    ///
    /// Writing over bytes that are already in the file lets `fdatasync` skip the metadata
    /// update an append needs (the file's size), which on most file systems makes it much
    /// cheaper. It is only safe when a single batch can be unsynced at a crash (the sectors
    /// of an overwrite reach the disk in any order, and recovery can tell that from damage
    /// only within the last batch): use it only when every batch is synced before the next.
    pub preallocate: u64,
}

impl fmt::Debug for JournalConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JournalConfig")
            .field("dir", &self.dir)
            .field("serializer", &self.serializer)
            .field("schema_version", &self.schema_version)
            .field("segment_size", &self.segment_size)
            .field("preallocate", &self.preallocate)
            .finish_non_exhaustive()
    }
}

/// How the journal's user syncs the batches it writes, and so what a crash can leave
/// unsynced. Recorded in `journal.head` with each watermark, because recovery tells a torn
/// write from corruption by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// Each batch is `fdatasync`ed before the next one is written (`Durability::Fsync`): a
    /// crash can only have caught the last batch unsynced.
    EveryBatch,
    /// Batches are synced later, periodically or when the operating system writes them back
    /// (`Durability::Periodic`, `Durability::OsBuffered`): a crash can leave any of the
    /// batches written since the last sync missing or damaged, in any order.
    Deferred,
}
