//! `herald-demo`: a simulated hospitality platform publishing to Herald, and
//! a minter of development tokens.
//!
//! - [`cli`]: the command line, `run` and `token`.
//! - [`runner`]: `run` — stream setup, the paced publish loop, summaries.
//! - [`simulation`]: the world of orgs, properties, expenses, guests, tasks
//!   and staff that the events describe.
//! - [`pacing`]: the fixed-rate schedule.
//! - [`stream`]: the events stream, created when missing.
//! - [`token`]: HS256 JWTs with Herald's claims.
//! - [`error`]: errors and exit codes.

pub mod cli;
pub mod error;
pub mod pacing;
pub mod runner;
pub mod simulation;
pub mod stream;
pub mod token;

pub use cli::{Cli, Command};
pub use error::DemoError;
pub use runner::{run, RunConfig, RunSummary};
pub use token::{Claims, Role, TokenArgs};

/// Runs one parsed command line to completion.
pub async fn run_cli(cli: Cli) -> Result<(), DemoError> {
    match cli.command {
        Command::Run(config) => {
            config.validate()?;
            run(config, shutdown_signal()).await.map(|_| ())
        }
        Command::Token(args) => {
            let claims = args.claims(jsonwebtoken::get_current_timestamp())?;
            println!("{}", token::mint(&args.secret, &claims)?);
            Ok(())
        }
    }
}

/// Logs to stderr (stdout is for `token` output), filtered by `RUST_LOG`,
/// `info` by default.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
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
        () = ctrl_c => tracing::info!("Ctrl-C, stopping"),
        () = term => tracing::info!("SIGTERM, stopping"),
    }
}
