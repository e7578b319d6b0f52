//! redb 3 as a session store: table `sessions: &str -> u64`, one write transaction per
//! command with the default durability (`Durability::Immediate`: durable when `commit`
//! returns).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use airomem_workspace::SessionsCommand;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};
use tokio::runtime::Handle;

use super::peer::{Commands, Peer, SizeHint};
use crate::measure::BoxError;

const SESSIONS: TableDefinition<&str, u64> = TableDefinition::new("sessions");

/// One database shared by every writer thread, and the rows that [`Peer::recover`] loaded.
pub struct Redb {
    db: Arc<Database>,
    loaded: HashMap<String, u64>,
}

fn path(dir: &Path) -> PathBuf {
    dir.join("sessions.redb")
}

/// Opens (or creates) the database and makes sure the table exists.
fn connect(dir: &Path) -> Result<Database, BoxError> {
    let db = Database::create(path(dir))?;
    let tx = db.begin_write()?;
    tx.open_table(SESSIONS)?;
    tx.commit()?;
    Ok(db)
}

/// Executes one command in `tx`.
fn execute(tx: &WriteTransaction, command: &SessionsCommand) -> Result<(), BoxError> {
    let mut table = tx.open_table(SESSIONS)?;
    match command {
        SessionsCommand::CreateSession { token, user_id } => drop(table.insert(token.as_str(), user_id)?),
        SessionsCommand::DeleteSession { token } => drop(table.remove(token.as_str())?),
    }
    Ok(())
}

impl Redb {
    /// Opens the database in `dir` and loads every row into a `HashMap`: [`Peer::recover`]
    /// with [`SizeHint::None`]. With [`SizeHint::Count`] the map is sized from the table's
    /// length first (redb keeps it in the table's header: no scan).
    pub fn load(dir: &Path, hint: SizeHint) -> Result<Self, BoxError> {
        let db = Database::open(path(dir))?;
        let table = db.begin_read()?.open_table(SESSIONS)?;
        let mut loaded = match hint {
            SizeHint::None => HashMap::new(),
            SizeHint::Count => HashMap::with_capacity(usize::try_from(table.len()?)?),
        };
        for row in table.iter()? {
            let (token, user_id) = row?;
            loaded.insert(token.value().to_owned(), user_id.value());
        }
        drop(table);
        Ok(Redb { db: Arc::new(db), loaded })
    }

    /// Sessions loaded by [`Redb::load`].
    pub fn loaded(&self) -> &HashMap<String, u64> {
        &self.loaded
    }
}

impl Peer for Redb {
    fn open(dir: &Path, _runtime: &Handle) -> Result<Self, BoxError> {
        Ok(Redb { db: Arc::new(connect(dir)?), loaded: HashMap::new() })
    }

    fn commit(&self, command: SessionsCommand) -> Result<(), BoxError> {
        let tx = self.db.begin_write()?;
        execute(&tx, &command)?;
        tx.commit()?;
        Ok(())
    }

    fn sessions(&self) -> Result<usize, BoxError> {
        let len = self.db.begin_read()?.open_table(SESSIONS)?.len()?;
        Ok(usize::try_from(len)?)
    }

    fn lookup_sum(&self, tokens: &[String]) -> Result<u64, BoxError> {
        let mut sum = 0;
        for token in tokens {
            // A read transaction per lookup, as a request handler would take one.
            let table = self.db.begin_read()?.open_table(SESSIONS)?;
            sum += table.get(token.as_str())?.map_or(0, |v| v.value());
        }
        Ok(sum)
    }

    fn build(dir: &Path, _runtime: &Handle, commands: Commands) -> Result<(), BoxError> {
        // One write transaction for the whole data set.
        let db = connect(dir)?;
        let tx = db.begin_write()?;
        {
            let mut table = tx.open_table(SESSIONS)?;
            for command in commands {
                match command {
                    SessionsCommand::CreateSession { token, user_id } => drop(table.insert(token.as_str(), user_id)?),
                    SessionsCommand::DeleteSession { token } => drop(table.remove(token.as_str())?),
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn recover(dir: &Path, _runtime: &Handle) -> Result<Self, BoxError> {
        Redb::load(dir, SizeHint::None)
    }

    fn recovered_equals(&self, expected: &HashMap<String, u64>) -> Result<bool, BoxError> {
        Ok(self.loaded == *expected)
    }

    fn close(self) -> Result<(), BoxError> {
        drop(self.db);
        Ok(())
    }
}
