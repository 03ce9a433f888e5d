//! Publishing at a steady rate: event `n` is due at `start + n / rate`, so
//! rounding never accumulates into drift. A publisher that falls more than
//! [`MAX_LAG`] behind (slow acks, a NATS outage) drops the backlog and
//! restarts the schedule instead of bursting to catch up.

use std::time::Duration;

use tokio::time::Instant;

/// How far behind schedule the pacer may fall before it gives up catching up.
pub const MAX_LAG: Duration = Duration::from_secs(1);

/// The time between two events at `rate` events per second.
pub fn interval(rate: f64) -> Duration {
    Duration::from_secs_f64(1.0 / rate)
}

/// Schedules events at a fixed rate.
#[derive(Debug, Clone)]
pub struct Pacer {
    start: Instant,
    interval: Duration,
    sent: u64,
}

impl Pacer {
    /// A schedule of `rate` events per second (validated positive and
    /// finite by the caller), the first due at `start`.
    pub fn new(rate: f64, start: Instant) -> Self {
        Self {
            start,
            interval: interval(rate),
            sent: 0,
        }
    }

    /// When the next event is due, as seen at `now`. Falling more than
    /// [`MAX_LAG`] behind restarts the schedule at `now`.
    pub fn next_due(&mut self, now: Instant) -> Instant {
        let due = self.due(self.sent);
        if now > due + MAX_LAG {
            self.start = now;
            self.sent = 0;
            return now;
        }
        due
    }

    /// Records that the due event was sent.
    pub fn sent(&mut self) {
        self.sent += 1;
    }

    /// When event `n` (0-based) of the current schedule is due.
    fn due(&self, n: u64) -> Instant {
        self.start + self.interval.mul_f64(n as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_is_the_inverse_of_the_rate() {
        assert_eq!(interval(5.0), Duration::from_millis(200));
        assert_eq!(interval(0.5), Duration::from_secs(2));
        assert_eq!(interval(1000.0), Duration::from_millis(1));
    }

    #[test]
    fn deadlines_do_not_drift() {
        let t0 = Instant::now();
        let mut p = Pacer::new(3.0, t0);
        let mut due = t0;
        for _ in 0..300 {
            due = p.next_due(due);
            p.sent();
        }
        // Event 299 is due at 299/3 s; 1/3 s summed 299 times would drift.
        let expected = Duration::from_secs_f64(299.0 / 3.0);
        let got = due - t0;
        assert!(got.abs_diff(expected) < Duration::from_micros(1), "{got:?}");
    }

    #[test]
    fn falling_far_behind_restarts_the_schedule() {
        let t0 = Instant::now();
        let mut p = Pacer::new(10.0, t0);
        assert_eq!(p.next_due(t0), t0);
        p.sent();
        // Slightly late: stay on schedule (the next event is already due).
        let late = t0 + Duration::from_millis(500);
        assert_eq!(p.next_due(late), t0 + Duration::from_millis(100));
        p.sent();
        // Far behind: no burst of 30 events, start again from now.
        let stalled = t0 + Duration::from_secs(3);
        assert_eq!(p.next_due(stalled), stalled);
        p.sent();
        assert_eq!(p.next_due(stalled), stalled + Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn sends_rate_times_seconds_events() {
        let start = Instant::now();
        let end = start + Duration::from_secs(10);
        let mut p = Pacer::new(5.0, start);
        let mut sent = 0;
        loop {
            let due = p.next_due(Instant::now());
            if due >= end {
                break;
            }
            tokio::time::sleep_until(due).await;
            sent += 1;
            p.sent();
        }
        assert_eq!(sent, 50);
    }
}
