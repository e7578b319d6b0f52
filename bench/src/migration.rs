//! Schema migration, measured: opening the data set's store (written under `Sessions`,
//! schema 1) with a schema-2 type that migrates it, against what a user would otherwise do
//! by hand, a plain open of the same store plus one snapshot.
//!
//! Two starting points: the journal alone (the migration replays every command through
//! schema 1's `execute`, converts, and seals with a snapshot), and the same store with a
//! schema-1 snapshot at its end (decode that snapshot, convert, seal). Peak memory of the
//! migrating open is measured in a fresh child process (`airomem-bench --migration-memory
//! DIR SEGMENT_SIZE`), like the plain open's in [`crate::memory`].

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use airomem::{PostcardSerializer, PostcardStore, Previous, Serializer, Store, StoreOptions};
use airomem_workspace::{Sessions, SessionsCommand};
use serde::{Deserialize, Serialize};
use tokio::runtime::Runtime;

use crate::commits::SessionStore;
use crate::measure::{BoxError, REPETITIONS, Summary};
use crate::memory::{copy_store, peak, reset_peak, resident};

/// A session at schema 2: who, and the command that opened it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Session {
    user_id: u64,
    opened_at: u64,
}

/// `Sessions` at schema 2: each token keeps the sequence number of the command that opened
/// it (0 for sessions migrated from schema 1, which did not record it).
#[derive(Serialize, Deserialize, Default, Debug)]
pub struct SessionsV2 {
    sessions: HashMap<String, Session>,
}

impl From<Sessions> for SessionsV2 {
    fn from(old: Sessions) -> Self {
        let sessions =
            old.tokens.into_iter().map(|(token, user_id)| (token, Session { user_id, opened_at: 0 })).collect();
        SessionsV2 { sessions }
    }
}

impl airomem::State for SessionsV2 {
    type Command = SessionsCommand;
    const SCHEMA_VERSION: u32 = 2;

    fn execute(&mut self, command: SessionsCommand) {
        match command {
            SessionsCommand::CreateSession { token, user_id } => {
                let opened_at = airomem::CommitContext::current().map_or(0, |c| c.seq.0);
                self.sessions.insert(token, Session { user_id, opened_at });
            }
            SessionsCommand::DeleteSession { token } => {
                self.sessions.remove(&token);
            }
        }
    }

    fn previous<Z: Serializer>() -> Previous<Self, Z> {
        Previous::from::<Sessions>()
    }
}

/// Seconds of each step, over [`REPETITIONS`] runs, and the child's memory figures.
#[derive(Clone, Copy, Debug)]
pub struct MigrationResult {
    /// Commands in the store.
    pub records: u64,
    /// `Store::open` of the schema-1 store with schema-1 types.
    pub plain_open: Summary,
    /// One `store.snapshot()` right after that open.
    pub plain_snapshot: Summary,
    /// The two together: the by-hand alternative.
    pub plain_total: Summary,
    /// `Store::open` with schema-2 types of the journal-only store: replay, convert, seal.
    pub migrate_journal: Summary,
    /// The same with a schema-1 snapshot at the end of the store: decode, convert, seal.
    pub migrate_snapshot: Summary,
    /// Resident growth over the migrating open (the schema-2 state it leaves), bytes.
    pub migrated_state: u64,
    /// Peak resident growth during the migrating open of the journal-only store, bytes.
    pub migrate_peak: u64,
}

