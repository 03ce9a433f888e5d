//! Client authentication: finds the token (header, cookie, query or the
//! WebSocket `hello`), checks its signature and claims, answers what the
//! holder may see, and guards cookie authentication against cross-site use
//! ([`check_origin`]: one rule for every endpoint).

use std::collections::HashSet;

use herald_proto::claims::Claims;
use http::{HeaderMap, Method};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::config::Config;
use crate::error::ApiError;

/// Clock leeway for `exp`, in seconds (contract section 3).
pub const LEEWAY_SECS: u64 = 30;
/// Name of the auth cookie.
const COOKIE: &str = "herald_token";

pub use herald_proto::claims::Role;

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
    /// Rooms the user may join; `None` means every room of the org.
    pub rooms: Option<HashSet<String>>,
    /// Expiry, seconds since the Unix epoch.
    pub exp: i64,
}

impl Principal {
    /// May this user see `service`?
    pub fn may_see_service(&self, service: &str) -> bool {
        self.svcs.as_ref().is_none_or(|s| s.contains(service))
    }

    /// May this user join `room` (contract section 6, the `rooms` claim)?
    pub fn may_join_room(&self, room: &str) -> bool {
        self.rooms.as_ref().is_none_or(|r| r.contains(room))
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

    /// An admin of every org (`role: admin` with `org: "*"`): the only
    /// holder allowed node-wide views (metrics, switches).
    pub fn is_cluster_admin(&self) -> bool {
        self.role == Some(Role::Admin) && self.org == "*"
    }

    /// May this publisher publish to `service` / `property`? A token limited
    /// by `props` may not publish org-wide events: those reach every
    /// property of the org, beyond what the token covers.
    pub fn may_publish(&self, service: &str, property: Option<&str>) -> Result<(), ApiError> {
        if !self.may_see_service(service) {
            return Err(ApiError::Forbidden(format!(
                "service '{service}' is outside the token's svcs"
            )));
        }
        match (property, &self.props) {
            (_, None) => Ok(()),
            (Some(p), Some(allowed)) if allowed.contains(p) => Ok(()),
            (Some(p), Some(_)) => Err(ApiError::Forbidden(format!(
                "property '{p}' is outside the token's props"
            ))),
            (None, Some(_)) => Err(ApiError::Forbidden(
                "a token limited by props cannot publish org-wide events".into(),
            )),
        }
    }
}

/// Checks tokens with the one key the node is configured with.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

/// Why no token verifier can be built from the config.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Neither `HERALD_JWT_SECRET` nor `HERALD_JWT_PUBLIC_KEY_FILE` is set.
    #[error("no JWT key configured")]
    Missing,
    /// The public key file cannot be read.
    #[error("reading {path}: {source}")]
    Unreadable {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds no key of a supported kind.
    #[error("HERALD_JWT_PUBLIC_KEY_FILE holds no RSA, EC or Ed25519 public key")]
    NotAPublicKey,
}

impl Verifier {
    /// Builds the verifier from the config (secret, or PEM public key file).
    pub fn from_config(config: &Config) -> Result<Self, KeyError> {
        let (key, alg) = match (&config.jwt_secret, &config.jwt_public_key_file) {
            (Some(secret), _) => (
                DecodingKey::from_secret(secret.expose().as_bytes()),
                Algorithm::HS256,
            ),
            (None, Some(path)) => {
                let pem = std::fs::read(path).map_err(|source| KeyError::Unreadable {
                    path: path.clone(),
                    source,
                })?;
                public_key(&pem)?
            }
            (None, None) => return Err(KeyError::Missing),
        };
        let mut validation = Validation::new(alg);
        validation.algorithms = vec![alg];
        validation.leeway = LEEWAY_SECS;
        let mut required = vec!["exp"];
        match config.jwt_audience.as_deref() {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        if let Some(iss) = config.jwt_issuer.as_deref() {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
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
                    ErrorKind::InvalidAudience => "token audience is not accepted",
                    ErrorKind::InvalidIssuer => "token issuer is not accepted",
                    _ => "token is malformed",
                };
                ApiError::Unauthorized(why.into())
            })?;
        let c = data.claims;
        // An absent or null `sub`/`org` reads as empty (see `Claims`).
        if c.sub.is_empty() {
            return Err(ApiError::Unauthorized("token lacks sub".into()));
        }
        if c.org.is_empty() {
            return Err(ApiError::Unauthorized("token lacks org".into()));
        }
        let (user, org) = (c.sub, c.org);
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
            rooms: c.rooms.map(|v| v.into_iter().collect()),
            exp: c.exp,
        })
    }
}

