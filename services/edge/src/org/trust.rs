//! How far an org's live feed is trusted, and when it is audited next.
//!
//! Invariant: a live message is appended as it comes only while the feed is
//! [`Trust::Trusted`], that is after a read of the stream up to a head
//! sampled after the last possible loss (and, for a new subscription, after
//! [`UNPROVEN_AUDITS`] such reads spread over about two seconds, since the
//! servers may not route the subject here at first). Everything else is
//! read from the stream. Pure logic: the feed task in
//! [`feed`](crate::org::feed) does the reads and reports back.

use std::time::Duration;

use tokio::time::Instant;

/// Audit delays after a subscription, before the org is trusted to receive
/// every live message.
pub const UNPROVEN_AUDITS: [Duration; 3] = [
    Duration::from_millis(100),
    Duration::from_millis(400),
    Duration::from_millis(1500),
];
/// Wait before retrying a failed read.
pub const RETRY: Duration = Duration::from_secs(1);

/// How far an org's live feed is trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// Just subscribed: the server may not route the live subject to this
    /// node yet, so every live message is checked against the stream (read
    /// up to it) before it is appended.
    Unproven {
        /// Start-up audits done so far.
        step: usize,
    },
    /// A loss was marked: nothing live is appended until the stream was
    /// read up to a head sampled after the mark.
    Recovering,
    /// Every live message is appended as it comes: nothing was lost since
    /// the last proof.
    Trusted,
}

/// What to do with one live message the buffer does not hold yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveAction {
    /// Append it.
    Append,
    /// Read the stream up to just before it (the previous event on its
    /// subject was missed), then append it.
    FillThenAppend,
    /// Read the stream up to it (and the rest of its batch): the read
    /// appends it.
    ReadThrough,
    /// Leave it: the read that ends recovery covers it.
    Skip,
}

/// Which head an audit reads up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditHead {
    /// One sampled now: the events the feed may have missed are recent.
    Fresh,
    /// The periodic sample before the latest (one to two intervals old),
    /// whose events have long arrived live: the audit usually reads nothing.
    Aged,
}

/// One org's feed: its trust and its next audit.
#[derive(Debug)]
pub struct Feed {
    trust: Trust,
    next_audit: Instant,
    jitter: fn(Duration) -> Duration,
}

/// `interval` ±20 %, so orgs created together do not audit together.
pub fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(rand::random_range(0.8..1.2))
}

impl Feed {
    /// A new subscription: unproven, first audit after [`UNPROVEN_AUDITS`]`[0]`
    /// with jitter.
    pub fn new() -> Self {
        Self::with_jitter(jittered)
    }

    /// As [`Feed::new`], with `jitter` applied to every delay.
    pub fn with_jitter(jitter: fn(Duration) -> Duration) -> Self {
        Self {
            trust: Trust::Unproven { step: 0 },
            next_audit: Instant::now() + jitter(UNPROVEN_AUDITS[0]),
            jitter,
        }
    }

    /// The current trust.
    pub fn trust(&self) -> Trust {
        self.trust
    }

    /// When the next audit is due.
    pub fn next_audit(&self) -> Instant {
        self.next_audit
    }

    /// The head the next audit must read up to.
    pub fn audit_head(&self) -> AuditHead {
        if self.trust == Trust::Trusted {
            AuditHead::Aged
        } else {
            AuditHead::Fresh
        }
    }

    /// What to do with a live message; `missed_on_subject` when the
    /// previous event on its subject is newer than what the buffer holds.
    pub fn on_live(&self, missed_on_subject: bool) -> LiveAction {
        match self.trust {
            Trust::Recovering => LiveAction::Skip,
            Trust::Unproven { .. } => LiveAction::ReadThrough,
            Trust::Trusted if missed_on_subject => LiveAction::FillThenAppend,
            Trust::Trusted => LiveAction::Append,
        }
    }

    /// A loss was marked: recover at once (a feed still unproven stays so).
    pub fn lost(&mut self) {
        if self.trust == Trust::Trusted {
            self.trust = Trust::Recovering;
        }
        self.next_audit = Instant::now();
    }

    /// A read of the stream up to a head sampled after the last mark
    /// succeeded; the next audit is `interval` away once trusted.
    pub fn audited(&mut self, interval: Duration) {
        if let Trust::Unproven { step } = self.trust {
            if step + 1 < UNPROVEN_AUDITS.len() {
                self.trust = Trust::Unproven { step: step + 1 };
                self.next_audit = Instant::now() + (self.jitter)(UNPROVEN_AUDITS[step + 1]);
                return;
            }
        }
        self.trust = Trust::Trusted;
        self.next_audit = Instant::now() + (self.jitter)(interval);
    }

