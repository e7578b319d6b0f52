//! Point-in-time reads at their edges: a point inside an atomic unit, and a store kept in a
//! custom `Storage`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use airomem::{At, Error, Past, PostcardSerializer, Seq, Store, StoreOptions};
use airomem_workspace::hooked::{Hooked, Hooks};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Default, Debug, PartialEq)]
struct Log {
    entries: Vec<u64>,
}

impl airomem::State for Log {
    type Command = u64;
    fn execute(&mut self, value: u64) {
        self.entries.push(value);
    }
}

/// A point inside an atomic unit reads as the point before the unit, and `seq()` says so.
#[tokio::test]
async fn a_point_inside_a_unit_reports_the_point_before_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let store: Store<Log, _> = Store::open(PostcardSerializer, &dir).await.expect("open");
    store.commit(1).await.expect("commit");
    store.commit_all([2, 3, 4]).await.expect("unit #2..#4");
    store.commit(5).await.expect("commit");
    store.close().await.expect("close");

    for inside in [2, 3] {
        let past: Past<Log> = Past::open(PostcardSerializer, &dir, At::Seq(Seq(inside))).expect("read");
        assert_eq!(past.state().entries, vec![1], "at #{inside}");
        assert_eq!(past.seq(), Seq(1), "at #{inside}, the state is the one after #1");
    }
    let past: Past<Log> = Past::open(PostcardSerializer, &dir, At::Seq(Seq(4))).expect("read");
    assert_eq!((past.state().entries.as_slice(), past.seq()), (&[1, 2, 3, 4][..], Seq(4)));
}

/// Keeps every file of one directory under another: a store that is not where the real file
/// system would look for it.
struct Relocated {
    shown: PathBuf,
    actual: PathBuf,
}

impl Hooks for Relocated {
    fn locate(&self, path: &Path) -> PathBuf {
        match path.strip_prefix(&self.shown) {
            Ok(rest) => self.actual.join(rest),
            Err(_) => path.to_path_buf(),
        }
    }
}

/// A store kept in a custom `Storage` is read at a point in time through that storage.
#[tokio::test]
async fn a_store_in_a_custom_storage_is_read_through_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let shown = tmp.path().join("not-here");
    let relocated = Relocated { shown: shown.clone(), actual: tmp.path().join("here") };
    let options = StoreOptions::default().storage(Arc::new(Hooked::new(Arc::new(relocated))));
    let store: Store<Log, _> = Store::open_with(PostcardSerializer, &shown, options.clone()).await.expect("open");
    for value in 1..=3 {
        store.commit(value).await.expect("commit");
    }
    store.close().await.expect("close");

    let past: Past<Log> = Past::open_with(PostcardSerializer, &shown, At::Seq(Seq(2)), &options).expect("read");
    assert_eq!((past.state().entries.as_slice(), past.seq()), (&[1, 2][..], Seq(2)));
    // The real file system has nothing there.
    let real = Past::<Log>::open(PostcardSerializer, &shown, At::Latest);
    assert!(matches!(real, Err(Error::NotAStore { .. })), "{real:?}");
}
