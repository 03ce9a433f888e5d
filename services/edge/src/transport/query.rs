//! Query strings of poll, SSE and the stream upgrade: split and
//! percent-decoded once ([`form_pairs`]), then read into one
//! [`Subscription`] (org, services, property, cursor, epoch) that poll and
//! SSE share, plus what each adds (the poll's `timeout`, SSE's `token` and
//! `Last-Event-ID`); the stream upgrade reads only `token` and `org`
//! ([`StreamParams`]), the rest comes in its `hello`.
//!
//! Invariant: a request is refused (400) here exactly when one of its
//! numbers is bad (`lastSeq`, `Last-Event-ID`, the poll's `timeout`) or its
//! `org` is not a valid org token (or names two orgs); names of services
//! and properties are checked with the token ([`Filter`]). An unknown or
//! empty parameter is ignored, and the same parameter means the same thing
//! on every transport.
//!
//! [`Filter`]: crate::delivery::filter::Filter

use std::fmt;
use std::time::Duration;

use http::HeaderMap;

use crate::config::MAX_POLL_TIMEOUT;
use crate::delivery::filter::split_services;
use crate::error::ApiError;

/// What a poll or SSE request subscribes to and where it resumes.
#[derive(Debug, Default, PartialEq)]
pub struct Subscription {
    /// `org`: the org the client says its token belongs to, so that a load
    /// balancer can hash on it (org-affine routing); admission refuses it
    /// (403) when it is not the token's.
    pub org: Option<String>,
    /// `services`: the services asked for (`None`: all the token allows).
    pub services: Option<Vec<String>>,
    /// `propertyId`: only this property (and org-wide events).
    pub property: Option<String>,
    /// `lastSeq` (or SSE's `Last-Event-ID`): resume after this sequence.
    pub last_seq: Option<u64>,
    /// `epoch`: the stream incarnation `last_seq` belongs to.
    pub epoch: Option<String>,
}

impl Subscription {
    /// Takes `key` if it is one of the shared parameters; gives `value`
    /// back when it is not (the caller may know it).
    fn take(&mut self, key: &str, value: String) -> Result<Option<String>, ApiError> {
        match key {
            "org" => take_org(&mut self.org, value)?,
            "services" => self.services = Some(split_services(&value)),
            "propertyId" if !value.is_empty() => self.property = Some(value),
            "lastSeq" if !value.is_empty() => self.last_seq = Some(seq("lastSeq", &value)?),
            "epoch" if !value.is_empty() => self.epoch = Some(value),
            _ => return Ok(Some(value)),
        }
        Ok(None)
    }
}

/// Parsed query of a poll.
#[derive(Debug, Default, PartialEq)]
pub struct PollParams {
    /// What to deliver, from where.
    pub subscription: Subscription,
    /// `timeout`: how long to hold (whole seconds, at most 55).
    pub timeout: Option<Duration>,
}

impl PollParams {
    /// Parses a poll's raw query string; a bad value is a 400. A poll never
    /// takes a token from its query.
    pub fn parse(query: Option<&str>) -> Result<Self, ApiError> {
        let mut p = Self::default();
        for (key, value) in form_pairs(query.unwrap_or("")) {
            let Some(value) = p.subscription.take(&key, value)? else {
                continue;
            };
            if key == "timeout" && !value.is_empty() {
                let secs: u64 = value
                    .parse()
                    .map_err(|_| bad("timeout", "must be whole seconds"))?;
                let d = Duration::from_secs(secs);
                if d > MAX_POLL_TIMEOUT {
                    return Err(bad("timeout", "must be at most 55"));
                }
                p.timeout = Some(d);
            }
        }
        Ok(p)
    }
}

/// Parsed query (and `Last-Event-ID`) of an SSE request.
#[derive(Default, PartialEq)]
pub struct SseParams {
    /// What to deliver, from where; `Last-Event-ID` wins over `lastSeq`.
    pub subscription: Subscription,
    /// `token`: used only when `HERALD_ALLOW_QUERY_TOKEN` is on.
    pub token: Option<String>,
}

