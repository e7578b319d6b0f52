//! `Store::backup`: a hot backup taken inside the process, beside running commits.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use airomem_core::{Seq, Serializer, State};
use tokio::sync::oneshot;

use crate::Error;
use crate::backup::{BackupReport, take};
use crate::store::Store;

impl<S: State, Z: Serializer> Store<S, Z> {
    /// Backs the store up into `dest` (a new or empty directory) while commits continue, and
    /// returns once the backup is durable.
    ///
    /// The cut: a snapshot taken now ([`Store::snapshot`]: a frozen view where the state
    /// offers one, so commits wait only for the view), plus the journal after it up to the
    /// last batch written when the snapshot was durable. Snapshots and sealed segments are
    /// hard-linked where the file system allows it; the segment being appended to is copied
    /// up to the end of the cut batch. Retention waits while the files are pinned. Every
    /// file is read back and checked as one cut, synced, and listed with its length and
    /// crc32c in a manifest written last; the directory is synced. [`crate::backup::restore`]
    /// (or `airomem restore`) turns it into a store that opens with exactly the state at
    /// [`BackupReport::seq`].
    ///
    /// The file I/O runs on a thread of its own, never on the async runtime's workers. It
    /// reads the store's directory through the real file system (`std::fs`), whatever
    /// storage the store was opened with: hard links are not part of the `Storage` seam.
    pub async fn backup(&self, dest: impl AsRef<Path>) -> Result<BackupReport, Error> {
        let started = Instant::now();
        self.snapshot().await?;
        // Every batch up to here was written before the snapshot was taken or after it;
        // the cut ends at the last one whole by now.
        let until = Seq(self.stats().last_seq);
        let dir = self.inner.dir.clone();
        let dest = dest.as_ref().to_path_buf();
        let prune = Arc::clone(&self.inner.prune);
        let (tx, rx) = oneshot::channel();
        std::thread::Builder::new()
            .name("airomem-backup".into())
            .spawn(move || drop(tx.send(take(&dir, &dest, Some(until), Some(&prune), started))))
            .map_err(Error::io("spawn backup thread", &self.inner.dir))?;
        rx.await.map_err(|_| Error::Closed)?
    }
}
