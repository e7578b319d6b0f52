//! Maintenance commands an application offers its operators, built on `airomem::tool` and
//! `airomem::Past`: they need the application's own types, so they live in its binary.
//!
//! ```text
//! cargo run --example store_tool -- fill DIR             # a store with some history
//! cargo run --example store_tool -- show DIR [--at-seq N | --at-time RFC3339]
//! cargo run --example store_tool -- export DIR [--at-seq N | --at-time RFC3339] > state.json
//! cargo run --example store_tool -- import NEW_DIR < state.json
//! cargo run --example store_tool -- compact DIR
//! ```
//!
//! `show` and `export` read without the store's lock and change nothing, so they work
//! beside the running application; `import` builds a new store; `compact` needs the
//! application stopped. The store keeps its history (`keep_history`), so `--at-time` can go
//! back to any moment since it was created. For the files themselves (integrity, records,
//! quarantine), use the `airomem` command-line tool: `cargo run -p airomem-cli -- info DIR`.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use airomem::{At, CommitContext, Past, PostcardSerializer, Seq, Store, StoreOptions, tool};
use serde::{Deserialize, Serialize};

/// The application's state: open sessions by token, with their user and expiry.
#[derive(Serialize, Deserialize, Default, Debug)]
struct Sessions {
    by_token: BTreeMap<String, Session>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
struct Session {
    user_id: u64,
    /// Seconds since the Unix epoch, from the commit time of the command that opened it.
    expires_at: u64,
}

#[derive(Serialize, Deserialize, Debug)]
enum Command {
    Open { token: String, user_id: u64, ttl_secs: u64 },
    Close { token: String },
}

impl airomem::State for Sessions {
    type Command = Command;

    fn execute(&mut self, command: Command) {
        match command {
            Command::Open { token, user_id, ttl_secs } => {
                // The recorded commit time, not the clock: replay decides the same expiry.
                let now = CommitContext::current().map_or(0, |c| c.unix_nanos / 1_000_000_000);
                self.by_token.insert(token, Session { user_id, expires_at: now.saturating_add(ttl_secs) });
            }
            Command::Close { token } => {
                self.by_token.remove(&token);
            }
        }
    }
}

fn options() -> StoreOptions {
    // Archive what retention would delete, so every past moment stays readable.
    StoreOptions::default().keep_history(true)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("store_tool: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let (command, dir) = match args {
        [command, dir, ..] => (command.as_str(), PathBuf::from(dir)),
        _ => {
            return Err("usage: store_tool fill|show|export|import|compact DIR [--at-seq N | --at-time RFC3339]".into());
        }
    };
    let at = point(&args[2..])?;
    match command {
        "fill" => fill(&dir),
        "show" => {
            let past: Past<Sessions> = Past::open(PostcardSerializer, &dir, at)?;
            let when = past.time().map_or_else(|| "unknown".into(), |t| humantime::format_rfc3339(t).to_string());
            println!(
                "after command {} (committed {when}): {} open session(s)",
                past.seq(),
                past.state().by_token.len()
            );
            for (token, session) in &past.state().by_token {
                println!("  {token}  user {}  expires at {}", session.user_id, session.expires_at);
            }
            Ok(())
        }
        "export" => {
            let exported = tool::export::<Sessions, _>(PostcardSerializer, &dir, at, io::stdout().lock())?;
            eprintln!("exported the state after command {}", exported.seq);
            Ok(())
        }
        "import" => {
            let seq = tool::import::<Sessions, _>(PostcardSerializer, &dir, io::stdin().lock(), options())?;
            eprintln!("{} now holds the imported state; its next command will be {}", dir.display(), seq.next());
            Ok(())
        }
        "compact" => {
            let info = tool::compact::<Sessions, _>(PostcardSerializer, &dir, options())?;
            eprintln!(
                "snapshot after command {}: {} bytes; {} older snapshot(s) and {} segment(s) archived",
                info.seq, info.file_len, info.snapshots_removed, info.segments_removed
            );
            Ok(())
        }
        other => Err(format!("unknown command {other:?}").into()),
    }
}

/// `--at-seq N`, `--at-time RFC3339`, or nothing (the latest).
fn point(flags: &[String]) -> Result<At, Box<dyn std::error::Error>> {
    match flags {
        [] => Ok(At::Latest),
        [flag, value] if flag == "--at-seq" => Ok(At::Seq(Seq(value.parse()?))),
        [flag, value] if flag == "--at-time" => Ok(At::Time(humantime::parse_rfc3339_weak(value)?)),
        _ => Err("expected --at-seq N or --at-time RFC3339".into()),
    }
}

/// A store with some history: sessions opened and closed, with snapshots in between.
fn fill(dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let store: airomem::PostcardStore<Sessions> = Store::open_with(PostcardSerializer, dir, options()).await?;
        let started = SystemTime::now();
        for round in 0..5u64 {
            for user in 0..20 {
                let token = format!("t{round}-{user}");
                store.commit(Command::Open { token, user_id: user, ttl_secs: 3600 }).await?;
            }
            for user in (0..20).step_by(3) {
                store.commit(Command::Close { token: format!("t{round}-{user}") }).await?;
            }
            let snapshot = store.snapshot().await?;
            writeln!(io::stderr(), "round {round}: snapshot after command {}", snapshot.seq)?;
        }
        let last = store.stats().commits;
        writeln!(
            io::stderr(),
            "{last} commands since {}; try `show {} --at-seq 30`",
            humantime::format_rfc3339_seconds(started),
            dir.display()
        )?;
        store.close().await?;
        Ok(())
    })
}
