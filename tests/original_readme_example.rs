//! The example from the project's original README, nearly verbatim: only `use` lines added.

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
async fn test_mem_commit() {
    let dir = tempdir().unwrap();
    let store: SessionsStore = Store::open(JsonSerializer, &dir).await.unwrap();
    store.commit(SessionsCommand::CreateSession { token: "access_token".to_string(), user_id: 1 }).await.unwrap();
    let mut expected_tokens = HashMap::new();
    expected_tokens.insert("access_token".to_string(), 1);
    assert_eq!(store.query().unwrap().tokens, expected_tokens);
}

#[tokio::test]
async fn the_example_survives_a_reopen() {
    let dir = tempdir().unwrap();
    {
        let store: SessionsStore = Store::open(JsonSerializer, &dir).await.unwrap();
        store.commit(SessionsCommand::CreateSession { token: "a".into(), user_id: 1 }).await.unwrap();
        store.commit(SessionsCommand::CreateSession { token: "b".into(), user_id: 2 }).await.unwrap();
        store.commit(SessionsCommand::DeleteSession { token: "a".into() }).await.unwrap();
    }
    let store: SessionsStore = Store::open(JsonSerializer, &dir).await.unwrap();
    assert_eq!(store.query().unwrap().tokens, HashMap::from([("b".to_string(), 2)]));
    assert_eq!(store.recovery().records_replayed, 3);
}
