//! The typed tools an application offers its operators (`airomem::tool`): an export at any
//! point reads back as exactly that state; an import builds a store that opens to it and
//! goes on numbering where it stopped; bad input and occupied directories are refused with
//! nothing written; a full disk at any step of an import leaves either no store or the
//! whole one; compact takes a snapshot and applies retention offline.
#![cfg(feature = "snapshot")]

use std::io;
use std::path::Path;

use airomem::tool::{self, EXPORT_FORMAT};
use airomem::{At, Durability, Error, JsonSerializer, PostcardSerializer, Seq, Store, StoreOptions};
use airomem_workspace::Log;
use airomem_workspace::sim::SimStorage;

fn fill(dir: &Path, n: u64) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let options = StoreOptions::default().segment_size(512).durability(Durability::OsBuffered);
        let store: Store<Log, PostcardSerializer> =
            Store::open_with(PostcardSerializer, dir, options).await.expect("open");
        for v in 0..n {
            store.commit(v * 3).await.expect("commit");
            if v == n / 2 {
                store.snapshot().await.expect("snapshot");
            }
        }
        store.close().await.expect("close");
    });
}

fn export(dir: &Path, at: At) -> (tool::Exported, Vec<u8>) {
    let mut out = Vec::new();
    let exported = tool::export::<Log, _>(PostcardSerializer, dir, at, &mut out).expect("export");
    (exported, out)
}

#[test]
fn export_then_import_moves_the_state_and_its_numbering() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let source = tmp.path().join("source");
    fill(&source, 200);

    let (exported, bytes) = export(&source, At::Seq(Seq(120)));
    assert_eq!(exported.seq, Seq(120));
    assert!(exported.committed_at.as_deref().is_some_and(|t| t.ends_with('Z')), "RFC 3339 commit time");
    let document: serde_json::Value = serde_json::from_slice(&bytes).expect("an export is JSON");
    assert_eq!(document["format"], EXPORT_FORMAT);
    assert_eq!(document["seq"], 120);
    assert_eq!(document["state"]["values"].as_array().expect("values").len(), 120);

    // Into a store of another serializer, even: the export is the state, not the bytes.
    let target = tmp.path().join("target");
    let seq =
        tool::import::<Log, _>(JsonSerializer, &target, bytes.as_slice(), StoreOptions::default()).expect("import");
    assert_eq!(seq, Seq(120));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let store: Store<Log, JsonSerializer> = Store::open(JsonSerializer, &target).await.expect("open the import");
        assert_eq!(store.query().expect("query").values, (0..120).map(|v| v * 3).collect::<Vec<_>>());
        assert_eq!(store.commit(7).await.expect("commit").seq, Seq(121), "numbering goes on after the export");
        store.close().await.expect("close");
    });

    let (latest, _) = export(&source, At::Latest);
    assert_eq!(latest.seq, Seq(200));
}

#[test]
fn import_refuses_bad_input_and_occupied_directories_writing_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let source = tmp.path().join("source");
    fill(&source, 30);
    let (_, good) = export(&source, At::Latest);

    let fresh = tmp.path().join("fresh");
    let refusals: [(&str, Vec<u8>); 4] = [
        ("garbage", b"not json at all".to_vec()),
        (
            "another document",
            br#"{"format":"something-else","version":1,"schema_version":1,"seq":3,"state":{"values":[]}}"#.to_vec(),
        ),
        (
            "another schema",
            String::from_utf8(good.clone())
                .expect("utf-8")
                .replace("\"schema_version\":1", "\"schema_version\":7")
                .into_bytes(),
        ),
        (
            "a state of other types",
            br#"{"format":"airomem-export","version":1,"schema_version":1,"seq":3,"state":{"tokens":{}}}"#.to_vec(),
        ),
    ];
    for (what, input) in refusals {
        match tool::import::<Log, _>(PostcardSerializer, &fresh, input.as_slice(), StoreOptions::default()) {
            Err(Error::ImportRefused { dir, reason }) => {
                assert_eq!(dir, fresh, "{what}");
                assert!(!reason.is_empty(), "{what}");
            }
            other => panic!("{what}: must be refused, got {other:?}"),
        }
        assert!(!fresh.exists(), "{what}: nothing may be written for a refused import");
    }

    // A directory that holds a store is never overwritten.
    let before: Vec<_> = std::fs::read_dir(&source).expect("list").map(|e| e.expect("entry").path()).collect();
    match tool::import::<Log, _>(PostcardSerializer, &source, good.as_slice(), StoreOptions::default()) {
        Err(Error::ImportRefused { reason, .. }) => assert!(reason.contains("already holds a store"), "{reason}"),
        other => panic!("an import over a store must be refused, got {other:?}"),
    }
    let after: Vec<_> = std::fs::read_dir(&source).expect("list").map(|e| e.expect("entry").path()).collect();
    assert_eq!(before, after);
}

