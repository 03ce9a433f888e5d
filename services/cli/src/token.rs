//! `herald token`: an HS256 development token with Herald's claims, signed
//! by [`herald_proto::token`] with the edge's `HERALD_JWT_SECRET`.

use std::fmt;
use std::time::Duration;

use clap::{Args, ValueEnum};
use herald_proto::claims::{Claims, Role};
use herald_proto::subject::check_token;
use herald_proto::token::MIN_SECRET_BYTES;

use crate::error::CliError;

/// The `--role` values: `user` (no role claim) or one of [`Role`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// A plain user: subscribes, nothing more.
    User,
    /// May publish through `POST /v2/realtime/publish`.
    Publisher,
    /// May read metrics and use admin calls.
    Admin,
}

impl RoleArg {
    /// The `role` claim.
    pub fn claim(self) -> Option<Role> {
        match self {
            Self::User => None,
            Self::Publisher => Some(Role::Publisher),
            Self::Admin => Some(Role::Admin),
        }
    }
}

/// `herald token`.
#[derive(Clone, Args)]
pub struct TokenArgs {
    /// Organisation (`*` for a publisher or admin acting for any org).
    #[arg(long)]
    pub org: String,
    /// User id (the `sub` claim).
    #[arg(long)]
    pub sub: String,
    /// Role.
    #[arg(long, value_enum, default_value_t = RoleArg::User)]
    pub role: RoleArg,
    /// Comma-separated services the token may see (default: all).
    #[arg(long, value_delimiter = ',')]
    pub services: Option<Vec<String>>,
    /// Comma-separated property ids the token may see (default: all).
    #[arg(long, value_delimiter = ',')]
    pub properties: Option<Vec<String>>,
    /// Lifetime, e.g. `1h`, `90m`, `7d`.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// HS256 secret shared with the edges.
    #[arg(long, env = "HERALD_JWT_SECRET", hide_env_values = true)]
    pub secret: String,
}

impl fmt::Debug for TokenArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenArgs")
            .field("org", &self.org)
            .field("sub", &self.sub)
            .field("role", &self.role)
            .field("services", &self.services)
            .field("properties", &self.properties)
            .field("ttl", &self.ttl)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl TokenArgs {
    /// Checks the flags and builds the claims of a token issued at
    /// `now_secs` (seconds since the Unix epoch).
    pub fn claims(&self, now_secs: u64) -> Result<Claims, CliError> {
        if self.secret.len() < MIN_SECRET_BYTES {
            return Err(CliError::Usage(format!(
                "--secret must be at least {MIN_SECRET_BYTES} bytes, as the edges require of HERALD_JWT_SECRET"
            )));
        }
        if self.sub.is_empty() {
            return Err(CliError::Usage("--sub is empty".into()));
        }
        if self.org != "*" {
            check_token("org", &self.org).map_err(CliError::usage)?;
        }
        for (what, list) in [
            ("service", &self.services),
            ("propertyId", &self.properties),
        ] {
            for token in list.iter().flatten() {
                check_token(what, token).map_err(|e| CliError::Usage(format!("{token:?}: {e}")))?;
            }
        }
        if self.ttl < Duration::from_secs(1) {
            return Err(CliError::Usage("--ttl must be at least 1s".into()));
        }
        let exp = now_secs.saturating_add(self.ttl.as_secs());
        Ok(Claims {
            props: self.properties.clone(),
            svcs: self.services.clone(),
            role: self.role.claim(),
            ..Claims::new(
                self.sub.clone(),
                self.org.clone(),
                i64::try_from(exp).unwrap_or(i64::MAX),
            )
        })
    }
}

/// Prints the signed token.
pub fn run(args: &TokenArgs) -> Result<(), CliError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let claims = args.claims(now)?;
    let token = herald_proto::token::mint_hs256(&args.secret, &claims).map_err(CliError::usage)?;
    println!("{token}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    #[command(args_override_self = true)]
    struct Cli {
        #[command(flatten)]
        token: TokenArgs,
    }

    fn parse(extra: &[&str]) -> TokenArgs {
        let base = [
            "x",
            "--org",
            "acme",
            "--sub",
            "u1",
            "--secret",
            "0123456789abcdef",
        ];
        Cli::try_parse_from(base.iter().chain(extra.iter()).copied())
            .expect("valid arguments")
            .token
    }

    #[test]
    fn builds_claims_from_flags() {
        let c = parse(&[]).claims(1_000).expect("claims");
        assert_eq!(c, Claims::new("u1", "acme", 1_000 + 3600));
        let c = parse(&[
            "--role",
            "publisher",
            "--services",
            "finance,tasks",
            "--properties",
            "p1",
            "--ttl",
            "2h",
        ])
        .claims(0)
        .expect("claims");
        assert_eq!(c.role, Some(Role::Publisher));
        assert_eq!(c.svcs, Some(vec!["finance".into(), "tasks".into()]));
        assert_eq!(c.props, Some(vec!["p1".into()]));
        assert_eq!(c.exp, 7200);
    }

    #[test]
    fn refuses_bad_flags_and_hides_the_secret() {
        for bad in [
            &["--org", "ac.me"][..],
            &["--services", "fin>"],
            &["--properties", "p 1"],
            &["--ttl", "0s"],
            &["--secret", ""],
            &["--secret", "0123456789abcde"],
        ] {
            let err = parse(bad).claims(0).expect_err("refused");
            assert_eq!(err.exit_code(), 64, "{bad:?}");
        }
        let shown = format!("{:?}", parse(&["--secret", "hunter2hunter2hunter2"]));
        assert!(!shown.contains("hunter2"));
    }
}
