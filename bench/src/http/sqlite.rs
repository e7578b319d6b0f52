//! The SQLite variant (rusqlite, bundled): table `sessions(token BLOB PRIMARY KEY, user_id,
//! expires_at_nanos)` with an index on the expiry for the sweep, WAL, `synchronous=FULL`
//! (every commit syncs the log), one autocommitted statement per request. Connections come
//! from r2d2 pools and are used on tokio's blocking threads, since every call blocks: reads
//! from a pool of [`READERS`] (WAL readers run side by side), writes from a pool of their own,
//! one connection by default because SQLite runs one write transaction at a time and a
//! second writer only waits in the busy handler (`--sqlite-writers N` measures more).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use crate::backend::{Backend, Session, Token};
use crate::error::BoxError;

/// Connections for reads.
const READERS: u32 = 8;

/// Opens connections to one database file, each in WAL mode with `synchronous=FULL`.
#[derive(Debug)]
struct Manager {
    path: PathBuf,
}

impl r2d2::ManageConnection for Manager {
    type Connection = Connection;
    type Error = rusqlite::Error;

    fn connect(&self) -> Result<Connection, rusqlite::Error> {
        let conn = Connection::open(&self.path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(Duration::from_secs(30))?;
        Ok(conn)
    }

    fn is_valid(&self, conn: &mut Connection) -> Result<(), rusqlite::Error> {
        conn.execute_batch("")
    }

    fn has_broken(&self, _: &mut Connection) -> bool {
        false
    }
}

type Pool = r2d2::Pool<Manager>;

/// Sessions in a SQLite database.
#[derive(Clone)]
pub struct Sqlite {
    writers: Pool,
    readers: Pool,
}

impl Sqlite {
    /// Opens (or creates) `dir/sessions.db`, with `writers` connections for writes.
    pub fn open(dir: &Path, writers: u32) -> Result<Sqlite, BoxError> {
        std::fs::create_dir_all(dir)?;
        let manager = || Manager { path: dir.join("sessions.db") };
        let conn = r2d2::ManageConnection::connect(&manager())?;
        let mode: String = conn.pragma_query_value(None, "journal_mode", |row| row.get(0))?;
        let synchronous: i64 = conn.pragma_query_value(None, "synchronous", |row| row.get(0))?;
        if mode != "wal" || synchronous != 2 {
            return Err(format!("SQLite refused WAL + FULL: journal_mode={mode}, synchronous={synchronous}").into());
        }
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS sessions (
                 token BLOB PRIMARY KEY, user_id INTEGER NOT NULL, expires_at_nanos INTEGER NOT NULL
             ) WITHOUT ROWID;
             CREATE INDEX IF NOT EXISTS sessions_by_expiry ON sessions (expires_at_nanos);",
        )?;
        drop(conn);
        let pool = |size| r2d2::Pool::builder().max_size(size).test_on_check_out(false).build(manager());
        Ok(Sqlite { writers: pool(writers.max(1))?, readers: pool(READERS)? })
    }
}

/// Runs `work` on a connection of `pool`, on a blocking thread.
async fn on<R: Send + 'static>(
    pool: &Pool,
    work: impl FnOnce(&Connection) -> rusqlite::Result<R> + Send + 'static,
) -> Result<R, String> {
    let pool = pool.clone();
    let done = tokio::task::spawn_blocking(move || {
        let conn = pool.get().map_err(|e| e.to_string())?;
        work(&conn).map_err(|e| e.to_string())
    });
    done.await.map_err(|e| e.to_string())?
}

/// SQLite integers are signed 64-bit: user ids and times are stored bit for bit.
fn to_sql(value: u64) -> i64 {
    value as i64
}

fn from_sql(value: i64) -> u64 {
    value as u64
}

impl Backend for Sqlite {
    async fn create(&self, token: Token, session: Session) -> Result<(), String> {
        on(&self.writers, move |conn| {
            conn.prepare_cached("INSERT INTO sessions (token, user_id, expires_at_nanos) VALUES (?1, ?2, ?3)")?
                .execute(params![token.to_be_bytes(), to_sql(session.user_id), to_sql(session.expires_at_nanos)])
                .map(drop)
        })
        .await
    }

    async fn read(&self, token: Token, now_nanos: u64) -> Result<Option<Session>, String> {
        on(&self.readers, move |conn| {
            conn.prepare_cached(
                "SELECT user_id, expires_at_nanos FROM sessions WHERE token = ?1 AND expires_at_nanos > ?2",
            )?
            .query_row(params![token.to_be_bytes(), to_sql(now_nanos)], |row| {
                Ok(Session { user_id: from_sql(row.get(0)?), expires_at_nanos: from_sql(row.get(1)?) })
            })
            .optional()
        })
        .await
    }

    async fn delete(&self, token: Token, now_nanos: u64) -> Result<bool, String> {
        on(&self.writers, move |conn| {
            let expired: Option<i64> = conn
                .prepare_cached("DELETE FROM sessions WHERE token = ?1 RETURNING expires_at_nanos")?
                .query_row(params![token.to_be_bytes()], |row| row.get(0))
                .optional()?;
            Ok(expired.is_some_and(|expires_at| from_sql(expires_at) > now_nanos))
        })
        .await
    }

    async fn sweep(&self, now_nanos: u64) -> Result<(), String> {
        on(&self.writers, move |conn| {
            conn.prepare_cached("DELETE FROM sessions WHERE expires_at_nanos <= ?1")?
                .execute(params![to_sql(now_nanos)])
                .map(drop)
        })
        .await
    }

    async fn count(&self) -> Result<u64, String> {
        on(&self.readers, |conn| conn.query_row("SELECT count(*) FROM sessions", [], |row| row.get::<_, i64>(0)))
            .await
            .map(from_sql)
    }
}