impl SseParams {
    /// Parses an SSE request's raw query string and `Last-Event-ID`; a bad
    /// value is a 400.
    pub fn parse(query: Option<&str>, headers: &HeaderMap) -> Result<Self, ApiError> {
        let mut p = Self::default();
        for (key, value) in form_pairs(query.unwrap_or("")) {
            let Some(value) = p.subscription.take(&key, value)? else {
                continue;
            };
            if key == "token" && !value.is_empty() {
                p.token = Some(value);
            }
        }
        if let Some(id) = headers.get("last-event-id") {
            let id = id
                .to_str()
                .map_err(|_| bad("Last-Event-ID", "must be a non-negative integer"))?
                .trim();
            if !id.is_empty() {
                p.subscription.last_seq = Some(seq("Last-Event-ID", id)?);
            }
        }
        Ok(p)
    }
}

/// Tokens are never logged: `Debug` shows only whether one was given.
impl fmt::Debug for SseParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseParams")
            .field("subscription", &self.subscription)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Parsed query of a stream upgrade: only `token` and `org` (everything
/// else of a stream's subscription comes in its `hello`).
#[derive(Default, PartialEq)]
pub struct StreamParams {
    /// `token` (the last non-empty one): used only when
    /// `HERALD_ALLOW_QUERY_TOKEN` is on.
    pub token: Option<String>,
    /// `org`, as in [`Subscription::org`].
    pub org: Option<String>,
}

impl StreamParams {
    /// Parses a stream upgrade's raw query string; a bad `org` is a 400
    /// (a close with 4000 after the upgrade). Other parameters are ignored.
    pub fn parse(query: Option<&str>) -> Result<Self, ApiError> {
        let mut p = Self::default();
        for (key, value) in form_pairs(query.unwrap_or("")) {
            match key.as_str() {
                "org" => take_org(&mut p.org, value)?,
                "token" if !value.is_empty() => p.token = Some(value),
                _ => {}
            }
        }
        Ok(p)
    }
}

/// Tokens are never logged: `Debug` shows only whether one was given.
impl fmt::Debug for StreamParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamParams")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("org", &self.org)
            .finish()
    }
}

/// Reads an `org` value into `org`: empty is absent, anything else must be
/// a valid org token (400). Repeating the same org is harmless, but two
/// different ones are refused (400): a load balancer may hash on either
/// occurrence while the node checks the other, so neither could be trusted.
fn take_org(org: &mut Option<String>, value: String) -> Result<(), ApiError> {
    if value.is_empty() {
        return Ok(());
    }
    herald_proto::subject::check_token("org", &value)
        .map_err(|e| ApiError::BadParameter(e.to_string()))?;
    match org {
        Some(first) if *first != value => Err(bad("org", "given twice with different values")),
        _ => {
            *org = Some(value);
            Ok(())
        }
    }
}

fn seq(name: &str, value: &str) -> Result<u64, ApiError> {
    value
        .parse()
        .map_err(|_| bad(name, "must be a non-negative integer"))
}

fn bad(name: &str, why: &str) -> ApiError {
    ApiError::BadParameter(format!("{name}: {why}"))
}

