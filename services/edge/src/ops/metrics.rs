//! Counters and latency histograms of one node, rendered as the JSON of
//! `GET /v2/realtime/metrics` and the Prometheus text of `GET /metrics`.
//! Both renderers walk one descriptor table, [`METRICS`], so a metric is
//! in both documents or in neither.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use herald_proto::room::RoomErrorCode;
use herald_proto::{RejectReason, ResetReason};
use serde_json::{json, Map, Value};

use crate::ops::process::ProcessStats;

/// Services tracked separately in latency histograms; later ones share `_other`.
const MAX_TRACKED_SERVICES: usize = 128;
/// Histogram bucket upper bounds in microseconds (roughly ×1.5 apart), then +Inf.
const BUCKETS_US: [u64; 36] = [
    100, 150, 200, 300, 400, 500, 750, 1_000, 1_500, 2_000, 3_000, 4_000, 5_000, 7_500, 10_000,
    15_000, 20_000, 30_000, 40_000, 50_000, 75_000, 100_000, 150_000, 200_000, 300_000, 500_000,
    750_000, 1_000_000, 1_500_000, 2_000_000, 3_000_000, 5_000_000, 10_000_000, 20_000_000,
    30_000_000, 60_000_000,
];

/// A fixed-bucket latency histogram.
#[derive(Clone)]
pub struct Histogram {
    counts: [u64; BUCKETS_US.len() + 1],
    total: u64,
    sum_us: u64,
    /// The largest sample: the answer for quantiles past the last bound.
    max_us: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: [0; BUCKETS_US.len() + 1],
            total: 0,
            sum_us: 0,
            max_us: 0,
        }
    }
}

impl Histogram {
    fn record(&mut self, us: u64) {
        let i = BUCKETS_US.partition_point(|&b| b < us);
        self.counts[i] += 1;
        self.total += 1;
        self.sum_us = self.sum_us.saturating_add(us);
        self.max_us = self.max_us.max(us);
    }

    /// Upper bound of the bucket holding quantile `q`, in milliseconds
    /// (never above the largest sample); `None` without samples.
    fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((self.total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let bound = BUCKETS_US.get(i).copied().unwrap_or(self.max_us);
                return Some(bound.min(self.max_us) as f64 / 1000.0);
            }
        }
        None
    }

    /// Count and quantiles in milliseconds, as the JSON document shows them.
    fn summary(&self) -> Value {
        json!({
            "count": self.total,
            "p50": self.quantile_ms(0.5),
            "p95": self.quantile_ms(0.95),
            "p99": self.quantile_ms(0.99),
        })
    }
}

/// What came of a read that started from a client's cursor (a resume after
/// a reconnect, or the next poll of a chain).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// The client continued from its cursor.
    Continued,
    /// The client was told to refetch its state (history gone, another
    /// stream incarnation).
    Reset,
}

/// How a delivered event reached its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The client had caught up and was waiting: the time from storage to
    /// delivery is the latency Herald adds.
    Live,
    /// The client asked for events stored before it came (a resume, a
    /// first read, a poll that was behind): their age says how far behind
    /// the client was, not how fast Herald is.
    CatchUp,
}

/// What a browser SDK reports about itself (`POST /v2/telemetry/client`,
/// protocol §8). A fixed list, so the label set of
/// `herald_client_events_total` stays bounded whatever clients send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientEvent {
    /// A held long-poll was answered empty much faster than its timeout.
    FastEmpty,
    /// A tab became its profile's leader with no leader before it.
    LeaderAcquired,
    /// A tab became leader after another leader had been seen.
    LeaderTakeover,
    /// The SDK's connection was re-established after a loss.
    Reconnect,
    /// Time from an event's creation to its receipt by the SDK, in ms.
    DeliveryLatencyMs,
    /// The edge refused a subscription (403, or 400 at the handshake).
    SubscribeError,
}

impl ClientEvent {
    /// Every event, in the order of their counters.
    pub const ALL: [ClientEvent; 6] = [
        ClientEvent::FastEmpty,
        ClientEvent::LeaderAcquired,
        ClientEvent::LeaderTakeover,
        ClientEvent::Reconnect,
        ClientEvent::DeliveryLatencyMs,
        ClientEvent::SubscribeError,
    ];

    /// The name clients send, and the `name` label.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientEvent::FastEmpty => "fast_empty",
            ClientEvent::LeaderAcquired => "leader_acquired",
            ClientEvent::LeaderTakeover => "leader_takeover",
            ClientEvent::Reconnect => "reconnect",
            ClientEvent::DeliveryLatencyMs => "delivery_latency_ms",
            ClientEvent::SubscribeError => "subscribe_error",
        }
    }

    /// The event named `name`, if it is one.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == name)
    }
}

/// The transport a client event happened on, as a label: anything a
/// client sends that is not one of Herald's transports counts as `other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientTransport {
    /// `websocket`.
    WebSocket,
    /// `sse`.
    Sse,
    /// `longpoll`.
    LongPoll,
    /// Absent or unknown.
    Other,
}

impl ClientTransport {
    /// Every label value, in the order of their counters.
    pub const ALL: [ClientTransport; 4] = [
        ClientTransport::WebSocket,
        ClientTransport::Sse,
        ClientTransport::LongPoll,
        ClientTransport::Other,
    ];

    /// The `transport` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientTransport::WebSocket => "websocket",
            ClientTransport::Sse => "sse",
            ClientTransport::LongPoll => "longpoll",
            ClientTransport::Other => "other",
        }
    }

    /// The label for what a client sent; never fails, so a label set
    /// cannot grow with client input.
    pub fn from_attr(value: Option<&str>) -> Self {
        Self::ALL
            .into_iter()
            .find(|t| Some(t.as_str()) == value)
            .unwrap_or(ClientTransport::Other)
    }
}

/// One validated client report, ready to count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClientSample {
    /// What happened.
    pub event: ClientEvent,
    /// Its value (ms for `delivery_latency_ms`), finite and not negative.
    pub value: f64,
    /// Where it happened (used for `reconnect`).
    pub transport: ClientTransport,
}

/// Gauges the metrics read from the rest of the node when rendered.
#[derive(Debug, Default, Clone)]
pub struct Gauges {
    /// Open WebSocket streams.
    pub websocket: u64,
    /// Open SSE streams.
    pub sse: u64,
    /// Polls in progress.
    pub longpoll: u64,
    /// Org states held by this node.
    pub orgs_total: u64,
    /// Orgs with at least one client right now.
    pub orgs_active: u64,
    /// Orgs whose live feed is not trusted yet.
    pub orgs_untrusted: u64,
    /// Events held in all org buffers.
    pub buffered_events: u64,
    /// Held polls.
    pub waiters: u64,
    /// Quarantined stream connections.
    pub quarantined: u64,
    /// Bytes held in all org buffers.
    pub buffered_bytes: u64,
    /// Requests this node has sent to JetStream to read stored events.
    pub stream_reads: u64,
    /// Successful samples of the stream's head.
    pub head_samples: u64,
    /// Times a stream may have changed leader (advisories, samples).
    pub leader_changes: u64,
    /// The NATS connection is up (1) or not (0).
    pub nats_connected: u64,
    /// The NATS client's counters.
    pub nats: NatsCounters,
    /// The process's own figures (`None` where `/proc` cannot be read).
    pub process: Option<ProcessStats>,
    /// Each partition's stream as last sampled, by partition.
    pub partitions: Vec<PartitionGauges>,
    /// Orgs with rooms running on this node.
    pub room_orgs: u64,
    /// Rooms with a member on this node.
    pub rooms: u64,
    /// Room memberships of connections on this node.
    pub room_members: u64,
}

/// One partition's stream as this node last sampled it.
#[derive(Debug, Default, Clone, Copy)]
pub struct PartitionGauges {
    /// The newest sequence stored (`None` before the first sample).
    pub last_seq: Option<u64>,
    /// Time since the last good sample (`None` before the first).
    pub sample_age: Option<std::time::Duration>,
}

