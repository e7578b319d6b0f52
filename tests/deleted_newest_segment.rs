//! Deleting the newest journal segment (and with it acknowledged commands) is detected: the
//! journal head names it, so open fails instead of rebuilding a shorter history.

use airomem::{Error, JournalError, PostcardSerializer, PostcardStore, Store, StoreOptions};
use airomem_workspace::{Sessions, SessionsCommand, token};

#[tokio::test]
async fn a_deleted_newest_segment_is_an_error_not_a_shorter_history() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let options = || StoreOptions::default().segment_size(1024);
    {
        let store: PostcardStore<Sessions> = Store::open_with(PostcardSerializer, dir, options()).await.expect("open");
        for n in 0..100 {
            store.commit(SessionsCommand::CreateSession { token: token(n), user_id: n }).await.expect("commit");
        }
    }
    let mut segments: Vec<_> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "journal"))
        .collect();
    segments.sort();
    assert!(segments.len() > 2, "the workload rolled over");
    let newest = segments.pop().expect("a segment");
    std::fs::remove_file(&newest).expect("delete the newest segment");

    let result: Result<PostcardStore<Sessions>, Error> = Store::open_with(PostcardSerializer, dir, options()).await;
    match result {
        Err(Error::Journal(e)) => match &*e {
            JournalError::SegmentMissing { file } => assert_eq!(file, &newest),
            other => panic!("expected SegmentMissing, got {other}"),
        },
        Err(other) => panic!("expected a journal error, got {other}"),
        Ok(store) => panic!("opened with {} sessions instead of failing", store.query().expect("query").tokens.len()),
    }
}