fn public_key(pem: &[u8]) -> Result<(DecodingKey, Algorithm), KeyError> {
    if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
        return Ok((k, Algorithm::RS256));
    }
    if let Ok(k) = DecodingKey::from_ec_pem(pem) {
        return Ok((k, Algorithm::ES256));
    }
    if let Ok(k) = DecodingKey::from_ed_pem(pem) {
        return Ok((k, Algorithm::EdDSA));
    }
    Err(KeyError::NotAPublicKey)
}

/// Finds the token: `Authorization: Bearer`, then the `herald_token` cookie,
/// then (when allowed for the endpoint) the `token` query parameter.
pub fn extract_token<'a>(
    headers: &'a HeaderMap,
    query_token: Option<&'a str>,
) -> Result<&'a str, ApiError> {
    find_token(headers, query_token)?.ok_or_else(|| {
        ApiError::Unauthorized("no token: send Authorization: Bearer <token>".into())
    })
}

/// Like [`extract_token`], but `Ok(None)` when the request carries no token
/// at all (a WebSocket client may then send it in `hello`). A malformed
/// `Authorization` header is still an error.
pub fn find_token<'a>(
    headers: &'a HeaderMap,
    query_token: Option<&'a str>,
) -> Result<Option<&'a str>, ApiError> {
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
        return Ok(Some(token));
    }
    if let Some(token) = cookie_token(headers) {
        return Ok(Some(token));
    }
    Ok(query_token.filter(|t| !t.is_empty()))
}

/// The `herald_token` cookie, when present and not empty.
fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|cookies| cookies.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == COOKIE && !value.is_empty())
        .map(|(_, value)| value)
}

/// True when the request authenticates with the `herald_token` cookie: the
/// cookie is there and no `Authorization` header takes precedence over it
/// (the order of [`extract_token`]).
pub fn cookie_authenticated(headers: &HeaderMap) -> bool {
    !headers.contains_key(http::header::AUTHORIZATION) && cookie_token(headers).is_some()
}

/// The cross-site rule for cookie authentication (contract section 3). A
/// browser attaches the cookie to requests any site makes, so a
/// cookie-authenticated request must show it comes from an allowed page:
///
/// - `Origin` present: it must be in `HERALD_CORS_ORIGINS` or be the
///   node's own origin (same host as the `Host` header), else 403 / 4003.
/// - `Origin` absent: allowed only for a plain `GET`/`HEAD` (browsers leave it
///   out of same-origin `EventSource` and `fetch` GETs, which only read);
///   a WebSocket upgrade or a state-changing method (browsers always send
///   `Origin` on those) is refused.
///
/// Requests authenticated by an `Authorization` header, a query token or a
/// `hello` token cannot be forged by another site, so `Origin` does not
/// matter for them.
pub fn check_origin(
    cors_origins: &[String],
    headers: &HeaderMap,
    method: &Method,
    upgrade: bool,
) -> Result<(), ApiError> {
    if !cookie_authenticated(headers) {
        return Ok(());
    }
    match headers.get(http::header::ORIGIN) {
        Some(origin) => {
            let origin = origin.to_str().unwrap_or("");
            if origin_allowed(cors_origins, origin, headers) {
                Ok(())
            } else {
                Err(ApiError::Forbidden(
                    "this Origin may not use cookie authentication; add it to HERALD_CORS_ORIGINS"
                        .into(),
                ))
            }
        }
        None if !upgrade && (method == Method::GET || method == Method::HEAD) => Ok(()),
        None => Err(ApiError::Forbidden(
            "cookie authentication needs an Origin header here; send Authorization: Bearer <token>"
                .into(),
        )),
    }
}

