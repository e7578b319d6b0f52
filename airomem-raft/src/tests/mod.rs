//! Tests that need the crate's internals (every openraft type stays inside the crate, so the
//! conformance suite and the log tests live here rather than in `tests/`).

mod cluster;
mod group_commit;
mod log_files;
mod power_cut;
mod state_machine;
mod suite;
mod transport_cost;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use airomem::CommitContext;
use openraft::EntryPayload;
use serde::{Deserialize, Serialize};

use crate::types::{Command, Entry, Membership, Request, log_id};

/// A state that records what each command saw: values, sequence numbers and times.
#[derive(Default, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Recorder {
    /// (value, seq, unix_nanos) of each executed command.
    pub(crate) seen: Vec<(u64, u64, u64)>,
}

/// A command value that makes `execute` panic.
pub(crate) const PANIC: u64 = u64::MAX;

impl airomem::State for Recorder {
    type Command = u64;

    fn execute(&mut self, command: u64) {
        let context = CommitContext::current().expect("executed inside a commit context");
        self.seen.push((command, context.seq.0, context.unix_nanos));
        assert!(command != PANIC, "the test's panicking command");
    }
}

pub(crate) fn blank(term: u64, index: u64) -> Entry {
    Entry { log_id: log_id(term, 1, index), payload: EntryPayload::Blank }
}

pub(crate) fn normal(term: u64, index: u64, value: u64, unix_nanos: u64) -> Entry {
    from_client(term, index, (1, index, 0), value, unix_nanos)
}

/// A normal entry sent by `client` as `serial` with `low_water`.
pub(crate) fn from_client(term: u64, index: u64, session: (u128, u64, u64), value: u64, unix_nanos: u64) -> Entry {
    let (client, serial, low_water) = session;
    let mut bytes = Vec::new();
    airomem::Serializer::encode(&airomem::PostcardSerializer, &value, &mut bytes).expect("encodes");
    let command = Command { unix_nanos, requests: vec![Request { client, serial, low_water, bytes }].into() };
    Entry { log_id: log_id(term, 1, index), payload: EntryPayload::Normal(command) }
}

pub(crate) fn membership(term: u64, index: u64, voters: &[u64]) -> Entry {
    let voters: BTreeSet<u64> = voters.iter().copied().collect();
    Entry { log_id: log_id(term, 1, index), payload: EntryPayload::Membership(Membership::new(vec![voters], ())) }
}

/// Waits until `condition` holds, re-checking every 5 ms; panics after 30 s (a loaded 2-core
/// machine in mind), naming `what`.
pub(crate) async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