/// `key=value` pairs of a query string, percent-decoded.
pub fn form_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => match bytes.get(i + 1..i + 3) {
                Some(&[h, l]) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => {
                    let hex = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
                    out.push(hex(h) << 4 | hex(l));
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last_event_id(id: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("last-event-id", id.parse().unwrap());
        h
    }

    #[test]
    fn parses_poll_parameters() {
        let p = PollParams::parse(Some(
            "org=acme&services=finance,guest&propertyId=p1&lastSeq=41&epoch=E&timeout=5",
        ))
        .unwrap();
        assert_eq!(
            p.subscription,
            Subscription {
                org: Some("acme".into()),
                services: Some(vec!["finance".to_owned(), "guest".to_owned()]),
                property: Some("p1".into()),
                last_seq: Some(41),
                epoch: Some("E".into()),
            }
        );
        assert_eq!(p.timeout, Some(Duration::from_secs(5)));
        assert_eq!(PollParams::parse(None).unwrap(), PollParams::default());
        assert_eq!(
            PollParams::parse(Some("services=a%2Cb"))
                .unwrap()
                .subscription
                .services,
            Some(vec!["a".to_owned(), "b".to_owned()])
        );
    }

    #[test]
    fn rejects_bad_poll_parameters() {
        for q in [
            "lastSeq=-1",
            "lastSeq=abc",
            "timeout=56",
            "timeout=1.5",
            "lastSeq=99999999999999999999999",
        ] {
            assert!(
                matches!(PollParams::parse(Some(q)), Err(ApiError::BadParameter(_))),
                "{q}"
            );
        }
    }

    #[test]
    fn poll_and_sse_read_the_shared_parameters_alike() {
        let q = "org=acme&services=finance&propertyId=p1&lastSeq=7&epoch=E&token=t&timeout=3";
        let poll = PollParams::parse(Some(q)).unwrap();
        let sse = SseParams::parse(Some(q), &HeaderMap::new()).unwrap();
        assert_eq!(poll.subscription, sse.subscription);
        assert_eq!(sse.token.as_deref(), Some("t"));
        // SSE has no timeout, so a bad one is ignored there.
        assert!(SseParams::parse(Some("timeout=x"), &HeaderMap::new()).is_ok());
        assert!(PollParams::parse(Some("timeout=x")).is_err());
    }

    #[test]
    fn last_event_id_wins_and_must_be_a_number() {
        let p = SseParams::parse(Some("lastSeq=3"), &last_event_id(" 9 ")).unwrap();
        assert_eq!(p.subscription.last_seq, Some(9));
        let blank = SseParams::parse(Some("lastSeq=3"), &last_event_id("")).unwrap();
        assert_eq!(blank.subscription.last_seq, Some(3));
        assert!(SseParams::parse(None, &last_event_id("x")).is_err());
        assert!(SseParams::parse(Some("lastSeq=-2"), &HeaderMap::new()).is_err());
    }

    #[test]
    fn tokens_are_read_but_never_shown() {
        let p = SseParams::parse(Some("token=secret"), &HeaderMap::new()).unwrap();
        assert!(!format!("{p:?}").contains("secret"));
        let token = |q| StreamParams::parse(q).unwrap().token;
        assert_eq!(token(Some("a=1&token=&token=x%2By")), Some("x+y".into()));
        assert_eq!(token(Some("token=")), None);
        assert_eq!(token(None), None);
        let p = StreamParams::parse(Some("token=secret&org=acme")).unwrap();
        assert!(!format!("{p:?}").contains("secret"));
    }

    #[test]
    fn org_is_read_alike_on_every_transport() {
        let parse = |q: &str| -> Vec<Result<Option<String>, ApiError>> {
            vec![
                PollParams::parse(Some(q)).map(|p| p.subscription.org),
                SseParams::parse(Some(q), &HeaderMap::new()).map(|p| p.subscription.org),
                StreamParams::parse(Some(q)).map(|p| p.org),
            ]
        };
        let taken = [
            ("org=acme", Some("acme")),
            ("org=a_B-9", Some("a_B-9")),
            ("org=acme&org=acme", Some("acme")),
            ("org=&org=acme", Some("acme")),
            ("org=", None),
            ("", None),
        ];
        for (q, want) in taken {
            for got in parse(q) {
                assert_eq!(got.unwrap().as_deref(), want, "{q}");
            }
        }
        let long = format!("org={}", "o".repeat(65));
        for q in [
            "org=ac.me",
            "org=%2A",
            "org=a%20b",
            "org=ac%C3%A9",
            "org=acme&org=globex",
            long.as_str(),
        ] {
            for got in parse(q) {
                assert!(matches!(got, Err(ApiError::BadParameter(_))), "{q}");
            }
        }
        assert!(StreamParams::parse(Some(&format!("org={}", "o".repeat(64)))).is_ok());
    }

    #[test]
    fn percent_decoding_survives_garbage() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
