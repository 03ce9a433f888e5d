//! `herald`, the operator CLI: what `nats pub` and `nats sub` do, with
//! Herald's subjects, dedup ids, partitions, decoding and tokens, and a
//! checker for a whole deployment.
//!
//! - [`cli`]: the command line.
//! - [`connect`]: the NATS connection flags every NATS subcommand shares
//!   (servers, credentials, stream, partitions).
//! - [`publish`]: `herald publish`, through [`herald_publisher::Publisher`].
//! - [`tail`]: `herald tail`, an ordered consumer on the org's partition
//!   stream, decoded with [`herald_proto::stored`].
//! - [`token`]: `herald token`, development tokens signed with
//!   [`herald_proto::token`].
//! - [`check`]: `herald check`, one line per check, `ok` or `FAILED`.
//! - [`error`]: [`CliError`] and the exit codes.

pub mod check;
pub mod cli;
pub mod connect;
pub mod error;
pub mod publish;
pub mod tail;
pub mod token;

pub use cli::{Cli, Command};
pub use error::CliError;

/// Runs one parsed command line to completion.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Publish(args) => publish::run(args).await,
        Command::Tail(args) => tail::run(args, shutdown_signal()).await,
        Command::Token(args) => token::run(&args),
        Command::Check(args) => check::run(args).await,
    }
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            // No handler could be installed: never fire rather than stop at once.
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
