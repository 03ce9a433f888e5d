//! What both scenarios report alike: the polls opened and their memory,
//! the publishes, the deliveries checked against the acks, wake latency,
//! the edge's own counters and where the CPU went.

use crate::poller::PollerLog;
use crate::probe::EdgeMetrics;
use crate::procfs::CpuUse;
use crate::publish::Published;
use crate::report::{opt1, Goal, Report};
use crate::session::Opening;
use crate::verify::{latency, p99_timeline, verify, Latency, Verdict};

/// Width of the windows of the p99 timeline.
const TIMELINE_WINDOW: std::time::Duration = std::time::Duration::from_secs(5);

/// Memory per held poll the edge should stay within, KiB.
pub const GOAL_KIB_PER_POLL: f64 = 16.0;
/// Held polls and orgs the edge should carry.
pub const GOAL_POLLS: u64 = 10_000;
/// Orgs those polls should be spread over.
pub const GOAL_ORGS: usize = 2_000;

/// The results common to both scenarios.
pub struct Outcome {
    /// Opening the polls.
    pub opening: Opening,
    /// Publishing.
    pub published: Published,
    /// Deliveries against acks.
    pub verdict: Verdict,
    /// Wake latency.
    pub latency: Latency,
    /// p99 wake latency per 5 s of publish time, ms.
    pub timeline: Vec<f64>,
    /// Edge metrics before publishing.
    pub before: EdgeMetrics,
    /// Edge metrics after the pollers caught up (or gave up).
    pub after: EdgeMetrics,
    /// CPU use while publishing and delivering.
    pub cpu: CpuUse,
    /// Every poller received the last stored event of its org in time.
    pub caught_up: bool,
    /// Edge `VmRSS` at the end, KiB.
    pub rss_end_kib: Option<u64>,
    /// Polls answered, failed, reset.
    pub polls: (u64, u64, u64),
    /// The first poll failure seen.
    pub first_error: Option<String>,
}

impl Outcome {
    /// Checks the pollers' logs and gathers the figures.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        opening: Opening,
        published: Published,
        logs: &[PollerLog],
        before: EdgeMetrics,
        after: EdgeMetrics,
        cpu: CpuUse,
        caught_up: bool,
        rss_end_kib: Option<u64>,
    ) -> Self {
        let verdict = verify(&published.acked, logs);
        let latency = latency(logs);
        let timeline = p99_timeline(logs, TIMELINE_WINDOW);
        let polls = logs.iter().fold((0, 0, 0), |(a, f, r), l| {
            (a + l.polls, f + l.errors, r + l.resets)
        });
        let first_error = logs.iter().find_map(|l| l.first_error.clone());
        Self {
            opening,
            published,
            verdict,
            latency,
            timeline,
            before,
            after,
            cpu,
            caught_up,
            rss_end_kib,
            polls,
            first_error,
        }
    }

    /// Adds the figures and the goals both scenarios share.
    pub fn add_to(&self, r: &mut Report) {
        let o = &self.opening;
        let v = &self.verdict;
        let p = &self.published;
        let l = &self.latency;
        r.figure(
            "held polls (edge `waiters`)",
            format!("{} of {} over {} orgs", o.held, o.polls, o.orgs),
        );
        r.figure(
            "time to open all polls",
            format!("{:.1} s", o.ramp.as_secs_f64()),
        );
        r.figure(
            "edge VmRSS: before polls / all held / end",
            format!(
                "{} / {} / {} MiB",
                mib(o.rss_base_kib),
                mib(o.rss_held_kib),
                mib(self.rss_end_kib)
            ),
        );
        r.figure(
            "edge memory per held poll",
            format!("{} KiB", opt1(o.kib_per_poll())),
        );
        r.figure(
            "load generator VmRSS with all held",
            format!("{} MiB", mib(o.loadgen_rss_kib)),
        );
        r.figure(
            "events published: sent / stored / duplicate / failed",
            format!(
                "{} / {} / {} / {}",
                p.sent, p.stored, p.duplicates, p.errors
            ),
        );
        if let Some(e) = &p.first_error {
            r.figure("first publish failure", e.clone());
        }
        r.figure(
            "deliveries owed / received",
            format!(
                "{} / {} ({} of {} pollers exact)",
                v.expected, v.received, v.complete_pollers, v.pollers
            ),
        );
        r.figure(
            "lost / duplicated / out of order / unexpected",
            format!(
                "{} / {} / {} / {}",
                v.lost, v.duplicated, v.out_of_order, v.unexpected
            ),
        );
        r.figure(
            "every poller caught up",
            if self.caught_up { "yes" } else { "no" },
        );
        r.figure(
            "wake latency p50 / p95 / p99 / p99.9 / max",
            format!(
                "{:.2} / {:.2} / {:.2} / {:.2} / {:.2} ms ({} samples)",
                l.p50, l.p95, l.p99, l.p999, l.max, l.count
            ),
        );
        let timeline: Vec<String> = self.timeline.iter().map(|ms| format!("{ms:.1}")).collect();
        r.figure("p99 per 5 s of publishing (ms)", timeline.join(" "));
        let (answered, failed, resets) = self.polls;
        r.figure(
            "polls answered / failed / reset",
            format!("{answered} / {failed} / {resets}"),
        );
        if let Some(e) = &self.first_error {
            r.figure("first poll failure", e.clone());
        }
        let (b, a) = (&self.before, &self.after);
        r.figure(
            "edge counters during the run",
            format!(
                "delivered {}, rejected {}, gaps filled {}, history reads {}, resets {}, waiter-cap hits {}",
                a.delivered - b.delivered.min(a.delivered),
                a.rejected.saturating_sub(b.rejected),
                a.gaps_filled.saturating_sub(b.gaps_filled),
                a.history_reads.saturating_sub(b.history_reads),
                a.resets.saturating_sub(b.resets),
                a.waiter_cap_hits.saturating_sub(b.waiter_cap_hits)
            ),
        );
        let c = &self.cpu;
        r.figure(
            "CPU while publishing (% of one core)",
            format!(
                "edge {}, nats-server {}, loadgen {}, everything else {}; machine busy {} % of all cores",
                opt1(c.edge),
                opt1(c.nats),
                opt1(c.loadgen),
                opt1(c.others),
                opt1(c.machine_busy)
            ),
        );
        r.goal(Goal::new(
            "held long-polls",
            &format!("{GOAL_POLLS} across {GOAL_ORGS} orgs"),
            format!("{} across {}", o.held, o.orgs),
            Some(o.held >= GOAL_POLLS && o.orgs >= GOAL_ORGS),
        ));
        r.goal(Goal::new(
            "edge memory per held poll",
            &format!("≤ {GOAL_KIB_PER_POLL} KiB"),
            format!("{} KiB", opt1(o.kib_per_poll())),
            o.kib_per_poll().map(|k| k <= GOAL_KIB_PER_POLL),
        ));
        r.goal(Goal::new(
            "every event to every poller of its org, once, in order",
            "0 lost, 0 duplicated, 0 reordered",
            format!(
                "{} lost, {} duplicated, {} reordered",
                v.lost, v.duplicated, v.out_of_order
            ),
            Some(v.exact() && v.expected > 0),
        ));
    }
}

fn mib(kib: Option<u64>) -> String {
    opt1(kib.map(|k| k as f64 / 1024.0))
}
