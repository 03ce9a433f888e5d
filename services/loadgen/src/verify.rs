//! Checks deliveries against the publish acks: every poller must receive
//! every stored event of its org exactly once and in order. Also merges the
//! pollers' wake latencies into one histogram.

use hdrhistogram::Histogram;

use crate::poller::PollerLog;

/// How deliveries compare with what was stored.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Pollers checked.
    pub pollers: usize,
    /// Deliveries owed: for each poller, the events stored for its org.
    pub expected: u64,
    /// Events received over all pollers.
    pub received: u64,
    /// Owed deliveries that never arrived.
    pub lost: u64,
    /// Part of `lost` above the highest sequence the client received: still
    /// in flight when the benchmark stopped looking (a client that fell
    /// behind), rather than a gap.
    pub pending: u64,
    /// Events received more than once by the same poller (extra copies).
    pub duplicated: u64,
    /// Events that arrived after one with a higher sequence (duplicates included).
    pub out_of_order: u64,
    /// Events received that no ack of this run names (e.g. a publish whose ack timed out).
    pub unexpected: u64,
    /// Pollers that received exactly what they were owed, in order.
    pub complete_pollers: usize,
}

impl Verdict {
    /// True when nothing was lost, duplicated or reordered.
    pub fn exact(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.out_of_order == 0
    }
}

/// How one client's deliveries compare with what was stored for its org.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ClientCheck {
    /// Deliveries owed.
    pub owed: u64,
    /// Events received (copies included).
    pub received: u64,
    /// Owed events never received.
    pub lost: u64,
    /// Part of `lost` above the highest sequence received (not yet arrived,
    /// rather than skipped).
    pub pending: u64,
    /// Extra copies received.
    pub duplicated: u64,
    /// Events not above every earlier one.
    pub out_of_order: u64,
    /// Events received that no ack names.
    pub unexpected: u64,
}

impl ClientCheck {
    /// Nothing lost, repeated or reordered.
    pub fn exact(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.out_of_order == 0
    }
}

/// Compares one log with the sorted stored sequences of its org.
pub fn check(owed: &[u64], log: &PollerLog) -> ClientCheck {
    let mut distinct = log.seqs.clone();
    distinct.sort_unstable();
    distinct.dedup();
    let found = count_common(owed, &distinct);
    let top = distinct.last().copied().unwrap_or(0);
    let above = owed.len() - owed.partition_point(|&s| s <= top);
    ClientCheck {
        owed: owed.len() as u64,
        received: log.seqs.len() as u64,
        lost: (owed.len() - found) as u64,
        pending: above as u64,
        duplicated: (log.seqs.len() - distinct.len()) as u64,
        out_of_order: log.out_of_order,
        unexpected: (distinct.len() - found) as u64,
    }
}

/// Compares each poller's log with the sorted stored sequences of its org.
pub fn verify(acked: &[Vec<u64>], logs: &[PollerLog]) -> Verdict {
    let mut v = Verdict {
        pollers: logs.len(),
        ..Verdict::default()
    };
    for log in logs {
        let owed: &[u64] = acked.get(log.org as usize).map_or(&[], Vec::as_slice);
        let c = check(owed, log);
        v.expected += c.owed;
        v.received += c.received;
        v.lost += c.lost;
        v.pending += c.pending;
        v.duplicated += c.duplicated;
        v.out_of_order += c.out_of_order;
        v.unexpected += c.unexpected;
        if c.exact() {
            v.complete_pollers += 1;
        }
    }
    v
}

/// Percentiles of plain samples (e.g. per-client times), in their unit.
pub fn percentiles(samples: &mut [f64]) -> Latency {
    if samples.is_empty() {
        return Latency::default();
    }
    samples.sort_unstable_by(f64::total_cmp);
    let at = |q: f64| {
        let rank = ((samples.len() as f64) * q).ceil() as usize;
        samples[rank.clamp(1, samples.len()) - 1]
    };
    Latency {
        count: samples.len() as u64,
        p50: at(0.50),
        p95: at(0.95),
        p99: at(0.99),
        p999: at(0.999),
        max: samples[samples.len() - 1],
    }
}

/// Size of the intersection of two sorted, duplicate-free lists.
fn count_common(a: &[u64], b: &[u64]) -> usize {
    let (mut i, mut j, mut n) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                n += 1;
                i += 1;
                j += 1;
            }
        }
    }
    n
}

