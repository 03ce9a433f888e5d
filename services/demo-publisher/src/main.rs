//! `herald-demo`: parses the command line and hands it to the library.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = herald_demo::Cli::parse();
    herald_demo::init_tracing();
    match herald_demo::run_cli(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("herald-demo: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}
