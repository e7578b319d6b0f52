//! Open-time recovery: repair the journal after a crash, then rebuild the state from it,
//! aborting a command that panics if (and only if) a crash may have stopped it from being
//! aborted when it was committed.

use std::collections::BTreeSet;
use std::time::Instant;

use airomem_core::{Seq, Serializer, State};
use airomem_journal::{JournalConfig, ReplayError, ReplayOutcome, ReplayRange, repair};
use tracing::{info, warn};

use crate::apply::{Stop, replay_into, stop_error};
use crate::{Error, RecoveryReport};

pub(crate) struct Recovered<S> {
    pub state: S,
    pub outcome: ReplayOutcome,
    pub report: RecoveryReport,
}

pub(crate) fn recover<S: State, Z: Serializer>(config: &JournalConfig, serializer: &Z) -> Result<Recovered<S>, Error> {
    let started = Instant::now();
    let repaired = repair(config)?;
    let mut aborted_now = BTreeSet::new();
    loop {
        let mut state = S::default();
        let range = ReplayRange { from: Seq::FIRST, until: None, skip: &aborted_now };
        match replay_into(config, serializer, range, &mut state) {
            Ok(outcome) => {
                let report = RecoveryReport {
                    segments_read: outcome.segments_read,
                    bytes_read: outcome.bytes_read,
                    records_replayed: outcome.records_replayed,
                    records_skipped: outcome.records_skipped,
                    aborted_now: aborted_now.into_iter().collect(),
                    temp_files_removed: repaired.temp_files_removed,
                    torn_tail: repaired.torn_tail,
                    next_seq: outcome.next_seq,
                    duration: started.elapsed(),
                };
                info!(
                    dir = %config.dir.display(),
                    segments = report.segments_read,
                    bytes = report.bytes_read,
                    records = report.records_replayed,
                    next_seq = report.next_seq.0,
                    elapsed_ms = report.duration.as_millis() as u64,
                    torn_tail = report.torn_tail.is_some(),
                    "store recovered"
                );
                return Ok(Recovered { state, outcome, report });
            }
            // A crash can come after a batch is durable but before the abort marker of a
            // command in it that panicked: no caller heard of that command, so aborting it
            // now is what would have happened. Start over without it, since the state is
            // half changed. Anywhere else a panic means `execute` is not deterministic.
            Err(ReplayError::Visit(Stop::Panicked { seq, message, in_final_batch: true })) => {
                warn!(seq = seq.0, message, "a command of the last batch panicked during recovery; aborting it");
                aborted_now.insert(seq);
            }
            Err(e) => return Err(stop_error(e)),
        }
    }
}
