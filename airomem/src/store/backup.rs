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

#[cfg(all(test, feature = "snapshot"))]
mod tests {
    use std::time::Instant;

    use airomem_core::Seq;

    use crate::backup::take;
    use crate::{PostcardSerializer, StoreOptions, blocking};

    #[derive(serde::Serialize, serde::Deserialize, Default)]
    struct Sum {
        total: u64,
    }

    impl airomem_core::State for Sum {
        type Command = u64;
        fn execute(&mut self, value: u64) {
            self.total += value;
        }
    }

    /// A snapshot newer than the cut (an automatic one, taken after `Store::backup` chose
    /// its cut) is passed over for the newest one at or before it: the backup holds exactly
    /// the commands up to the cut.
    #[test]
    fn a_snapshot_past_the_cut_is_passed_over() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("store");
        let store: blocking::Store<Sum, PostcardSerializer> =
            blocking::Store::open_with(PostcardSerializer, &dir, StoreOptions::default()).expect("open");
        for value in 1..=20 {
            store.commit(value).expect("commit");
            if value % 10 == 0 {
                store.snapshot().expect("snapshot");
            }
        }
        let dest = tmp.path().join("backup");
        let report = take(&dir, &dest, Some(Seq(15)), None, Instant::now()).expect("backup");
        assert_eq!(report.seq, Seq(15));
        #[cfg(unix)]
        for entry in std::fs::read_dir(&dest).expect("list") {
            use std::os::unix::fs::PermissionsExt;
            let entry = entry.expect("entry");
            let mode = entry.metadata().expect("metadata").permissions().mode();
            assert_eq!(mode & 0o077, 0, "{} is {mode:o}: a backup of secrets is private", entry.path().display());
        }
        let restored = tmp.path().join("restored");
        crate::backup::restore(&dest, &restored, None).expect("restore");
        drop(store);
        let back: blocking::Store<Sum, PostcardSerializer> =
            blocking::Store::open(PostcardSerializer, &restored).expect("open the restored store");
        assert_eq!(back.query().expect("query").total, (1..=15).sum::<u64>());
    }
}
