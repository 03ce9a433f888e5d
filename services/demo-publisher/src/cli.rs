//! The command line: `herald-demo run …` and `herald-demo token …`.

use clap::{Parser, Subcommand};

use crate::runner::RunConfig;
use crate::token::TokenArgs;

/// Herald demo: simulates a hospitality platform publishing events, and
/// mints development tokens.
#[derive(Debug, Parser)]
#[command(name = "herald-demo", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Publish simulated events until stopped (Ctrl-C, SIGTERM, or --duration).
    Run(RunConfig),
    /// Print an HS256 JWT for the edge.
    Token(TokenArgs),
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_both_subcommands() {
        let run = Cli::try_parse_from(["herald-demo", "run", "--rate", "20", "--orgs", "a,b"])
            .expect("run");
        let Command::Run(config) = run.command else {
            panic!("not run")
        };
        assert_eq!(config.rate, 20.0);
        assert_eq!(config.orgs, ["a", "b"]);
        let token = Cli::try_parse_from(["herald-demo", "token", "--secret", "s", "--org", "a"])
            .expect("token");
        assert!(matches!(token.command, Command::Token(_)));
    }
}
