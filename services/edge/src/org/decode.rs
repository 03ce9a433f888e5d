//! Turns NATS messages (live RePublished ones and ones read back from the
//! stream) into buffered events, or into rejections that are counted, logged
//! with their sequence and skipped.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

use async_nats::HeaderMap;
use herald_proto::partition::{self, Partitions};
use herald_proto::stored::StoredMessage;
use herald_proto::{DeliveredEvent, RejectReason};
use serde_json::value::RawValue;

/// An event held in an org buffer, serialised once for every client.
///
/// The payload lives only in [`json`](Self::json): a parsed payload (a
/// `serde_json::Value` tree) can take ten times its text, so `event` keeps
/// the routing fields and a `null` payload. MessagePack clients get the
/// event transcoded from the JSON text once, on first use, and shared.
#[derive(Debug)]
pub struct StoredEvent {
    /// The event's routing fields (`payload` is always `null` here).
    pub event: DeliveredEvent,
    /// The whole event as JSON, shared by every JSON client.
    pub json: Box<RawValue>,
    /// When JetStream stored it, ms since the Unix epoch (for latency metrics).
    pub stored_ms: i64,
    msgpack: OnceLock<Box<[u8]>>,
    /// The span that ingested it, when its publisher sent a trace context:
    /// deliveries are traced as its children.
    trace: OnceLock<opentelemetry::trace::SpanContext>,
}

impl StoredEvent {
    /// Its service and when JetStream stored it (ms): what delivery latency
    /// is measured by.
    pub fn timing(&self) -> (&str, i64) {
        (&self.event.service, self.stored_ms)
    }

    /// An event of org `acme` for unit tests: `seq`, `service`,
    /// `property`, `payload`; everything else fixed.
    #[cfg(test)]
    pub fn for_test(
        seq: u64,
        service: &str,
        property: Option<&str>,
        payload: serde_json::Value,
    ) -> Arc<Self> {
        Self::new(
            DeliveredEvent {
                seq,
                org_id: "acme".into(),
                service: service.into(),
                property_id: property.map(str::to_owned),
                event_id: seq.to_string(),
                event_type: "x".into(),
                timestamp: 0,
                entity_type: None,
                entity_id: None,
                payload,
            },
            0,
        )
    }

    /// Wraps an event, serialising it once and dropping its parsed payload.
    pub fn new(mut event: DeliveredEvent, stored_ms: i64) -> Arc<Self> {
        let text = serde_json::to_string(&event).unwrap_or_else(|_| "null".to_owned());
        let json = RawValue::from_string(text).unwrap_or_else(|_| RawValue::NULL.to_owned());
        event.payload = serde_json::Value::Null;
        Arc::new(Self {
            event,
            json,
            stored_ms,
            msgpack: OnceLock::new(),
            trace: OnceLock::new(),
        })
    }

    /// Records the span that ingested the event (once; later calls are ignored).
    pub fn set_trace(&self, ingest: opentelemetry::trace::SpanContext) {
        let _ = self.trace.set(ingest);
    }

    /// The span that ingested the event, if it was traced.
    pub fn trace(&self) -> Option<&opentelemetry::trace::SpanContext> {
        self.trace.get()
    }

    /// Stream sequence.
    pub fn seq(&self) -> u64 {
        self.event.seq
    }

    /// The event as MessagePack (a map with the JSON's field names),
    /// transcoded from the JSON text on first use.
    pub fn msgpack(&self) -> &[u8] {
        self.msgpack.get_or_init(|| {
            let mut out = Vec::with_capacity(self.json.get().len());
            let mut from = serde_json::Deserializer::from_str(self.json.get());
            let mut to = rmp_serde::Serializer::new(&mut out);
            if serde_transcode::transcode(&mut from, &mut to).is_err() {
                out.clear();
                // Unreachable for text serde_json wrote; nil keeps the frame valid.
                out.push(0xc0);
            }
            out.into_boxed_slice()
        })
    }

    /// Bytes it may hold, as counted against buffer limits: its JSON, and as
    /// much again for the MessagePack copy (never larger than the JSON).
    pub fn size(&self) -> usize {
        2 * self.json.get().len() + std::mem::size_of::<Self>()
    }
}

/// What a message turned out to be.
#[derive(Debug)]
pub enum Decoded {
    /// A valid event.
    Event(Arc<StoredEvent>),
    /// A stored message that can never be delivered.
    Rejected {
        /// Its sequence (consumed, so the cursor moves past it).
        seq: u64,
        /// Why; its metrics label.
        reason: RejectReason,
        /// Detail for the log.
        detail: String,
    },
}

