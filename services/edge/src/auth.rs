//! Client authentication: finds the token (header, cookie or query), checks
//! its signature and claims, and answers what the holder may see.

use std::collections::HashSet;

use http::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::Config;
use crate::error::ApiError;

/// Clock leeway for `exp`, in seconds (contract section 3).
const LEEWAY_SECS: u64 = 30;
/// Name of the auth cookie.
const COOKIE: &str = "herald_token";

/// Role a token may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// May publish through the edge.
    Publisher,
    /// May read metrics and use admin calls.
    Admin,
}

/// The verified holder of a token.
#[derive(Debug, Clone)]
pub struct Principal {
    /// User id (`sub`).
    pub user: String,
    /// Organisation (`org`); `*` only for cross-org publishers.
    pub org: String,
    /// Properties the user may see; `None` means all.
    pub props: Option<HashSet<String>>,
    /// Services the user may see; `None` means all.
    pub svcs: Option<HashSet<String>>,
    /// Optional role.
    pub role: Option<Role>,
    /// Expiry, seconds since the Unix epoch.
    pub exp: i64,
}

impl Principal {
    /// May this user see `service`?
    pub fn may_see_service(&self, service: &str) -> bool {
        self.svcs.as_ref().is_none_or(|s| s.contains(service))
    }

    /// May this user see `property` (`None` = org-wide events, visible to all)?
    pub fn may_see_property(&self, property: Option<&str>) -> bool {
        match (property, &self.props) {
            (None, _) | (_, None) => true,
            (Some(p), Some(allowed)) => allowed.contains(p),
        }
    }

    /// The org a request acts on: the token's own, or `body_org` for a
    /// cross-org (`org: "*"`) token. Naming another org is 403.
    pub fn target_org(&self, body_org: Option<&str>) -> Result<String, ApiError> {
        let org = match (self.org.as_str(), body_org) {
            ("*", Some(org)) => org,
            ("*", None) => {
                return Err(ApiError::BadParameter(
                    "orgId is required with a cross-org token".into(),
                ))
            }
            (own, Some(other)) if own != other => {
                return Err(ApiError::Forbidden(
                    "orgId differs from the token's org".into(),
                ))
            }
            (own, _) => own,
        };
        herald_proto::subject::check_token("orgId", org)
            .map_err(|e| ApiError::BadParameter(e.to_string()))?;
        Ok(org.to_owned())
    }

    /// Refuses tokens that cannot subscribe (cross-org ones).
    pub fn must_subscribe(self) -> Result<Self, ApiError> {
        if self.org == "*" {
            return Err(ApiError::Forbidden(
                "a cross-org token cannot subscribe".into(),
            ));
        }
        Ok(self)
    }

    /// True when the token carries `role`; admins may do everything.
    pub fn has_role(&self, role: Role) -> bool {
        self.role == Some(role) || self.role == Some(Role::Admin)
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    org: Option<String>,
    exp: i64,
    props: Option<Vec<String>>,
    svcs: Option<Vec<String>>,
    role: Option<Role>,
}

/// Checks tokens with the one key the node is configured with.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl Verifier {
    /// Builds the verifier from the config (secret, or PEM public key file).
    pub fn from_config(config: &Config) -> Result<Self, String> {
        let (key, alg) = match (&config.jwt_secret, &config.jwt_public_key_file) {
            (Some(secret), _) => (
                DecodingKey::from_secret(secret.expose().as_bytes()),
                Algorithm::HS256,
            ),
            (None, Some(path)) => {
                let pem =
                    std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
                public_key(&pem)?
            }
            (None, None) => return Err("no JWT key configured".into()),
        };
        let mut validation = Validation::new(alg);
        validation.algorithms = vec![alg];
        validation.leeway = LEEWAY_SECS;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp"]);
        Ok(Self { key, validation })
    }

