//! Development tokens: HS256 JWTs with Herald's claims (`sub`, `org`, `exp`,
//! and optionally `props`, `svcs`, `role`), signed with the edge's
//! `HERALD_JWT_SECRET` by [`herald_proto::token`] (which `herald token`
//! uses too).

use std::fmt;
use std::time::Duration;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::Args;

use crate::error::DemoError;

pub use herald_proto::claims::{Claims, Role};

/// `herald-demo token`: mint a token for trying the edge out.
#[derive(Clone, Args)]
pub struct TokenArgs {
    /// HS256 secret shared with the edge.
    #[arg(long, env = "HERALD_JWT_SECRET", hide_env_values = true)]
    pub secret: String,
    /// Organisation (`*` for a publisher acting for any org).
    #[arg(long)]
    pub org: String,
    /// User id.
    #[arg(long, default_value = "demo-user")]
    pub sub: String,
    /// Comma-separated property ids the user may see (default: all).
    #[arg(long, value_delimiter = ',')]
    pub props: Option<Vec<String>>,
    /// Comma-separated services the user may see (default: all).
    #[arg(long, value_delimiter = ',')]
    pub svcs: Option<Vec<String>>,
    /// Extra role.
    #[arg(long, value_parser = role_parser())]
    pub role: Option<Role>,
    /// Lifetime, e.g. `24h`, `90m`.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
}

impl fmt::Debug for TokenArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenArgs")
            .field("secret", &"<redacted>")
            .field("org", &self.org)
            .field("sub", &self.sub)
            .field("props", &self.props)
            .field("svcs", &self.svcs)
            .field("role", &self.role)
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl TokenArgs {
    /// Checks the arguments and builds the claims for a token issued at
    /// `now_secs`.
    pub fn claims(&self, now_secs: u64) -> Result<Claims, DemoError> {
        let config = |m: String| DemoError::Config(m);
        if self.secret.is_empty() {
            return Err(config("--secret is empty".into()));
        }
        if self.sub.is_empty() {
            return Err(config("--sub is empty".into()));
        }
        if self.org != "*" {
            herald_proto::subject::check_token("org", &self.org)
                .map_err(|e| config(e.to_string()))?;
        }
        for (what, list) in [("propertyId", &self.props), ("service", &self.svcs)] {
            for token in list.iter().flatten() {
                herald_proto::subject::check_token(what, token)
                    .map_err(|e| config(format!("{token:?}: {e}")))?;
            }
        }
        if self.ttl.is_zero() {
            return Err(config("--ttl must be positive".into()));
        }
        Ok(Claims {
            sub: self.sub.clone(),
            org: self.org.clone(),
            exp: i64::try_from(now_secs.saturating_add(self.ttl.as_secs().max(1)))
                .unwrap_or(i64::MAX),
            props: self.props.clone(),
            svcs: self.svcs.clone(),
            role: self.role,
            rooms: None,
        })
    }
}

/// `--role`: one of [`Role::ALL`], listed in `--help`.
fn role_parser() -> impl TypedValueParser<Value = Role> {
    PossibleValuesParser::new(Role::ALL.map(Role::as_str)).try_map(|s| s.parse::<Role>())
}

/// Signs `claims` with HS256 ([`herald_proto::token::mint_hs256`]).
pub fn mint(secret: &str, claims: &Claims) -> Result<String, DemoError> {
    herald_proto::token::mint_hs256(secret, claims).map_err(|e| DemoError::Token(e.0))
}

/// Checks an HS256 token's signature and expiry the way the edge does, and
/// returns its claims ([`herald_proto::token::verify_hs256`]).
pub fn verify(secret: &str, token: &str) -> Result<Claims, DemoError> {
    herald_proto::token::verify_hs256(secret, token).map_err(|e| DemoError::Token(e.0))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        token: TokenArgs,
    }

    fn parse(args: &[&str]) -> TokenArgs {
        Cli::try_parse_from(std::iter::once("token").chain(args.iter().copied()))
            .expect("valid arguments")
            .token
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    #[test]
    fn claims_round_trip_through_a_signed_token() {
        let args = parse(&[
            "--secret",
            "s3cret",
            "--org",
            "acme-hotels",
            "--props",
            "lisbon,porto",
            "--svcs",
            "finance",
            "--role",
            "publisher",
            "--ttl",
            "2h",
        ]);
        let claims = args.claims(now()).expect("claims");
        let token = mint(&args.secret, &claims).expect("token");
        let back = verify("s3cret", &token).expect("verifies");
        assert_eq!(back, claims);
        assert_eq!(back.sub, "demo-user");
        assert_eq!(
            back.props.as_deref(),
            Some(&["lisbon".into(), "porto".into()][..])
        );
        assert_eq!(back.svcs.as_deref(), Some(&["finance".into()][..]));
        assert_eq!(back.role, Some(Role::Publisher));
        assert!(back.exp.abs_diff(now() as i64 + 7200) <= 2);
        assert!(verify("other", &token).is_err());
    }

    #[test]
    fn optional_claims_are_left_out() {
        let args = parse(&["--secret", "s", "--org", "acme"]);
        let claims = args.claims(1_000).expect("claims");
        assert_eq!(claims.exp, 1_000 + 24 * 3600);
        let json = serde_json::to_value(&claims).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"sub": "demo-user", "org": "acme", "exp": 87_400})
        );
        let admin = parse(&["--secret", "s", "--org", "*", "--role", "admin"]);
        let json = serde_json::to_value(admin.claims(0).expect("claims")).expect("json");
        assert_eq!(json["role"], "admin");
        assert_eq!(json["org"], "*");
    }

    #[test]
    fn expired_tokens_do_not_verify() {
        let args = parse(&["--secret", "s", "--org", "acme", "--ttl", "1s"]);
        let claims = args.claims(now() - 3600).expect("claims");
        let token = mint("s", &claims).expect("token");
        assert!(verify("s", &token).is_err());
    }

    #[test]
    fn refuses_bad_arguments() {
        for args in [
            &["--secret", "", "--org", "acme"][..],
            &["--secret", "s", "--org", "ac.me"],
            &["--secret", "s", "--org", "acme", "--props", "p 1"],
            &["--secret", "s", "--org", "acme", "--svcs", "fin>"],
            &["--secret", "s", "--org", "acme", "--ttl", "0s"],
        ] {
            let err = parse(args).claims(0).expect_err("refused");
            assert_eq!(err.exit_code(), 64, "{args:?}");
        }
        let redacted = format!("{:?}", parse(&["--secret", "hunter2", "--org", "acme"]));
        assert!(!redacted.contains("hunter2"));
    }
}