/// Runs the measurements on copies of `journal_store` (closed, journal only) under `scratch`.
pub fn run(
    runtime: &Runtime,
    journal_store: &Path,
    scratch: &Path,
    segment_size: u64,
) -> Result<MigrationResult, BoxError> {
    eprintln!("migration: plain open + snapshot vs migrating opens, {REPETITIONS} runs each");
    let snapshots = std::fs::read_dir(journal_store)?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".snapshot"))
        .count();
    if snapshots > 0 {
        return Err(
            format!("{} holds {snapshots} snapshot(s): not a journal-only store", journal_store.display()).into()
        );
    }
    let options = || StoreOptions::default().segment_size(segment_size);
    let secs = |d: Duration| d.as_secs_f64();
    let (mut plain_open, mut plain_snapshot, mut plain_total) = (Vec::new(), Vec::new(), Vec::new());
    let (mut migrate_journal, mut migrate_snapshot) = (Vec::new(), Vec::new());
    let mut records = 0;
    for run in 0..REPETITIONS {
        let with_snapshot = scratch.join(format!("migration-snapshot-{run}"));
        copy_store(journal_store, &with_snapshot)?;
        let started = Instant::now();
        let store: SessionStore = runtime.block_on(Store::open_with(PostcardSerializer, &with_snapshot, options()))?;
        let opened = started.elapsed();
        runtime.block_on(store.snapshot())?;
        let total = started.elapsed();
        records = store.stats().last_seq;
        runtime.block_on(store.close())?;
        plain_open.push(secs(opened));
        plain_snapshot.push(secs(total - opened));
        plain_total.push(secs(total));

        let started = Instant::now();
        let store: PostcardStore<SessionsV2> =
            runtime.block_on(Store::open_with(PostcardSerializer, &with_snapshot, options()))?;
        migrate_snapshot.push(secs(started.elapsed()));
        check(&store, records)?;
        runtime.block_on(store.close())?;
        std::fs::remove_dir_all(&with_snapshot)?;

        let journal_only = scratch.join(format!("migration-journal-{run}"));
        copy_store(journal_store, &journal_only)?;
        let started = Instant::now();
        let store: PostcardStore<SessionsV2> =
            runtime.block_on(Store::open_with(PostcardSerializer, &journal_only, options()))?;
        migrate_journal.push(secs(started.elapsed()));
        check(&store, records)?;
        runtime.block_on(store.close())?;
        std::fs::remove_dir_all(&journal_only)?;
    }

    let child_dir = scratch.join("migration-memory");
    copy_store(journal_store, &child_dir)?;
    eprintln!("migration: peak memory of a migrating open in a fresh process");
    let output = Command::new(std::env::current_exe()?)
        .arg("--migration-memory")
        .arg(&child_dir)
        .arg(segment_size.to_string())
        .output()?;
    std::fs::remove_dir_all(&child_dir)?;
    if !output.status.success() {
        return Err(format!("migration memory child failed: {}", String::from_utf8_lossy(&output.stderr)).into());
    }
    let line = String::from_utf8(output.stdout)?;
    let n: Vec<u64> = line.split_whitespace().map(str::parse).collect::<Result<_, _>>()?;
    let [migrated_state, migrate_peak] = n[..] else {
        return Err(format!("migration memory child printed `{line}`").into());
    };
    Ok(MigrationResult {
        records,
        plain_open: Summary::of(plain_open),
        plain_snapshot: Summary::of(plain_snapshot),
        plain_total: Summary::of(plain_total),
        migrate_journal: Summary::of(migrate_journal),
        migrate_snapshot: Summary::of(migrate_snapshot),
        migrated_state,
        migrate_peak,
    })
}

/// The migration happened, was sealed, and kept every session.
fn check(store: &PostcardStore<SessionsV2>, records: u64) -> Result<(), BoxError> {
    let report = store.recovery();
    if report.migrations.len() != 1 || report.sealed.is_none() {
        return Err(
            format!("expected one sealed migration, got {:?} sealed {:?}", report.migrations, report.sealed).into()
        );
    }
    let sessions = store.query()?.sessions.len() as u64;
    if sessions == 0 || sessions > records {
        return Err(format!("{sessions} sessions after migrating {records} commands").into());
    }
    Ok(())
}

/// The child: a migrating open of the journal-only store in `dir`; prints the resident
/// growth it left and its peak.
pub fn child(runtime: &Runtime, dir: &Path, segment_size: u64) -> Result<(), BoxError> {
    let options = StoreOptions::default().segment_size(segment_size);
    let before = resident()?;
    reset_peak()?;
    let store: PostcardStore<SessionsV2> = runtime.block_on(Store::open_with(PostcardSerializer, dir, options))?;
    let (after, open_peak) = (resident()?, peak()?);
    runtime.block_on(store.close())?;
    println!("{} {}", after.saturating_sub(before), open_peak.saturating_sub(before));
    Ok(())
}
