//! Changing the state's types between releases: a store written by the first release's types
//! (`v1`) is reopened by the next release's (`Sessions`, schema version 2), which replays the
//! old history with the old code and converts the state once, at open.
//!
//! ```text
//! cargo run --release --example migration
//! ```
//! It works in a fresh directory under the system's temp dir and removes it.

use std::collections::BTreeMap;

use airomem::{PostcardSerializer, PostcardStore, Store};
use serde::{Deserialize, Serialize};

/// The first release's types, frozen: copied verbatim (with their `impl State`) when the
/// second release changed them, and never edited since. The store's old files need them.
mod v1 {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Default, Debug)]
    pub struct Sessions {
        pub tokens: BTreeMap<String, u64>,
    }

    #[derive(Serialize, Deserialize, Debug)]
    pub enum SessionsCommand {
        CreateSession { token: String, user_id: u64 },
        DeleteSession { token: String },
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
}

/// A session now records when it started (`None`: before the second release, which is
/// when that began).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
struct Session {
    user_id: u64,
    created_at_nanos: Option<u64>,
}

/// The second release's state.
#[derive(Serialize, Deserialize, Default, Debug)]
struct Sessions {
    tokens: BTreeMap<String, Session>,
}

/// The second release's commands: one more, to end all of a user's sessions.
#[derive(Serialize, Deserialize, Debug)]
enum SessionsCommand {
    CreateSession { token: String, user_id: u64 },
    DeleteSession { token: String },
    DeleteUser { user_id: u64 },
}

/// How a state of the first release becomes one of the second.
impl From<v1::Sessions> for Sessions {
    fn from(old: v1::Sessions) -> Self {
        let tokens =
            old.tokens.into_iter().map(|(token, user_id)| (token, Session { user_id, created_at_nanos: None }));
        Sessions { tokens: tokens.collect() }
    }
}

impl airomem::State for Sessions {
    type Command = SessionsCommand;
    // Raised because old bytes would decode differently under the new types.
    const SCHEMA_VERSION: u32 = 2;

    fn execute(&mut self, command: SessionsCommand) {
        match command {
            SessionsCommand::CreateSession { token, user_id } => {
                // The recorded commit time, so that a replay gives the same value.
                let created_at_nanos = airomem::CommitContext::current().map(|c| c.unix_nanos);
                self.tokens.insert(token, Session { user_id, created_at_nanos });
            }
            SessionsCommand::DeleteSession { token } => {
                self.tokens.remove(&token);
            }
            SessionsCommand::DeleteUser { user_id } => self.tokens.retain(|_, s| s.user_id != user_id),
        }
    }

    fn previous<Z: airomem::Serializer>() -> airomem::Previous<Self, Z> {
        airomem::Previous::from::<v1::Sessions>()
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("airomem-migration-{}", std::process::id()));
    println!("store in {}", dir.display());

    // The first release writes the store.
    let store: PostcardStore<v1::Sessions> = Store::open(PostcardSerializer, &dir).await?;
    for (token, user_id) in [("alice-phone", 1), ("alice-laptop", 1), ("bob", 2), ("carol", 3)] {
        store.commit(v1::SessionsCommand::CreateSession { token: token.into(), user_id }).await?;
    }
    store.commit(v1::SessionsCommand::DeleteSession { token: "carol".into() }).await?;
    println!("release 1 wrote {} commands: {:?}", store.stats().last_seq, store.query()?.tokens);
    store.close().await?;

    // The second release opens it: the five v1 commands run through v1's `execute`, then
    // the state is converted with `From`.
    let store: PostcardStore<Sessions> = Store::open(PostcardSerializer, &dir).await?;
    println!("release 2 opened it:");
    for (token, session) in &store.query()?.tokens {
        println!("  {token}: {session:?}");
    }
    let report = store.recovery();
    for m in &report.migrations {
        println!("  converted from schema {} to {} after record {}", m.from, m.to, m.after);
    }
    match report.sealed {
        Some(seq) => println!("  sealed with a schema-2 snapshot of record {seq}: the next open starts there"),
        None => println!("  not sealed (no `snapshot` feature): every open converts again"),
    }
    assert_eq!(report.migrations.len(), 1);
    // No old file was rewritten: the v1 segment is still there.
    println!("  oldest schema on disk: {}", store.stats().oldest_schema_on_disk);

    let first = store.commit(SessionsCommand::DeleteUser { user_id: 1 }).await?;
    let last = store.commit(SessionsCommand::CreateSession { token: "dave".into(), user_id: 4 }).await?;
    println!("release 2 committed records {} to {}: {:?}", first.seq, last.seq, store.query()?.tokens);

    #[cfg(feature = "snapshot")]
    {
        // Retention keeps two snapshots: with the sealing one and this one, the v1 files
        // are no longer needed to rebuild the state, and go.
        store.snapshot().await?;
        let oldest = store.stats().oldest_schema_on_disk;
        println!("after one more snapshot, oldest schema on disk: {oldest}");
        assert_eq!(oldest, 2);
        println!("nothing on disk needs v1 any more: `mod v1` and `fn previous` can be deleted");
    }

    store.close().await?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
