//! How often and how patiently a publish is retried: exponential backoff
//! with jitter, so that many publishers failing together do not retry in step.

use std::time::Duration;

/// Retry budget of one [`Publisher::publish`](crate::Publisher::publish) call.
///
/// Attempt `n` (counting from 1) that fails transiently is followed by a
/// sleep of `initial_backoff * 2^(n-1)`, capped at `max_backoff`, of which
/// the upper half is random.
///
/// Each attempt waits up to `ack_timeout`, so while NATS is unreachable the
/// defaults give up after roughly 8 × 5 s of waiting plus 5 s of backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Publish attempts in all, the first included; `0` counts as `1`.
    pub attempts: u32,
    /// Sleep after the first failed attempt (before jitter).
    pub initial_backoff: Duration,
    /// Longest sleep between two attempts.
    pub max_backoff: Duration,
    /// How long one attempt waits for the JetStream ack.
    pub ack_timeout: Duration,
}

impl Default for RetryPolicy {
    /// 8 attempts, backoff 50 ms doubling up to 2 s, ack timeout 5 s.
    fn default() -> Self {
        Self {
            attempts: 8,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            ack_timeout: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// A policy that tries once and never retries.
    pub fn no_retry() -> Self {
        Self {
            attempts: 1,
            ..Self::default()
        }
    }

    /// Attempts in all, at least one.
    pub fn max_attempts(&self) -> u32 {
        self.attempts.max(1)
    }

    /// Sleep after failed attempt `attempt` (1-based). `jitter` in `[0, 1]`
    /// picks a point in the upper half of the exponential delay ("equal
    /// jitter"): never shorter than half the nominal delay, never longer
    /// than it.
    pub fn backoff(&self, attempt: u32, jitter: f64) -> Duration {
        let exp = attempt.saturating_sub(1).min(31);
        let nominal = self
            .initial_backoff
            .saturating_mul(1u32 << exp)
            .min(self.max_backoff);
        let half = nominal / 2;
        half + half.mul_f64(jitter.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_matches_the_documented_budget() {
        let p = RetryPolicy::default();
        assert_eq!(p.attempts, 8);
        assert_eq!(p.initial_backoff, Duration::from_millis(50));
        assert_eq!(p.max_backoff, Duration::from_secs(2));
        assert_eq!(p.ack_timeout, Duration::from_secs(5));
    }

    #[test]
    fn backoff_doubles_until_the_cap() {
        let p = RetryPolicy::default();
        let full: Vec<u128> = (1..=8).map(|n| p.backoff(n, 1.0).as_millis()).collect();
        assert_eq!(full, [50, 100, 200, 400, 800, 1600, 2000, 2000]);
        let low: Vec<u128> = (1..=3).map(|n| p.backoff(n, 0.0).as_millis()).collect();
        assert_eq!(low, [25, 50, 100]);
        // Huge attempt numbers neither overflow nor exceed the cap.
        assert_eq!(p.backoff(u32::MAX, 0.5), Duration::from_millis(1500));
    }

    #[test]
    fn jitter_stays_in_the_upper_half() {
        let p = RetryPolicy::default();
        for j in [0.0, 0.25, 0.5, 0.99, 1.0, -3.0, 7.0] {
            let d = p.backoff(3, j);
            assert!(d >= Duration::from_millis(100) && d <= Duration::from_millis(200));
        }
    }

    #[test]
    fn zero_attempts_still_tries_once() {
        let p = RetryPolicy {
            attempts: 0,
            ..RetryPolicy::default()
        };
        assert_eq!(p.max_attempts(), 1);
        assert_eq!(RetryPolicy::no_retry().max_attempts(), 1);
    }
}