/// What the NATS client counted since the node started.
#[derive(Debug, Default, Clone, Copy)]
pub struct NatsCounters {
    /// Connections established (the first one included).
    pub connects: u64,
    /// Messages received.
    pub messages_in: u64,
    /// Payload bytes received.
    pub bytes_in: u64,
    /// Messages sent.
    pub messages_out: u64,
    /// Payload bytes sent.
    pub bytes_out: u64,
}

/// The node's counters.
#[derive(Default)]
pub struct Metrics {
    /// Events accepted from NATS into org buffers.
    pub ingested: AtomicU64,
    /// Events written to clients (one per client).
    pub delivered: AtomicU64,
    /// Events dropped for a client (kill switch, quarantine).
    pub dropped: AtomicU64,
    rejected: [AtomicU64; RejectReason::ALL.len()],
    /// Times a gap in the live feed was found and filled from the stream.
    pub gaps_filled: AtomicU64,
    /// Loss marks in live feeds (overflow, reconnect, slow consumer), each repaired from the stream.
    pub live_losses: AtomicU64,
    /// Live messages refused for a sequence beyond the stream head.
    pub forged: AtomicU64,
    /// Events recovered from the stream by gap filling.
    pub gap_events: AtomicU64,
    /// Reads of history from the stream for clients behind the buffer.
    pub history_reads: AtomicU64,
    /// Polls refused by the waiter cap.
    pub waiter_cap_hits: AtomicU64,
    /// Resets sent to clients, by [`ResetReason`] (history gone, epoch changed).
    resets: [AtomicU64; 2],
    /// Stream connections closed as slow consumers (4008).
    pub slow_closes: AtomicU64,
    latency: Mutex<BTreeMap<String, Histogram>>,
    catch_up: Mutex<Histogram>,
    history_read: Mutex<Histogram>,
    connect_ack: Mutex<Histogram>,
    /// Request guards and node limits.
    pub guards: GuardCounters,
    /// HTTP answers by status class (1xx to 5xx).
    responses: [AtomicU64; 5],
    /// Reads from a client's cursor, by [`Resume`] outcome.
    resumes: [AtomicU64; 2],
    /// Client SDK reports, by [`ClientEvent`].
    client_events: [AtomicU64; ClientEvent::ALL.len()],
    /// Client SDK reconnects, by [`ClientTransport`].
    client_reconnects: [AtomicU64; ClientTransport::ALL.len()],
    /// Delivery latency as client SDKs measured it.
    client_latency: Mutex<Histogram>,
    /// Rooms joined (each `joined` sent).
    pub room_joins: AtomicU64,
    /// Room messages stored (over WebSocket or HTTP).
    pub room_messages_stored: AtomicU64,
    /// Room messages not stored again: a repeated `clientMsgId`.
    pub room_messages_duplicate: AtomicU64,
    /// Room messages sent to member connections (one per connection).
    pub room_messages_delivered: AtomicU64,
    /// Typing notices published.
    pub room_typing_sent: AtomicU64,
    /// Typing notices dropped by the 2 s throttle.
    pub room_typing_dropped: AtomicU64,
    /// Typing notices sent to member connections.
    pub room_typing_delivered: AtomicU64,
    /// Read receipts that moved forward.
    pub room_receipts: AtomicU64,
    /// Changes of a user's merged presence seen by this node.
    pub room_presence_changes: AtomicU64,
    /// Refused room requests, by [`RoomErrorCode`].
    room_errors: [AtomicU64; RoomErrorCode::ALL.len()],
    /// How long a join's history read took.
    room_history: Mutex<Histogram>,
    /// Upload bytes stored (PATCH bodies, and POST bodies of creation-with-upload).
    pub upload_bytes: AtomicU64,
    /// Uploads created.
    pub uploads_started: AtomicU64,
    /// Uploads finished (their object written).
    pub uploads_completed: AtomicU64,
    /// Upload requests that failed, by [`UploadFailure`].
    upload_failures: [AtomicU64; UploadFailure::ALL.len()],
    /// Unfinished uploads removed by the expiry sweep.
    pub uploads_expired: AtomicU64,
    /// Uploads removed by DELETE.
    pub uploads_deleted: AtomicU64,
}

/// Why an upload request failed (`herald_uploads_failed_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadFailure {
    /// `Upload-Checksum` did not match (460).
    Checksum,
    /// A type not allowed, or content not of the declared type (415).
    Type,
    /// A wrong offset or a lost race (409).
    Conflict,
    /// Over the size cap (413).
    TooLarge,
    /// The body stopped: client gone or idle timeout.
    Interrupted,
    /// NATS did not store or read.
    Storage,
}

impl UploadFailure {
    /// Every reason, in label order.
    pub const ALL: [UploadFailure; 6] = [
        Self::Checksum,
        Self::Type,
        Self::Conflict,
        Self::TooLarge,
        Self::Interrupted,
        Self::Storage,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Checksum => "checksum",
            Self::Type => "type",
            Self::Conflict => "conflict",
            Self::TooLarge => "too_large",
            Self::Interrupted => "interrupted",
            Self::Storage => "storage",
        }
    }
}

/// What the request guards and node limits did.
#[derive(Default)]
pub struct GuardCounters {
    /// HTTP connections being served now (a gauge).
    pub http_connections: AtomicU64,
    /// Connections closed at accept because `HERALD_MAX_HTTP_CONNECTIONS` was reached.
    pub http_refused: AtomicU64,
    /// Request bodies cut off by `HERALD_BODY_TIMEOUT`.
    pub body_timeouts: AtomicU64,
    /// Requests refused by a per-user rate limit.
    pub rate_limited: AtomicU64,
    /// Malformed kill-switch values ignored (the last good one kept).
    pub switch_errors: AtomicU64,
}

impl Metrics {
    /// Counts a rejected event under its reason.
    pub fn reject(&self, reason: RejectReason) {
        self.rejected[reason.index()].fetch_add(1, Relaxed);
    }

    /// Counts one HTTP answer with `status` (100 to 599; others are ignored).
    pub fn count_response(&self, status: u16) {
        if let Some(class) = (status / 100)
            .checked_sub(1)
            .and_then(|i| self.responses.get(i as usize))
        {
            class.fetch_add(1, Relaxed);
        }
    }

    /// Counts one reset sent to a client.
    pub fn count_reset(&self, reason: ResetReason) {
        self.resets[reason as usize].fetch_add(1, Relaxed);
    }

    /// Counts one read from a client's cursor.
    pub fn count_resume(&self, outcome: Resume) {
        self.resumes[outcome as usize].fetch_add(1, Relaxed);
    }

    /// Counts a batch of client reports, validated beforehand so that a
    /// refused batch counts nothing.
    pub fn record_client(&self, samples: &[ClientSample]) {
        let mut latency = Vec::new();
        for s in samples {
            self.client_events[s.event as usize].fetch_add(1, Relaxed);
            match s.event {
                ClientEvent::Reconnect => {
                    self.client_reconnects[s.transport as usize].fetch_add(1, Relaxed);
                }
                // Saturating cast: a huge value lands in the +Inf bucket.
                ClientEvent::DeliveryLatencyMs => latency.push((s.value * 1000.0) as u64),
                _ => {}
            }
        }
        if !latency.is_empty() {
            let mut h = self
                .client_latency
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            for us in latency {
                h.record(us);
            }
        }
    }

    /// All rejected events.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// Records `count` deliveries of `service` events stored at `stored_ms`.
    pub fn record_delivery(
        &self,
        service: &str,
        stored_ms: i64,
        now_ms: i64,
        count: u64,
        how: Delivery,
    ) {
        self.delivered.fetch_add(count, Relaxed);
        let us = (now_ms.saturating_sub(stored_ms)).max(0) as u64 * 1000;
        let samples = count.min(16);
        if how == Delivery::CatchUp {
            let mut h = self.catch_up.lock().unwrap_or_else(|p| p.into_inner());
            for _ in 0..samples {
                h.record(us);
            }
            return;
        }
        let mut map = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        let key = if map.contains_key(service) || map.len() < MAX_TRACKED_SERVICES {
            service
        } else {
            "_other"
        };
        let h = map.entry(key.to_owned()).or_default();
        for _ in 0..samples {
            h.record(us);
        }
    }

