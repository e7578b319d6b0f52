//! A snapshot temporary file left by a crash mid-write is never loaded: open removes it,
//! reports it, and recovers the exact state from the real snapshot and the journal.
#![cfg(feature = "snapshot")]

use std::fs;
use std::path::Path;

use airomem::{PostcardSerializer, PostcardStore, State, Store, StoreOptions};
use airomem_workspace::{Sessions, SessionsCommand, token};

const LEFTOVER: &str = "00000000000000000005.snapshot.tmp";

fn create(n: u64) -> SessionsCommand {
    SessionsCommand::CreateSession { token: token(n), user_id: n }
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(dir).expect("list").map(|e| e.expect("entry").file_name().into_string().expect("utf-8")).collect();
    names.sort();
    names
}

async fn commit(store: &PostcardStore<Sessions>, model: &mut Sessions, command: SessionsCommand) {
    store.commit(command.clone()).await.expect("commit");
    model.execute(command);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftover_temp_file_without_snapshots_is_removed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let mut model = Sessions::default();
    {
        let store: PostcardStore<Sessions> = Store::open(PostcardSerializer, dir).await.expect("open");
        for n in 0..10 {
            commit(&store, &mut model, create(n)).await;
        }
        commit(&store, &mut model, SessionsCommand::DeleteSession { token: token(3) }).await;
    }
    fs::write(dir.join(LEFTOVER), b"a crash left this half-written snapshot behind").expect("write leftover");
    // Something that merely looks similar is not the store's to remove.
    fs::write(dir.join("notes.snapshot.tmp"), b"user file").expect("write unrelated");

    let store: PostcardStore<Sessions> = Store::open(PostcardSerializer, dir).await.expect("reopen");
    let report = store.recovery();
    assert_eq!(report.snapshot_temp_files_removed, 1, "{report:?}");
    assert_eq!(report.snapshot, None);
    assert!(report.snapshots_skipped.is_empty(), "a temporary file is not a snapshot: {report:?}");
    assert_eq!(report.records_replayed, 11);
    assert_eq!(*store.query().expect("query"), model);
    let files = names(dir);
    assert!(!files.contains(&LEFTOVER.to_string()), "{files:?}");
    assert!(files.contains(&"notes.snapshot.tmp".to_string()), "{files:?}");
    drop(store);

    // Nothing left to clean the next time.
    let store: PostcardStore<Sessions> = Store::open(PostcardSerializer, dir).await.expect("reopen again");
    assert_eq!(store.recovery().snapshot_temp_files_removed, 0);
    assert_eq!(*store.query().expect("query"), model);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftover_temp_file_next_to_a_real_snapshot_is_removed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let options = || StoreOptions::default().segment_size(1024);
    let mut model = Sessions::default();
    {
        let store: PostcardStore<Sessions> = Store::open_with(PostcardSerializer, dir, options()).await.expect("open");
        for n in 0..40 {
            commit(&store, &mut model, create(n)).await;
        }
        let info = store.snapshot().await.expect("snapshot");
        assert_eq!(info.seq.get(), 40);
        for n in 0..7 {
            commit(&store, &mut model, SessionsCommand::DeleteSession { token: token(n * 5) }).await;
        }
    }
    // A crash while writing a snapshot (of an earlier state) left its temporary file; one
    // that carries a valid-looking header is no more trusted than garbage.
    let mut leftover = b"AIROMEMS".to_vec();
    leftover.extend_from_slice(&[0xa5; 200]);
    fs::write(dir.join(LEFTOVER), leftover).expect("write leftover");

    let store: PostcardStore<Sessions> = Store::open_with(PostcardSerializer, dir, options()).await.expect("reopen");
    let report = store.recovery();
    assert_eq!(report.snapshot_temp_files_removed, 1, "{report:?}");
    assert_eq!(report.snapshot.map(|s| s.get()), Some(40), "{report:?}");
    assert!(report.snapshots_skipped.is_empty(), "{report:?}");
    assert_eq!(report.records_replayed, 7);
    assert_eq!(*store.query().expect("query"), model);
    let files = names(dir);
    assert!(!files.iter().any(|f| f.ends_with(".tmp")), "{files:?}");
    assert_eq!(files.iter().filter(|f| f.ends_with(".snapshot")).count(), 1, "{files:?}");
}
