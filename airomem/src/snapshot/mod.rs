//! Taking snapshots (feature `snapshot`): the thread that writes and publishes them, and the
//! retention that follows. This path writes snapshot files and removes or archives what they
//! cover; it never writes the journal and never loads a snapshot (that is `recover`'s).

pub(crate) mod retain;
pub(crate) mod worker;
