//! The command line: `herald publish|tail|token|check`.

use clap::{Parser, Subcommand};

use crate::check::CheckArgs;
use crate::publish::PublishArgs;
use crate::tail::TailArgs;
use crate::token::TokenArgs;

/// Herald operator tool: publish and tail events, mint development tokens,
/// check a deployment.
#[derive(Debug, Parser)]
#[command(name = "herald", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Publish one event (what `nats pub` does, with Herald's dedup id and
    /// expected stream), and print where JetStream stored it.
    Publish(PublishArgs),
    /// Print an org's stored events as the edge delivers them, one JSON
    /// line each, filtered by service and property.
    Tail(TailArgs),
    /// Print an HS256 development token with Herald's claims.
    Token(TokenArgs),
    /// Check a deployment: NATS, JetStream, the stream or partition streams,
    /// the partition mapping, permissions, and the edges' readiness.
    Check(CheckArgs),
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
    fn parses_every_subcommand() {
        let publish = Cli::try_parse_from([
            "herald",
            "publish",
            "--org",
            "acme",
            "--service",
            "finance",
            "--type",
            "x",
        ])
        .expect("publish");
        assert!(matches!(publish.command, Command::Publish(_)));
        let tail = Cli::try_parse_from(["herald", "tail", "--org", "acme", "--service", "a,b"])
            .expect("tail");
        let Command::Tail(tail) = tail.command else {
            panic!("not tail")
        };
        assert_eq!(tail.services, ["a", "b"]);
        assert!(Cli::try_parse_from([
            "herald",
            "tail",
            "--org",
            "a",
            "--last",
            "1",
            "--from-seq",
            "2"
        ])
        .is_err());
        let token = Cli::try_parse_from([
            "herald", "token", "--org", "acme", "--sub", "u1", "--secret", "s",
        ])
        .expect("token");
        assert!(matches!(token.command, Command::Token(_)));
        let check = Cli::try_parse_from(["herald", "check", "--edges", "http://a,http://b"])
            .expect("check");
        let Command::Check(check) = check.command else {
            panic!("not check")
        };
        assert_eq!(check.edges.len(), 2);
    }
}