impl Decoded {
    /// Stream sequence of the message.
    pub fn seq(&self) -> u64 {
        match self {
            Self::Event(e) => e.seq(),
            Self::Rejected { seq, .. } => *seq,
        }
    }
}

/// What the node needs from a RePublished message's headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveMeta {
    /// Stream sequence of this message.
    pub seq: u64,
    /// Sequence of the previous message on the same subject (0 if none).
    pub last_subject_seq: u64,
}

/// Reads the sequence headers of a RePublished message; `None` if the
/// message did not come from `stream` (so it cannot be trusted as an event).
///
/// RePublish appends its headers after the publisher's own, so only the last
/// value of each is the server's: a publisher may have sent any of them.
pub fn live_meta(headers: Option<&HeaderMap>, stream: &str) -> Option<LiveMeta> {
    let h = headers?;
    if h.get_last("Nats-Stream")?.as_str() != stream {
        return None;
    }
    // Sequence 0 never exists; refusing it keeps `seq - 1` safe everywhere.
    let seq = h
        .get_last("Nats-Sequence")?
        .as_str()
        .parse()
        .ok()
        .filter(|s: &u64| *s > 0)?;
    let last_subject_seq = h
        .get_last("Nats-Last-Sequence")
        .and_then(|v| v.as_str().parse().ok())
        .unwrap_or(0);
    Some(LiveMeta {
        seq,
        last_subject_seq,
    })
}

/// Runs `decode` (of the message with `headers`, sequence `seq`) inside an
/// ingest span when the message carries a W3C trace context, and records
/// that span on the decoded event so that its deliveries join the trace.
/// Live messages and events read from the stream to fill a gap are
/// ingested alike. The span is returned too: the caller applies the event
/// inside it, so that what applying logs names the trace.
pub fn ingest_traced(
    org: &str,
    seq: u64,
    headers: Option<&async_nats::HeaderMap>,
    decode: impl FnOnce() -> Decoded,
) -> (Decoded, Option<tracing::Span>) {
    let Some(span) = crate::ops::telemetry::ingest_span(org, seq, headers) else {
        return (decode(), None);
    };
    let decoded = span.in_scope(decode);
    if let (Decoded::Event(event), Some(ingest)) =
        (&decoded, crate::ops::telemetry::span_context(&span))
    {
        event.set_trace(ingest);
    }
    (decoded, Some(span))
}

/// Decodes a RePublished message whose [`LiveMeta`] is already known.
pub fn decode_live(
    msg: &async_nats::Message,
    meta: LiveMeta,
    org: &str,
    max_bytes: usize,
    partitions: Partitions,
) -> Decoded {
    // The server's values are the last ones (see `live_meta`).
    let headers = msg.headers.as_ref();
    let original = headers
        .and_then(|h| h.get_last("Nats-Subject"))
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default();
    let stored_ms = headers
        .and_then(|h| h.get_last("Nats-Time-Stamp"))
        .and_then(|v| parse_rfc3339_ms(v.as_str()))
        .unwrap_or_else(now_ms);
    let Some(subject) = own_subject(&original, org, partitions) else {
        return partition_rejected(meta.seq, &original);
    };
    decode(
        meta.seq,
        subject,
        headers,
        &msg.payload,
        stored_ms,
        org,
        max_bytes,
    )
}

/// Decodes a message read back from the stream.
pub fn decode_stored(
    msg: &async_nats::jetstream::message::StreamMessage,
    org: &str,
    max_bytes: usize,
    partitions: Partitions,
) -> Decoded {
    let stored_ms = (msg.time.unix_timestamp_nanos() / 1_000_000) as i64;
    let Some(subject) = own_subject(msg.subject.as_str(), org, partitions) else {
        return partition_rejected(msg.sequence, msg.subject.as_str());
    };
    decode(
        msg.sequence,
        subject,
        Some(&msg.headers),
        &msg.payload,
        stored_ms,
        org,
        max_bytes,
    )
}

/// The stored subject without its partition token, when that token is
/// right for `org` (see [`Partitions::check`]); `None` otherwise.
fn own_subject<'a>(subject: &'a str, org: &str, partitions: Partitions) -> Option<&'a str> {
    let (base, token) = partition::split(subject);
    partitions.check(org, token).ok().map(|()| base)
}