    /// Counts one refused room request.
    pub fn count_room_error(&self, code: RoomErrorCode) {
        if let Some(i) = RoomErrorCode::ALL.iter().position(|c| *c == code) {
            self.room_errors[i].fetch_add(1, Relaxed);
        }
    }

    /// Counts one failed upload request.
    pub fn count_upload_failure(&self, why: UploadFailure) {
        if let Some(i) = UploadFailure::ALL.iter().position(|c| *c == why) {
            self.upload_failures[i].fetch_add(1, Relaxed);
        }
    }

    /// Records how long one read of a room's history took.
    pub fn record_room_history(&self, took: std::time::Duration) {
        record(&self.room_history, took);
    }

    /// Records how long one read of history from the stream took.
    pub fn record_history_read(&self, took: std::time::Duration) {
        record(&self.history_read, took);
    }

    /// Records how long a stream connection took from its request to its
    /// ack (WebSocket upgrade to `ack`, or SSE request to its `ack` event).
    pub fn record_connect_ack(&self, took: std::time::Duration) {
        record(&self.connect_ack, took);
    }

    /// Records the delivery to one client of events given as (service,
    /// stored at in ms), one histogram update per run of same-service events
    /// (timed by the run's first).
    pub fn record_deliveries<'a>(
        &self,
        events: impl IntoIterator<Item = (&'a str, i64)>,
        now_ms: i64,
        how: Delivery,
    ) {
        let mut run: Option<(&str, i64, u64)> = None;
        for (service, stored_ms) in events {
            match &mut run {
                Some((s, _, n)) if *s == service => *n += 1,
                _ => {
                    if let Some((s, at, n)) = run.take() {
                        self.record_delivery(s, at, now_ms, n, how);
                    }
                    run = Some((service, stored_ms, 1));
                }
            }
        }
        if let Some((s, at, n)) = run {
            self.record_delivery(s, at, now_ms, n, how);
        }
    }

    /// Rejected events by reason, in [`RejectReason::ALL`] order.
    fn rejected_by_reason(&self) -> Vec<(&'static str, u64)> {
        RejectReason::ALL
            .iter()
            .map(|r| (r.as_str(), self.rejected[r.index()].load(Relaxed)))
            .collect()
    }

    /// The JSON document of `/v2/realtime/metrics`: `nodeId`, then every
    /// entry of [`METRICS`] at its JSON path.
    pub fn to_json(&self, node_id: &str, g: &Gauges) -> Value {
        let mut doc = Map::new();
        doc.insert("nodeId".into(), json!(node_id));
        for metric in &METRICS {
            let value = match metric.read {
                Read::One(read) => json!(read(self, g)),
                Read::Process(read) => match g.process {
                    Some(p) => json!(read(&p)),
                    None => continue,
                },
                Read::Partitions(read) => Value::Object(
                    g.partitions
                        .iter()
                        .enumerate()
                        .filter_map(|(k, p)| Some((k.to_string(), json!(read(p)?))))
                        .collect(),
                ),
                Read::Family { samples, total, .. } => {
                    let samples = samples(self, g);
                    if let Some(path) = total {
                        let sum: u64 = samples.iter().map(|(_, v)| v).sum();
                        insert(&mut doc, path, json!(sum));
                    }
                    Value::Object(
                        samples
                            .into_iter()
                            .map(|(label, v)| (label.to_owned(), json!(v)))
                            .collect(),
                    )
                }
                Read::Latency => Value::Object(
                    self.latency
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .iter()
                        .map(|(svc, h)| (svc.clone(), h.summary()))
                        .collect(),
                ),
                Read::Histogram(which) => which(self)
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .summary(),
            };
            insert(&mut doc, metric.json, value);
        }
        Value::Object(doc)
    }

    /// Every counter and gauge of [`METRICS`] as (metric, labels, value)
    /// samples, as Prometheus shows them without the `node` label: what the
    /// OTLP export ([`crate::ops::metrics_export`]) observes. Histograms
    /// are left out (they are scraped from `/metrics`).
    pub fn samples(&self, g: &Gauges) -> Vec<Sample> {
        let mut out = Vec::new();
        for metric in &METRICS {
            let mut push = |labels: Vec<(&'static str, String)>, value: f64| {
                out.push(Sample {
                    metric,
                    labels,
                    value,
                });
            };
            match metric.read {
                Read::One(read) => push(Vec::new(), read(self, g) as f64),
                Read::Process(read) => {
                    if let Some(p) = g.process {
                        push(Vec::new(), read(&p));
                    }
                }
                Read::Partitions(read) => {
                    for (k, p) in g.partitions.iter().enumerate() {
                        if let Some(v) = read(p) {
                            push(vec![("partition", k.to_string())], v);
                        }
                    }
                }
                Read::Family { label, samples, .. } => {
                    for (value, v) in samples(self, g) {
                        push(vec![(label, value.to_owned())], v as f64);
                    }
                }
                Read::Latency | Read::Histogram(_) => {}
            }
        }
        out
    }

    /// The Prometheus text exposition of `/metrics`: every entry of
    /// [`METRICS`] with its help and type, labelled with the node.
    pub fn to_prometheus(&self, node_id: &str, g: &Gauges) -> String {
        let mut out = String::with_capacity(4096);
        let node = escape(node_id);
        for metric in &METRICS {
            let name = metric.prom;
            if matches!(metric.read, Read::Process(_)) && g.process.is_none() {
                continue;
            }
            let _ = writeln!(
                out,
                "# HELP {name} {}\n# TYPE {name} {}",
                metric.help,
                metric.kind.as_str()
            );
            match metric.read {
                Read::One(read) => {
                    let _ = writeln!(out, "{name}{{node=\"{node}\"}} {}", read(self, g));
                }
                Read::Process(read) => {
                    if let Some(p) = g.process {
                        let _ = writeln!(out, "{name}{{node=\"{node}\"}} {}", read(&p));
                    }
                }
                Read::Partitions(read) => {
                    for (k, p) in g.partitions.iter().enumerate() {
                        if let Some(v) = read(p) {
                            let _ =
                                writeln!(out, "{name}{{node=\"{node}\",partition=\"{k}\"}} {v}");
                        }
                    }
                }
                Read::Family { label, samples, .. } => {
                    for (value, v) in samples(self, g) {
                        let _ = writeln!(out, "{name}{{node=\"{node}\",{label}=\"{value}\"}} {v}");
                    }
                }
                Read::Latency => {
                    let map = self.latency.lock().unwrap_or_else(|p| p.into_inner());
                    for (svc, h) in map.iter() {
                        let labels = format!("node=\"{node}\",service=\"{}\"", escape(svc));
                        histogram(&mut out, name, &labels, h);
                    }
                }
                Read::Histogram(which) => {
                    let h = which(self).lock().unwrap_or_else(|p| p.into_inner());
                    histogram(&mut out, name, &format!("node=\"{node}\""), &h);
                }
            }
        }
        out
    }
}

fn record(h: &Mutex<Histogram>, took: std::time::Duration) {
    let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
    h.lock().unwrap_or_else(|p| p.into_inner()).record(us);
}

/// The bucket, sum and count samples of histogram `name` with `labels`.
fn histogram(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    let mut cumulative = 0;
    for (i, c) in h.counts.iter().enumerate() {
        cumulative += c;
        let le = BUCKETS_US
            .get(i)
            .map_or("+Inf".to_owned(), |us| format!("{}", *us as f64 / 1e6));
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
    }
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum_us as f64 / 1e6);
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.total);
}

