//! Why a `herald` command failed, and the one place that maps each reason
//! to an exit code (after sysexits, like the demo and the edge).

/// Why a command stopped.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad flags or input (invalid JSON, a bad subject token, a file that
    /// cannot be read); nothing was sent.
    #[error("{0}")]
    Usage(String),
    /// NATS or JetStream could not be reached, or did not store the event.
    #[error("{0}")]
    Unavailable(String),
    /// `check` ran and at least one check failed (each is printed).
    #[error("{0} check(s) failed")]
    ChecksFailed(usize),
    /// Writing the output failed (a closed pipe, a full disk).
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
}

impl CliError {
    /// Process exit code: 64 usage (EX_USAGE), 69 unavailable
    /// (EX_UNAVAILABLE), 74 output (EX_IOERR), 1 failed checks.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => 64,
            Self::Unavailable(_) => 69,
            Self::ChecksFailed(_) => 1,
            Self::Output(_) => 74,
        }
    }

    /// A [`Usage`](Self::Usage) error from anything printable.
    pub fn usage(e: impl std::fmt::Display) -> Self {
        Self::Usage(e.to_string())
    }
}
