//! `herald-loadgen`: parses the command line and runs the chosen benchmark.

use std::process::ExitCode;

use clap::Parser;
use herald_loadgen::cli::Cli;

/// Exit code for a benchmark that could not run (EX_UNAVAILABLE).
const EXIT_FAILED: u8 = 69;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match herald_loadgen::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herald-loadgen: {e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}
