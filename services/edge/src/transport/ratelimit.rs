//! Per-key token buckets: `rate` tokens a second, at most `burst` saved up.
//! A key's bucket is created on its first call; buckets that have refilled
//! completely carry no information and are dropped when the map reaches its
//! bound, so the map stays bounded whatever keys clients invent. When it is
//! full of busy keys, a new key is refused rather than grow it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Keys tracked at once before full buckets are swept out.
const MAX_KEYS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets by key.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    max_keys: usize,
    buckets: Mutex<HashMap<(String, String), Bucket>>,
}

impl RateLimiter {
    /// `rate` calls a second per key, with bursts of `burst`.
    pub fn new(rate: u32, burst: u32) -> Self {
        Self::with_max_keys(rate, burst, MAX_KEYS)
    }

    fn with_max_keys(rate: u32, burst: u32, max_keys: usize) -> Self {
        Self {
            rate: f64::from(rate.max(1)),
            burst: f64::from(burst.max(1)),
            max_keys,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `(org, user)`; `Err` holds how long until one is free.
    pub fn check(&self, org: &str, user: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let key = (org.to_owned(), user.to_owned());
        if !map.contains_key(&key) && map.len() >= self.max_keys {
            let (rate, burst) = (self.rate, self.burst);
            map.retain(|_, b| refill(b, now, rate, burst) < burst);
            if map.len() >= self.max_keys {
                return Err(Duration::from_secs(1));
            }
        }
        let bucket = map.entry(key).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let tokens = refill(bucket, now, self.rate, self.burst);
        if tokens >= 1.0 {
            bucket.tokens = tokens - 1.0;
            bucket.at = now;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - tokens) / self.rate))
        }
    }
}

/// Tokens in `b` at `now`, without changing it.
fn refill(b: &Bucket, now: Instant, rate: f64, burst: f64) -> f64 {
    let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
    (b.tokens + elapsed * rate).min(burst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn allows_a_burst_then_the_rate() {
        let l = RateLimiter::new(10, 20);
        for _ in 0..20 {
            assert!(l.check("acme", "u1").is_ok());
        }
        let wait = l.check("acme", "u1").expect_err("limited");
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        assert!(l.check("acme", "u2").is_ok(), "users have their own budget");
        assert!(
            l.check("globex", "u1").is_ok(),
            "orgs have their own budget"
        );
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(l.check("acme", "u1").is_ok());
        assert!(l.check("acme", "u1").is_err());
        tokio::time::advance(Duration::from_secs(10)).await;
        for _ in 0..20 {
            assert!(l.check("acme", "u1").is_ok());
        }
        assert!(l.check("acme", "u1").is_err(), "the burst never grows");
    }

    #[tokio::test(start_paused = true)]
    async fn stays_bounded_under_many_keys() {
        let l = RateLimiter::with_max_keys(1, 2, 3);
        for u in ["a", "b", "c"] {
            assert!(l.check("o", u).is_ok());
        }
        // Every bucket is in use: a new key is refused, not added.
        assert!(l.check("o", "d").is_err());
        tokio::time::advance(Duration::from_secs(2)).await;
        // Now they have refilled and carry nothing: swept out.
        assert!(l.check("o", "d").is_ok());
        assert_eq!(l.buckets.lock().expect("ok").len(), 1);
    }
}
