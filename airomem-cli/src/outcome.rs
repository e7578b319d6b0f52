//! How a subcommand ends: [`Outcome`] when it ran, [`Failure`] when it could not; `main`
//! turns either into the exit code.

/// How a subcommand ended, for the exit code.
pub(crate) enum Outcome {
    /// Nothing wrong.
    Clean,
    /// Damage found (already reported).
    Damaged,
}

/// What a subcommand fails with: printed with its causes, exit code 2 (a cluster command's
/// `ClusterError` carries its own).
pub(crate) type Failure = Box<dyn std::error::Error>;
