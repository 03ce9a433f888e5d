//! Reads the edge's own figures from `GET /v2/realtime/metrics` (open when
//! the edge runs with `HERALD_METRICS_PUBLIC=true`, which `--spawn` sets).

use std::time::Duration;

use serde_json::Value;

use crate::error::LoadError;

/// Bound on one metrics request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The metrics figures a benchmark uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EdgeMetrics {
    /// `events.ingested`: events accepted into org buffers.
    pub ingested: u64,
    /// `events.delivered`: event deliveries to clients.
    pub delivered: u64,
    /// `events.rejected`.
    pub rejected: u64,
    /// `events.gapsFilled`: gaps in the live feed filled from the stream.
    pub gaps_filled: u64,
    /// `events.historyReads`: reads of history for clients behind a buffer.
    pub history_reads: u64,
    /// `events.resets`.
    pub resets: u64,
    /// `waiters`: polls held right now.
    pub waiters: u64,
    /// `connections.longpoll`: polls in progress.
    pub longpoll: u64,
    /// `orgs.total`.
    pub orgs: u64,
    /// `waiterCapHits`.
    pub waiter_cap_hits: u64,
    /// `connections.websocket`: open WebSocket streams.
    pub websocket: u64,
    /// `connections.sse`: open SSE streams.
    pub sse: u64,
    /// `events.dropped`: deliveries dropped (quarantine, kill switch).
    pub dropped: u64,
    /// `slowConsumerCloses`: streams closed with 4008.
    pub slow_closes: u64,
    /// `quarantined`: stream connections quarantined right now.
    pub quarantined: u64,
}

impl EdgeMetrics {
    /// The figures of several edges added up.
    pub fn sum(all: &[EdgeMetrics]) -> EdgeMetrics {
        all.iter().fold(EdgeMetrics::default(), |a, m| EdgeMetrics {
            ingested: a.ingested + m.ingested,
            delivered: a.delivered + m.delivered,
            rejected: a.rejected + m.rejected,
            gaps_filled: a.gaps_filled + m.gaps_filled,
            history_reads: a.history_reads + m.history_reads,
            resets: a.resets + m.resets,
            waiters: a.waiters + m.waiters,
            longpoll: a.longpoll + m.longpoll,
            orgs: a.orgs + m.orgs,
            waiter_cap_hits: a.waiter_cap_hits + m.waiter_cap_hits,
            websocket: a.websocket + m.websocket,
            sse: a.sse + m.sse,
            dropped: a.dropped + m.dropped,
            slow_closes: a.slow_closes + m.slow_closes,
            quarantined: a.quarantined + m.quarantined,
        })
    }
}

/// Fetches the edge's metrics.
#[derive(Clone)]
pub struct Probe {
    client: reqwest::Client,
    url: String,
}

impl Probe {
    /// A probe of the edge at `edge_url`.
    pub fn new(edge_url: &str) -> Result<Self, LoadError> {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| LoadError::Setup(format!("http client: {e}")))?;
        Ok(Self {
            client,
            url: format!("{edge_url}/v2/realtime/metrics"),
        })
    }

    /// The current figures.
    pub async fn metrics(&self) -> Result<EdgeMetrics, LoadError> {
        let response = self
            .client
            .get(&self.url)
            .send()
            .await
            .map_err(|e| LoadError::Edge(format!("GET {}: {e}", self.url)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(LoadError::Edge(format!(
                "GET {} answered {status}; run the edge with HERALD_METRICS_PUBLIC=true",
                self.url
            )));
        }
        let v: Value = response
            .json()
            .await
            .map_err(|e| LoadError::Edge(format!("metrics are not JSON: {e}")))?;
        Ok(parse(&v))
    }
}

fn parse(v: &Value) -> EdgeMetrics {
    let n = |path: &[&str]| {
        path.iter()
            .try_fold(v, |v, k| v.get(k))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    EdgeMetrics {
        ingested: n(&["events", "ingested"]),
        delivered: n(&["events", "delivered"]),
        rejected: n(&["events", "rejected"]),
        gaps_filled: n(&["events", "gapsFilled"]),
        history_reads: n(&["events", "historyReads"]),
        resets: n(&["events", "resets"]),
        waiters: n(&["waiters"]),
        longpoll: n(&["connections", "longpoll"]),
        orgs: n(&["orgs", "total"]),
        waiter_cap_hits: n(&["waiterCapHits"]),
        websocket: n(&["connections", "websocket"]),
        sse: n(&["connections", "sse"]),
        dropped: n(&["events", "dropped"]),
        slow_closes: n(&["slowConsumerCloses"]),
        quarantined: n(&["quarantined"]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_contract_fields() {
        let v = serde_json::json!({
            "events": {"ingested": 7, "delivered": 9, "rejected": 1},
            "connections": {"longpoll": 3, "websocket": 4, "sse": 5}, "orgs": {"total": 2}, "waiters": 3,
            "slowConsumerCloses": 6
        });
        let m = parse(&v);
        assert_eq!(
            (
                m.ingested,
                m.delivered,
                m.rejected,
                m.longpoll,
                m.orgs,
                m.waiters
            ),
            (7, 9, 1, 3, 2, 3)
        );
        assert_eq!(m.gaps_filled, 0);
        assert_eq!((m.websocket, m.sse, m.slow_closes), (4, 5, 6));
        assert_eq!(EdgeMetrics::sum(&[m, m]).websocket, 8);
    }
}
