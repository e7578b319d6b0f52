//! Shared pieces of airomem's examples, integration tests and benchmarks; not part of the
//! library. It holds the session store that the README's example is built around.

pub mod sim;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Login sessions: token to user id.
#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq, Eq)]
pub struct Sessions {
    /// Live sessions.
    pub tokens: HashMap<String, u64>,
}

/// The changes a session store accepts.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum SessionsCommand {
    /// Starts a session.
    CreateSession {
        /// The session's secret token.
        token: String,
        /// Who logged in.
        user_id: u64,
    },
    /// Ends a session.
    DeleteSession {
        /// The session's token.
        token: String,
    },
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

/// An append-only log of numbers: recovery must give back exactly a prefix of what was
/// committed, which makes "nothing lost, nothing invented, nothing reordered" checkable.
#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq, Eq)]
pub struct Log {
    /// The values, in commit order.
    pub values: Vec<u64>,
}

impl airomem::State for Log {
    type Command = u64;

    fn execute(&mut self, value: u64) {
        self.values.push(value);
    }
}

/// Every command's sequence number (from [`airomem::CommitContext`]) and value, in the order
/// executed: what the crash and fault tests compare with the commands they submitted.
#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq, Eq)]
pub struct SeqLog {
    /// `(sequence number, value)` of each applied command.
    pub entries: Vec<(u64, u64)>,
}

/// Appends `value` to a [`SeqLog`]. `pad` only varies the record size, so that records
/// straddle sector boundaries and segments fill at different points. With `panic`, the
/// command panics after appending: the store must roll the append back.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Append {
    /// The value appended.
    pub value: u64,
    /// Filler bytes.
    pub pad: Vec<u8>,
    /// Whether to panic after appending.
    pub panic: bool,
}

/// The message of the panics [`Append`] raises on purpose, so a panic hook can keep them quiet.
pub const DELIBERATE_PANIC: &str = "deliberate panic of a test command";

impl airomem::State for SeqLog {
    type Command = Append;

    fn execute(&mut self, command: Append) {
        let seq = airomem::CommitContext::current().map_or(0, |c| c.seq.0);
        self.entries.push((seq, command.value));
        assert!(!command.panic, "{DELIBERATE_PANIC}");
    }
}

/// A 32-character token derived from `n`: distinct for distinct `n`, cheap, deterministic.
pub fn token(n: u64) -> String {
    // splitmix64, twice, so that neighbouring n give unrelated tokens.
    let mix = |mut z: u64| {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    format!("{:016x}{:016x}", mix(n), mix(!n))
}
