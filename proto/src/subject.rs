//! NATS subjects for events: `herald.events.<org>.<service>.<property>`.
//!
//! Every token is 1–64 characters of `[A-Za-z0-9_-]`; the property `_` marks
//! an org-wide event. The stream RePublishes each stored event to the same
//! tokens under [`LIVE_PREFIX`], which is what edge nodes subscribe to.

use std::fmt;

/// Prefix of the subjects domain services publish to (and the stream stores).
pub const EVENTS_PREFIX: &str = "herald.events";
/// Prefix the stream RePublishes stored events to; edge nodes subscribe here.
pub const LIVE_PREFIX: &str = "herald.live";
/// Property token of an event that belongs to no property.
pub const ORG_WIDE: &str = "_";
/// Longest allowed token.
pub const MAX_TOKEN_LEN: usize = 64;

/// Why a subject or token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    /// A token was empty.
    #[error("{what} is empty")]
    Empty {
        /// Which token.
        what: &'static str,
    },
    /// A token was longer than [`MAX_TOKEN_LEN`].
    #[error("{what} is longer than {MAX_TOKEN_LEN} characters")]
    TooLong {
        /// Which token.
        what: &'static str,
    },
    /// A token held a character outside `[A-Za-z0-9_-]`.
    #[error("{what} may only contain A-Z, a-z, 0-9, '_' and '-'")]
    BadCharacter {
        /// Which token.
        what: &'static str,
    },
    /// The subject did not have the `herald.events.<org>.<service>.<property>` shape.
    #[error("subject is not {EVENTS_PREFIX}.<org>.<service>.<property>")]
    Shape,
}

/// A validated subject token (org, service or property id).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(String);

impl Token {
    /// Checks `value` against the token rules; `what` names it in the error.
    pub fn parse(what: &'static str, value: &str) -> Result<Self, SubjectError> {
        check_token(what, value)?;
        Ok(Self(value.to_owned()))
    }

    /// The token as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks one token without allocating.
pub fn check_token(what: &'static str, value: &str) -> Result<(), SubjectError> {
    if value.is_empty() {
        return Err(SubjectError::Empty { what });
    }
    if value.len() > MAX_TOKEN_LEN {
        return Err(SubjectError::TooLong { what });
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(SubjectError::BadCharacter { what });
    }
    Ok(())
}

/// The three tokens of an event subject. `property` is `None` for org-wide events.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventSubject {
    /// Organisation id.
    pub org: String,
    /// Publishing service, e.g. `finance`.
    pub service: String,
    /// Property id, or `None` for an org-wide event.
    pub property: Option<String>,
}

impl EventSubject {
    /// Builds a subject from tokens, validating each.
    pub fn new(org: &str, service: &str, property: Option<&str>) -> Result<Self, SubjectError> {
        check_token("org", org)?;
        check_token("service", service)?;
        if let Some(p) = property {
            check_token("propertyId", p)?;
            if p == ORG_WIDE {
                return Err(SubjectError::BadCharacter { what: "propertyId" });
            }
        }
        Ok(Self {
            org: org.to_owned(),
            service: service.to_owned(),
            property: property.map(str::to_owned),
        })
    }

    /// Parses a subject under `prefix` (either [`EVENTS_PREFIX`] or [`LIVE_PREFIX`]).
    pub fn parse_with_prefix(prefix: &str, subject: &str) -> Result<Self, SubjectError> {
        let rest = subject
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix('.'))
            .ok_or(SubjectError::Shape)?;
        let mut parts = rest.split('.');
        let (Some(org), Some(service), Some(property), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(SubjectError::Shape);
        };
        check_token("org", org)?;
        check_token("service", service)?;
        check_token("propertyId", property)?;
        Ok(Self {
            org: org.to_owned(),
            service: service.to_owned(),
            property: (property != ORG_WIDE).then(|| property.to_owned()),
        })
    }

    /// Parses a `herald.events.…` subject.
    pub fn parse(subject: &str) -> Result<Self, SubjectError> {
        Self::parse_with_prefix(EVENTS_PREFIX, subject)
    }

    /// The subject a publisher sends this event to.
    pub fn to_subject(&self) -> String {
        format!(
            "{EVENTS_PREFIX}.{}.{}.{}",
            self.org,
            self.service,
            self.property.as_deref().unwrap_or(ORG_WIDE)
        )
    }
}

/// Wildcard covering every stored event of one org.
pub fn org_events_filter(org: &str) -> String {
    format!("{EVENTS_PREFIX}.{org}.>")
}

/// Wildcard covering every RePublished (live) event of one org.
pub fn org_live_filter(org: &str) -> String {
    format!("{LIVE_PREFIX}.{org}.>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_property_and_org_wide_subjects() {
        let s = EventSubject::new("acme", "finance", Some("p1")).unwrap();
        assert_eq!(s.to_subject(), "herald.events.acme.finance.p1");
        assert_eq!(EventSubject::parse(&s.to_subject()).unwrap(), s);

        let wide = EventSubject::parse("herald.events.acme-2.tasks._").unwrap();
        assert_eq!(wide.property, None);
        assert_eq!(wide.to_subject(), "herald.events.acme-2.tasks._");
    }

    #[test]
    fn parses_live_subjects() {
        let s = EventSubject::parse_with_prefix(LIVE_PREFIX, "herald.live.o.guest.p_9").unwrap();
        assert_eq!((s.org.as_str(), s.service.as_str()), ("o", "guest"));
        assert_eq!(s.property.as_deref(), Some("p_9"));
    }

    #[test]
    fn rejects_bad_shapes_and_tokens() {
        for bad in [
            "herald.events.acme.finance",
            "herald.events.acme.finance.p1.extra",
            "herald.eventsX.acme.finance.p1",
            "other.events.acme.finance.p1",
            "herald.events..finance.p1",
            "herald.events.ac*me.finance.p1",
            "herald.events.acme.fin ance.p1",
        ] {
            assert!(EventSubject::parse(bad).is_err(), "{bad} accepted");
        }
        let long = "a".repeat(65);
        assert_eq!(
            check_token("org", &long),
            Err(SubjectError::TooLong { what: "org" })
        );
        assert!(check_token("org", &"a".repeat(64)).is_ok());
        assert!(EventSubject::new("acme", "finance", Some("_")).is_err());
        assert!(EventSubject::new("acme", "fin.ance", None).is_err());
    }

    #[test]
    fn builds_filters() {
        assert_eq!(org_events_filter("acme"), "herald.events.acme.>");
        assert_eq!(org_live_filter("acme"), "herald.live.acme.>");
    }
}