/// `origin` is configured, or is this node's own origin (`Host` matches).
fn origin_allowed(cors_origins: &[String], origin: &str, headers: &HeaderMap) -> bool {
    if origin.is_empty() || origin == "null" {
        return false;
    }
    if cors_origins.iter().any(|o| o.eq_ignore_ascii_case(origin)) {
        return true;
    }
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let origin_host = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    !host.is_empty() && origin_host.is_some_and(|o| o.eq_ignore_ascii_case(host))
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

    fn cookie_request(origin: Option<&'static str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            HeaderValue::from_static("herald_token=t"),
        );
        h.insert(
            http::header::HOST,
            HeaderValue::from_static("edge.example:8080"),
        );
        if let Some(o) = origin {
            h.insert(http::header::ORIGIN, HeaderValue::from_static(o));
        }
        h
    }

    #[test]
    fn cookie_requests_need_an_allowed_origin() {
        let allowed = vec!["https://app.example".to_owned()];
        let check = |h: &HeaderMap, m: Method, up: bool| check_origin(&allowed, h, &m, up).is_ok();
        let good = cookie_request(Some("https://app.example"));
        let same = cookie_request(Some("http://edge.example:8080"));
        let evil = cookie_request(Some("https://evil.example"));
        let null = cookie_request(Some("null"));
        let none = cookie_request(None);
        for m in [Method::GET, Method::POST, Method::PUT] {
            assert!(check(&good, m.clone(), false) && check(&good, m.clone(), true));
            assert!(check(&same, m.clone(), false));
            assert!(!check(&evil, m.clone(), false) && !check(&evil, m.clone(), true));
            assert!(!check(&null, m.clone(), false));
        }
        assert!(check(&none, Method::GET, false));
        assert!(!check(&none, Method::GET, true));
        assert!(!check(&none, Method::POST, false));
        // A bearer header wins over the cookie: Origin does not matter.
        let mut bearer = evil.clone();
        bearer.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer t"),
        );
        assert!(check(&bearer, Method::POST, true));
        assert!(check(&HeaderMap::new(), Method::POST, true));
    }

    #[test]
    fn publishers_stay_within_svcs_and_props() {
        let p = Principal {
            user: "bot".into(),
            org: "acme".into(),
            props: Some(["p1".to_owned()].into()),
            svcs: Some(["finance".to_owned()].into()),
            role: Some(Role::Publisher),
            rooms: None,
            exp: 0,
        };
        assert!(p.may_publish("finance", Some("p1")).is_ok());
        assert!(p.may_publish("tasks", Some("p1")).is_err());
        assert!(p.may_publish("finance", Some("p2")).is_err());
        assert!(p.may_publish("finance", None).is_err());
        let open = Principal {
            props: None,
            svcs: None,
            ..p
        };
        assert!(open.may_publish("tasks", None).is_ok());
    }

    #[test]
    fn claims_limit_services_and_properties() {
        let p = Principal {
            user: "u".into(),
            org: "acme".into(),
            props: Some(["p1".to_owned()].into()),
            svcs: None,
            role: None,
            rooms: None,
            exp: 0,
        };
        assert!(p.may_see_service("anything"));
        assert!(p.may_see_property(Some("p1")) && p.may_see_property(None));
        assert!(!p.may_see_property(Some("p2")));
        assert!(!p.has_role(Role::Publisher));
    }
}
