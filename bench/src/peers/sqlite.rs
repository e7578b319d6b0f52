//! SQLite (rusqlite, bundled) as a session store: table `sessions(token TEXT PRIMARY KEY,
//! user_id INTEGER)`, WAL mode, `synchronous=FULL`, one transaction per command, so every
//! commit syncs the write-ahead log.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use airomem_workspace::SessionsCommand;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::runtime::Handle;

use super::peer::{Commands, Peer, SizeHint};
use crate::measure::BoxError;

const INSERT: &str = "INSERT INTO sessions (token, user_id) VALUES (?1, ?2)";
const DELETE: &str = "DELETE FROM sessions WHERE token = ?1";
const LOOKUP: &str = "SELECT user_id FROM sessions WHERE token = ?1";

/// One connection, shared by every writer thread behind a mutex, and the rows that
/// [`Peer::recover`] loaded.
pub struct Sqlite {
    conn: Mutex<Connection>,
    loaded: HashMap<String, u64>,
}

fn path(dir: &Path) -> PathBuf {
    dir.join("sessions.db")
}

/// Opens the database in WAL mode with `synchronous=FULL` and creates the table.
fn connect(dir: &Path) -> Result<Connection, BoxError> {
    let conn = Connection::open(path(dir))?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    let synchronous: i64 = conn.pragma_query_value(None, "synchronous", |row| row.get(0))?;
    if mode != "wal" || synchronous != 2 {
        return Err(
            format!("SQLite refused WAL + synchronous=FULL: journal_mode={mode}, synchronous={synchronous}").into()
        );
    }
    conn.execute_batch("CREATE TABLE IF NOT EXISTS sessions (token TEXT PRIMARY KEY, user_id INTEGER)")?;
    Ok(conn)
}

/// Executes one command in the current transaction. User ids are stored as SQLite's
/// signed 64-bit integers.
fn execute(conn: &Connection, command: &SessionsCommand) -> Result<(), BoxError> {
    match command {
        SessionsCommand::CreateSession { token, user_id } => {
            conn.prepare_cached(INSERT)?.execute(params![token, i64::try_from(*user_id)?])?
        }
        SessionsCommand::DeleteSession { token } => conn.prepare_cached(DELETE)?.execute(params![token])?,
    };
    Ok(())
}

impl Sqlite {
    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens the database in `dir` and loads every row into a `HashMap`: [`Peer::recover`]
    /// with [`SizeHint::None`]. With [`SizeHint::Count`] the map is sized from a
    /// `SELECT COUNT(*)` first, which is part of the time.
    pub fn load(dir: &Path, hint: SizeHint) -> Result<Self, BoxError> {
        let conn = connect(dir)?;
        let mut loaded = match hint {
            SizeHint::None => HashMap::new(),
            SizeHint::Count => {
                let count: i64 = conn.query_row("SELECT COUNT(*) FROM sessions", [], |row| row.get(0))?;
                HashMap::with_capacity(usize::try_from(count)?)
            }
        };
        {
            let mut rows = conn.prepare("SELECT token, user_id FROM sessions")?;
            let mut rows = rows.query([])?;
            while let Some(row) = rows.next()? {
                loaded.insert(row.get(0)?, u64::try_from(row.get::<_, i64>(1)?)?);
            }
        }
        Ok(Sqlite { conn: Mutex::new(conn), loaded })
    }

    /// Sessions loaded by [`Sqlite::load`].
    pub fn loaded(&self) -> &HashMap<String, u64> {
        &self.loaded
    }
}

impl Peer for Sqlite {
    fn open(dir: &Path, _runtime: &Handle) -> Result<Self, BoxError> {
        Ok(Sqlite { conn: Mutex::new(connect(dir)?), loaded: HashMap::new() })
    }

    fn commit(&self, command: SessionsCommand) -> Result<(), BoxError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        execute(&tx, &command)?;
        tx.commit()?;
        Ok(())
    }

    fn sessions(&self) -> Result<usize, BoxError> {
        let count: i64 = self.lock().query_row("SELECT COUNT(*) FROM sessions", [], |row| row.get(0))?;
        Ok(usize::try_from(count)?)
    }

    fn lookup_sum(&self, tokens: &[String]) -> Result<u64, BoxError> {
        let mut sum = 0;
        for token in tokens {
            let conn = self.lock();
            let found: Option<i64> =
                conn.prepare_cached(LOOKUP)?.query_row(params![token], |row| row.get(0)).optional()?;
            sum += found.map_or(Ok(0), u64::try_from)?;
        }
        Ok(sum)
    }

    fn build(dir: &Path, _runtime: &Handle, commands: Commands) -> Result<(), BoxError> {
        // One transaction, with a page cache large enough to hold the table.
        let mut conn = connect(dir)?;
        conn.pragma_update(None, "cache_size", -262_144)?;
        let tx = conn.transaction()?;
        for command in commands {
            execute(&tx, &command)?;
        }
        tx.commit()?;
        conn.close().map_err(|(_, e)| e)?;
        Ok(())
    }

    fn recover(dir: &Path, _runtime: &Handle) -> Result<Self, BoxError> {
        Sqlite::load(dir, SizeHint::None)
    }

    fn recovered_equals(&self, expected: &HashMap<String, u64>) -> Result<bool, BoxError> {
        Ok(self.loaded == *expected)
    }

    fn close(self) -> Result<(), BoxError> {
        // The last connection to close checkpoints the log into the database and removes it.
        let conn = self.conn.into_inner().unwrap_or_else(PoisonError::into_inner);
        conn.close().map_err(|(_, e)| e)?;
        Ok(())
    }
}
