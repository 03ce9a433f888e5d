//! The NATS flags of `publish`, `tail` and `check`, read from the same
//! environment variables as the edge (`HERALD_NATS_URL`, `HERALD_NATS_USER`,
//! …), and the connection they make: one attempt per server, bounded by
//! [`CONNECT_TIMEOUT`], so an unreachable NATS is an error rather than a hang.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use async_nats::{Client, ConnectOptions};
use clap::Args;
use herald_proto::Partitions;
use herald_publisher::{redact_urls, NatsAuth, NatsServers, DEFAULT_STREAM};

use crate::error::CliError;

/// Default NATS URL, the edge's.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
/// Longest wait for a connection to one server.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for any request (JetStream API calls included).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Where NATS is, how to log in, and how Herald's streams are laid out.
#[derive(Clone, Args)]
#[command(next_help_heading = "NATS connection and streams")]
pub struct NatsArgs {
    /// NATS server URL(s), comma-separated; may carry `user:password@`.
    // The value stays out of `--help`: it may carry a password.
    #[arg(long, env = "HERALD_NATS_URL", hide_env_values = true, default_value = DEFAULT_NATS_URL)]
    pub nats: String,
    /// NATS user.
    #[arg(long, env = "HERALD_NATS_USER")]
    pub user: Option<String>,
    /// Password of the NATS user.
    #[arg(long, env = "HERALD_NATS_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// NATS authentication token.
    #[arg(long, env = "HERALD_NATS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// NATS `.creds` file (user JWT and NKey seed).
    #[arg(long, env = "HERALD_NATS_CREDS_FILE")]
    pub creds: Option<PathBuf>,
    /// Event streams orgs are spread over (the edges' `HERALD_PARTITIONS`).
    #[arg(long, env = "HERALD_PARTITIONS", default_value_t = 1)]
    pub partitions: u32,
    /// Events stream (with partitions, the base of `<stream>_<k>`).
    #[arg(long, env = "HERALD_STREAM", default_value = DEFAULT_STREAM)]
    pub stream: String,
}

impl fmt::Debug for NatsArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("NatsArgs")
            .field("nats", &redact_urls(&self.nats))
            .field("user", &self.user)
            .field("password", &redacted(&self.password))
            .field("token", &redacted(&self.token))
            .field("creds", &self.creds)
            .field("partitions", &self.partitions)
            .field("stream", &self.stream)
            .finish()
    }
}

impl NatsArgs {
    /// The partitions, checked.
    pub fn partitions(&self) -> Result<Partitions, CliError> {
        Partitions::new(self.partitions).ok_or_else(|| {
            CliError::Usage(format!(
                "--partitions must be between 1 and {}, got {}",
                herald_proto::partition::MAX_PARTITIONS,
                self.partitions
            ))
        })
    }

    /// The server list without passwords, for messages.
    pub fn shown_servers(&self) -> String {
        redact_urls(&self.nats)
    }

    /// The credentials in force: the flags, else those in the URLs.
    pub fn auth(&self) -> Result<NatsAuth, CliError> {
        let servers = NatsServers::parse(&self.nats).map_err(CliError::usage)?;
        let auth = NatsAuth {
            user: self.user.clone(),
            password: self.password.clone(),
            token: self.token.clone(),
            creds_file: self.creds.clone(),
        }
        .or_from_urls(&servers)
        .map_err(CliError::usage)?;
        auth.check().map_err(CliError::usage)?;
        Ok(auth)
    }

    /// Checks every flag without connecting.
    pub fn validate(&self) -> Result<(), CliError> {
        self.partitions()?;
        let bad_stream = self.stream.is_empty()
            || self
                .stream
                .contains(|c: char| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'));
        if bad_stream {
            return Err(CliError::Usage(format!(
                "--stream {:?} is not a valid stream name",
                self.stream
            )));
        }
        self.auth().map(|_| ())
    }

    /// Connects with `options` (plus the credentials and this module's
    /// timeouts). Unreachable servers are [`CliError::Unavailable`].
    pub async fn connect(&self, options: ConnectOptions) -> Result<Client, CliError> {
        let servers = NatsServers::parse(&self.nats).map_err(CliError::usage)?;
        let options = options
            .name("herald-cli")
            .connection_timeout(CONNECT_TIMEOUT)
            .request_timeout(Some(REQUEST_TIMEOUT));
        let options = self.auth()?.apply(options).await.map_err(CliError::usage)?;
        options.connect(servers.addrs).await.map_err(|e| {
            CliError::Unavailable(format!(
                "cannot connect to NATS at {}: {e}",
                self.shown_servers()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        nats: NatsArgs,
    }

    fn parse(args: &[&str]) -> NatsArgs {
        Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied()))
            .expect("valid arguments")
            .nats
    }

    #[test]
    fn validates_flags_and_hides_secrets() {
        assert!(parse(&[]).validate().is_ok());
        for bad in [
            &["--partitions", "0"][..],
            &["--stream", "A.B"],
            &["--user", "u"],
            &["--token", "t", "--user", "u", "--password", "p"],
            &["--nats", "nats://u:p@a:1", "--token", "t"],
        ] {
            let err = parse(bad).validate().expect_err("refused");
            assert_eq!(err.exit_code(), 64, "{bad:?}");
        }
        let shown = format!(
            "{:?}",
            parse(&["--nats", "nats://u:hunter2@a:1", "--token", "t0ken"])
        );
        assert!(
            !shown.contains("hunter2") && !shown.contains("t0ken"),
            "{shown}"
        );
    }
}