fn partition_rejected(seq: u64, subject: &str) -> Decoded {
    Decoded::Rejected {
        seq,
        reason: RejectReason::BadSubject,
        detail: format!("{subject}: partition token does not fit this deployment's partitions"),
    }
}

/// Decodes one message of `org` given its parts: the common path of
/// [`decode_live`] and [`decode_stored`] (public so it can be fuzzed without
/// NATS). The decoding itself is [`StoredMessage::decode_base`], shared with
/// `herald tail`.
pub fn decode(
    seq: u64,
    subject: &str,
    headers: Option<&HeaderMap>,
    payload: &[u8],
    stored_ms: i64,
    org: &str,
    max_bytes: usize,
) -> Decoded {
    let header = |name: &str| headers.and_then(|h| h.get(name)).map(|v| v.as_str());
    let message = StoredMessage {
        seq,
        subject,
        content_type: header("Content-Type"),
        msg_id: header("Nats-Msg-Id"),
        payload,
        stored_ms,
    };
    match message.decode_base(subject, org, max_bytes) {
        Ok(event) => Decoded::Event(StoredEvent::new(event, stored_ms)),
        Err(rejected) => Decoded::Rejected {
            seq,
            reason: rejected.reason,
            detail: rejected.detail,
        },
    }
}

/// Rejections logged per [`LOG_WINDOW`] at most; the rest are only counted.
const LOG_BURST: u64 = 20;
/// Window of the rejection log throttle, in ms.
const LOG_WINDOW: i64 = 10_000;
/// Longest detail of a logged rejection (it may echo publisher text).
const LOG_DETAIL: usize = 200;

static LOG_WINDOW_START: AtomicI64 = AtomicI64::new(0);
static LOG_IN_WINDOW: AtomicU64 = AtomicU64::new(0);

/// Logs a skipped message with its sequence and why (a [`RejectReason`], or
/// another word for a live message refused before decoding), at most
/// [`LOG_BURST`] lines per ten seconds per node, its detail cut to
/// [`LOG_DETAIL`] bytes.
pub fn log_rejected(org: &str, seq: u64, reason: impl AsRef<str>, detail: &str) {
    let reason = reason.as_ref();
    let now = now_ms();
    let start = LOG_WINDOW_START.load(Relaxed);
    if now - start >= LOG_WINDOW
        && LOG_WINDOW_START
            .compare_exchange(start, now, Relaxed, Relaxed)
            .is_ok()
    {
        let skipped = LOG_IN_WINDOW.swap(0, Relaxed).saturating_sub(LOG_BURST);
        if skipped > 0 {
            tracing::warn!(skipped, "more rejected messages were not logged");
        }
    }
    if LOG_IN_WINDOW.fetch_add(1, Relaxed) < LOG_BURST {
        let detail = truncate(detail, LOG_DETAIL);
        tracing::warn!(
            org,
            seq,
            reason,
            detail,
            "rejected stored event; skipping it"
        );
    }
}