/// Wake latency percentiles, in milliseconds.
#[derive(Debug, Default, Clone, Copy)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

/// Merges every poller's latency samples (µs).
pub fn latency(logs: &[PollerLog]) -> Latency {
    // 1 µs to 10 min at 3 significant digits.
    let Ok(mut h) = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3) else {
        return Latency::default();
    };
    for log in logs {
        for &us in &log.latencies_us {
            h.saturating_record(u64::from(us).max(1));
        }
    }
    let ms = |us: u64| us as f64 / 1000.0;
    Latency {
        count: h.len(),
        p50: ms(h.value_at_quantile(0.50)),
        p95: ms(h.value_at_quantile(0.95)),
        p99: ms(h.value_at_quantile(0.99)),
        p999: ms(h.value_at_quantile(0.999)),
        max: ms(h.max()),
    }
}

/// p99 wake latency (ms) of the events published in each `window` of the
/// run, oldest first; shows when in a run slow wakes happened.
pub fn p99_timeline(logs: &[PollerLog], window: std::time::Duration) -> Vec<f64> {
    let Some(start) = logs
        .iter()
        .filter_map(|l| l.published_ns.iter().min())
        .min()
        .copied()
    else {
        return Vec::new();
    };
    let width = window.as_nanos().max(1) as u64;
    let mut buckets: Vec<Vec<u32>> = Vec::new();
    for log in logs {
        for (&t, &us) in log.published_ns.iter().zip(&log.latencies_us) {
            let i = ((t - start) / width) as usize;
            if buckets.len() <= i {
                buckets.resize_with(i + 1, Vec::new);
            }
            buckets[i].push(us);
        }
    }
    buckets
        .into_iter()
        .map(|mut b| {
            if b.is_empty() {
                return 0.0;
            }
            b.sort_unstable();
            let rank = ((b.len() as f64) * 0.99).ceil() as usize;
            f64::from(b[rank.clamp(1, b.len()) - 1]) / 1000.0
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(org: u32, seqs: &[u64], out_of_order: u64) -> PollerLog {
        PollerLog {
            org,
            seqs: seqs.to_vec(),
            out_of_order,
            ..PollerLog::default()
        }
    }

    #[test]
    fn counts_lost_duplicated_and_unexpected() {
        let acked = vec![vec![1, 3, 5], vec![2, 4]];
        let logs = [
            log(0, &[1, 3, 5], 0),
            log(0, &[1, 3, 3, 5], 1),
            log(1, &[2], 0),
            log(1, &[2, 4, 9], 0),
        ];
        let v = verify(&acked, &logs);
        assert_eq!(v.expected, 3 + 3 + 2 + 2);
        assert_eq!(
            (v.lost, v.duplicated, v.out_of_order, v.unexpected),
            (1, 1, 1, 1)
        );
        assert_eq!(v.complete_pollers, 2);
        assert!(!v.exact());
    }

    #[test]
    fn plain_percentiles() {
        let mut v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let p = percentiles(&mut v);
        assert_eq!((p.count, p.p50, p.p99, p.max), (100, 50.0, 99.0, 100.0));
        assert_eq!(percentiles(&mut []).count, 0);
        let c = check(&[1, 2, 3], &log(0, &[1, 3, 3], 1));
        assert_eq!(
            (c.lost, c.pending, c.duplicated, c.out_of_order),
            (1, 0, 1, 1)
        );
        let behind = check(&[1, 2, 3, 4], &log(0, &[1, 2], 0));
        assert_eq!((behind.lost, behind.pending), (2, 2));
    }

    #[test]
    fn latency_percentiles() {
        let mut l = log(0, &[], 0);
        l.latencies_us = (1..=1000).map(|i| i * 10).collect();
        let lat = latency(&[l]);
        assert_eq!(lat.count, 1000);
        assert!(
            (lat.p50 - 5.0).abs() < 0.1
                && (lat.p99 - 9.9).abs() < 0.1
                && (lat.max - 10.0).abs() < 0.1
        );
    }

    #[test]
    fn timeline_buckets_by_publish_time() {
        let mut l = log(0, &[], 0);
        l.published_ns = vec![0, 1, 2_000_000_000, 2_000_000_001];
        l.latencies_us = vec![1000, 3000, 5000, 7000];
        let t = p99_timeline(&[l], std::time::Duration::from_secs(1));
        assert_eq!(t, vec![3.0, 0.0, 7.0]);
    }
}
