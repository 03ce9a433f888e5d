//! One publishing phase of the scale-out scenarios on a [`ClusterTarget`]:
//! publish (paced or flat out), wait until every client has its org's last
//! stored event, and check every client's deliveries against the acks; with
//! the edges' counters and the CPU of edges and servers over the phase.

use std::time::Duration;

use tokio::time::Instant;

use crate::cluster::{ClusterCpuUse, ClusterTarget};
use crate::error::LoadError;
use crate::fleet::Fleet;
use crate::probe::EdgeMetrics;
use crate::publish::{Pace, Published, Publisher};
use crate::streaming;
use crate::verify::{self, Latency, Verdict};

/// What one phase measured.
pub struct Phase {
    /// The publishes and their acks.
    pub published: Published,
    /// Deliveries against acks.
    pub verdict: Verdict,
    /// Publish → receive latency.
    pub latency: Latency,
    /// Every client caught up within the timeout.
    pub caught_up: bool,
    /// From the first publish until every client caught up (or gave up).
    pub window: Duration,
    /// CPU over the window.
    pub cpu: ClusterCpuUse,
    /// Edge metrics before, per edge.
    pub before: Vec<EdgeMetrics>,
    /// Edge metrics after, per edge.
    pub after: Vec<EdgeMetrics>,
    /// Client connections that ended during the phase.
    pub disconnects: u64,
}

impl Phase {
    /// Events stored per second of publishing (stored ÷ first send to last ack).
    pub fn publish_rate(&self) -> f64 {
        self.published.stored as f64 / self.published.ack_time.as_secs_f64().max(1e-3)
    }

    /// Events each edge ingested during the phase.
    pub fn ingested(&self) -> Vec<u64> {
        self.before
            .iter()
            .zip(&self.after)
            .map(|(b, a)| a.ingested.saturating_sub(b.ingested))
            .collect()
    }

    /// Deliveries each edge made during the phase.
    pub fn delivered(&self) -> Vec<u64> {
        self.before
            .iter()
            .zip(&self.after)
            .map(|(b, a)| a.delivered.saturating_sub(b.delivered))
            .collect()
    }

    /// Nothing lost, repeated or reordered, something owed, all caught up.
    pub fn exact(&self) -> bool {
        self.verdict.exact()
            && self.verdict.expected > 0
            && self.caught_up
            && self.published.errors == 0
    }

    /// `lost / duplicated / reordered` with the client count.
    pub fn correctness(&self) -> String {
        let v = &self.verdict;
        format!(
            "{} lost, {} duplicated, {} reordered ({} of {} clients exact, {} deliveries){}",
            v.lost,
            v.duplicated,
            v.out_of_order,
            v.complete_pollers,
            v.pollers,
            v.received,
            if self.caught_up {
                ""
            } else {
                ", NOT all caught up"
            }
        )
    }
}

/// Publishes `total` events at `pace` with `window` in flight and checks
/// the deliveries; waits at most `catch_up` after the last ack.
pub async fn run(
    ct: &ClusterTarget,
    fleet: &Fleet,
    publisher: &mut Publisher,
    total: u64,
    pace: Pace,
    window: usize,
    catch_up: Duration,
) -> Result<Phase, LoadError> {
    // Whatever arrived before (nothing, when the last phase caught up).
    let _ = fleet.take_events();
    let before = ct.st.metrics().await?;
    let d0 = fleet.disconnects();
    let cpu0 = ct.cpu();
    let t0 = Instant::now();
    let published = publisher.publish(total, pace, window).await;
    let (caught_up, _) = streaming::wait_caught_up(fleet, &published, catch_up).await;
    let window = t0.elapsed();
    let cpu = cpu0.until(&ct.cpu());
    let after = ct.st.metrics().await?;
    let logs = fleet.take_events();
    let verdict = verify::verify(&published.acked, &logs);
    let latency = verify::latency(&logs);
    Ok(Phase {
        published,
        verdict,
        latency,
        caught_up,
        window,
        cpu,
        before,
        after,
        disconnects: fleet.disconnects() - d0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(ingested: u64, delivered: u64) -> EdgeMetrics {
        EdgeMetrics {
            ingested,
            delivered,
            ..EdgeMetrics::default()
        }
    }

    #[test]
    fn per_edge_deltas_rate_and_exactness() {
        let mut p = Phase {
            published: Published {
                stored: 1_000,
                ack_time: Duration::from_millis(500),
                ..Published::default()
            },
            verdict: Verdict {
                expected: 3_000,
                received: 3_000,
                ..Verdict::default()
            },
            latency: Latency::default(),
            caught_up: true,
            window: Duration::from_secs(1),
            cpu: ClusterCpuUse::default(),
            before: vec![metrics(10, 100), metrics(0, 0)],
            after: vec![metrics(510, 1_600), metrics(500, 1_500)],
            disconnects: 0,
        };
        assert_eq!(p.ingested(), vec![500, 500]);
        assert_eq!(p.delivered(), vec![1_500, 1_500]);
        assert_eq!(p.publish_rate(), 2_000.0);
        assert!(p.exact());
        p.caught_up = false;
        assert!(!p.exact(), "a client that never caught up is not exact");
        assert!(p.correctness().contains("NOT all caught up"));
    }
}
