//! NATS credentials: `nats://user:password@host:port` URLs, a user and
//! password, a token or a `.creds` file, turned into async-nats connect
//! options without the secrets ever reaching a log.
//!
//! async-nats ignores credentials written into a server URL and prints the
//! whole URL (password included) in its debug logs, so [`NatsServers::parse`]
//! takes them out of the URLs and [`NatsAuth::apply`] hands them to the
//! client as options instead. [`redact_urls`] is the form to show.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use async_nats::{ConnectOptions, ServerAddr};

/// A server list or a set of credentials that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("NATS connection settings: {0}")]
pub struct CredentialsError(pub String);

/// How a client proves who it is to NATS. At most one method is set
/// (checked by [`NatsAuth::check`]); all empty means no authentication.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct NatsAuth {
    /// User name; needs [`password`](Self::password).
    pub user: Option<String>,
    /// Password of [`user`](Self::user).
    pub password: Option<String>,
    /// Authentication token.
    pub token: Option<String>,
    /// A `.creds` file (user JWT and NKey seed) for decentralized auth.
    pub creds_file: Option<PathBuf>,
}

impl fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("NatsAuth")
            .field("user", &self.user)
            .field("password", &redacted(&self.password))
            .field("token", &redacted(&self.token))
            .field("creds_file", &self.creds_file)
            .finish()
    }
}

impl NatsAuth {
    /// User and password authentication.
    pub fn user_password(user: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            user: Some(user.into()),
            password: Some(password.into()),
            ..Self::default()
        }
    }

    /// Whether no method is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Checks that the settings form one usable method.
    pub fn check(&self) -> Result<(), CredentialsError> {
        let bad = |m: &str| Err(CredentialsError(m.to_owned()));
        match (&self.user, &self.password) {
            (Some(u), Some(_)) if u.is_empty() => return bad("the NATS user is empty"),
            (Some(_), None) => return bad("a NATS user needs a password"),
            (None, Some(_)) => return bad("a NATS password needs a user"),
            _ => {}
        }
        let methods = [
            self.user.is_some(),
            self.token.is_some(),
            self.creds_file.is_some(),
        ];
        if methods.iter().filter(|&&m| m).count() > 1 {
            return bad("use only one of NATS user/password, token and creds file");
        }
        if self.token.as_deref() == Some("") {
            return bad("the NATS token is empty");
        }
        Ok(())
    }

    /// `self`, or the credentials found in the server URLs when `self` is
    /// empty. Credentials in both places are an error: one of them would be
    /// silently ignored.
    pub fn or_from_urls(self, servers: &NatsServers) -> Result<Self, CredentialsError> {
        match (&servers.auth, self.is_empty()) {
            (None, _) => Ok(self),
            (Some(from_url), true) => Ok(from_url.clone()),
            (Some(_), false) => Err(CredentialsError(
                "credentials are given both in the NATS URL and as options; use one".to_owned(),
            )),
        }
    }

    /// Adds the credentials to `options`. Reads the creds file, if any.
    pub async fn apply(&self, options: ConnectOptions) -> Result<ConnectOptions, CredentialsError> {
        self.check()?;
        let options = match (&self.user, &self.password) {
            (Some(u), Some(p)) => options.user_and_password(u.clone(), p.clone()),
            _ => options,
        };
        let options = match &self.token {
            Some(t) => options.token(t.clone()),
            None => options,
        };
        match &self.creds_file {
            Some(path) => options.credentials_file(path).await.map_err(|e| {
                CredentialsError(format!("reading creds file {}: {e}", path.display()))
            }),
            None => Ok(options),
        }
    }
}

/// A comma-separated NATS server list, with any `user:password@` taken out
/// of the URLs.
#[derive(Debug, Clone)]
pub struct NatsServers {
    /// The servers, without credentials.
    pub addrs: Vec<ServerAddr>,
    /// The user and password the URLs carried (all the same, or none).
    pub auth: Option<NatsAuth>,
}