    /// A read of the stream failed: try again after [`RETRY`], trusting
    /// nothing new.
    pub fn failed(&mut self) {
        if self.trust == Trust::Trusted {
            self.trust = Trust::Recovering;
        }
        self.next_audit = Instant::now() + RETRY;
    }
}

impl Default for Feed {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_secs(10);

    fn exact(d: Duration) -> Duration {
        d
    }

    fn due_in(f: &Feed) -> Duration {
        f.next_audit().saturating_duration_since(Instant::now())
    }

    fn trusted() -> Feed {
        let mut f = Feed::with_jitter(exact);
        for _ in 0..UNPROVEN_AUDITS.len() {
            f.audited(INTERVAL);
        }
        f
    }

    #[tokio::test(start_paused = true)]
    async fn a_feed_is_proven_by_three_start_up_audits_spread_over_two_seconds() {
        let start = Instant::now();
        let mut f = Feed::with_jitter(exact);
        let mut audits = Vec::new();
        while f.trust() != Trust::Trusted {
            assert_eq!(f.on_live(false), LiveAction::ReadThrough);
            assert_eq!(f.audit_head(), AuditHead::Fresh);
            tokio::time::sleep_until(f.next_audit()).await;
            audits.push(start.elapsed());
            f.audited(INTERVAL);
        }
        assert_eq!(
            audits,
            [
                Duration::from_millis(100),
                Duration::from_millis(500),
                Duration::from_millis(2000)
            ]
        );
        assert_eq!(f.on_live(false), LiveAction::Append);
        assert_eq!(f.on_live(true), LiveAction::FillThenAppend);
        assert_eq!(f.audit_head(), AuditHead::Aged);
        assert_eq!(due_in(&f), INTERVAL);
    }

    #[tokio::test(start_paused = true)]
    async fn a_loss_mark_distrusts_the_feed_until_a_read_succeeds() {
        let mut f = trusted();
        tokio::time::advance(Duration::from_secs(3)).await;
        f.lost();
        assert_eq!(f.trust(), Trust::Recovering);
        assert_eq!(due_in(&f), Duration::ZERO, "recovery starts at once");
        assert_eq!(f.on_live(false), LiveAction::Skip);
        assert_eq!(f.on_live(true), LiveAction::Skip);
        assert_eq!(f.audit_head(), AuditHead::Fresh);

        f.failed();
        assert_eq!(
            f.trust(),
            Trust::Recovering,
            "a failed read trusts nothing new"
        );
        assert_eq!(due_in(&f), RETRY);

        tokio::time::advance(RETRY).await;
        f.audited(INTERVAL);
        assert_eq!(f.trust(), Trust::Trusted);
        assert_eq!(due_in(&f), INTERVAL);
    }

    #[tokio::test(start_paused = true)]
    async fn a_trusted_feed_whose_read_fails_stops_trusting_live_messages() {
        let mut f = trusted();
        f.failed();
        assert_eq!(f.trust(), Trust::Recovering);
        assert_eq!(f.on_live(false), LiveAction::Skip);
        assert_eq!(due_in(&f), RETRY);
    }

    #[tokio::test(start_paused = true)]
    async fn a_mark_during_start_up_keeps_the_start_up_checks_and_their_step() {
        let mut f = Feed::with_jitter(exact);
        f.audited(INTERVAL);
        f.lost();
        assert_eq!(f.trust(), Trust::Unproven { step: 1 });
        assert_eq!(due_in(&f), Duration::ZERO);
        assert_eq!(f.on_live(false), LiveAction::ReadThrough);
        f.failed();
        assert_eq!(f.trust(), Trust::Unproven { step: 1 });
        assert_eq!(due_in(&f), RETRY);
    }

    #[tokio::test(start_paused = true)]
    async fn start_up_audits_are_jittered_within_twenty_percent() {
        let firsts: std::collections::BTreeSet<u128> =
            (0..20).map(|_| due_in(&Feed::new()).as_micros()).collect();
        assert!(
            firsts.len() > 1,
            "orgs created together must not audit together"
        );
        let first = UNPROVEN_AUDITS[0].as_micros();
        assert!(
            firsts
                .iter()
                .all(|us| *us >= first * 8 / 10 && *us <= first * 12 / 10),
            "{firsts:?}"
        );
    }
}