    /// Verifies a token and returns its holder.
    pub fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                let why = match e.kind() {
                    ErrorKind::ExpiredSignature => "token expired",
                    ErrorKind::InvalidSignature => "token signature is invalid",
                    ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                        "token algorithm is not accepted"
                    }
                    ErrorKind::MissingRequiredClaim(_) => "token lacks a required claim",
                    _ => "token is malformed",
                };
                ApiError::Unauthorized(why.into())
            })?;
        let c = data.claims;
        let user = c
            .sub
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ApiError::Unauthorized("token lacks sub".into()))?;
        let org = c
            .org
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ApiError::Unauthorized("token lacks org".into()))?;
        if org != "*" && herald_proto::subject::check_token("org", &org).is_err() {
            return Err(ApiError::Unauthorized(
                "token org is not a valid org id".into(),
            ));
        }
        Ok(Principal {
            user,
            org,
            props: c.props.map(|v| v.into_iter().collect()),
            svcs: c.svcs.map(|v| v.into_iter().collect()),
            role: c.role,
            exp: c.exp,
        })
    }
}

fn public_key(pem: &[u8]) -> Result<(DecodingKey, Algorithm), String> {
    if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
        return Ok((k, Algorithm::RS256));
    }
    if let Ok(k) = DecodingKey::from_ec_pem(pem) {
        return Ok((k, Algorithm::ES256));
    }
    if let Ok(k) = DecodingKey::from_ed_pem(pem) {
        return Ok((k, Algorithm::EdDSA));
    }
    Err("HERALD_JWT_PUBLIC_KEY_FILE holds no RSA, EC or Ed25519 public key".into())
}

/// Finds the token: `Authorization: Bearer`, then the `herald_token` cookie,
/// then (when allowed for the endpoint) the `token` query parameter.
pub fn extract_token<'a>(
    headers: &'a HeaderMap,
    query_token: Option<&'a str>,
) -> Result<&'a str, ApiError> {
    if let Some(value) = headers.get(http::header::AUTHORIZATION) {
        let value = value
            .to_str()
            .map_err(|_| ApiError::Unauthorized("Authorization header is not text".into()))?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or_else(|| ApiError::Unauthorized("Authorization must be 'Bearer <token>'".into()))?
            .trim();
        if token.is_empty() {
            return Err(ApiError::Unauthorized(
                "Authorization has an empty token".into(),
            ));
        }
        return Ok(token);
    }
    for cookies in headers.get_all(http::header::COOKIE) {
        let Ok(cookies) = cookies.to_str() else {
            continue;
        };
        for pair in cookies.split(';') {
            if let Some((name, value)) = pair.trim().split_once('=') {
                if name == COOKIE && !value.is_empty() {
                    return Ok(value);
                }
            }
        }
    }
    match query_token {
        Some(t) if !t.is_empty() => Ok(t),
        _ => Err(ApiError::Unauthorized(
            "no token: send Authorization: Bearer <token>".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn finds_tokens_in_order_and_refuses_empty_ones() {
        let mut h = HeaderMap::new();
        assert!(extract_token(&h, None).is_err());
        assert_eq!(extract_token(&h, Some("q")).unwrap(), "q");
        h.insert(
            http::header::COOKIE,
            HeaderValue::from_static("a=b; herald_token=c"),
        );
        assert_eq!(extract_token(&h, Some("q")).unwrap(), "c");
        h.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer t"),
        );
        assert_eq!(extract_token(&h, Some("q")).unwrap(), "t");
        h.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer "),
        );
        assert!(extract_token(&h, Some("q")).is_err());
        h.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Basic abc"),
        );
        assert!(extract_token(&h, None).is_err());
    }

    #[test]
    fn claims_limit_services_and_properties() {
        let p = Principal {
            user: "u".into(),
            org: "acme".into(),
            props: Some(["p1".to_owned()].into()),
            svcs: None,
            role: None,
            exp: 0,
        };
        assert!(p.may_see_service("anything"));
        assert!(p.may_see_property(Some("p1")) && p.may_see_property(None));
        assert!(!p.may_see_property(Some("p2")));
        assert!(!p.has_role(Role::Publisher));
    }
}