impl NatsServers {
    /// Parses `urls` (`nats://[user:password@]host:port`, comma-separated).
    /// Credentials must be the same on every URL that has them; they may be
    /// percent-encoded (`%40` for `@`). Errors never repeat a password.
    pub fn parse(urls: &str) -> Result<Self, CredentialsError> {
        let mut addrs = Vec::new();
        let mut auth: Option<NatsAuth> = None;
        for raw in urls.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let shown = redact_url(raw);
            let addr = ServerAddr::from_str(raw)
                .map_err(|_| CredentialsError(format!("invalid NATS URL {shown}")))?;
            let here = match (addr.username(), addr.password()) {
                (None, None) => None,
                (Some(u), Some(p)) => Some(NatsAuth::user_password(
                    percent_decode(u, &shown)?,
                    percent_decode(p, &shown)?,
                )),
                _ => {
                    return Err(CredentialsError(format!(
                        "NATS URL {shown} needs both a user and a password"
                    )))
                }
            };
            if let Some(here) = here {
                if auth.as_ref().is_some_and(|a| *a != here) {
                    return Err(CredentialsError(
                        "NATS URLs carry different credentials".to_owned(),
                    ));
                }
                auth = Some(here);
            }
            let mut url = addr.into_inner();
            // Cannot fail for the nats/tls/ws schemes ServerAddr accepts.
            let _ = url.set_password(None);
            let _ = url.set_username("");
            let addr = ServerAddr::from_url(url)
                .map_err(|_| CredentialsError(format!("invalid NATS URL {shown}")))?;
            addrs.push(addr);
        }
        if addrs.is_empty() {
            return Err(CredentialsError("no NATS URL given".to_owned()));
        }
        Ok(Self { addrs, auth })
    }
}

/// `urls` with every password replaced by `***`, for logs and `Debug`.
pub fn redact_urls(urls: &str) -> String {
    urls.split(',')
        .map(|u| redact_url(u.trim()))
        .collect::<Vec<_>>()
        .join(",")
}

/// One URL with its password (anything between `user:` and `@` in the
/// authority) replaced by `***`. Works on text that does not parse, too.
fn redact_url(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[start..].find('/').map_or(url.len(), |i| start + i);
    let Some(at) = url[start..authority_end].rfind('@').map(|i| start + i) else {
        return url.to_owned();
    };
    match url[start..at].find(':').map(|i| start + i) {
        Some(colon) => format!("{}:***{}", &url[..colon], &url[at..]),
        None => url.to_owned(),
    }
}

/// Decodes `%XX` escapes of a URL's user or password.
fn percent_decode(s: &str, shown: &str) -> Result<String, CredentialsError> {
    let bad = || CredentialsError(format!("bad percent-encoding in NATS URL {shown}"));
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or_else(bad)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_credentials_out_of_urls() {
        let s = NatsServers::parse("nats://edge:p%40ss@a:4222, nats://edge:p%40ss@b:4223")
            .expect("valid");
        assert_eq!(s.auth, Some(NatsAuth::user_password("edge", "p@ss")));
        let shown: Vec<String> = s.addrs.iter().map(|a| format!("{a:?}")).collect();
        assert!(shown
            .iter()
            .all(|a| !a.contains("p%40ss") && !a.contains("edge")));
        assert_eq!((s.addrs[1].host(), s.addrs[1].port()), ("b", 4223));

        let plain = NatsServers::parse("nats://127.0.0.1:4222").expect("valid");
        assert_eq!(plain.auth, None);
        // One URL with credentials is enough; the others connect the same way.
        let mixed = NatsServers::parse("nats://u:p@a:1,nats://b:2").expect("valid");
        assert_eq!(mixed.auth, Some(NatsAuth::user_password("u", "p")));
    }

    #[test]
    fn refuses_unusable_server_lists_without_showing_passwords() {
        for bad in [
            "",
            " , ",
            "nats://u:p1@a:1,nats://u:p2@b:2",
            "nats://u@a:1",
            "http://u:secret@a:1",
            "nats://u:%zz@a:1",
        ] {
            let err = NatsServers::parse(bad).expect_err(bad).to_string();
            assert!(!err.contains("secret") && !err.contains("p2"), "{err}");
        }
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_urls("nats://edge:s3cret@a:4222,nats://b:4222"),
            "nats://edge:***@a:4222,nats://b:4222"
        );
        assert_eq!(redact_urls("edge:x@host"), "edge:***@host");
        assert_eq!(redact_urls("nats://user@a"), "nats://user@a");
        let auth = NatsAuth {
            token: Some("t0ken".into()),
            ..NatsAuth::user_password("edge", "s3cret")
        };
        let shown = format!("{auth:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("t0ken"),
            "{shown}"
        );
    }

    #[test]
    fn checks_one_method_at_a_time() {
        assert!(NatsAuth::default().check().is_ok());
        assert!(NatsAuth::user_password("u", "p").check().is_ok());
        let both = NatsAuth {
            token: Some("t".into()),
            ..NatsAuth::user_password("u", "p")
        };
        assert!(both.check().is_err());
        let no_password = NatsAuth {
            user: Some("u".into()),
            ..NatsAuth::default()
        };
        assert!(no_password.check().is_err());
        let servers = NatsServers::parse("nats://u:p@a:1").expect("valid");
        assert!(NatsAuth::user_password("v", "q")
            .or_from_urls(&servers)
            .is_err());
        assert_eq!(
            NatsAuth::default().or_from_urls(&servers).expect("valid"),
            NatsAuth::user_password("u", "p")
        );
    }
}
