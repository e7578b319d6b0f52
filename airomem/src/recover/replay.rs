//! Replaying journal records into the state: a second thread reads, verifies and decodes the
//! journal while this one executes the commands in order, through the schema chain.

use std::panic;
use std::path::Path;
use std::sync::Arc;

use airomem_core::{CommitContext, Seq, Serializer, State};
use airomem_journal::{JournalConfig, Repair, ReplayError, ReplayOutcome, ReplayRange, replay};

use crate::Error;
use crate::recover::migrate::{Chain, Command, Held};
use crate::report::Migration;

/// Where replay starts: a state and the last record it includes (`Seq(0)` for none), from the
/// newest snapshot that verified or from nothing, and what was passed over to find it.
pub(crate) struct Base<S> {
    pub state: Held<S>,
    pub seq: Seq,
    /// Why each newer snapshot was passed over.
    pub skipped: Vec<String>,
    /// The newest snapshot file in range, usable or not (`Seq(0)`: none): every command up to
    /// it was committed, so a state rebuilt short of it is missing acknowledged commands.
    pub newest_on_disk: Seq,
}

/// Why a replay visitor stopped.
pub(crate) enum Stop {
    /// A record did not decode, was of a schema the chain does not reach, or the state did
    /// not convert.
    Failed(Error),
    Panicked {
        seq: Seq,
        message: String,
        in_final_batch: bool,
    },
    /// The applying side stopped first; its own reason is the one reported.
    Abandoned,
}

/// Commands decoded ahead of the state, handed over in chunks of this many.
const CHUNK: usize = 2048;
/// Chunks decoded but not yet applied: bounds the memory the decoder can run ahead by.
const CHUNKS_AHEAD: usize = 4;

/// One decoded command and what executing it needs.
struct Decoded<C> {
    seq: Seq,
    unix_nanos: u64,
    in_final_batch: bool,
    version: u32,
    /// The segment, on the first record of each (for errors about the schema).
    segment: Option<Arc<Path>>,
    command: Command<C>,
}

/// Replays the journal into `held`, decoding each record with `serializer` and the types of
/// the schema that wrote it, and converting the state up `chain` at schema boundaries (each
/// conversion is pushed onto `migrations`).
///
/// Two threads share the work: a decoder reads, verifies and decodes the journal while this
/// thread executes the commands, in order, as they arrive in chunks. The outcome is the
/// serial one: commands are executed in sequence order, a decode error or journal error is
/// reported only once every command before it has been executed, and a command that panics
/// stops everything after it.
pub(crate) fn replay_into<S: State, Z: Serializer>(
    config: &JournalConfig,
    serializer: &Z,
    chain: &Chain<S, Z>,
    range: ReplayRange<'_>,
    repair: Option<&mut Repair>,
    held: &mut Held<S>,
    migrations: &mut Vec<Migration>,
) -> Result<ReplayOutcome, ReplayError<Stop>> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Decoded<S::Command>>>(CHUNKS_AHEAD);
    std::thread::scope(|scope| {
        let decoder = std::thread::Builder::new().name("airomem-replay".into()).spawn_scoped(scope, move || {
            let mut chunk = Vec::with_capacity(CHUNK);
            let mut segment: Option<Arc<Path>> = None;
            let outcome = replay(config, range, repair, |record| {
                let version = record.schema_version;
                let command = chain
                    .decode_command(serializer, version, record.payload, record.segment, record.seq)
                    .map_err(Stop::Failed)?;
                // Once per record: compare the bytes, not `Path`'s component by component.
                let new_segment = segment.as_deref().is_none_or(|s| s.as_os_str() != record.segment.as_os_str());
                if new_segment {
                    segment = Some(Arc::from(record.segment));
                }
                chunk.push(Decoded {
                    seq: record.seq,
                    unix_nanos: record.unix_nanos,
                    in_final_batch: record.in_final_batch,
                    version,
                    segment: if new_segment { segment.clone() } else { None },
                    command,
                });
                if chunk.len() == CHUNK {
                    let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
                    tx.send(full).map_err(|_| Stop::Abandoned)?;
                }
                Ok(())
            });
            // What was decoded before an error precedes it, so it is applied first.
            if !chunk.is_empty() {
                drop(tx.send(chunk));
            }
            outcome
        });
        let decoder = match decoder {
            Ok(decoder) => decoder,
            Err(e) => {
                let path = config.dir.clone();
                return Err(ReplayError::Journal(airomem_journal::JournalError::Io {
                    op: "spawn replay thread",
                    path,
                    source: e,
                }));
            }
        };
        let applied = apply_chunks(&rx, chain, held, migrations);
        // Dropping the receiver releases a decoder blocked on a full channel.
        drop(rx);
        let decoded = decoder.join().unwrap_or_else(|panic| panic::resume_unwind(panic));
        applied?;
        decoded
    })
}

fn apply_chunks<S: State, Z: Serializer>(
    rx: &std::sync::mpsc::Receiver<Vec<Decoded<S::Command>>>,
    chain: &Chain<S, Z>,
    held: &mut Held<S>,
    migrations: &mut Vec<Migration>,
) -> Result<(), ReplayError<Stop>> {
    let mut segment: Arc<Path> = Arc::from(Path::new(""));
    for chunk in rx {
        for item in chunk {
            if let Some(s) = item.segment {
                segment = s;
            }
            let context = CommitContext::new(item.seq, item.unix_nanos);
            let executed = chain
                .execute(held, item.version, item.command, context, &segment, migrations)
                .map_err(|e| ReplayError::Visit(Stop::Failed(e)))?;
            executed.map_err(|message| {
                ReplayError::Visit(Stop::Panicked { seq: item.seq, message, in_final_batch: item.in_final_batch })
            })?;
        }
    }
    Ok(())
}

pub(crate) fn stop_error(e: ReplayError<Stop>) -> Error {
    match e {
        ReplayError::Journal(e) => e.into(),
        ReplayError::Visit(Stop::Failed(e)) => e,
        ReplayError::Visit(Stop::Panicked { seq, message, .. }) => Error::ReplayPanicked { seq, message },
        ReplayError::Visit(Stop::Abandoned) => unreachable!("the applying side reports its own reason"),
    }
}
