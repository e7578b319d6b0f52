//! A login-session store under concurrent load: many tasks create and end sessions at once,
//! every commit durable before it is acknowledged; then the store is reopened and the
//! state rebuilt from the journal.
//!
//! ```text
//! cargo run --release --example sessions [-- DIR]
//! ```
//! Without DIR it works in a fresh directory under the system's temp dir and removes it.
//! Built on `airomem` (with its `snapshot` feature), `tokio`, `serde` and
//! `tracing-subscriber` alone, so it can be copied into a crate of your own.

use std::collections::HashMap;
use std::time::Instant;

use airomem::{PostcardSerializer, PostcardStore, Store};
use serde::{Deserialize, Serialize};

const TASKS: u64 = 64;
const COMMANDS_PER_TASK: u64 = 250;

/// Login sessions: token to user id.
#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq, Eq)]
struct Sessions {
    tokens: HashMap<String, u64>,
}

/// The changes the session store accepts.
#[derive(Serialize, Deserialize, Debug)]
enum SessionsCommand {
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

/// A 32-character token derived from `n`: distinct for distinct `n`, cheap and repeatable,
/// which is what a load demo needs (a real service draws random ones, see
/// `examples/web/session_service.rs`).
fn token(n: u64) -> String {
    // splitmix64, twice, so that neighbouring n give unrelated tokens.
    let mix = |mut z: u64| {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    format!("{:016x}{:016x}", mix(n), mix(!n))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .init();
    let temp = tempfile_dir()?;
    let dir = std::env::args().nth(1).map_or_else(|| temp.join("sessions"), Into::into);
    println!("session store in {}", dir.display());

    let store: PostcardStore<Sessions> = Store::open(PostcardSerializer, &dir).await?;
    let before = store.query()?.tokens.len();
    println!("opened with {before} live sessions ({} records replayed)", store.recovery().records_replayed);

    // Each task logs users in and, every tenth command, logs one of its own users out.
    let started = Instant::now();
    let base = store.recovery().next_seq.get();
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for i in 0..COMMANDS_PER_TASK {
                let command = if i % 10 == 9 {
                    SessionsCommand::DeleteSession { token: mine.swap_remove(0) }
                } else {
                    let t = token(base * 1_000_000 + task * COMMANDS_PER_TASK + i);
                    mine.push(t.clone());
                    SessionsCommand::CreateSession { token: t, user_id: task }
                };
                store.commit(command).await?;
            }
            Ok::<_, airomem::Error>(mine.len())
        }));
    }
    let mut created = 0;
    for task in tasks {
        created += task.await??;
    }
    let elapsed = started.elapsed();
    let stats = store.stats();
    println!(
        "{} tasks committed {} commands in {:.2?}: {:.0} durable commits/s, {} fdatasyncs, {:.1} commands per batch",
        TASKS,
        stats.commits,
        elapsed,
        stats.commits as f64 / elapsed.as_secs_f64(),
        stats.syncs,
        stats.average_batch(),
    );
    let live = store.query()?.tokens.len();
    assert_eq!(live, before + created, "every acknowledged session is live");
    let expected = store.query()?.clone();

    let info = store.snapshot().await?;
    println!(
        "snapshot of record {}: {} bytes serialized, {} bytes on disk ({:.1}x smaller), \
         serialized in {:.2?} under the read lock, written in {:.2?} without it",
        info.seq,
        info.raw_len,
        info.file_len,
        info.raw_len as f64 / info.file_len.max(1) as f64,
        info.serialize_time,
        info.write_time,
    );
    store.close().await?;

    let started = Instant::now();
    let store: PostcardStore<Sessions> = Store::open(PostcardSerializer, &dir).await?;
    let report = store.recovery();
    println!(
        "reopened in {:.2?}: {} from snapshot, {} journal records from {} segment(s), {} live sessions",
        started.elapsed(),
        report.snapshot.map_or_else(|| "nothing".to_string(), |s| format!("up to record {s}")),
        report.records_replayed,
        report.segments_read,
        store.query()?.tokens.len()
    );
    assert_eq!(*store.query()?, expected, "recovery rebuilds exactly the acknowledged state");
    println!("state after recovery equals the state before: ok");
    if std::env::args().nth(1).is_none() {
        drop(store);
        std::fs::remove_dir_all(&temp)?;
    }
    Ok(())
}

fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("airomem-sessions-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