/// The metrics label of a reset reason (its name in the protocol).
fn reset_label(reason: ResetReason) -> &'static str {
    match reason {
        ResetReason::HistoryGone => "history_gone",
        ResetReason::EpochChanged => "epoch_changed",
    }
}

/// One value of a counter or gauge, for the OTLP export.
#[derive(Clone)]
pub struct Sample {
    /// The metric it belongs to.
    pub metric: &'static Metric,
    /// Its labels besides `node`.
    pub labels: Vec<(&'static str, String)>,
    /// Its value.
    pub value: f64,
}

/// Prometheus metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Latency buckets with sum and count.
    Histogram,
}

impl Kind {
    /// The `# TYPE` word.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// How a metric's value is read when rendered.
#[derive(Clone, Copy)]
pub enum Read {
    /// One value.
    One(fn(&Metrics, &Gauges) -> u64),
    /// One figure of the process; the metric is left out where the
    /// process cannot be read.
    Process(fn(&ProcessStats) -> f64),
    /// One value per partition (label `partition`; a JSON object keyed by
    /// the partition number), left out for a partition not sampled yet.
    Partitions(fn(&PartitionGauges) -> Option<f64>),
    /// One value per value of a label. In JSON an object keyed by the
    /// label values, and, with `total`, their sum at that path too.
    Family {
        /// The Prometheus label name.
        label: &'static str,
        /// (label value, value) pairs.
        samples: fn(&Metrics, &Gauges) -> Vec<(&'static str, u64)>,
        /// JSON path of the sum, if the document carries one.
        total: Option<&'static [&'static str]>,
    },
    /// The live delivery latency histograms, by service: quantiles in ms
    /// in JSON, buckets in seconds in Prometheus.
    Latency,
    /// One histogram without labels, shown as [`Read::Latency`] shows
    /// each of its.
    Histogram(fn(&Metrics) -> &Mutex<Histogram>),
}

/// One metric: everything both renderers need to show it.
pub struct Metric {
    /// Prometheus name.
    pub prom: &'static str,
    /// Path of its value in the JSON document.
    pub json: &'static [&'static str],
    /// Prometheus type.
    pub kind: Kind,
    /// Prometheus help text.
    pub help: &'static str,
    /// How to read its value.
    pub read: Read,
}

