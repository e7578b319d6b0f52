//! `airomem`: look inside an airomem store without the application's types.
//!
//! Every subcommand reads through `airomem::inspect`, which never takes the store's lock and
//! never writes, so it is safe beside a running store; the exceptions say so in their names
//! (`quarantine remove`, `archive prune`, and `salvage`, which writes only its new store),
//! and `backup` and `restore` write only their destination. Exit codes: 0 clean, 1 damage
//! found, 2 usage or I/O error.
//!
//! It reads JSON and postcard stores, with snapshots. The `cluster` feature adds `airomem
//! cluster`, a client of a replicated group's nodes (see `cluster.rs`), with exit codes of
//! its own from 3 up.

mod archive;
mod backup;
#[cfg(feature = "cluster")]
mod cluster;
mod dump;
mod info;
mod outcome;
mod output;
mod quarantine;
mod salvage;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::outcome::{EXIT_DAMAGE, EXIT_ERROR, Outcome};

/// Look inside an airomem store: its files, their integrity, its journal records.
///
/// Read-only unless a subcommand says otherwise; safe beside a running store.
/// Exit codes: 0 clean, 1 damage found, 2 usage or I/O error (`airomem cluster`, with the
/// `cluster` feature, adds 3 to 6: see its help).
#[derive(Debug, Parser)]
#[command(name = "airomem", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// What the store holds: serializer, schema versions, segments, snapshots, the journal
    /// head, quarantine and unfinished files, the archive, and whether a process has it open.
    Info {
        /// The store directory.
        dir: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check every header, record checksum, sequence number, snapshot and the head, and
    /// report every problem with file, offset and record. Exit 1 on any. On a backup (a
    /// directory with a manifest, or with --backup): check every file against the manifest
    /// and the files as one cut; exit 1 if it is damaged or unfinished.
    Verify {
        /// The store (or backup) directory.
        dir: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Check DIR as a backup even if it has no manifest (an unfinished one is refused).
        #[arg(long)]
        backup: bool,
    },
    /// Back up a store, beside its running process (no lock, no application types): the
    /// newest valid snapshot and the journal after it up to the last whole batch, with a
    /// manifest of lengths and crc32c checksums, all synced. Sealed segments and snapshots
    /// are hard-linked where DEST is on the same file system. DEST must be new or empty.
    Backup {
        /// The store directory.
        dir: PathBuf,
        /// The backup's directory (created).
        dest: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Restore a backup into a new store directory (this writes DIR). Refuses, writing
    /// nothing, a DIR that is not empty, a backup that does not verify (exit 1), a newer
    /// backup format, and a schema newer than --max-schema. Files are copied, never linked,
    /// into a temporary directory beside DIR, synced, and renamed to DIR.
    Restore {
        /// The backup's directory.
        backup: PathBuf,
        /// The store directory to create.
        dir: PathBuf,
        /// Refuse a backup whose schema is newer than this (the application's
        /// `State::SCHEMA_VERSION`).
        #[arg(long)]
        max_schema: Option<u32>,
    },
    /// Print the journal's records, one JSON object per line: sequence number, commit time,
    /// kind, batch and unit marks, and the payload (as JSON for JSON stores, base64 for
    /// postcard).
    Dump {
        /// The store directory.
        dir: PathBuf,
        /// The first record to print.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// The last record to print.
        #[arg(long)]
        to: Option<u64>,
        /// After the dump, keep printing records as the running store appends them (each
        /// batch once it is final: when the next batch is written), until interrupted.
        #[arg(long, conflicts_with = "to")]
        follow: bool,
    },
    /// Build a new store in DEST from everything intact in the damaged store DIR: the newest
    /// snapshot that verifies and the journal records after it up to the first damage,
    /// which the application's own open then opens. DIR is only read (byte-identical
    /// afterwards); DEST must not exist or be empty. Reports what was left behind: the first
    /// lost record, the segment and byte offset of the damage, the record bytes after it,
    /// and later segments. Exit 1 if anything was left behind, 0 if DIR had no damage.
    Salvage {
        /// The damaged store directory.
        dir: PathBuf,
        /// The new store directory (created).
        dest: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Torn tails an open cut off after a crash, kept for inspection.
    #[command(subcommand)]
    Quarantine(QuarantineCommand),
    /// The history a store keeps in `archive/` (`StoreOptions::keep_history`).
    #[command(subcommand)]
    Archive(ArchiveCommand),
    /// A replicated (airomem-raft) group, through any node's raft address: status, members,
    /// and membership changes. Authenticated with the cluster secret (--secret-file or
    /// AIROMEM_SECRET_FILE). Exit codes: 3 unreachable (or no answer, or no leader), 4 the
    /// group refused the change (nothing changed), 5 the node refused the secret, 6 a change
    /// whose outcome is unknown.
    #[cfg(feature = "cluster")]
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Without the `cluster` feature: says how to get it.
    #[cfg(not(feature = "cluster"))]
    #[command(hide = true)]
    Cluster {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum ArchiveCommand {
    /// List the archived snapshots and segments.
    List {
        /// The store directory.
        dir: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Delete the archived history before a command (this changes `archive/`), keeping
    /// what reading the state at that command or later needs. The store never reads the
    /// archive.
    Prune {
        /// The store directory.
        dir: PathBuf,
        /// The earliest command whose state must stay readable.
        #[arg(long)]
        before: u64,
    },
}

#[derive(Debug, Subcommand)]
enum QuarantineCommand {
    /// List the quarantine files.
    List {
        /// The store directory.
        dir: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Delete quarantine files (this changes the store directory). The store never reads
    /// them; they hold only commands that were never acknowledged.
    Remove {
        /// The store directory.
        dir: PathBuf,
        /// Remove every quarantine file.
        #[arg(long, conflicts_with = "files")]
        all: bool,
        /// The files to remove (names in the store directory).
        files: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info { dir, json } => info::run(&dir, json),
        Command::Verify { dir, json, backup } if backup || backup::is_backup(&dir) => backup::verify(&dir, json),
        Command::Verify { dir, json, .. } => verify::run(&dir, json),
        Command::Backup { dir, dest, json } => backup::take(&dir, &dest, json),
        Command::Restore { backup, dir, max_schema } => backup::restore(&backup, &dir, max_schema),
        Command::Dump { dir, from, to, follow } => dump::run(&dir, from, to, follow),
        Command::Salvage { dir, dest, json } => salvage::run(&dir, &dest, json),
        Command::Quarantine(QuarantineCommand::List { dir, json }) => quarantine::list(&dir, json),
        Command::Quarantine(QuarantineCommand::Remove { dir, all, files }) => quarantine::remove(&dir, all, &files),
        Command::Archive(ArchiveCommand::List { dir, json }) => archive::list(&dir, json),
        Command::Archive(ArchiveCommand::Prune { dir, before }) => archive::prune(&dir, airomem::Seq(before)),
        #[cfg(feature = "cluster")]
        Command::Cluster(command) => cluster::run(command),
        #[cfg(not(feature = "cluster"))]
        Command::Cluster { .. } => {
            Err("this airomem was built without the `cluster` feature: cargo install airomem-cli --features cluster"
                .into())
        }
    };
    match result {
        Ok(Outcome::Clean) => ExitCode::SUCCESS,
        Ok(Outcome::Damaged) => ExitCode::from(EXIT_DAMAGE),
        Err(e) => {
            eprintln!("airomem: {}", output::chain(&*e));
            ExitCode::from(exit_code(&*e))
        }
    }
}

/// The exit code of a failure: the cluster commands' own, or [`EXIT_ERROR`].
fn exit_code(failure: &(dyn std::error::Error + 'static)) -> u8 {
    #[cfg(feature = "cluster")]
    if let Some(e) = failure.downcast_ref::<cluster::ClusterError>() {
        return e.code();
    }
    let _ = failure;
    EXIT_ERROR
}
