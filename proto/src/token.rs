//! Development tokens: HS256 JWTs with Herald's [`Claims`], signed with the
//! edge's `HERALD_JWT_SECRET`, and checked the way the edge checks them
//! (signature, `exp` and `sub` required, [`LEEWAY_SECS`] of clock leeway).
//! One implementation for every tool that mints tokens (the `herald` CLI,
//! the demo); the edge verifies with its own configured keys. Pure
//! computation, no I/O; behind the `jwt` feature so that crates which only
//! need the wire types do not build a JWT library.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

use crate::claims::Claims;

/// Clock leeway the edge allows, in seconds (contract section 3).
pub const LEEWAY_SECS: u64 = 30;

/// Shortest HS256 secret an edge accepts (`HERALD_JWT_SECRET`); a token
/// signed with a shorter one can never be verified.
pub const MIN_SECRET_BYTES: usize = 16;

/// A token that could not be signed or did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("token: {0}")]
pub struct TokenError(pub String);

/// Signs `claims` with HS256 and `secret`.
pub fn mint_hs256(secret: &str, claims: &Claims) -> Result<String, TokenError> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| TokenError(e.to_string()))
}

/// Checks an HS256 token's signature and expiry as the edge does, and
/// returns its claims.
pub fn verify_hs256(secret: &str, token: &str) -> Result<Claims, TokenError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = LEEWAY_SECS;
    validation.set_required_spec_claims(&["exp", "sub"]);
    jsonwebtoken::decode::<Claims>(
        token,
        &DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .map(|data| data.claims)
    .map_err(|e| TokenError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::Role;

    fn now() -> i64 {
        i64::try_from(jsonwebtoken::get_current_timestamp()).unwrap_or(i64::MAX)
    }

    #[test]
    fn round_trips_and_refuses_other_secrets_and_expired_tokens() {
        let claims = Claims {
            role: Some(Role::Admin),
            svcs: Some(vec!["finance".into()]),
            ..Claims::new("u1", "acme", now() + 60)
        };
        let token = mint_hs256("s3cret", &claims).expect("signed");
        assert_eq!(verify_hs256("s3cret", &token), Ok(claims.clone()));
        assert!(verify_hs256("other", &token).is_err());
        let old = mint_hs256("s3cret", &Claims::new("u1", "acme", now() - 3600)).expect("signed");
        assert!(verify_hs256("s3cret", &old).is_err());
        // Within the leeway an expired token still verifies.
        let recent = mint_hs256("s3cret", &Claims::new("u1", "acme", now() - 5)).expect("signed");
        assert!(verify_hs256("s3cret", &recent).is_ok());
    }
}
