//! The program from the project's original README (`test_mem_commit`: a `JsonStore` of
//! sessions with `usize` user ids), extended with a snapshot after the commit and a reopen
//! that loads the state from it instead of replaying the journal.
#![cfg(feature = "snapshot")]

use std::collections::HashMap;

use airomem::{JsonSerializer, JsonStore, Store};
use serde::{Deserialize, Serialize};
use tempfile::tempdir;

type SessionsStore = JsonStore<Sessions>;

#[derive(Serialize, Deserialize, Default, Debug)]
struct Sessions {
    tokens: HashMap<String, usize>,
}

impl airomem::State for Sessions {
    type Command = SessionsCommand;
    fn execute(&mut self, command: SessionsCommand) {
        match command {
            SessionsCommand::CreateSession { token, user_id } => {
                self.tokens.insert(token, user_id);
            }
            SessionsCommand::DeleteSession { token } => {
                self.tokens.remove(&token);
            }
        }
    }
}

#[derive(Serialize, Deserialize, Debug)]
enum SessionsCommand {
    CreateSession { token: String, user_id: usize },
    DeleteSession { token: String },
}

#[tokio::test]
async fn test_mem_commit_with_snapshot() {
    let dir = tempdir().expect("tempdir");
    let mut expected_tokens = HashMap::new();
    expected_tokens.insert("access_token".to_string(), 1);
    {
        let store: SessionsStore = Store::open(JsonSerializer, &dir).await.expect("open");
        store
            .commit(SessionsCommand::CreateSession { token: "access_token".to_string(), user_id: 1 })
            .await
            .expect("commit");
        assert_eq!(store.query().expect("query").tokens, expected_tokens);

        let info = store.snapshot().await.expect("snapshot");
        assert_eq!(info.seq.get(), 1);
        assert_eq!(info.path, dir.path().join("00000000000000000001.snapshot"));
        assert!(info.path.exists());
    }

    let store: SessionsStore = Store::open(JsonSerializer, &dir).await.expect("reopen");
    assert_eq!(store.recovery().snapshot.map(|s| s.get()), Some(1), "the state comes from the snapshot");
    assert!(store.recovery().snapshots_skipped.is_empty());
    assert_eq!(store.recovery().records_replayed, 0, "nothing is left to replay");
    assert_eq!(store.query().expect("query").tokens, expected_tokens);
}

#[tokio::test]
async fn the_example_with_a_snapshot_and_a_tail_survives_a_reopen() {
    let dir = tempdir().expect("tempdir");
    {
        let store: SessionsStore = Store::open(JsonSerializer, &dir).await.expect("open");
        store.commit(SessionsCommand::CreateSession { token: "a".into(), user_id: 1 }).await.expect("commit");
        store.commit(SessionsCommand::CreateSession { token: "b".into(), user_id: 2 }).await.expect("commit");
        assert_eq!(store.snapshot().await.expect("snapshot").seq.get(), 2);
        store.commit(SessionsCommand::DeleteSession { token: "a".into() }).await.expect("commit");
        store.commit(SessionsCommand::CreateSession { token: "c".into(), user_id: usize::MAX }).await.expect("commit");
    }
    let store: SessionsStore = Store::open(JsonSerializer, &dir).await.expect("reopen");
    assert_eq!(store.recovery().snapshot.map(|s| s.get()), Some(2));
    assert_eq!(store.recovery().records_replayed, 2);
    assert_eq!(
        store.query().expect("query").tokens,
        HashMap::from([("b".to_string(), 2), ("c".to_string(), usize::MAX)])
    );
}
