//! Schema-2 successors of [`crate::SeqLog`] for the migration tests: the working one
//! ([`TaggedLog`]) and variants whose migration fails in each way a user's can.

use airomem::{Previous, Serializer, State};
use serde::{Deserialize, Serialize};

use crate::{Append, DELIBERATE_PANIC, SeqLog};

/// A value the failing variants refuse, or panic on, when they meet it in old history.
pub const POISON: u64 = 666;

/// One applied command, and the schema whose `execute` applied it.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tagged {
    /// Its sequence number, from the recorded [`airomem::CommitContext`].
    pub seq: u64,
    /// The value appended.
    pub value: u64,
    /// 1 if it was applied by [`SeqLog`]'s `execute` (before the migration), 2 if by
    /// [`TaggedLog`]'s.
    pub schema: u32,
}

/// [`SeqLog`] at schema 2: every entry says which schema applied it.
#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq, Eq)]
pub struct TaggedLog {
    /// The applied commands, in order.
    pub entries: Vec<Tagged>,
}

impl From<SeqLog> for TaggedLog {
    fn from(old: SeqLog) -> Self {
        let entries = old.entries.into_iter().map(|(seq, value)| Tagged { seq, value, schema: 1 }).collect();
        TaggedLog { entries }
    }
}

impl State for TaggedLog {
    type Command = Append;
    const SCHEMA_VERSION: u32 = 2;

    fn execute(&mut self, command: Append) {
        let seq = airomem::CommitContext::current().map_or(0, |c| c.seq.0);
        self.entries.push(Tagged { seq, value: command.value, schema: 2 });
        assert!(!command.panic, "{DELIBERATE_PANIC}");
    }

    fn previous<Z: Serializer>() -> Previous<Self, Z> {
        Previous::from::<SeqLog>()
    }
}

/// Defines a schema-2 log that behaves like [`TaggedLog`] but names its predecessor with
/// `$previous`.
macro_rules! variant {
    ($(#[$doc:meta])* $name:ident, $previous:expr) => {
        $(#[$doc])*
        #[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq, Eq)]
        #[serde(transparent)]
        pub struct $name(pub TaggedLog);

        impl State for $name {
            type Command = Append;
            const SCHEMA_VERSION: u32 = 2;

            fn execute(&mut self, command: Append) {
                self.0.execute(command)
            }

            fn previous<Z: Serializer>() -> Previous<Self, Z> {
                $previous
            }
        }
    };
}

variant!(
    /// Converts with `TryFrom`, refusing a log that holds [`POISON`].
    RefusingLog,
    Previous::try_from::<SeqLog>()
);

/// Why [`RefusingLog`] refused a log.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused {
    /// The entry holding the poison.
    pub seq: u64,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "entry {} holds the poison value", self.seq)
    }
}

impl std::error::Error for Refused {}

impl TryFrom<SeqLog> for RefusingLog {
    type Error = Refused;

    fn try_from(old: SeqLog) -> Result<Self, Refused> {
        match old.entries.iter().find(|&&(_, value)| value == POISON) {
            Some(&(seq, _)) => Err(Refused { seq }),
            None => Ok(RefusingLog(old.into())),
        }
    }
}

variant!(
    /// Converts with a `From` that panics on a log holding [`POISON`].
    PanickingLog,
    Previous::from::<SeqLog>()
);

impl From<SeqLog> for PanickingLog {
    fn from(old: SeqLog) -> Self {
        assert!(old.entries.iter().all(|&(_, value)| value != POISON), "the conversion met the poison value");
        PanickingLog(old.into())
    }
}

variant!(
    /// Names no predecessor: a schema-1 store is foreign to it.
    OrphanLog,
    Previous::none()
);

variant!(
    /// Names a predecessor of the same version: an invalid chain.
    LoopingLog,
    Previous::from::<OrphanLog>()
);

impl From<OrphanLog> for LoopingLog {
    fn from(old: OrphanLog) -> Self {
        LoopingLog(old.0)
    }
}

/// [`SeqLog`] as a careless user "froze" it: same types and version, but its `execute` was
/// edited to panic on [`POISON`].
#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq, Eq)]
#[serde(transparent)]
pub struct EditedSeqLog(pub SeqLog);

impl State for EditedSeqLog {
    type Command = Append;

    fn execute(&mut self, command: Append) {
        assert!(command.value != POISON, "the edited schema-1 execute refuses the poison value");
        self.0.execute(command)
    }
}

variant!(
    /// Migrates from [`EditedSeqLog`], whose `execute` panics on old history.
    StrictLog,
    Previous::from::<EditedSeqLog>()
);

impl From<EditedSeqLog> for StrictLog {
    fn from(old: EditedSeqLog) -> Self {
        StrictLog(old.0.into())
    }
}
