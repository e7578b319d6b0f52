//! A migration that cannot complete (a `TryFrom` that refuses the state, a conversion that
//! panics, an old `execute` that panics on old history, a schema the chain does not reach, a
//! chain whose versions do not decrease) fails the open with its own error and leaves every
//! file byte-identical: even the torn tail a crash left is not cut, since the cut belongs to
//! an open that succeeds. The working migration then opens the same directory.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use airomem::{Error, PostcardSerializer, Seq, Store, StoreOptions};
use airomem_workspace::migration::{
    LoopingLog, OrphanLog, POISON, PanickingLog, RefusingLog, StrictLog, Tagged, TaggedLog,
};
use airomem_workspace::{Append, SeqLog};

type Files = BTreeMap<String, Vec<u8>>;

fn files(dir: &Path) -> Files {
    let mut files = BTreeMap::new();
    for entry in fs::read_dir(dir).expect("list") {
        let entry = entry.expect("entry");
        let name = entry.file_name().into_string().expect("utf-8 name");
        files.insert(name, fs::read(entry.path()).expect("read"));
    }
    files
}

fn options() -> StoreOptions {
    // Small segments, so that old history spans several.
    StoreOptions::default().segment_size(1024)
}

fn append(value: u64) -> Append {
    Append { value, pad: vec![7; (value % 40) as usize], panic: false }
}

/// The values committed under schema 1: the poison sits early, far from the last batch.
fn values() -> Vec<u64> {
    (0..120).map(|i| if i == 10 { POISON } else { i * 3 }).collect()
}

/// A schema-1 store holding `values()`, closed, then given a torn write at its end (as a
/// crash in the middle of one more append leaves it). With `snapshot_at`, a snapshot is
/// taken after that many commands.
async fn schema_1_store(dir: &Path, snapshot_at: Option<usize>) {
    let store: Store<SeqLog, PostcardSerializer> =
        Store::open_with(PostcardSerializer, dir, options()).await.expect("open schema 1");
    for (i, value) in values().into_iter().enumerate() {
        store.commit(append(value)).await.expect("commit");
        if snapshot_at == Some(i + 1) {
            #[cfg(feature = "snapshot")]
            store.snapshot().await.expect("snapshot");
        }
    }
    store.close().await.expect("close");
    let mut segments: Vec<_> = fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "journal"))
        .collect();
    segments.sort();
    assert!(segments.len() > 2, "old history spans several segments");
    let newest = segments.last().expect("a segment");
    let mut bytes = fs::read(newest).expect("read");
    bytes.extend_from_slice(&[0xA5; 19]);
    fs::write(newest, bytes).expect("tear");
}

fn expected_v1() -> SeqLog {
    SeqLog { entries: values().into_iter().enumerate().map(|(i, v)| (i as u64 + 1, v)).collect() }
}

async fn open<S: airomem::State>(dir: &Path) -> Result<Store<S, PostcardSerializer>, Error> {
    Store::open_with(PostcardSerializer, dir, options()).await
}

/// Opens `dir` as `S`, which must fail; the files must not change.
async fn refused<S: airomem::State>(dir: &Path) -> Error {
    let before = files(dir);
    let error = match open::<S>(dir).await {
        Ok(_) => panic!("{} opened a store its migration cannot convert", std::any::type_name::<S>()),
        Err(e) => e,
    };
    assert_eq!(files(dir), before, "{}: a failed open changed files: {error}", std::any::type_name::<S>());
    error
}

async fn check_every_failure(snapshot_at: Option<usize>) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    schema_1_store(&dir, snapshot_at).await;

    let error = refused::<RefusingLog>(&dir).await;
    match &error {
        Error::MigrationFailed { from: 1, to: 2, after, reason, .. } => {
            assert_eq!(*after, Seq(values().len() as u64));
            assert!(reason.contains("entry 11 holds the poison value"), "{reason}");
        }
        other => panic!("expected MigrationFailed, got {other:?}"),
    }
    assert!(error.to_string().contains("nothing on disk was changed"), "{error}");

    let error = refused::<PanickingLog>(&dir).await;
    match &error {
        Error::MigrationFailed { from: 1, to: 2, reason, .. } => {
            assert!(reason.contains("panicked") && reason.contains("met the poison value"), "{reason}");
        }
        other => panic!("expected MigrationFailed, got {other:?}"),
    }

    let error = refused::<OrphanLog>(&dir).await;
    match &error {
        Error::SchemaUnknown { file, found: 1, current: 2, known, .. } => {
            assert!(known.is_empty());
            let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            assert!(name.ends_with(".journal") || name.ends_with(".snapshot"), "names a store file: {name}");
        }
        other => panic!("expected SchemaUnknown, got {other:?}"),
    }
    let message = error.to_string();
    assert!(message.contains("schema version 1") && message.contains("add `fn previous()`"), "{message}");

    let error = refused::<LoopingLog>(&dir).await;
    match &error {
        Error::InvalidMigrationChain { chain } => {
            assert!(chain.contains("LoopingLog (2) -> ") && chain.contains("OrphanLog (2)"), "{chain}");
        }
        other => panic!("expected InvalidMigrationChain, got {other:?}"),
    }

    if snapshot_at.is_none() {
        // The poison is replayed only when no snapshot covers it.
        let error = refused::<StrictLog>(&dir).await;
        match &error {
            Error::ReplayPanicked { seq, message } => {
                assert_eq!(*seq, Seq(11));
                assert!(message.contains("refuses the poison value"), "{message}");
            }
            other => panic!("expected ReplayPanicked, got {other:?}"),
        }
    }

    // The working migration opens it, cutting the torn tail now.
    let store = open::<TaggedLog>(&dir).await.expect("the working migration opens it");
    let report = store.recovery();
    assert!(report.torn_tail.is_some(), "the torn write is cut by the open that succeeds");
    assert_eq!(report.migrations.len(), 1);
    let expected = TaggedLog::from(expected_v1());
    assert_eq!(*store.query().expect("query"), expected);
    store.commit(append(1)).await.expect("commit under schema 2");
    store.close().await.expect("close");
    let store = open::<TaggedLog>(&dir).await.expect("reopen");
    let mut expected = expected;
    expected.entries.push(Tagged { seq: values().len() as u64 + 1, value: 1, schema: 2 });
    assert_eq!(*store.query().expect("query"), expected);
    assert!(store.recovery().migrations.is_empty() || cfg!(not(feature = "snapshot")));
}

#[tokio::test]
async fn failed_migrations_of_a_journal_change_nothing() {
    check_every_failure(None).await;
}

#[cfg(feature = "snapshot")]
#[tokio::test]
async fn failed_migrations_of_a_snapshot_and_journal_change_nothing() {
    check_every_failure(Some(50)).await;
}
