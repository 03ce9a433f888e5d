//! JWTs for tests: HS256 tokens with Herald's claims ([`Claims`]: `sub`,
//! `org`, `exp`, `props`, `svcs`, `role`; contract section 3; `rooms`,
//! section 6), tokens with arbitrary
//! claims, and unsigned `alg: none` tokens that an edge node must reject.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use herald_proto::claims::Claims;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Map, Value};

/// Lifetime of a token unless set otherwise.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

/// Builds an HS256 token. Starts from a valid user token: `sub` `"u1"`, `org`
/// `"acme"`, `exp` one hour from now, no `props`, `svcs` or `role`.
#[derive(Clone, Debug)]
pub struct TokenBuilder {
    secret: Vec<u8>,
    claims: Map<String, Value>,
}

impl TokenBuilder {
    /// A builder signing with `secret`.
    pub fn new(secret: impl AsRef<[u8]>) -> TokenBuilder {
        TokenBuilder::from_claims(secret, &Claims::new("u1", "acme", 0))
            .expires_in(DEFAULT_LIFETIME)
    }

    /// A builder signing with `secret`, starting from `claims`.
    pub fn from_claims(secret: impl AsRef<[u8]>, claims: &Claims) -> TokenBuilder {
        let claims = match serde_json::to_value(claims) {
            Ok(Value::Object(map)) => map,
            _ => unreachable!("claims serialize as a JSON object"),
        };
        TokenBuilder {
            secret: secret.as_ref().to_vec(),
            claims,
        }
    }

    /// Sets the user id.
    // Named after the `sub` claim, not `std::ops::Sub`.
    #[allow(clippy::should_implement_trait)]
    pub fn sub(self, sub: &str) -> TokenBuilder {
        self.claim("sub", json!(sub))
    }

    /// Sets the org (`"*"` lets a publisher name the org per request).
    pub fn org(self, org: &str) -> TokenBuilder {
        self.claim("org", json!(org))
    }

    /// Limits the token to these properties.
    pub fn props(self, props: &[&str]) -> TokenBuilder {
        self.claim("props", json!(props))
    }

    /// Limits the token to these services.
    pub fn svcs(self, svcs: &[&str]) -> TokenBuilder {
        self.claim("svcs", json!(svcs))
    }

    /// Limits the rooms the token may join (contract section 6).
    pub fn rooms(self, rooms: &[&str]) -> TokenBuilder {
        self.claim("rooms", json!(rooms))
    }

    /// Sets the role (`publisher`, `admin`).
    pub fn role(self, role: &str) -> TokenBuilder {
        self.claim("role", json!(role))
    }

    /// Expires `lifetime` from now.
    pub fn expires_in(self, lifetime: Duration) -> TokenBuilder {
        self.exp(now_secs() + lifetime.as_secs())
    }

    /// Expires at `unix_secs` (may be in the past).
    pub fn exp(self, unix_secs: u64) -> TokenBuilder {
        self.claim("exp", json!(unix_secs))
    }

    /// Sets any claim, replacing an earlier value.
    pub fn claim(mut self, key: &str, value: Value) -> TokenBuilder {
        self.claims.insert(key.to_owned(), value);
        self
    }

    /// Leaves claim `key` out of the token.
    pub fn without(mut self, key: &str) -> TokenBuilder {
        self.claims.remove(key);
        self
    }

    /// The claims the token will carry.
    pub fn claims(&self) -> Value {
        Value::Object(self.claims.clone())
    }

    /// The signed token.
    pub fn build(&self) -> String {
        hs256_with(&self.secret, self.claims())
    }
}

/// An HS256 token with exactly `claims`, signed with `secret`.
pub fn hs256_with(secret: impl AsRef<[u8]>, claims: Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_ref()),
    )
    .expect("encode HS256 token")
}

/// An unsigned token `header.payload.` with header
/// `{"alg":"none","typ":"JWT"}`; a verifier must reject it.
pub fn unsigned_alg_none(claims: Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{payload}.")
}

/// Seconds since the Unix epoch, the unit of `exp`.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("system clock after 1970")
        .as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{decode, DecodingKey, Validation};

    fn verify(token: &str, secret: &[u8]) -> Value {
        decode::<Value>(
            token,
            &DecodingKey::from_secret(secret),
            &Validation::new(Algorithm::HS256),
        )
        .expect("valid HS256 token")
        .claims
    }

    #[test]
    fn builder_sets_and_omits_claims() {
        let token = TokenBuilder::new("s3cret")
            .sub("u2")
            .props(&["p1", "p2"])
            .svcs(&["finance"])
            .role("admin")
            .rooms(&["r1"])
            .without("org")
            .build();
        let claims = verify(&token, b"s3cret");
        assert_eq!(claims["sub"], "u2");
        assert_eq!(claims["props"], json!(["p1", "p2"]));
        assert_eq!(claims["svcs"], json!(["finance"]));
        assert_eq!(claims["role"], "admin");
        assert_eq!(claims["rooms"], json!(["r1"]));
        assert!(claims.get("org").is_none());
        let exp = claims["exp"].as_u64().expect("numeric exp");
        assert!(exp > now_secs() + 3500 && exp <= now_secs() + 3600);
    }

    #[test]
    fn default_claims_are_herald_claims() {
        let claims: Claims =
            serde_json::from_value(TokenBuilder::new("s").claims()).expect("Herald claims");
        assert_eq!((claims.sub.as_str(), claims.org.as_str()), ("u1", "acme"));
        assert_eq!((claims.props, claims.svcs, claims.role), (None, None, None));
        let exp = u64::try_from(claims.exp).expect("positive exp");
        assert!(exp > now_secs() + 3500 && exp <= now_secs() + 3600);
    }

    #[test]
    fn expired_token_fails_validation() {
        let token = TokenBuilder::new("s3cret").exp(now_secs() - 600).build();
        let result = decode::<Value>(
            &token,
            &DecodingKey::from_secret(b"s3cret"),
            &Validation::new(Algorithm::HS256),
        );
        assert!(result.is_err());
    }

    #[test]
    fn alg_none_token_is_unsigned() {
        let token = unsigned_alg_none(json!({"sub":"u1","org":"acme"}));
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[2], "");
        let header = URL_SAFE_NO_PAD.decode(parts[0]).expect("base64url header");
        assert_eq!(header, br#"{"alg":"none","typ":"JWT"}"#);
        assert!(decode::<Value>(
            &token,
            &DecodingKey::from_secret(b"x"),
            &Validation::new(Algorithm::HS256)
        )
        .is_err());
    }
}
