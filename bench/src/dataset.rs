//! The data set that every system's recovery, lookups and disk use are measured on: the
//! session workload's first [`BUILD_STREAMS`] streams, `records` commands in all, and the
//! state they leave.

use std::collections::HashMap;

use airomem::State;
use airomem_workspace::{Sessions, SessionsCommand};

use crate::commits::{SessionWorkload, share};

/// Streams in the data set. airomem's journal is built by this many concurrent writers, one
/// stream each; the peers get the same streams one after another, which leaves the same
/// state.
pub const BUILD_STREAMS: usize = 64;

/// The commands of the data set and the state they leave.
#[derive(Debug)]
pub struct Dataset {
    /// Commands in the data set.
    pub records: u64,
    /// The sessions live after all of them: what every recovery must rebuild.
    pub expected: HashMap<String, u64>,
    /// Tokens of live sessions to look up, in an order unrelated to their sort order, so
    /// that neighbouring lookups do not touch neighbouring B-tree pages.
    pub probes: Vec<String>,
    /// The sum of the probes' user ids: what a correct lookup loop adds up to.
    pub probe_sum: u64,
}

impl Dataset {
    /// The data set of `records` commands, with `probes` lookup tokens (at most the number
    /// of live sessions).
    pub fn new(records: u64, probes: usize) -> Dataset {
        let mut state = Sessions::default();
        for command in commands(records) {
            state.execute(command);
        }
        let mut tokens: Vec<&String> = state.tokens.keys().collect();
        tokens.sort_unstable();
        let step = (tokens.len() / probes.max(1)).max(1);
        let mut probes: Vec<String> = tokens.iter().step_by(step).take(probes).map(|t| (*t).clone()).collect();
        // A token's two halves are independent hashes: ordering by the second half scatters
        // the first-half (sort) order.
        probes.sort_unstable_by(|a, b| a[16..].cmp(&b[16..]));
        let probe_sum = probes.iter().map(|t| state.tokens[t]).sum();
        Dataset { records, expected: state.tokens, probes, probe_sum }
    }

    /// The commands, stream after stream.
    pub fn commands(&self) -> impl Iterator<Item = SessionsCommand> + use<> {
        commands(self.records)
    }
}

/// `records` commands of the data set, stream after stream.
pub fn commands(records: u64) -> impl Iterator<Item = SessionsCommand> {
    (0..BUILD_STREAMS).flat_map(move |stream| {
        SessionWorkload::new(stream as u64).take(share(records, BUILD_STREAMS, stream) as usize)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_probes_live_sessions() {
        let data = Dataset::new(10_000, 100);
        let deletes = commands(10_000).filter(|c| matches!(c, SessionsCommand::DeleteSession { .. })).count();
        assert_eq!(commands(10_000).count(), 10_000);
        // 156 or 157 commands per stream, of which 15 deletes.
        assert_eq!(deletes, 64 * 15);
        assert_eq!(data.expected.len(), 10_000 - 2 * deletes);
        assert_eq!(data.probes.len(), 100);
        assert!(data.probes.iter().all(|t| data.expected.contains_key(t)));
        assert_eq!(data.probe_sum, data.probes.iter().map(|t| data.expected[t]).sum::<u64>());
    }
}
