//! Why a benchmark could not run or finish.

/// A benchmark failure.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The command line or the environment cannot work.
    #[error("setup: {0}")]
    Setup(String),
    /// The edge node did not answer as expected.
    #[error("edge: {0}")]
    Edge(String),
    /// NATS could not be reached or refused the publishes.
    #[error("nats: {0}")]
    Nats(String),
    /// Something took longer than the benchmark allows.
    #[error("timed out: {0}")]
    Timeout(String),
    /// Writing the results failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}
