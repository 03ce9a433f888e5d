//! A connection's timers in one value: the ping (and the silence check that
//! rides on it), the token's `refresh` and expiry, the retry of a failed
//! read, the end of a quarantine and the check of a blocked write.
//!
//! Invariant: [`Deadlines::next`] is the earliest instant at which
//! [`Deadlines::take_due`] has something to report, so the connection loop
//! waits on one `sleep_until(deadlines.next())`; `take_due` reports each
//! timer once per expiry (rescheduling the ping and the write check, clearing
//! the one-shot timers) except the token's expiry, which ends the connection.
//! Pure logic over [`Instant`]s: no task, no I/O.

use std::time::Duration;

use tokio::time::Instant;

/// How often a blocked write is checked again once it passed the slow-client timeout.
const SLOW_RECHECK: Duration = Duration::from_millis(500);
/// How long before the token's expiry the client is asked to renew it.
const REFRESH_BEFORE: Duration = Duration::from_secs(60);
/// Pings the client may leave unanswered (hearing nothing at all) before it is closed.
const SILENT_PINGS: u32 = 2;

/// What came due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Due {
    /// Send a ping.
    Ping,
    /// Nothing heard from the client for two pings: close it.
    Silent,
    /// The token expires within a minute: send `refresh`.
    Refresh,
    /// The token expired: close.
    Expired,
    /// Read the stream again after a failed read.
    Retry,
    /// The quarantine period ended.
    QuarantineOver,
    /// A write is blocked past the slow-client timeout: check whether the
    /// connection fell behind.
    SlowWrite,
}

/// The timers of one connection.
#[derive(Debug)]
pub(super) struct Deadlines {
    ping_every: Duration,
    next_ping: Instant,
    last_heard: Instant,
    /// `None` once sent, until a renewed token.
    refresh: Option<Instant>,
    expires: Instant,
    retry: Option<Instant>,
    quarantine: Option<Instant>,
    slow_after: Duration,
    /// When the write in flight started.
    writing_since: Option<Instant>,
    /// No write check before this (after one found nothing lost).
    recheck: Instant,
}

impl Deadlines {
    /// Timers of a connection accepted at `now` whose token expires in
    /// `token_left`; it pings every `ping_every` and a write blocked for
    /// `slow_after` gets checked.
    pub(super) fn new(
        now: Instant,
        ping_every: Duration,
        slow_after: Duration,
        token_left: Duration,
    ) -> Self {
        let mut d = Self {
            ping_every,
            next_ping: now + ping_every,
            last_heard: now,
            refresh: None,
            expires: now,
            retry: None,
            quarantine: None,
            slow_after,
            writing_since: None,
            recheck: now,
        };
        d.token(now, token_left);
        d
    }