/// The disk fills at each operation of an import in turn: the import reports it, and the
/// directory is then either no store at all (a retry succeeds) or the whole imported store.
#[test]
fn a_full_disk_at_any_step_of_an_import_leaves_nothing_or_everything() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let source = tmp.path().join("source");
    fill(&source, 40);
    let (_, bytes) = export(&source, At::Latest);
    let expected: Vec<u64> = (0..40).map(|v| v * 3).collect();
    let dir = Path::new("/store");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let options = |disk: &SimStorage| StoreOptions::default().storage(std::sync::Arc::new(disk.clone()));

    let clean = SimStorage::new();
    tool::import::<Log, _>(PostcardSerializer, dir, bytes.as_slice(), options(&clean)).expect("import");
    let steps = clean.ops();
    assert!(steps > 5);
    for step in 0..steps {
        let disk = SimStorage::new();
        disk.fail_at(step, io::ErrorKind::StorageFull);
        match tool::import::<Log, _>(PostcardSerializer, dir, bytes.as_slice(), options(&disk)) {
            Ok(_) => {}
            // A write that fails is a full disk; a read that fails (the simulated disk fails
            // whatever operation comes at that step) names the file and the cause.
            Err(e) => assert!(
                e.is_storage_full() || e.to_string().contains("No space left on device"),
                "step {step}: a full disk must read as one, got {e}"
            ),
        }
        disk.clear_faults();
        let has_snapshot = disk.contents().keys().any(|p| p.extension().is_some_and(|e| e == "snapshot"));
        if !has_snapshot {
            // The snapshot never got there: no store, so the same import simply runs again.
            let retry = tool::import::<Log, _>(PostcardSerializer, dir, bytes.as_slice(), options(&disk));
            assert_eq!(retry.unwrap_or_else(|e| panic!("step {step}: the retry failed: {e}")), Seq(40));
        }
        let opened = runtime.block_on(Store::<Log, _>::open_with(PostcardSerializer, dir, options(&disk)));
        let store =
            opened.unwrap_or_else(|e| panic!("step {step}: the directory does not open after the failure: {e}"));
        assert_eq!(store.query().expect("query").values, expected, "step {step}");
        runtime.block_on(store.close()).expect("close");
    }
}

#[test]
fn compact_snapshots_offline_and_respects_the_lock() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    fill(&dir, 100);
    let info = tool::compact::<Log, _>(PostcardSerializer, &dir, StoreOptions::default()).expect("compact");
    assert_eq!(info.seq, Seq(100));
    assert!(info.path.exists());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let store: Store<Log, PostcardSerializer> = runtime.block_on(Store::open(PostcardSerializer, &dir)).expect("open");
    assert_eq!(store.recovery().snapshot, Some(Seq(100)), "the reopen starts from the compacted snapshot");
    assert_eq!(store.query().expect("query").values.len(), 100);
    match tool::compact::<Log, _>(PostcardSerializer, &dir, StoreOptions::default()) {
        Err(Error::Locked { .. }) => {}
        other => panic!("compacting an open store must be refused, got {other:?}"),
    }
    runtime.block_on(store.close()).expect("close");
}