/// Every metric of a node, in Prometheus order: the one list both
/// renderers walk.
pub static METRICS: [Metric; 68] = [
    Metric {
        prom: "herald_connections",
        json: &["connections"],
        kind: Kind::Gauge,
        help: "Open client connections by transport.",
        read: Read::Family {
            label: "transport",
            samples: |_, g| {
                vec![
                    ("websocket", g.websocket),
                    ("sse", g.sse),
                    ("longpoll", g.longpoll),
                ]
            },
            total: None,
        },
    },
    Metric {
        prom: "herald_orgs",
        json: &["orgs"],
        kind: Kind::Gauge,
        help: "Org states held by this node.",
        read: Read::Family {
            label: "state",
            samples: |_, g| {
                vec![
                    ("total", g.orgs_total),
                    ("active", g.orgs_active),
                    ("untrusted", g.orgs_untrusted),
                ]
            },
            total: None,
        },
    },
    Metric {
        prom: "herald_buffered_events",
        json: &["buffers", "total_size"],
        kind: Kind::Gauge,
        help: "Events held in org buffers.",
        read: Read::One(|_, g| g.buffered_events),
    },
    Metric {
        prom: "herald_waiters",
        json: &["waiters"],
        kind: Kind::Gauge,
        help: "Held long-polls.",
        read: Read::One(|_, g| g.waiters),
    },
    Metric {
        prom: "herald_quarantined",
        json: &["quarantined"],
        kind: Kind::Gauge,
        help: "Quarantined stream connections.",
        read: Read::One(|_, g| g.quarantined),
    },
    Metric {
        prom: "herald_events_ingested_total",
        json: &["events", "ingested"],
        kind: Kind::Counter,
        help: "Events accepted from NATS.",
        read: Read::One(|m, _| m.ingested.load(Relaxed)),
    },
    Metric {
        prom: "herald_events_delivered_total",
        json: &["events", "delivered"],
        kind: Kind::Counter,
        help: "Event deliveries to clients.",
        read: Read::One(|m, _| m.delivered.load(Relaxed)),
    },
    Metric {
        prom: "herald_events_dropped_total",
        json: &["events", "dropped"],
        kind: Kind::Counter,
        help: "Event deliveries dropped.",
        read: Read::One(|m, _| m.dropped.load(Relaxed)),
    },
    Metric {
        prom: "herald_events_rejected_total",
        json: &["events", "rejectedByReason"],
        kind: Kind::Counter,
        help: "Stored events refused as invalid.",
        read: Read::Family {
            label: "reason",
            samples: |m, _| m.rejected_by_reason(),
            total: Some(&["events", "rejected"]),
        },
    },
    Metric {
        prom: "herald_gaps_filled_total",
        json: &["events", "gapsFilled"],
        kind: Kind::Counter,
        help: "Gaps in the live feed filled from the stream.",
        read: Read::One(|m, _| m.gaps_filled.load(Relaxed)),
    },
    Metric {
        prom: "herald_gap_events_total",
        json: &["events", "gapEvents"],
        kind: Kind::Counter,
        help: "Events recovered from the stream by gap filling.",
        read: Read::One(|m, _| m.gap_events.load(Relaxed)),
    },
    Metric {
        prom: "herald_live_losses_total",
        json: &["events", "liveLosses"],
        kind: Kind::Counter,
        help: "Loss marks in live feeds (overflow, reconnect, slow consumer), each repaired from the stream.",
        read: Read::One(|m, _| m.live_losses.load(Relaxed)),
    },
    Metric {
        prom: "herald_live_forged_total",
        json: &["events", "forged"],
        kind: Kind::Counter,
        help: "Live messages refused for a sequence beyond the stream head.",
        read: Read::One(|m, _| m.forged.load(Relaxed)),
    },
    Metric {
        prom: "herald_buffered_bytes",
        json: &["buffers", "bytes"],
        kind: Kind::Gauge,
        help: "Bytes held in all org buffers.",
        read: Read::One(|_, g| g.buffered_bytes),
    },
    Metric {
        prom: "herald_stream_read_requests_total",
        json: &["stream", "readRequests"],
        kind: Kind::Counter,
        help: "Requests sent to JetStream to read stored events (message gets and batch fetches).",
        read: Read::One(|_, g| g.stream_reads),
    },
    Metric {
        prom: "herald_stream_head_samples_total",
        json: &["stream", "headSamples"],
        kind: Kind::Counter,
        help: "Successful samples of the event stream's head (first and last sequence, epoch).",
        read: Read::One(|_, g| g.head_samples),
    },
    Metric {
        prom: "herald_stream_leader_changes_total",
        json: &["stream", "leaderChanges"],
        kind: Kind::Counter,
        help: "Times an event stream may have changed leader (election advisory, a sample naming another leader, or samples starting to fail); each makes the stream's orgs re-read it before trusting live messages.",
        read: Read::One(|_, g| g.leader_changes),
    },
    Metric {
        prom: "herald_history_reads_total",
        json: &["events", "historyReads"],
        kind: Kind::Counter,
        help: "History reads from the stream.",
        read: Read::One(|m, _| m.history_reads.load(Relaxed)),
    },
    Metric {
        prom: "herald_slow_consumer_closes_total",
        json: &["slowConsumerCloses"],
        kind: Kind::Counter,
        help: "Stream connections closed as slow consumers.",
        read: Read::One(|m, _| m.slow_closes.load(Relaxed)),
    },
    Metric {
        prom: "herald_resets_total",
        json: &["events", "resetsByReason"],
        kind: Kind::Counter,
        help: "Resets sent to clients, by reason: history_gone (events after the cursor left the stream), epoch_changed (another stream incarnation).",
        read: Read::Family {
            label: "reason",
            samples: |m, _| {
                [ResetReason::HistoryGone, ResetReason::EpochChanged]
                    .into_iter()
                    .map(|r| (reset_label(r), m.resets[r as usize].load(Relaxed)))
                    .collect()
            },
            total: Some(&["events", "resets"]),
        },
    },
    Metric {
        prom: "herald_waiter_cap_hits_total",
        json: &["waiterCapHits"],
        kind: Kind::Counter,
        help: "Polls refused by the per-org waiter cap.",
        read: Read::One(|m, _| m.waiter_cap_hits.load(Relaxed)),
    },
    Metric {
        prom: "herald_http_connections",
        json: &["guards", "httpConnections"],
        kind: Kind::Gauge,
        help: "HTTP connections being served.",
        read: Read::One(|m, _| m.guards.http_connections.load(Relaxed)),
    },
    Metric {
        prom: "herald_http_refused_total",
        json: &["guards", "httpRefused"],
        kind: Kind::Counter,
        help: "HTTP connections closed at accept by the connection cap.",
        read: Read::One(|m, _| m.guards.http_refused.load(Relaxed)),
    },
    Metric {
        prom: "herald_body_timeouts_total",
        json: &["guards", "bodyTimeouts"],
        kind: Kind::Counter,
        help: "Request bodies cut off after stalling.",
        read: Read::One(|m, _| m.guards.body_timeouts.load(Relaxed)),
    },
    Metric {
        prom: "herald_rate_limited_total",
        json: &["guards", "rateLimited"],
        kind: Kind::Counter,
        help: "Requests refused by a per-user rate limit.",
        read: Read::One(|m, _| m.guards.rate_limited.load(Relaxed)),
    },
    Metric {
        prom: "herald_switch_errors_total",
        json: &["guards", "switchErrors"],
        kind: Kind::Counter,
        help: "Malformed kill-switch values ignored.",
        read: Read::One(|m, _| m.guards.switch_errors.load(Relaxed)),
    },
    Metric {
        prom: "herald_http_responses_total",
        json: &["http", "responses"],
        kind: Kind::Counter,
        help: "HTTP answers by status class (WebSocket upgrades are 1xx; a long-poll counts when it is answered).",
        read: Read::Family {
            label: "code",
            samples: |m, _| {
                ["1xx", "2xx", "3xx", "4xx", "5xx"]
                    .into_iter()
                    .zip(&m.responses)
                    .map(|(class, n)| (class, n.load(Relaxed)))
                    .collect()
            },
            total: None,
        },
    },
    Metric {
        prom: "herald_resumes_total",
        json: &["events", "resumes"],
        kind: Kind::Counter,
        help: "Reads that started from a client's cursor (a reconnect's resume, or the next poll of a chain), by outcome: continued from the cursor, or reset.",
        read: Read::Family {
            label: "outcome",
            samples: |m, _| {
                ["continued", "reset"]
                    .into_iter()
                    .zip(&m.resumes)
                    .map(|(outcome, n)| (outcome, n.load(Relaxed)))
                    .collect()
            },
            total: None,
        },
    },
    Metric {
        prom: "herald_stream_last_sequence",
        json: &["stream", "lastSeq"],
        kind: Kind::Gauge,
        help: "Newest sequence stored in each partition's event stream, as last sampled; its rate is the partition's publish rate.",
        read: Read::Partitions(|p| p.last_seq.map(|s| s as f64)),
    },
    Metric {
        prom: "herald_stream_sample_age_seconds",
        json: &["stream", "sampleAgeSeconds"],
        kind: Kind::Gauge,
        help: "Time since each partition's stream head was last sampled successfully (about the sample interval when healthy; growing while the partition has no leader or NATS is away).",
        read: Read::Partitions(|p| p.sample_age.map(|a| a.as_secs_f64())),
    },
    Metric {
        prom: "herald_build_info",
        json: &["build"],
        kind: Kind::Gauge,
        help: "Always 1; the version label names the running build.",
        read: Read::Family {
            label: "version",
            samples: |_, _| vec![(env!("CARGO_PKG_VERSION"), 1)],
            total: None,
        },
    },
    Metric {
        prom: "herald_nats_connected",
        json: &["nats", "connected"],
        kind: Kind::Gauge,
        help: "1 while the node's NATS connection is up, 0 while it reconnects.",
        read: Read::One(|_, g| g.nats_connected),
    },
    Metric {
        prom: "herald_nats_connects_total",
        json: &["nats", "connects"],
        kind: Kind::Counter,
        help: "NATS connections established, the first one included (reconnects are this minus one).",
        read: Read::One(|_, g| g.nats.connects),
    },
    Metric {
        prom: "herald_nats_received_messages_total",
        json: &["nats", "messagesIn"],
        kind: Kind::Counter,
        help: "Messages the node received from NATS (live events, stream reads, replies).",
        read: Read::One(|_, g| g.nats.messages_in),
    },
    Metric {
        prom: "herald_nats_received_bytes_total",
        json: &["nats", "bytesIn"],
        kind: Kind::Counter,
        help: "Payload bytes the node received from NATS.",
        read: Read::One(|_, g| g.nats.bytes_in),
    },
    Metric {
        prom: "herald_nats_sent_messages_total",
        json: &["nats", "messagesOut"],
        kind: Kind::Counter,
        help: "Messages the node sent to NATS (requests, publishes).",
        read: Read::One(|_, g| g.nats.messages_out),
    },
    Metric {
        prom: "herald_nats_sent_bytes_total",
        json: &["nats", "bytesOut"],
        kind: Kind::Counter,
        help: "Payload bytes the node sent to NATS.",
        read: Read::One(|_, g| g.nats.bytes_out),
    },
    Metric {
        prom: "process_cpu_seconds_total",
        json: &["process", "cpuSeconds"],
        kind: Kind::Counter,
        help: "User and system CPU time of the node process, in seconds.",
        read: Read::Process(|p| p.cpu_seconds),
    },
    Metric {
        prom: "process_resident_memory_bytes",
        json: &["process", "residentBytes"],
        kind: Kind::Gauge,
        help: "Resident memory of the node process, in bytes.",
        read: Read::Process(|p| p.resident_bytes as f64),
    },
    Metric {
        prom: "process_virtual_memory_bytes",
        json: &["process", "virtualBytes"],
        kind: Kind::Gauge,
        help: "Virtual memory of the node process, in bytes.",
        read: Read::Process(|p| p.virtual_bytes as f64),
    },
    Metric {
        prom: "process_open_fds",
        json: &["process", "openFds"],
        kind: Kind::Gauge,
        help: "Open file descriptors of the node process (each client connection holds one).",
        read: Read::Process(|p| p.open_fds as f64),
    },
    Metric {
        prom: "process_max_fds",
        json: &["process", "maxFds"],
        kind: Kind::Gauge,
        help: "The node process's limit on open file descriptors.",
        read: Read::Process(|p| p.max_fds as f64),
    },
    Metric {
        prom: "process_start_time_seconds",
        json: &["process", "startTimeSeconds"],
        kind: Kind::Gauge,
        help: "Start time of the node process, in seconds since the Unix epoch.",
        read: Read::Process(|p| p.start_time_seconds),
    },
    Metric {
        prom: "herald_delivery_latency_seconds",
        json: &["latencyMs"],
        kind: Kind::Histogram,
        help: "Time from JetStream storage to delivery, for clients that had caught up and were waiting (live delivery).",
        read: Read::Latency,
    },
    Metric {
        prom: "herald_catchup_age_seconds",
        json: &["catchUpAgeMs"],
        kind: Kind::Histogram,
        help: "Age (time since JetStream storage) of events delivered to clients that were behind: resumes, first reads, polls that found events waiting.",
        read: Read::Histogram(|m| &m.catch_up),
    },
    Metric {
        prom: "herald_history_read_duration_seconds",
        json: &["historyReadMs"],
        kind: Kind::Histogram,
        help: "Time one read of history from the stream took (clients behind the buffer).",
        read: Read::Histogram(|m| &m.history_read),
    },
    Metric {
        prom: "herald_room_orgs",
        json: &["rooms", "orgs"],
        kind: Kind::Gauge,
        help: "Orgs whose rooms run on this node (a member here, or one left less than 30 s ago).",
        read: Read::One(|_, g| g.room_orgs),
    },
    Metric {
        prom: "herald_rooms_active",
        json: &["rooms", "active"],
        kind: Kind::Gauge,
        help: "Rooms with a member connected to this node.",
        read: Read::One(|_, g| g.rooms),
    },
    Metric {
        prom: "herald_room_members",
        json: &["rooms", "members"],
        kind: Kind::Gauge,
        help: "Room memberships of connections on this node (a connection in three rooms counts three).",
        read: Read::One(|_, g| g.room_members),
    },
    Metric {
        prom: "herald_room_joins_total",
        json: &["rooms", "joins"],
        kind: Kind::Counter,
        help: "Rooms joined (joined frames sent).",
        read: Read::One(|m, _| m.room_joins.load(Relaxed)),
    },
    Metric {
        prom: "herald_room_messages_total",
        json: &["rooms", "messages"],
        kind: Kind::Counter,
        help: "Room messages sent through this node, by outcome: stored, or duplicate (a repeated clientMsgId, not stored again).",
        read: Read::Family {
            label: "outcome",
            samples: |m, _| {
                vec![
                    ("stored", m.room_messages_stored.load(Relaxed)),
                    ("duplicate", m.room_messages_duplicate.load(Relaxed)),
                ]
            },
            total: None,
        },
    },
    Metric {
        prom: "herald_room_deliveries_total",
        json: &["rooms", "deliveries"],
        kind: Kind::Counter,
        help: "Room messages sent to member connections on this node (one per connection).",
        read: Read::One(|m, _| m.room_messages_delivered.load(Relaxed)),
    },
    Metric {
        prom: "herald_room_typing_total",
        json: &["rooms", "typing"],
        kind: Kind::Counter,
        help: "Typing notices from this node's connections, by outcome: sent, or dropped (more than one per user and room every 2 s).",
        read: Read::Family {
            label: "outcome",
            samples: |m, _| {
                vec![
                    ("sent", m.room_typing_sent.load(Relaxed)),
                    ("dropped", m.room_typing_dropped.load(Relaxed)),
                ]
            },
            total: None,
        },
    },
    Metric {
        prom: "herald_room_typing_deliveries_total",
        json: &["rooms", "typingDeliveries"],
        kind: Kind::Counter,
        help: "Typing notices sent to member connections on this node.",
        read: Read::One(|m, _| m.room_typing_delivered.load(Relaxed)),
    },
    Metric {
        prom: "herald_room_receipts_total",
        json: &["rooms", "receipts"],
        kind: Kind::Counter,
        help: "Read receipts from this node's users that moved forward.",
        read: Read::One(|m, _| m.room_receipts.load(Relaxed)),
    },
    Metric {
        prom: "herald_room_presence_changes_total",
        json: &["rooms", "presenceChanges"],
        kind: Kind::Counter,
        help: "Changes of a user's presence in a room seen by this node (online, away, offline).",
        read: Read::One(|m, _| m.room_presence_changes.load(Relaxed)),
    },
    Metric {
        prom: "herald_room_errors_total",
        json: &["rooms", "errors"],
        kind: Kind::Counter,
        help: "Room requests refused with an error frame or HTTP error, by code.",
        read: Read::Family {
            label: "code",
            samples: |m, _| {
                RoomErrorCode::ALL
                    .into_iter()
                    .zip(&m.room_errors)
                    .map(|(c, n)| (c.as_str(), n.load(Relaxed)))
                    .collect()
            },
            total: None,
        },
    },
    Metric {
        prom: "herald_room_history_read_duration_seconds",
        json: &["rooms", "historyReadMs"],
        kind: Kind::Histogram,
        help: "Time one read of a room's history took (a join's history, or a page of GET /v2/rooms/<room>/messages).",
        read: Read::Histogram(|m| &m.room_history),
    },
    Metric {
        prom: "herald_upload_bytes_total",
        json: &["uploads", "bytes"],
        kind: Kind::Counter,
        help: "Upload bytes this node stored in NATS.",
        read: Read::One(|m, _| m.upload_bytes.load(Relaxed)),
    },
    Metric {
        prom: "herald_uploads_started_total",
        json: &["uploads", "started"],
        kind: Kind::Counter,
        help: "Uploads created on this node.",
        read: Read::One(|m, _| m.uploads_started.load(Relaxed)),
    },
    Metric {
        prom: "herald_uploads_completed_total",
        json: &["uploads", "completed"],
        kind: Kind::Counter,
        help: "Uploads this node finished (object written, upload.completed published).",
        read: Read::One(|m, _| m.uploads_completed.load(Relaxed)),
    },
    Metric {
        prom: "herald_uploads_failed_total",
        json: &["uploads", "failed"],
        kind: Kind::Counter,
        help: "Upload requests that failed on this node, by reason.",
        read: Read::Family {
            label: "reason",
            samples: |m, _| {
                UploadFailure::ALL
                    .into_iter()
                    .zip(&m.upload_failures)
                    .map(|(c, n)| (c.as_str(), n.load(Relaxed)))
                    .collect()
            },
            total: None,
        },
    },
    Metric {
        prom: "herald_uploads_expired_total",
        json: &["uploads", "expired"],
        kind: Kind::Counter,
        help: "Unfinished uploads this node's sweep removed after they expired.",
        read: Read::One(|m, _| m.uploads_expired.load(Relaxed)),
    },
    Metric {
        prom: "herald_uploads_deleted_total",
        json: &["uploads", "deleted"],
        kind: Kind::Counter,
        help: "Uploads removed by DELETE on this node.",
        read: Read::One(|m, _| m.uploads_deleted.load(Relaxed)),
    },
    Metric {
        prom: "herald_client_events_total",
        json: &["client", "events"],
        kind: Kind::Counter,
        help: "Reports from browser SDKs (POST /v2/telemetry/client), by event name; sampled by the clients (2 % of sessions by default), so compare rates, not totals.",
        read: Read::Family {
            label: "name",
            samples: |m, _| {
                ClientEvent::ALL
                    .into_iter()
                    .zip(&m.client_events)
                    .map(|(e, n)| (e.as_str(), n.load(Relaxed)))
                    .collect()
            },
            total: None,
        },
    },
    Metric {
        prom: "herald_client_reconnects_total",
        json: &["client", "reconnects"],
        kind: Kind::Counter,
        help: "Reconnects reported by browser SDKs, by the transport they reconnected on (other: not reported or unknown).",
        read: Read::Family {
            label: "transport",
            samples: |m, _| {
                ClientTransport::ALL
                    .into_iter()
                    .zip(&m.client_reconnects)
                    .map(|(t, n)| (t.as_str(), n.load(Relaxed)))
                    .collect()
            },
            total: None,
        },
    },
    Metric {
        prom: "herald_client_delivery_latency_seconds",
        json: &["client", "deliveryLatencyMs"],
        kind: Kind::Histogram,
        help: "Time from an event's creation to its receipt in the browser, as SDKs report it (includes the publisher's and the browser's clock offsets).",
        read: Read::Histogram(|m| &m.client_latency),
    },
    Metric {
        prom: "herald_connect_ack_seconds",
        json: &["connectAckMs"],
        kind: Kind::Histogram,
        help: "Time from a stream connection's request to its ack (WebSocket upgrade to ack, SSE request to the ack event).",
        read: Read::Histogram(|m| &m.connect_ack),
    },
];

