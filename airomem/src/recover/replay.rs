//! Replaying journal records into the state: a second thread reads, verifies and decodes the
//! journal while this one executes the commands in order, through the schema chain.

use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender};

use airomem_core::{CommitContext, Seq, Serializer, State};
use airomem_journal::{JournalConfig, Repair, ReplayError, ReplayOutcome, ReplayRange, replay};

use crate::Error;
use crate::execute::panic_message;
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
    /// Where the snapshot recorded that the record after it starts (segment, offset), if it
    /// did: lets replay pass over damage in the history the snapshot covers.
    pub next_record: Option<(Seq, u64)>,
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

/// Commands decoded ahead of the state, handed over in chunks of at most this many.
const CHUNK: usize = 2048;
/// Chunks decoded but not yet applied: bounds the memory the decoder can run ahead by.
const CHUNKS_AHEAD: usize = 4;

/// One decoded command. Kept small: the applying thread reads every one of them from memory
/// the decoding thread wrote, and that traffic is on the critical path of recovery.
struct Decoded<C> {
    seq: Seq,
    unix_nanos: u64,
    command: Command<C>,
}

/// Consecutive commands of one segment, and what they share.
struct Chunk<C> {
    items: Vec<Decoded<C>>,
    /// The schema version of their segment.
    version: u32,
    /// Their segment, for errors about it.
    segment: Arc<Path>,
    /// The first of them in the journal's final batch, if any. The final batch ends its
    /// segment, so every command after it in the chunk is in it too.
    final_from: Option<Seq>,
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
///
/// The chunks' vectors go back to the decoder once applied, so that no chunk allocates or
/// frees after the first few: a large allocation on one thread and its free on the other
/// cost the allocator a consolidation pass each time.
pub(crate) fn replay_into<S: State, Z: Serializer>(
    config: &JournalConfig,
    serializer: &Z,
    chain: &Chain<S, Z>,
    range: ReplayRange<'_>,
    repair: Option<&mut Repair>,
    held: &mut Held<S>,
    migrations: &mut Vec<Migration>,
) -> Result<ReplayOutcome, ReplayError<Stop>> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Chunk<S::Command>>(CHUNKS_AHEAD);
    let (recycle, recycled) = std::sync::mpsc::channel::<Vec<Decoded<S::Command>>>();
    std::thread::scope(|scope| {
        let decoder = std::thread::Builder::new().name("airomem-replay".into()).spawn_scoped(scope, move || {
            let mut chunk: Option<Chunk<S::Command>> = None;
            let outcome = replay(config, range, repair, |record| {
                let version = record.schema_version;
                let command = chain
                    .decode_command(serializer, version, record.payload, record.segment, record.seq)
                    .map_err(Stop::Failed)?;
                // A chunk holds one segment's commands. Compare the bytes, not `Path`'s
                // components one by one: this runs once per record.
                let same = chunk.as_ref().is_some_and(|c| c.segment.as_os_str() == record.segment.as_os_str());
                if !same {
                    if let Some(full) = chunk.take() {
                        tx.send(full).map_err(|_| Stop::Abandoned)?;
                    }
                    chunk = Some(Chunk {
                        items: recycled.try_recv().unwrap_or_else(|_| Vec::with_capacity(CHUNK)),
                        version,
                        segment: Arc::from(record.segment),
                        final_from: None,
                    });
                }
                let Some(open) = chunk.as_mut() else { unreachable!("a chunk was opened above") };
                if record.in_final_batch && open.final_from.is_none() {
                    open.final_from = Some(record.seq);
                }
                open.items.push(Decoded { seq: record.seq, unix_nanos: record.unix_nanos, command });
                if open.items.len() == CHUNK {
                    let next = Chunk {
                        items: recycled.try_recv().unwrap_or_else(|_| Vec::with_capacity(CHUNK)),
                        version,
                        segment: Arc::clone(&open.segment),
                        final_from: open.final_from,
                    };
                    let full = std::mem::replace(open, next);
                    tx.send(full).map_err(|_| Stop::Abandoned)?;
                }
                Ok(())
            });
            // What was decoded before an error precedes it, so it is applied first.
            if let Some(last) = chunk.filter(|c| !c.items.is_empty()) {
                drop(tx.send(last));
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
        let applied = apply_chunks(&rx, &recycle, chain, held, migrations);
        // Dropping the receiver releases a decoder blocked on a full channel.
        drop(rx);
        let decoded = decoder.join().unwrap_or_else(|panic| panic::resume_unwind(panic));
        applied?;
        decoded
    })
}

fn apply_chunks<S: State, Z: Serializer>(
    rx: &Receiver<Chunk<S::Command>>,
    recycle: &Sender<Vec<Decoded<S::Command>>>,
    chain: &Chain<S, Z>,
    held: &mut Held<S>,
    migrations: &mut Vec<Migration>,
) -> Result<(), ReplayError<Stop>> {
    for mut chunk in rx {
        apply_chunk(&mut chunk, chain, held, migrations).map_err(ReplayError::Visit)?;
        // The decoder may have finished and gone: then nobody needs the vector back.
        drop(recycle.send(std::mem::take(&mut chunk.items)));
    }
    Ok(())
}

/// Executes the commands of `chunk` in order, leaving its vector empty.
fn apply_chunk<S: State, Z: Serializer>(
    chunk: &mut Chunk<S::Command>,
    chain: &Chain<S, Z>,
    held: &mut Held<S>,
    migrations: &mut Vec<Migration>,
) -> Result<(), Stop> {
    let Chunk { items, version, segment, final_from } = chunk;
    let (version, final_from) = (*version, *final_from);
    let in_final_batch = |seq: Seq| final_from.is_some_and(|first| seq >= first);
    let mut items = items.drain(..);
    // The first command goes through the chain, which converts the state to the chunk's
    // schema if it is not there yet.
    let Some(first) = items.next() else { return Ok(()) };
    let context = CommitContext::new(first.seq, first.unix_nanos);
    chain
        .execute(held, version, first.command, context, segment, migrations)
        .map_err(Stop::Failed)?
        .map_err(|message| Stop::Panicked { seq: first.seq, message, in_final_batch: in_final_batch(first.seq) })?;
    match held {
        // The common case: the current schema. One `catch_unwind` for the whole chunk rather
        // than one per command (a panic stops the replay either way), and no schema checks.
        Held::Current(state) => {
            let mut at = first.seq;
            let executed = panic::catch_unwind(AssertUnwindSafe(|| {
                for item in items.by_ref() {
                    at = item.seq;
                    let Command::Current(command) = item.command else {
                        unreachable!("a chunk of the current schema holds current commands")
                    };
                    CommitContext::new(item.seq, item.unix_nanos).enter(|| state.execute(command));
                }
            }));
            executed.map_err(|panic| Stop::Panicked {
                seq: at,
                message: panic_message(panic),
                in_final_batch: in_final_batch(at),
            })
        }
        // An older schema's state executes its boxed commands through the chain.
        _ => {
            for item in items {
                let context = CommitContext::new(item.seq, item.unix_nanos);
                let executed =
                    chain.execute(held, version, item.command, context, segment, migrations).map_err(Stop::Failed)?;
                executed.map_err(|message| Stop::Panicked {
                    seq: item.seq,
                    message,
                    in_final_batch: in_final_batch(item.seq),
                })?;
            }
            Ok(())
        }
    }
}

pub(crate) fn stop_error(e: ReplayError<Stop>) -> Error {
    match e {
        ReplayError::Journal(e) => e.into(),
        ReplayError::Visit(Stop::Failed(e)) => e,
        ReplayError::Visit(Stop::Panicked { seq, message, .. }) => Error::ReplayPanicked { seq, message },
        ReplayError::Visit(Stop::Abandoned) => unreachable!("the applying side reports its own reason"),
    }
}
