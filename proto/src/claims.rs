//! The claims of a Herald client token (contract section 3): `sub`, `org`,
//! `exp`, and optionally `props`, `svcs`, `role` and `rooms` (section 6). One definition for the
//! edge that verifies tokens, the demo that mints them and the tests that
//! build them. Invariant: any token payload the edge accepts reads as a
//! [`Claims`], and a [`Claims`] writes as such a payload. Development
//! tokens are signed and checked in `token` (feature `jwt`); the edge
//! verifies with its own configured keys.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

/// What a token lets its holder do beyond subscribing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// May publish through `POST /v2/realtime/publish`.
    Publisher,
    /// May read metrics and use admin calls.
    Admin,
}

impl Role {
    /// Every role, in the order the CLI lists them.
    pub const ALL: [Role; 2] = [Role::Admin, Role::Publisher];

    /// The claim value: `publisher` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Publisher => "publisher",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `role` value that names no [`Role`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?} (expected admin or publisher)")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

/// The claims Herald reads from a client token. Other claims (`aud`,
/// `iss`, `jti`, …) are left to the verifier's validation and ignored here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// User id. Absent or `null` reads as empty, which the edge refuses.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub sub: String,
    /// Organisation, or `*` for a publisher acting for any org. Absent or
    /// `null` reads as empty, which the edge refuses.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub org: String,
    /// Expiry, seconds since the Unix epoch. Required; a JSON integer
    /// (a NumericDate may lie before 1970, so it is signed).
    pub exp: i64,
    /// Properties the user may see; absent means all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub props: Option<Vec<String>>,
    /// Services the user may see; absent means all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub svcs: Option<Vec<String>>,
    /// Extra role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// Rooms the user may join; absent means every room of the org.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Vec<String>>,
}

impl Claims {
    /// Claims of user `sub` in `org` expiring at `exp`, with no limits and
    /// no role.
    pub fn new(sub: impl Into<String>, org: impl Into<String>, exp: i64) -> Self {
        Self {
            sub: sub.into(),
            org: org.into(),
            exp,
            props: None,
            svcs: None,
            role: None,
            rooms: None,
        }
    }
}

/// A string claim where `null` means the same as absent: empty.
fn null_as_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn optional_claims_are_left_out() {
        let c = Claims::new("u1", "acme", 7);
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            json!({"sub": "u1", "org": "acme", "exp": 7})
        );
        let full = Claims {
            props: Some(vec!["p1".into()]),
            svcs: Some(vec!["finance".into()]),
            role: Some(Role::Publisher),
            ..c
        };
        let v = serde_json::to_value(&full).unwrap();
        assert_eq!(v["role"], "publisher");
        assert_eq!(serde_json::from_value::<Claims>(v).unwrap(), full);
    }

    #[test]
    fn missing_or_null_names_read_as_empty_and_other_claims_are_ignored() {
        let c: Claims =
            serde_json::from_value(json!({"org": null, "exp": 1, "aud": "x", "jti": "j"})).unwrap();
        assert_eq!((c.sub.as_str(), c.org.as_str()), ("", ""));
        assert!(serde_json::from_value::<Claims>(json!({"sub": "u"})).is_err());
        assert_eq!(
            serde_json::from_value::<Claims>(json!({"exp": -1}))
                .unwrap()
                .exp,
            -1
        );
        assert!(serde_json::from_value::<Claims>(json!({"exp": 1.5})).is_err());
        assert!(serde_json::from_value::<Claims>(json!({"exp": u64::MAX})).is_err());
        assert!(serde_json::from_value::<Claims>(json!({"exp": 1, "role": "root"})).is_err());
    }

    #[test]
    fn roles_round_trip_as_text() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
            assert_eq!(serde_json::to_value(role).unwrap(), role.as_str());
        }
        assert!("root".parse::<Role>().is_err());
    }
}