/// Puts `value` at `path` in `doc`, creating the objects on the way.
fn insert(doc: &mut Map<String, Value>, path: &[&str], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut at = doc;
    for key in parents {
        at = match at.entry(*key).or_insert_with(|| Value::Object(Map::new())) {
            Value::Object(map) => map,
            // A value already sits on the path; the table's tests rule it out.
            _ => return,
        };
    }
    at.insert((*last).to_owned(), value);
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_buckets() {
        let mut h = Histogram::default();
        for us in [90, 90, 90, 90, 90, 90, 90, 90, 90, 25_000] {
            h.record(us);
        }
        assert_eq!(h.quantile_ms(0.5), Some(0.1));
        // The bucket's bound is 30 ms; no sample was above 25 ms.
        assert_eq!(h.quantile_ms(0.99), Some(25.0));
        assert_eq!(Histogram::default().quantile_ms(0.5), None);
    }

    #[test]
    fn quantiles_past_the_last_bound_are_the_largest_sample_not_a_sentinel() {
        let mut h = Histogram::default();
        h.record(90_000_000);
        h.record(75_000_000);
        assert_eq!(h.quantile_ms(0.5), Some(90_000.0));
        // Within a bucket, never above the largest sample either.
        let mut h = Histogram::default();
        h.record(1_200);
        assert_eq!(h.quantile_ms(0.99), Some(1.2));
        let m = Metrics::default();
        m.record_delivery("finance", 0, 3_600_000, 1, Delivery::Live);
        let j = m.to_json("n1", &Gauges::default());
        assert_eq!(j["latencyMs"]["finance"]["p95"], 3_600_000.0, "{j}");
    }

    #[test]
    fn process_figures_are_left_out_where_they_cannot_be_read() {
        let (m, mut g) = busy();
        assert_eq!(m.to_json("n1", &g)["process"]["openFds"], 12.0);
        g.process = None;
        let j = m.to_json("n1", &g);
        assert!(j["process"].is_null(), "{j}");
        let p = m.to_prometheus("n1", &g);
        assert!(!p.contains("process_"), "{p}");
        assert!(
            p.contains("herald_build_info{node=\"n1\",version=\""),
            "{p}"
        );
    }

    #[test]
    fn catch_up_is_kept_apart_from_live_latency() {
        let m = Metrics::default();
        m.record_deliveries([("finance", 0), ("finance", 0)], 65_000, Delivery::CatchUp);
        m.record_deliveries([("finance", 64_998)], 65_000, Delivery::Live);
        assert_eq!(m.delivered.load(Relaxed), 3);
        let j = m.to_json("n1", &Gauges::default());
        assert_eq!(j["latencyMs"]["finance"]["count"], 1, "{j}");
        assert_eq!(j["latencyMs"]["finance"]["p99"], 2.0, "{j}");
        assert_eq!(j["catchUpAgeMs"]["count"], 2, "{j}");
        assert_eq!(j["catchUpAgeMs"]["p50"], 65_000.0, "{j}");
        let p = m.to_prometheus("n1", &Gauges::default());
        assert!(
            p.contains("herald_catchup_age_seconds_count{node=\"n1\"} 2"),
            "{p}"
        );
        assert!(
            p.contains("herald_delivery_latency_seconds_count{node=\"n1\",service=\"finance\"} 1"),
            "{p}"
        );
        // Nothing delivered yet: no quantiles, not a number standing in for one.
        let j = Metrics::default().to_json("n1", &Gauges::default());
        assert_eq!(
            j["catchUpAgeMs"],
            json!({"count": 0, "p50": null, "p95": null, "p99": null})
        );
    }

    #[test]
    fn deliveries_are_counted_per_run_of_one_service() {
        let m = Metrics::default();
        m.record_deliveries(
            [("a", 1000), ("a", 1000), ("b", 900), ("a", 500)],
            1010,
            Delivery::Live,
        );
        assert_eq!(m.delivered.load(Relaxed), 4);
        let j = m.to_json("n1", &Gauges::default());
        assert_eq!(j["latencyMs"]["a"]["count"], 3, "{j}");
        assert_eq!(j["latencyMs"]["b"]["count"], 1, "{j}");
        m.record_deliveries([], 1010, Delivery::Live);
        assert_eq!(m.delivered.load(Relaxed), 4);
    }

    #[test]
    fn renders_json_and_prometheus() {
        let m = Metrics::default();
        m.reject(RejectReason::Mismatch);
        m.reject(RejectReason::Invalid);
        m.record_delivery("finance", 1000, 1003, 2, Delivery::Live);
        let j = m.to_json(
            "n1",
            &Gauges {
                waiters: 3,
                ..Gauges::default()
            },
        );
        assert_eq!(j["events"]["rejected"], 2);
        assert_eq!(j["events"]["delivered"], 2);
        assert_eq!(j["waiters"], 3);
        assert_eq!(j["latencyMs"]["finance"]["p50"], 3.0);
        let p = m.to_prometheus("n1", &Gauges::default());
        assert!(p.contains("herald_events_rejected_total{node=\"n1\",reason=\"mismatch\"} 1"));
        assert!(
            p.contains("herald_delivery_latency_seconds_count{node=\"n1\",service=\"finance\"} 2")
        );
    }

    /// A node with something in every counter, gauge and histogram.
    fn busy() -> (Metrics, Gauges) {
        let m = Metrics::default();
        for r in RejectReason::ALL {
            m.reject(r);
        }
        m.record_delivery("finance", 1000, 1003, 2, Delivery::Live);
        m.record_delivery("finance", 1000, 9003, 1, Delivery::CatchUp);
        m.record_history_read(std::time::Duration::from_millis(4));
        m.record_connect_ack(std::time::Duration::from_micros(800));
        m.count_resume(Resume::Continued);
        m.count_resume(Resume::Continued);
        m.count_resume(Resume::Reset);
        m.count_reset(ResetReason::HistoryGone);
        for status in [101, 200, 200, 404, 503, 99, 600] {
            m.count_response(status);
        }
        let g = Gauges {
            websocket: 1,
            sse: 2,
            longpoll: 3,
            orgs_total: 4,
            orgs_active: 5,
            buffered_events: 6,
            waiters: 7,
            quarantined: 8,
            buffered_bytes: 9,
            stream_reads: 10,
            orgs_untrusted: 11,
            head_samples: 12,
            leader_changes: 13,
            nats_connected: 1,
            room_orgs: 1,
            rooms: 2,
            room_members: 3,
            nats: NatsCounters {
                connects: 2,
                messages_in: 14,
                bytes_in: 15,
                messages_out: 16,
                bytes_out: 17,
            },
            process: Some(ProcessStats {
                cpu_seconds: 1.5,
                resident_bytes: 1024,
                virtual_bytes: 4096,
                open_fds: 12,
                max_fds: 1024,
                start_time_seconds: 1_764_547_200.0,
            }),
            partitions: vec![
                PartitionGauges {
                    last_seq: Some(18),
                    sample_age: Some(std::time::Duration::from_millis(500)),
                },
                PartitionGauges::default(),
            ],
        };
        (m, g)
    }

    /// The JSON leaves under `v`, as dotted paths.
    fn leaves(prefix: &str, v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) if !map.is_empty() => {
                for (k, v) in map {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    leaves(&path, v, out);
                }
            }
            _ => out.push(prefix.to_owned()),
        }
    }

    #[test]
    fn counts_client_reports_by_name_and_transport() {
        let m = Metrics::default();
        let sample = |event, value, transport| ClientSample {
            event,
            value,
            transport,
        };
        m.record_client(&[
            sample(ClientEvent::Reconnect, 1.0, ClientTransport::Sse),
            sample(ClientEvent::Reconnect, 1.0, ClientTransport::Other),
            sample(
                ClientEvent::DeliveryLatencyMs,
                120.0,
                ClientTransport::Other,
            ),
            sample(ClientEvent::LeaderAcquired, 1.0, ClientTransport::Other),
        ]);
        let j = m.to_json("n1", &Gauges::default());
        assert_eq!(j["client"]["events"]["reconnect"], 2);
        assert_eq!(j["client"]["events"]["leader_acquired"], 1);
        assert_eq!(j["client"]["events"]["fast_empty"], 0);
        assert_eq!(j["client"]["reconnects"]["sse"], 1);
        assert_eq!(j["client"]["reconnects"]["other"], 1);
        assert_eq!(j["client"]["deliveryLatencyMs"]["count"], 1);
        assert_eq!(j["client"]["deliveryLatencyMs"]["p50"], 120.0);
        let p = m.to_prometheus("n1", &Gauges::default());
        assert!(p.contains("herald_client_events_total{node=\"n1\",name=\"reconnect\"} 2"));
        assert!(p.contains("herald_client_delivery_latency_seconds_count{node=\"n1\"} 1"));
        assert_eq!(
            ClientEvent::parse("reconnect"),
            Some(ClientEvent::Reconnect)
        );
        assert_eq!(ClientEvent::parse("Reconnect"), None);
        assert_eq!(
            ClientTransport::from_attr(Some("ws")),
            ClientTransport::Other
        );
    }

    #[test]
    fn both_renderers_cover_the_same_table() {
        let (m, g) = busy();
        let j = m.to_json("n1", &g);
        let p = m.to_prometheus("n1", &g);
        let mut names = Vec::new();
        for metric in &METRICS {
            let name = metric.prom;
            names.push(name);
            let at = metric.json.iter().fold(&j, |v, k| &v[*k]);
            assert!(
                !at.is_null(),
                "{name}: nothing at {:?} in JSON",
                metric.json
            );
            assert!(
                p.contains(&format!("# TYPE {name} {}\n", metric.kind.as_str())),
                "{name}: no TYPE line"
            );
            assert!(
                p.lines().any(|l| l.starts_with(&format!("{name}{{"))
                    || l.starts_with(&format!("{name}_bucket{{"))),
                "{name}: no sample"
            );
            if let Read::Family { samples, total, .. } = metric.read {
                for (label, _) in samples(&m, &g) {
                    assert!(!at[label].is_null(), "{name}: no JSON key {label}");
                }
                if let Some(path) = total {
                    assert!(!path.iter().fold(&j, |v, k| &v[*k]).is_null());
                }
            }
        }
        // Nothing in either document that the table does not list.
        let types = p.lines().filter(|l| l.starts_with("# TYPE ")).count();
        assert_eq!(types, METRICS.len());
        let mut found = Vec::new();
        leaves("", &j, &mut found);
        for leaf in found.iter().filter(|l| *l != "nodeId") {
            let covered = METRICS.iter().any(|metric| {
                let path = metric.json.join(".");
                let total = match metric.read {
                    Read::Family { total, .. } => total.map(|t| t.join(".")),
                    _ => None,
                };
                leaf.starts_with(&format!("{path}."))
                    || *leaf == path
                    || Some(leaf) == total.as_ref()
            });
            assert!(covered, "JSON {leaf} is in no descriptor");
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), METRICS.len(), "Prometheus names are unique");
        let mut paths: Vec<String> = METRICS.iter().map(|m| m.json.join(".")).collect();
        paths.sort_unstable();
        paths.dedup();
        assert_eq!(paths.len(), METRICS.len(), "JSON paths are unique");
    }

    #[test]
    fn keeps_every_published_name() {
        let (m, g) = busy();
        let j = m.to_json("n1", &g);
        let p = m.to_prometheus("n1", &g);
        for path in [
            "nodeId",
            "connections.websocket",
            "connections.sse",
            "connections.longpoll",
            "orgs.total",
            "orgs.active",
            "orgs.untrusted",
            "stream.headSamples",
            "stream.leaderChanges",
            "events.ingested",
            "events.delivered",
            "events.dropped",
            "events.rejected",
            "events.rejectedByReason.too_large",
            "events.rejectedByReason.invalid",
            "events.rejectedByReason.missing_event_type",
            "events.rejectedByReason.mismatch",
            "events.rejectedByReason.bad_subject",
            "events.gapsFilled",
            "events.liveLosses",
            "events.forged",
            "events.gapEvents",
            "events.historyReads",
            "events.resets",
            "buffers.total_size",
            "buffers.bytes",
            "stream.readRequests",
            "waiters",
            "waiterCapHits",
            "slowConsumerCloses",
            "quarantined",
            "latencyMs.finance.p50",
            "guards.httpConnections",
            "guards.httpRefused",
            "guards.bodyTimeouts",
            "guards.rateLimited",
            "guards.switchErrors",
            "catchUpAgeMs.p50",
            "historyReadMs.count",
            "connectAckMs.p99",
            "client.events.fast_empty",
            "client.events.leader_takeover",
            "client.reconnects.longpoll",
            "client.deliveryLatencyMs.count",
            "nats.connected",
            "process.cpuSeconds",
            "stream.lastSeq.0",
            "stream.sampleAgeSeconds.0",
        ] {
            let v = path.split('.').fold(&j, |v, k| &v[k]);
            assert!(!v.is_null(), "JSON {path} missing");
        }
        assert_eq!(j["events"]["rejected"], 5);
        assert_eq!(j["buffers"]["total_size"], 6);
        for name in [
            "herald_connections{node=\"n1\",transport=\"sse\"} 2",
            "herald_orgs{node=\"n1\",state=\"active\"} 5",
            "herald_buffered_events{node=\"n1\"} 6",
            "herald_waiters{node=\"n1\"} 7",
            "herald_quarantined{node=\"n1\"} 8",
            "herald_events_ingested_total{",
            "herald_events_delivered_total{node=\"n1\"} 3",
            "herald_events_dropped_total{",
            "herald_events_rejected_total{node=\"n1\",reason=\"bad_subject\"} 1",
            "herald_gaps_filled_total{",
            "herald_gap_events_total{",
            "herald_live_losses_total{",
            "herald_live_forged_total{",
            "herald_buffered_bytes{node=\"n1\"} 9",
            "herald_stream_read_requests_total{node=\"n1\"} 10",
            "herald_orgs{node=\"n1\",state=\"untrusted\"} 11",
            "herald_stream_head_samples_total{node=\"n1\"} 12",
            "herald_stream_leader_changes_total{node=\"n1\"} 13",
            "herald_history_reads_total{",
            "herald_slow_consumer_closes_total{",
            "herald_resets_total{",
            "herald_waiter_cap_hits_total{",
            "herald_http_connections{",
            "herald_http_refused_total{",
            "herald_body_timeouts_total{",
            "herald_rate_limited_total{",
            "herald_switch_errors_total{",
            "herald_delivery_latency_seconds_bucket{node=\"n1\",service=\"finance\",le=\"+Inf\"} 2",
            "herald_delivery_latency_seconds_sum{",
            "herald_catchup_age_seconds_count{node=\"n1\"} 1",
            "herald_history_read_duration_seconds_count{node=\"n1\"} 1",
            "herald_connect_ack_seconds_count{node=\"n1\"} 1",
            "herald_build_info{node=\"n1\",version=",
            "herald_nats_connected{node=\"n1\"} 1",
            "herald_nats_connects_total{node=\"n1\"} 2",
            "process_resident_memory_bytes{node=\"n1\"} 1024",
            "herald_stream_last_sequence{node=\"n1\",partition=\"0\"} 18",
            "herald_http_responses_total{node=\"n1\",code=\"2xx\"} 2",
            "herald_resumes_total{node=\"n1\",outcome=\"continued\"} 2",
            "herald_resumes_total{node=\"n1\",outcome=\"reset\"} 1",
            "herald_resets_total{node=\"n1\",reason=\"history_gone\"} 1",
            "herald_resets_total{node=\"n1\",reason=\"epoch_changed\"} 0",
            "herald_http_responses_total{node=\"n1\",code=\"5xx\"} 1",
            "herald_http_responses_total{node=\"n1\",code=\"1xx\"} 1",
            "herald_stream_sample_age_seconds{node=\"n1\",partition=\"0\"} 0.5",
        ] {
            assert!(p.contains(name), "Prometheus {name} missing");
        }
    }
}
