//! Headers of RePublished messages: `live_meta` on arbitrary header maps, and
//! `parse_rfc3339_ms` on arbitrary `Nats-Time-Stamp` values.
//!
//! Invariants: `live_meta` answers exactly when the last `Nats-Stream` names
//! our stream and the last `Nats-Sequence` is a u64, and its numbers are
//! those headers' (RePublish appends after the publisher's own headers);
//! a timestamp another RFC 3339 parser (humantime) accepts is read as the
//! same millisecond, and one we accept has in-range fields.
#![no_main]

use async_nats::header::{HeaderName, HeaderValue};
use async_nats::HeaderMap;
use herald_edge::org::decode::{live_meta, parse_rfc3339_ms};
use libfuzzer_sys::fuzz_target;

const STREAM: &str = "HERALD_EVENTS";

// Input: one `Name: value` header a line; every name and value is also
// tried as a timestamp.
fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines: Vec<(&str, &str)> = text
        .split('\n')
        .map(|l| l.split_once(": ").unwrap_or((l, "")))
        .collect();
    let mut map = HeaderMap::new();
    for (name, value) in &lines {
        // Only what could arrive on the wire: valid names, no CR/LF in values.
        if let (Ok(n), Ok(v)) = (name.parse::<HeaderName>(), value.parse::<HeaderValue>()) {
            map.append(n, v);
        }
    }
    // RePublish appends the server's headers after the publisher's: the
    // last value of each is the one to trust.
    let last = |name: &str| map.get_last(name).map(|v| v.as_str().to_owned());
    let expected = match (last("Nats-Stream"), last("Nats-Sequence")) {
        (Some(s), Some(seq)) if s == STREAM => seq.parse::<u64>().ok().filter(|s| *s > 0),
        _ => None,
    };
    let meta = live_meta(Some(&map), STREAM);
    assert_eq!(meta.map(|m| m.seq), expected, "{map:?}");
    if let Some(m) = meta {
        let previous = last("Nats-Last-Sequence").and_then(|v| v.parse::<u64>().ok());
        assert_eq!(m.last_subject_seq, previous.unwrap_or(0));
    }
    for (name, value) in &lines {
        check_timestamp(name);
        check_timestamp(value);
    }
});

fn check_timestamp(s: &str) {
    let ours = parse_rfc3339_ms(s);
    // humantime is laxer than RFC 3339 in the fraction (it took
    // `20.1234+6789Z`), so compare only where the fraction is digits.
    let strict = s
        .get(19..)
        .and_then(|t| t.strip_suffix('Z'))
        .is_some_and(|t| {
            t.is_empty()
                || t.strip_prefix('.')
                    .is_some_and(|f| f.bytes().all(|c| c.is_ascii_digit()))
        });
    // A leap second (`:60`) has no one right answer: humantime reads it as
    // :59, we as the next minute's :00. NATS never writes one.
    let leap = s.get(17..19) == Some("60");
    if strict && !leap {
        if let Ok(t) = humantime::parse_rfc3339(s) {
            // humantime answers a SystemTime; compare where it is after 1970.
            if let Ok(d) = t.duration_since(std::time::UNIX_EPOCH) {
                assert_eq!(ours, Some(d.as_millis() as i64), "{s:?}");
            }
        }
    }
    if ours.is_some() {
        let field = |r: std::ops::Range<usize>| s[r].parse::<i64>().expect("accepted field");
        assert!((1..=12).contains(&field(5..7)), "month out of range: {s:?}");
        assert!((1..=31).contains(&field(8..10)), "day out of range: {s:?}");
        assert!(
            (0..=23).contains(&field(11..13)),
            "hour out of range: {s:?}"
        );
        assert!(
            (0..=59).contains(&field(14..16)),
            "minute out of range: {s:?}"
        );
        assert!(
            (0..=60).contains(&field(17..19)),
            "second out of range: {s:?}"
        );
    }
}
