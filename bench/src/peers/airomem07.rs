//! airomem 0.7 from crates.io (`airomem07` here): an older, unrelated implementation of the
//! Prevalent System pattern. Its only serializer is JSON, one command per line; by default
//! every commit appends and `fdatasync`s under the store's write lock (no group commit), and
//! every 65,535 commands it writes a snapshot and starts a new journal, keeping all old
//! files.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::Path;

use airomem_workspace::SessionsCommand;
use airomem07::{JournalFlushPolicy, JsonSerializer, Store, StoreOptions, Tx};
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;

use super::peer::{Commands, Peer};
use crate::measure::BoxError;

/// The session state as airomem 0.7 holds it.
#[derive(Serialize, Deserialize, Default, Debug)]
pub struct Sessions07 {
    tokens: HashMap<String, u64>,
}

impl Tx<Sessions07> for SessionsCommand {
    fn execute(self, data: &mut Sessions07) {
        match self {
            SessionsCommand::CreateSession { token, user_id } => {
                data.tokens.insert(token, user_id);
            }
            SessionsCommand::DeleteSession { token } => {
                data.tokens.remove(&token);
            }
        }
    }
}

type Store07 = Store<Sessions07, SessionsCommand, JsonSerializer>;

/// An airomem 0.7 store and the runtime its async API runs on.
pub struct Airomem07 {
    store: Store07,
    runtime: Handle,
}

impl Airomem07 {
    /// Commits `commands` with no sync per commit (`JournalFlushPolicy::Manually`), a
    /// snapshot after `snapshot_after` commands, then flushes and syncs the journal. The
    /// loop runs as a task on the runtime, where awaiting each commit is cheapest.
    fn build_with(
        dir: &Path,
        runtime: &Handle,
        commands: Commands,
        snapshot_after: NonZeroUsize,
    ) -> Result<(), BoxError> {
        let options = StoreOptions::default()
            .journal_flush_policy(JournalFlushPolicy::Manually)
            .max_journal_entries(snapshot_after)
            .flush_synchronously_on_drop(false);
        let dir = dir.to_path_buf();
        runtime.block_on(runtime.spawn(async move {
            let mut store = Store07::open(JsonSerializer, options, dir).await?;
            for command in commands {
                store.commit(command).await?;
            }
            store.flush_and_sync().await?;
            Ok::<_, BoxError>(())
        }))?
    }
}

impl Peer for Airomem07 {
    fn open(dir: &Path, runtime: &Handle) -> Result<Self, BoxError> {
        let store = runtime.block_on(Store07::open(JsonSerializer, StoreOptions::default(), dir))?;
        Ok(Airomem07 { store, runtime: runtime.clone() })
    }

    fn commit(&self, command: SessionsCommand) -> Result<(), BoxError> {
        // `commit` takes `&mut self` on a cheap clone, as the crate's docs intend.
        let mut store = self.store.clone();
        self.runtime.block_on(store.commit(command))?;
        Ok(())
    }

    fn sessions(&self) -> Result<usize, BoxError> {
        self.runtime.block_on(async { Ok(self.store.query().await?.tokens.len()) })
    }

    fn lookup_sum(&self, tokens: &[String]) -> Result<u64, BoxError> {
        self.runtime.block_on(async {
            let mut sum = 0;
            for token in tokens {
                sum += self.store.query().await?.tokens.get(token).copied().unwrap_or(0);
            }
            Ok(sum)
        })
    }

    fn build(dir: &Path, runtime: &Handle, commands: Commands) -> Result<(), BoxError> {
        // No snapshot: one journal, replayed in full by recovery.
        Airomem07::build_with(dir, runtime, commands, NonZeroUsize::MAX)
    }

    fn build_with_snapshot(
        dir: &Path,
        runtime: &Handle,
        commands: Commands,
        snapshot_after: u64,
    ) -> Result<bool, BoxError> {
        // The snapshot is written when the journal holds `max_journal_entries` commands and
        // the next one arrives; recovery then loads it and replays only the newer journal.
        let after = NonZeroUsize::new(snapshot_after as usize).ok_or("a snapshot after no command")?;
        Airomem07::build_with(dir, runtime, commands, after)?;
        Ok(true)
    }

    fn recover(dir: &Path, runtime: &Handle) -> Result<Self, BoxError> {
        Peer::open(dir, runtime)
    }

    fn recovered_equals(&self, expected: &HashMap<String, u64>) -> Result<bool, BoxError> {
        self.runtime.block_on(async { Ok(self.store.query().await?.tokens == *expected) })
    }

    fn close(self) -> Result<(), BoxError> {
        // Every commit was synced; dropping the last clone closes the journal file.
        let _runtime = self.runtime.enter();
        drop(self.store);
        Ok(())
    }
}
