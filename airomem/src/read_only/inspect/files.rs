//! What the three inspection tools share: listing and reading a store's files, and a
//! journal configuration through which nothing can be written.

use std::io;
use std::path::Path;
use std::sync::Arc;

use airomem_core::SerializerId;
use airomem_core::storage::{StdStorage, Storage};
use airomem_journal::JournalConfig;

use crate::Error;
use crate::read_only::view::HistoryView;

/// The names in a store directory, or [`Error::NotAStore`] if there is no directory.
pub(super) fn list_store(storage: &StdStorage, dir: &Path) -> Result<Vec<String>, Error> {
    match storage.list(dir) {
        Ok(mut names) => {
            names.sort_unstable();
            Ok(names)
        }
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
            Err(Error::NotAStore { dir: dir.to_path_buf() })
        }
        Err(e) => Err(Error::io("list", dir)(e)),
    }
}

pub(super) fn read(storage: &StdStorage, path: &Path) -> Result<Vec<u8>, Error> {
    storage.read(path).map_err(Error::io("read", path))
}

pub(super) fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// A journal configuration for reading only: every write through it fails.
pub(super) fn read_config(dir: &Path, serializer: SerializerId, schema_version: u32) -> JournalConfig {
    JournalConfig {
        storage: Arc::new(HistoryView::without_archive(Arc::new(StdStorage::default()), dir)),
        dir: dir.to_path_buf(),
        serializer,
        schema_version,
        segment_size: u64::MAX,
        preallocate: 0,
    }
}
