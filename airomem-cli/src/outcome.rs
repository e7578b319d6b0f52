//! How a subcommand ends: [`Outcome`] when it ran, [`Failure`] when it could not; `main`
//! turns either into the exit code.

/// The exit code for damage found.
pub(crate) const EXIT_DAMAGE: u8 = 1;
/// The exit code for a usage or I/O error (clap uses it for usage errors too).
pub(crate) const EXIT_ERROR: u8 = 2;

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