    /// The earliest instant something comes due.
    pub(super) fn next(&self) -> Instant {
        [
            Some(self.next_ping),
            self.refresh,
            Some(self.expires),
            self.retry,
            self.quarantine,
            self.write_check(),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(self.expires)
    }

    /// What is due at `now`, one at a time, in this order: ping, refresh,
    /// expiry, retry, quarantine, write check.
    pub(super) fn take_due(&mut self, now: Instant) -> Option<Due> {
        if now >= self.next_ping {
            // Like an interval that delays missed ticks.
            self.next_ping = now + self.ping_every;
            let silent = now.saturating_duration_since(self.last_heard);
            return Some(if silent > self.ping_every * SILENT_PINGS {
                Due::Silent
            } else {
                Due::Ping
            });
        }
        if self.refresh.is_some_and(|t| now >= t) {
            self.refresh = None;
            return Some(Due::Refresh);
        }
        if now >= self.expires {
            return Some(Due::Expired);
        }
        if self.retry.is_some_and(|t| now >= t) {
            self.retry = None;
            return Some(Due::Retry);
        }
        if self.quarantine.is_some_and(|t| now >= t) {
            self.quarantine = None;
            return Some(Due::QuarantineOver);
        }
        if self.write_check().is_some_and(|t| now >= t) {
            self.recheck = now + SLOW_RECHECK;
            return Some(Due::SlowWrite);
        }
        None
    }

    /// The client was heard from (any frame counts as a pong).
    pub(super) fn heard(&mut self, now: Instant) {
        self.last_heard = now;
    }

    /// A (renewed) token that expires in `left`: `refresh` a minute before.
    pub(super) fn token(&mut self, now: Instant, left: Duration) {
        self.expires = now + left;
        self.refresh = Some(now + left.saturating_sub(REFRESH_BEFORE));
    }

    /// Read again after `pause`.
    pub(super) fn retry_in(&mut self, now: Instant, pause: Duration) {
        self.retry = Some(now + pause);
    }

    /// Waiting to read again.
    pub(super) fn retrying(&self) -> bool {
        self.retry.is_some()
    }

    /// Quarantined for `period`.
    pub(super) fn quarantine(&mut self, now: Instant, period: Duration) {
        self.quarantine = Some(now + period);
    }

    /// In quarantine.
    pub(super) fn quarantined(&self) -> bool {
        self.quarantine.is_some()
    }

    /// The write in flight and when it started (`None`: nothing in flight).
    pub(super) fn writing(&mut self, since: Option<Instant>) {
        self.writing_since = since;
    }

    fn write_check(&self) -> Option<Instant> {
        self.writing_since
            .map(|since| (since + self.slow_after).max(self.recheck))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PING: Duration = Duration::from_secs(30);
    const SLOW: Duration = Duration::from_secs(10);
    const HOUR: Duration = Duration::from_secs(3600);

    /// Advances the paused clock to the next deadline and takes what is due.
    async fn next_due(d: &mut Deadlines) -> (Duration, Option<Due>) {
        let start = Instant::now();
        tokio::time::sleep_until(d.next()).await;
        (start.elapsed(), d.take_due(Instant::now()))
    }

    #[tokio::test(start_paused = true)]
    async fn pings_every_interval_and_closes_a_client_silent_for_two() {
        let mut d = Deadlines::new(Instant::now(), PING, SLOW, HOUR);
        assert_eq!(next_due(&mut d).await, (PING, Some(Due::Ping)));
        d.heard(Instant::now());
        assert_eq!(next_due(&mut d).await, (PING, Some(Due::Ping)));
        // Heard at 30 s; at 90 s that is 60 s ago: not more than two pings.
        assert_eq!(next_due(&mut d).await, (PING, Some(Due::Ping)));
        assert_eq!(next_due(&mut d).await, (PING, Some(Due::Silent)));
    }

    #[tokio::test(start_paused = true)]
    async fn refresh_comes_a_minute_before_expiry_once_per_token() {
        let now = Instant::now();
        let mut d = Deadlines::new(now, HOUR, SLOW, Duration::from_secs(90));
        assert_eq!(
            next_due(&mut d).await,
            (Duration::from_secs(30), Some(Due::Refresh))
        );
        assert_eq!(
            next_due(&mut d).await,
            (Duration::from_secs(60), Some(Due::Expired))
        );
        assert_eq!(d.take_due(Instant::now()), Some(Due::Expired), "stays due");

        // A renewed token moves both; a short one is refreshed at once.
        let mut d = Deadlines::new(Instant::now(), HOUR, SLOW, Duration::from_secs(10));
        assert_eq!(d.take_due(Instant::now()), Some(Due::Refresh));
        d.token(Instant::now(), Duration::from_secs(120));
        assert_eq!(
            next_due(&mut d).await,
            (Duration::from_secs(60), Some(Due::Refresh))
        );
        assert_eq!(
            next_due(&mut d).await,
            (Duration::from_secs(60), Some(Due::Expired))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retry_and_quarantine_fire_once() {
        let mut d = Deadlines::new(Instant::now(), HOUR, SLOW, 2 * HOUR);
        let _ = d.take_due(Instant::now());
        assert!(!d.retrying() && !d.quarantined());
        d.retry_in(Instant::now(), Duration::from_secs(1));
        d.quarantine(Instant::now(), Duration::from_secs(5));
        assert!(d.retrying() && d.quarantined());
        assert_eq!(
            next_due(&mut d).await,
            (Duration::from_secs(1), Some(Due::Retry))
        );
        assert!(!d.retrying());
        assert_eq!(
            next_due(&mut d).await,
            (Duration::from_secs(4), Some(Due::QuarantineOver))
        );
        assert!(!d.quarantined());
        assert_eq!(d.take_due(Instant::now()), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_blocked_write_is_checked_after_the_timeout_then_every_half_second() {
        let mut d = Deadlines::new(Instant::now(), HOUR, SLOW, 2 * HOUR);
        let _ = d.take_due(Instant::now());
        d.writing(Some(Instant::now()));
        assert_eq!(next_due(&mut d).await, (SLOW, Some(Due::SlowWrite)));
        assert_eq!(next_due(&mut d).await, (SLOW_RECHECK, Some(Due::SlowWrite)));
        // The write completes: no more checks.
        d.writing(None);
        assert!(d.next() > Instant::now() + SLOW);
        // A later write gets its full timeout.
        tokio::time::advance(Duration::from_secs(1)).await;
        d.writing(Some(Instant::now()));
        assert_eq!(next_due(&mut d).await, (SLOW, Some(Due::SlowWrite)));
    }

    #[tokio::test(start_paused = true)]
    async fn one_sleep_serves_every_timer_in_time_order() {
        let start = Instant::now();
        let mut d = Deadlines::new(start, PING, SLOW, Duration::from_secs(100));
        d.retry_in(start, Duration::from_secs(3));
        d.quarantine(start, Duration::from_secs(7));
        d.writing(Some(start));
        let mut seen = Vec::new();
        while seen.last().map(|&(_, due)| due) != Some(Due::Expired) {
            tokio::time::sleep_until(d.next()).await;
            let now = Instant::now();
            let due = d.take_due(now).expect("next() is when something is due");
            seen.push(((now - start).as_secs(), due));
            match due {
                Due::SlowWrite => d.writing(None),
                Due::Ping => d.heard(now),
                _ => {}
            }
        }
        assert_eq!(
            seen,
            vec![
                (3, Due::Retry),
                (7, Due::QuarantineOver),
                (10, Due::SlowWrite),
                (30, Due::Ping),
                (40, Due::Refresh),
                (60, Due::Ping),
                (90, Due::Ping),
                (100, Due::Expired),
            ]
        );
    }
}
