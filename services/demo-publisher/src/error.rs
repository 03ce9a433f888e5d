//! The demo's errors and the exit codes they map to.

/// Why `herald-demo` stopped.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Bad flags or environment; nothing was started.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// NATS could not be reached or refused a stream operation.
    #[error("NATS: {0}")]
    Nats(String),
    /// A token could not be signed.
    #[error("token: {0}")]
    Token(String),
}

impl DemoError {
    /// Process exit code, after sysexits: 64 usage, 69 unavailable,
    /// 70 internal.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) => 64,
            Self::Nats(_) => 69,
            Self::Token(_) => 70,
        }
    }
}
