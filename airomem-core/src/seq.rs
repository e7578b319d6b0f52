use std::fmt;

/// A command's position in the journal.
///
/// Sequence numbers start at 1, grow by exactly one per journal record and are never reused,
/// so `Seq(n)` also says that `n - 1` records were written before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Seq(pub u64);

impl Seq {
    /// The sequence number of the very first record of a store.
    pub const FIRST: Seq = Seq(1);

    /// The sequence number that follows this one.
    ///
    /// # Panics
    /// After 2^64 - 1 records, which at a billion commits a second takes 584 years.
    #[must_use]
    pub fn next(self) -> Seq {
        Seq(self.0.checked_add(1).expect("sequence numbers cannot run out"))
    }

    /// The raw number.
    #[must_use]
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}
