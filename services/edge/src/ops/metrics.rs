//! Counters and latency histograms of one node, rendered as the JSON of
//! `GET /v2/realtime/metrics` and the Prometheus text of `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use serde_json::{json, Value};

/// Services tracked separately in latency histograms; later ones share `_other`.
const MAX_TRACKED_SERVICES: usize = 128;
/// Histogram bucket upper bounds in microseconds (roughly ×1.5 apart), then +Inf.
const BUCKETS_US: [u64; 36] = [
    100, 150, 200, 300, 400, 500, 750, 1_000, 1_500, 2_000, 3_000, 4_000, 5_000, 7_500, 10_000,
    15_000, 20_000, 30_000, 40_000, 50_000, 75_000, 100_000, 150_000, 200_000, 300_000, 500_000,
    750_000, 1_000_000, 1_500_000, 2_000_000, 3_000_000, 5_000_000, 10_000_000, 20_000_000,
    30_000_000, 60_000_000,
];

/// Reasons a stored event is rejected; one counter each.
pub const REJECT_REASONS: [&str; 5] = [
    "too_large",
    "invalid",
    "missing_event_type",
    "mismatch",
    "bad_subject",
];

/// A fixed-bucket latency histogram.
struct Histogram {
    counts: [u64; BUCKETS_US.len() + 1],
    total: u64,
    sum_us: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: [0; BUCKETS_US.len() + 1],
            total: 0,
            sum_us: 0,
        }
    }
}

impl Histogram {
    fn record(&mut self, us: u64) {
        let i = BUCKETS_US.partition_point(|&b| b < us);
        self.counts[i] += 1;
        self.total += 1;
        self.sum_us += us;
    }

    /// Upper bound of the bucket holding quantile `q`, in milliseconds.
    fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((self.total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let us = BUCKETS_US.get(i).copied().unwrap_or(u64::MAX / 2);
                return Some(us as f64 / 1000.0);
            }
        }
        None
    }
}

/// Gauges the metrics read from the rest of the node when rendered.
#[derive(Debug, Default, Clone, Copy)]
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
    rejected: [AtomicU64; REJECT_REASONS.len()],
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
    /// Resets sent to clients.
    pub resets: AtomicU64,
    /// Stream connections closed as slow consumers (4008).
    pub slow_closes: AtomicU64,
    latency: Mutex<BTreeMap<String, Histogram>>,
    /// Request guards and node limits.
    pub guards: GuardCounters,
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

impl GuardCounters {
    fn to_json(&self) -> Value {
        json!({
            "httpConnections": self.http_connections.load(Relaxed),
            "httpRefused": self.http_refused.load(Relaxed),
            "bodyTimeouts": self.body_timeouts.load(Relaxed),
            "rateLimited": self.rate_limited.load(Relaxed),
            "switchErrors": self.switch_errors.load(Relaxed),
        })
    }
}

impl Metrics {
    /// Counts a rejected event under its reason label.
    pub fn reject(&self, reason: &str) {
        let i = REJECT_REASONS
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(1);
        self.rejected[i].fetch_add(1, Relaxed);
    }

    /// All rejected events.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// Records `count` deliveries of `service` events stored at `stored_ms`.
    pub fn record_delivery(&self, service: &str, stored_ms: i64, now_ms: i64, count: u64) {
        self.delivered.fetch_add(count, Relaxed);
        let us = (now_ms.saturating_sub(stored_ms)).max(0) as u64 * 1000;
        let mut map = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        let key = if map.contains_key(service) || map.len() < MAX_TRACKED_SERVICES {
            service
        } else {
            "_other"
        };
        let h = map.entry(key.to_owned()).or_default();
        for _ in 0..count.min(16) {
            h.record(us);
        }
    }

    /// Records the delivery of `events` to one client, one histogram update
    /// per run of same-service events.
    pub fn record_deliveries(
        &self,
        events: &[std::sync::Arc<crate::org::decode::StoredEvent>],
        now_ms: i64,
    ) {
        let mut i = 0;
        while i < events.len() {
            let service = &events[i].event.service;
            let run = events[i..]
                .iter()
                .take_while(|e| &e.event.service == service)
                .count();
            self.record_delivery(service, events[i].stored_ms, now_ms, run as u64);
            i += run;
        }
    }

