//! Poll and SSE query strings: `form_pairs` (split and percent-decode), and
//! the poll and SSE parameter parsers built on it.
//!
//! Invariants: one pair per non-empty `&`-separated piece; a decoded key or
//! value is never longer than its raw text; text without `%` or `+` decodes
//! to itself; encoding the decoded pairs and parsing again gives the same
//! pairs; the poll/SSE parsers refuse exactly the queries with a bad
//! `lastSeq`/`timeout` (or `Last-Event-ID`) and accept all others.
#![no_main]

use herald_edge::transport::query::{form_pairs, PollParams, SseParams};
use libfuzzer_sys::fuzz_target;

/// `MAX_POLL_TIMEOUT` in seconds.
const MAX_TIMEOUT_SECS: u64 = 55;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The first line is the query, the rest the `Last-Event-ID` header.
    let (query, last_event_id) = text.split_once('\n').unwrap_or((text, ""));

    let pairs = form_pairs(query);
    let pieces: Vec<&str> = query.split('&').filter(|s| !s.is_empty()).collect();
    assert_eq!(pairs.len(), pieces.len());
    for ((key, value), raw) in pairs.iter().zip(&pieces) {
        let (raw_key, raw_value) = raw.split_once('=').unwrap_or((raw, ""));
        assert!(key.len() <= raw_key.len(), "{raw_key:?} decoded longer");
        assert!(
            value.len() <= raw_value.len(),
            "{raw_value:?} decoded longer"
        );
        if !raw_key.contains(['%', '+']) {
            assert_eq!(key, raw_key);
        }
        if !raw_value.contains(['%', '+']) {
            assert_eq!(value, raw_value);
        }
    }
    let encoded: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    let again = form_pairs(&encoded.join("&"));
    // An empty key with an empty value encodes as `=`, which is one pair.
    assert_eq!(again, pairs, "encode/decode round trip changed the pairs");

    // The parsers refuse a query exactly when one of its numbers is bad.
    let bad_seq = |v: &str| !v.is_empty() && v.parse::<u64>().is_err();
    let bad_timeout =
        |v: &str| !v.is_empty() && v.parse::<u64>().map_or(true, |s| s > MAX_TIMEOUT_SECS);
    let poll_bad = pairs
        .iter()
        .any(|(k, v)| (k == "lastSeq" && bad_seq(v)) || (k == "timeout" && bad_timeout(v)));
    let poll = PollParams::parse(Some(query));
    assert_eq!(poll.is_err(), poll_bad, "poll {query:?}: {poll:?}");

    let mut headers = http::HeaderMap::new();
    let mut header_bad = false;
    if let Ok(v) = http::HeaderValue::from_str(last_event_id) {
        // A value that is not visible ASCII is refused like a bad number.
        header_bad = v.to_str().map_or(true, |s| bad_seq(s.trim()));
        headers.insert("last-event-id", v);
    }
    let sse_bad = header_bad || pairs.iter().any(|(k, v)| k == "lastSeq" && bad_seq(v));
    let sse = SseParams::parse(Some(query), &headers);
    assert_eq!(
        sse.is_err(),
        sse_bad,
        "sse {query:?} {last_event_id:?}: {sse:?}"
    );
});

/// Percent-encodes everything but unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
