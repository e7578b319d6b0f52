//! A snapshot plus the journal tail after it rebuilds exactly the state, recovery reports the
//! snapshot it used, and retention removes old snapshots and covered segments.
#![cfg(feature = "snapshot")]

use airomem::{PostcardSerializer, PostcardStore, Store, StoreOptions};
use airomem_workspace::{Sessions, SessionsCommand, token};

fn create(n: u64) -> SessionsCommand {
    SessionsCommand::CreateSession { token: token(n), user_id: n }
}

fn names(dir: &std::path::Path, suffix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .filter(|n| n.ends_with(suffix))
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_plus_tail_recovers_and_retention_prunes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let options = || StoreOptions::default().segment_size(4096);
    let mut model = Sessions::default();
    {
        let store: PostcardStore<Sessions> = Store::open_with(PostcardSerializer, dir, options()).await.expect("open");
        for round in 0..3u64 {
            for i in 0..200 {
                let n = round * 1000 + i;
                store.commit(create(n)).await.expect("commit");
                airomem::State::execute(&mut model, create(n));
            }
            let info = store.snapshot().await.expect("snapshot");
            assert_eq!(info.seq.get(), (round + 1) * 200);
            assert!(info.file_len < info.raw_len, "tokens are hex: zstd shrinks them");
        }
        for i in 0..50 {
            store.commit(create(9000 + i)).await.expect("commit");
            airomem::State::execute(&mut model, create(9000 + i));
        }
    }
    assert_eq!(
        names(dir, ".snapshot"),
        vec!["00000000000000000400.snapshot".to_string(), "00000000000000000600.snapshot".to_string()]
    );
    let segments = names(dir, ".journal");
    let first: u64 = segments[0].trim_end_matches(".journal").parse().expect("number");
    assert!(first > 1 && first <= 401, "segments before the oldest kept snapshot are gone: {segments:?}");

    let store: PostcardStore<Sessions> = Store::open_with(PostcardSerializer, dir, options()).await.expect("reopen");
    assert_eq!(store.recovery().snapshot.map(|s| s.get()), Some(600));
    assert_eq!(store.recovery().records_replayed, 50);
    assert_eq!(*store.query().expect("query"), model);
}