    /// The JSON document of `/v2/realtime/metrics`.
    pub fn to_json(&self, node_id: &str, g: Gauges) -> Value {
        let latency: serde_json::Map<String, Value> = self
            .latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(svc, h)| {
                (
                    svc.clone(),
                    json!({"count": h.total, "p50": h.quantile_ms(0.5), "p95": h.quantile_ms(0.95), "p99": h.quantile_ms(0.99)}),
                )
            })
            .collect();
        let rejected: serde_json::Map<String, Value> = REJECT_REASONS
            .iter()
            .zip(&self.rejected)
            .map(|(r, c)| ((*r).to_owned(), json!(c.load(Relaxed))))
            .collect();
        json!({
            "nodeId": node_id,
            "connections": {"websocket": g.websocket, "sse": g.sse, "longpoll": g.longpoll},
            "orgs": {"total": g.orgs_total, "active": g.orgs_active},
            "events": {
                "ingested": self.ingested.load(Relaxed),
                "delivered": self.delivered.load(Relaxed),
                "dropped": self.dropped.load(Relaxed),
                "rejected": self.rejected_total(),
                "rejectedByReason": rejected,
                "gapsFilled": self.gaps_filled.load(Relaxed),
                "liveLosses": self.live_losses.load(Relaxed),
                "forged": self.forged.load(Relaxed),
                "gapEvents": self.gap_events.load(Relaxed),
                "historyReads": self.history_reads.load(Relaxed),
                "resets": self.resets.load(Relaxed),
            },
            "buffers": {"total_size": g.buffered_events, "bytes": g.buffered_bytes},
            "stream": {"readRequests": g.stream_reads},
            "waiters": g.waiters,
            "waiterCapHits": self.waiter_cap_hits.load(Relaxed),
            "slowConsumerCloses": self.slow_closes.load(Relaxed),
            "quarantined": g.quarantined,
            "latencyMs": latency,
            "guards": self.guards.to_json(),
        })
    }

    /// The Prometheus text exposition of `/metrics`.
    pub fn to_prometheus(&self, node_id: &str, g: Gauges) -> String {
        let mut out = String::with_capacity(4096);
        let node = escape(node_id);
        let mut line = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in samples {
                let sep = if labels.is_empty() { "" } else { "," };
                let _ = writeln!(out, "{name}{{node=\"{node}\"{sep}{labels}}} {v}");
            }
        };
        let n = |v: u64| v as f64;
        line(
            "herald_connections",
            "gauge",
            "Open client connections by transport.",
            &[
                ("transport=\"websocket\"".into(), n(g.websocket)),
                ("transport=\"sse\"".into(), n(g.sse)),
                ("transport=\"longpoll\"".into(), n(g.longpoll)),
            ],
        );
        line(
            "herald_orgs",
            "gauge",
            "Org states held by this node.",
            &[
                ("state=\"total\"".into(), n(g.orgs_total)),
                ("state=\"active\"".into(), n(g.orgs_active)),
            ],
        );
        line(
            "herald_buffered_events",
            "gauge",
            "Events held in org buffers.",
            &[(String::new(), n(g.buffered_events))],
        );
        line(
            "herald_waiters",
            "gauge",
            "Held long-polls.",
            &[(String::new(), n(g.waiters))],
        );
        line(
            "herald_quarantined",
            "gauge",
            "Quarantined stream connections.",
            &[(String::new(), n(g.quarantined))],
        );
        line(
            "herald_events_ingested_total",
            "counter",
            "Events accepted from NATS.",
            &[(String::new(), n(self.ingested.load(Relaxed)))],
        );
        line(
            "herald_events_delivered_total",
            "counter",
            "Event deliveries to clients.",
            &[(String::new(), n(self.delivered.load(Relaxed)))],
        );
        line(
            "herald_events_dropped_total",
            "counter",
            "Event deliveries dropped.",
            &[(String::new(), n(self.dropped.load(Relaxed)))],
        );
        let rejected: Vec<(String, f64)> = REJECT_REASONS
            .iter()
            .zip(&self.rejected)
            .map(|(r, c)| (format!("reason=\"{r}\""), n(c.load(Relaxed))))
            .collect();
        line(
            "herald_events_rejected_total",
            "counter",
            "Stored events refused as invalid.",
            &rejected,
        );
        line(
            "herald_gaps_filled_total",
            "counter",
            "Gaps in the live feed filled from the stream.",
            &[(String::new(), n(self.gaps_filled.load(Relaxed)))],
        );
        line(
            "herald_buffered_bytes",
            "gauge",
            "Bytes held in all org buffers.",
            &[(String::new(), n(g.buffered_bytes))],
        );
        line(
            "herald_stream_read_requests_total",
            "counter",
            "Requests sent to JetStream to read stored events (message gets and batch fetches).",
            &[(String::new(), n(g.stream_reads))],
        );
        line(
            "herald_history_reads_total",
            "counter",
            "History reads from the stream.",
            &[(String::new(), n(self.history_reads.load(Relaxed)))],
        );
        line(
            "herald_slow_consumer_closes_total",
            "counter",
            "Stream connections closed as slow consumers.",
            &[(String::new(), n(self.slow_closes.load(Relaxed)))],
        );
        line(
            "herald_resets_total",
            "counter",
            "Resets sent to clients.",
            &[(String::new(), n(self.resets.load(Relaxed)))],
        );
        line(
            "herald_waiter_cap_hits_total",
            "counter",
            "Polls refused by the per-org waiter cap.",
            &[(String::new(), n(self.waiter_cap_hits.load(Relaxed)))],
        );
        let gc = &self.guards;
        line(
            "herald_http_connections",
            "gauge",
            "HTTP connections being served.",
            &[(String::new(), n(gc.http_connections.load(Relaxed)))],
        );
        line(
            "herald_http_refused_total",
            "counter",
            "HTTP connections closed at accept by the connection cap.",
            &[(String::new(), n(gc.http_refused.load(Relaxed)))],
        );
        line(
            "herald_body_timeouts_total",
            "counter",
            "Request bodies cut off after stalling.",
            &[(String::new(), n(gc.body_timeouts.load(Relaxed)))],
        );
        line(
            "herald_rate_limited_total",
            "counter",
            "Requests refused by a per-user rate limit.",
            &[(String::new(), n(gc.rate_limited.load(Relaxed)))],
        );
        line(
            "herald_switch_errors_total",
            "counter",
            "Malformed kill-switch values ignored.",
            &[(String::new(), n(gc.switch_errors.load(Relaxed)))],
        );

        let map = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(
            out,
            "# HELP herald_delivery_latency_seconds Time from JetStream storage to delivery.\n# TYPE herald_delivery_latency_seconds histogram"
        );
        for (svc, h) in map.iter() {
            let svc = escape(svc);
            let mut cumulative = 0;
            for (i, c) in h.counts.iter().enumerate() {
                cumulative += c;
                let le = BUCKETS_US
                    .get(i)
                    .map_or("+Inf".to_owned(), |us| format!("{}", *us as f64 / 1e6));
                let _ = writeln!(out, "herald_delivery_latency_seconds_bucket{{node=\"{node}\",service=\"{svc}\",le=\"{le}\"}} {cumulative}");
            }
            let _ = writeln!(
                out,
                "herald_delivery_latency_seconds_sum{{node=\"{node}\",service=\"{svc}\"}} {}",
                h.sum_us as f64 / 1e6
            );
            let _ = writeln!(
                out,
                "herald_delivery_latency_seconds_count{{node=\"{node}\",service=\"{svc}\"}} {}",
                h.total
            );
        }
        out
    }
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
        assert_eq!(h.quantile_ms(0.99), Some(30.0));
        assert_eq!(Histogram::default().quantile_ms(0.5), None);
    }

    #[test]
    fn renders_json_and_prometheus() {
        let m = Metrics::default();
        m.reject("mismatch");
        m.reject("no-such-reason");
        m.record_delivery("finance", 1000, 1003, 2);
        let j = m.to_json(
            "n1",
            Gauges {
                waiters: 3,
                ..Gauges::default()
            },
        );
        assert_eq!(j["events"]["rejected"], 2);
        assert_eq!(j["events"]["delivered"], 2);
        assert_eq!(j["waiters"], 3);
        assert_eq!(j["latencyMs"]["finance"]["p50"], 3.0);
        let p = m.to_prometheus("n1", Gauges::default());
        assert!(p.contains("herald_events_rejected_total{node=\"n1\",reason=\"mismatch\"} 1"));
        assert!(
            p.contains("herald_delivery_latency_seconds_count{node=\"n1\",service=\"finance\"} 2")
        );
    }
}