/// `s` cut to at most `max` bytes at a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Parses the RFC 3339 UTC timestamps NATS writes (`2026-11-22T16:04:37.123456789Z`).
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    // Digits only (`parse` alone would take a sign), each field in range.
    let num = |r: std::ops::Range<usize>, max: i64| {
        let f = s.get(r)?;
        let n = f.parse::<i64>().ok()?;
        (f.bytes().all(|c| c.is_ascii_digit()) && n <= max).then_some(n)
    };
    let (y, mo, d) = (num(0..4, 9999)?, num(5..7, 12)?, num(8..10, 31)?);
    let (h, mi, sec) = (num(11..13, 23)?, num(14..16, 59)?, num(17..19, 60)?);
    if mo == 0 || d == 0 {
        return None;
    }
    let rest = &s[19..];
    let (frac, tz) = match rest.strip_prefix('.') {
        Some(r) => {
            let end = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
            (&r[..end], &r[end..])
        }
        None => ("", rest),
    };
    if tz != "Z" && tz != "+00:00" {
        return None;
    }
    let mut ms_frac = 0;
    for (i, c) in frac.bytes().take(3).enumerate() {
        ms_frac += i64::from(c - b'0') * [100, 10, 1][i];
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + h) * 60 + mi) * 60_000 + sec * 1000 + ms_frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_partition_token_must_be_the_orgs() {
        let four = Partitions::new(4).unwrap();
        let k = four.of("acme");
        let own = format!("herald.events.acme.finance.p1.{k}");
        let other = format!("herald.events.acme.finance.p1.{}", (k + 1) % 4);
        assert_eq!(
            own_subject(&own, "acme", four),
            Some("herald.events.acme.finance.p1")
        );
        assert_eq!(own_subject(&other, "acme", four), None);
        assert_eq!(
            own_subject("herald.events.acme.finance.p1", "acme", four),
            None
        );
        let one = Partitions::single();
        assert_eq!(
            own_subject("herald.events.acme.finance.p1", "acme", one),
            Some("herald.events.acme.finance.p1")
        );
        assert_eq!(own_subject(&own, "acme", one), None);
    }

    #[test]
    fn truncates_at_char_boundaries() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("héllo", 3), "hé");
    }

    #[test]
    fn parses_nats_timestamps() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2024-11-22T12:53:20.5Z"),
            Some(1_732_280_000_500)
        );
        assert_eq!(
            parse_rfc3339_ms("2024-11-22T12:53:20.123456789Z"),
            Some(1_732_280_000_123)
        );
        assert_eq!(
            parse_rfc3339_ms("2000-03-01T00:00:00Z"),
            Some(951_868_800_000)
        );
        assert_eq!(parse_rfc3339_ms("garbage"), None);
        // Found by fuzzing: out-of-range fields and signs were read as dates.
        for bad in [
            "1970-00-01T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-11-00T00:00:00Z",
            "2024-11-32T00:00:00Z",
            "2024-11-22T24:00:00Z",
            "2024-11-22T12:60:00Z",
            "2024-11-22T12:53:61Z",
            "2024-+1-22T12:53:20Z",
            "-999-11-22T12:53:20Z",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad}");
        }
        assert_eq!(parse_rfc3339_ms("2024-11-22T12:53:20+02:00"), None);
    }

    #[test]
    fn reads_live_headers_only_from_our_stream() {
        let mut h = HeaderMap::new();
        h.insert("Nats-Stream", "HERALD_EVENTS");
        h.insert("Nats-Sequence", "42");
        h.insert("Nats-Last-Sequence", "40");
        assert_eq!(
            live_meta(Some(&h), "HERALD_EVENTS"),
            Some(LiveMeta {
                seq: 42,
                last_subject_seq: 40
            })
        );
        assert_eq!(live_meta(Some(&h), "OTHER"), None);
        h.insert("Nats-Sequence", "0");
        assert_eq!(
            live_meta(Some(&h), "HERALD_EVENTS"),
            None,
            "sequence 0 never exists"
        );
        h.insert("Nats-Sequence", "18446744073709551616");
        assert_eq!(live_meta(Some(&h), "HERALD_EVENTS"), None, "over u64");
        assert_eq!(live_meta(None, "HERALD_EVENTS"), None);

        // A publisher's own headers come first; the server's are appended.
        let mut forged = HeaderMap::new();
        forged.insert("Nats-Stream", "HERALD_EVENTS");
        forged.insert("Nats-Sequence", "999999");
        forged.append("Nats-Stream", "HERALD_EVENTS");
        forged.append("Nats-Sequence", "42");
        forged.append("Nats-Last-Sequence", "40");
        assert_eq!(
            live_meta(Some(&forged), "HERALD_EVENTS").map(|m| m.seq),
            Some(42)
        );
    }

    #[test]
    fn decodes_and_rejects() {
        let ok = decode(
            5,
            "herald.events.acme.finance.p1",
            None,
            br#"{"eventType":"x"}"#,
            9,
            "acme",
            100,
        );
        let Decoded::Event(e) = ok else {
            panic!("rejected")
        };
        assert_eq!(
            (e.seq(), e.event.event_id.as_str(), e.stored_ms),
            (5, "5", 9)
        );
        assert!(e.json.get().contains(r#""seq":5"#));
        let other_org = decode(
            6,
            "herald.events.evil.finance.p1",
            None,
            br#"{"eventType":"x"}"#,
            9,
            "acme",
            100,
        );
        assert!(matches!(
            other_org,
            Decoded::Rejected {
                reason: RejectReason::BadSubject,
                seq: 6,
                ..
            }
        ));
        let big = decode(
            7,
            "herald.events.acme.finance.p1",
            None,
            &[b' '; 200],
            9,
            "acme",
            100,
        );
        assert!(matches!(
            big,
            Decoded::Rejected {
                reason: RejectReason::TooLarge,
                ..
            }
        ));
    }
}
