//! `herald-loadgen fanout`: K WebSocket connections, all in one org, each
//! its own user. Events are published at increasing rates, one step per
//! rate; a rate is *sustained* when every connection has every event of the
//! step within `--grace` after the last publish ack, with nothing lost,
//! repeated or reordered and no connection dropped. After the first rate
//! that is not, `--refine` more rates bisect towards it. Between steps every
//! connection catches up completely, so each step is checked on its own.

use std::time::Duration;

use tokio::time::Instant;

use crate::cli::FanoutArgs;
use crate::error::LoadError;
use crate::fleet::Fleet;
use crate::probe::EdgeMetrics;
use crate::procfs::{self, CpuSnapshot, CpuUse};
use crate::publish::{Pace, Publisher};
use crate::report::{opt1, Goal, Report};
use crate::streaming::{self, Mix, Placement, Running, Scenario, StreamTarget};
use crate::verify::{self, Latency, Verdict};

/// Connections of one org the goal names.
const GOAL_CONNECTIONS: usize = 5_000;
/// A step's publishing must reach this share of its rate to count.
const RATE_SHARE: f64 = 0.98;

/// One rate tried.
struct Step {
    rate: f64,
    achieved: f64,
    stored: u64,
    publish_errors: u64,
    /// From the last publish ack until every connection had everything.
    catch_up: Option<Duration>,
    /// From the first publish until every connection had everything (or gave up).
    window: Duration,
    verdict: Verdict,
    latency: Latency,
    disconnects: u64,
    /// Why connections ended during the step.
    reasons: String,
    slow_closes: u64,
    history_reads: u64,
    /// Connections quarantined when the step ended.
    quarantined: u64,
    cpu: CpuUse,
    sustained: bool,
}

impl Step {
    fn deliveries_per_s(&self) -> f64 {
        self.verdict.received as f64 / self.window.as_secs_f64().max(1e-3)
    }
}

/// Runs the scenario.
pub async fn run(args: FanoutArgs) -> Result<Report, LoadError> {
    if args.clients == 0 || args.step_duration == 0 || args.rates.is_empty() {
        return Err(LoadError::Setup(
            "--clients, --step-duration and --rates must not be empty or zero".into(),
        ));
    }
    if args.rates.iter().any(|r| !r.is_finite() || *r <= 0.0)
        || args.rates.windows(2).any(|w| w[1] <= w[0])
        || !args.grace.is_finite()
        || args.grace < 0.0
    {
        return Err(LoadError::Setup(
            "--rates must be positive and increasing, --grace not negative".into(),
        ));
    }
    let edges = streaming::planned_edges(&args.target);
    let Running {
        st,
        mut publisher,
        fleet,
        opening,
        load_start,
    } = Scenario {
        target: &args.target,
        prefix: &args.prefix,
        clients: args.clients,
        orgs: vec![format!("{}-fanout", args.prefix)],
        services: &args.services,
        mix: Mix::WEBSOCKET,
        placement: Placement::Spread,
        connect_concurrency: args.connect_concurrency,
    }
    .start()
    .await?;

    let mut steps: Vec<Step> = Vec::new();
    let mut last_ok: Option<f64> = None;
    let mut first_bad: Option<f64> = None;
    let mut queue: Vec<f64> = args.rates.clone();
    queue.reverse();
    let mut refinements = 0;
    let mut healthy = true;
    while healthy {
        let rate = match queue.pop() {
            Some(r) => r,
            None => match (last_ok, first_bad) {
                (Some(ok), Some(bad)) if refinements < args.refine => {
                    let mid = ((ok + bad) / 2.0).round();
                    if mid <= ok || mid >= bad {
                        break;
                    }
                    refinements += 1;
                    mid
                }
                _ => break,
            },
        };
        let (step, drained) = run_step(&st, &fleet, &mut publisher, &args, rate).await?;
        eprintln!(
            "herald-loadgen: {rate} events/s: {} ({:.0} deliveries/s, p99 {:.1} ms)",
            if step.sustained {
                "sustained"
            } else {
                "NOT sustained"
            },
            step.deliveries_per_s(),
            step.latency.p99
        );
        if step.sustained {
            last_ok = Some(last_ok.map_or(rate, |r: f64| r.max(rate)));
        } else {
            first_bad = Some(first_bad.map_or(rate, |r: f64| r.min(rate)));
            queue.clear();
        }
        steps.push(step);
        healthy = drained;
    }
    let load_end = procfs::loadavg();
    streaming::finish(st, fleet, args.output.logs.as_deref()).await?;

    let title = args.output.title.clone().unwrap_or_else(|| {
        format!(
            "fanout: {} connections in one org on {edges} edge(s), {} s per rate",
            args.clients, args.step_duration
        )
    });
    let mut r = Report::new(title);
    streaming::add_opening(&mut r, &opening);
    steps.sort_by(|a, b| a.rate.total_cmp(&b.rate));
    for s in &steps {
        let v = &s.verdict;
        let l = &s.latency;
        r.figure(
            &format!("{} events/s", s.rate),
            format!(
                "{}: {} stored at {:.0}/s; {} deliveries at {:.0}/s; caught up {} after the last ack; \
                 latency p50 {:.1} / p99 {:.1} / max {:.1} ms; lost {} (not yet arrived {}) dup {} reordered {}; \
                 disconnects {} ({}), slow-consumer closes {}, quarantined at the end {}, history reads {}; \
                 CPU edge {} nats {} loadgen {} other {} %",
                if s.sustained { "sustained" } else { "not sustained" },
                s.stored,
                s.achieved,
                v.received,
                s.deliveries_per_s(),
                s.catch_up
                    .map_or_else(|| "not".to_owned(), |d| format!("{:.2} s", d.as_secs_f64())),
                l.p50,
                l.p99,
                l.max,
                v.lost,
                v.pending,
                v.duplicated,
                v.out_of_order,
                s.disconnects,
                s.reasons,
                s.slow_closes,
                s.quarantined,
                s.history_reads,
                opt1(s.cpu.edge),
                opt1(s.cpu.nats),
                opt1(s.cpu.loadgen),
                opt1(s.cpu.others),
            ),
        );
        if s.publish_errors > 0 {
            r.figure(
                &format!("{} events/s publish failures", s.rate),
                s.publish_errors.to_string(),
            );
        }
    }
    r.figure(
        "machine load average (1 min) at start / end",
        format!(
            "{} / {}",
            load_start.map_or("n/a".into(), |v| format!("{v:.2}")),
            load_end.map_or("n/a".into(), |v| format!("{v:.2}"))
        ),
    );
    let best = steps
        .iter()
        .filter(|s| s.sustained)
        .max_by(|a, b| a.rate.total_cmp(&b.rate));
    r.goal(Goal::new(
        "fan-out to 5,000 connections of one org: sustained deliveries/s without loss",
        &format!("measure ({GOAL_CONNECTIONS} connections)"),
        best.map_or_else(
            || "no rate sustained".to_owned(),
            |s| {
                format!(
                    "{:.0} deliveries/s ({} events/s × {} connections), p99 {:.1} ms",
                    s.deliveries_per_s(),
                    s.rate,
                    args.clients,
                    s.latency.p99
                )
            },
        ),
        Some(best.is_some() && args.clients >= GOAL_CONNECTIONS),
    ));
    // Events a connection had not received when the drain gave up are not
    // counted as lost here (they are reported per step).
    let (lost, dup, ooo) = steps.iter().fold((0, 0, 0), |(l, d, o), s| {
        (
            l + s.verdict.lost - s.verdict.pending,
            d + s.verdict.duplicated,
            o + s.verdict.out_of_order,
        )
    });
    r.goal(Goal::new(
        "no loss at any rate tried (also beyond the sustained one)",
        "0 lost, 0 duplicated, 0 reordered",
        format!("{lost} lost (skipped), {dup} duplicated, {ooo} reordered"),
        Some(lost == 0 && dup == 0 && ooo == 0),
    ));
    Ok(r)
}

/// Publishes one step at `rate` and checks it. Returns the step and whether
/// every connection caught up completely afterwards (else no further step
/// can be judged on its own).
async fn run_step(
    st: &StreamTarget,
    fleet: &Fleet,
    publisher: &mut Publisher,
    args: &FanoutArgs,
    rate: f64,
) -> Result<(Step, bool), LoadError> {
    // Whatever arrived between steps (nothing, when the last one drained).
    let _ = fleet.take_events();
    let pids = st.target.edge_pids();
    let before = EdgeMetrics::sum(&st.metrics().await?);
    let d0 = fleet.disconnects();
    let reasons0 = fleet.end_reasons();
    let cpu0 = CpuSnapshot::take_all(&pids, st.target.nats_pid);
    let total = (rate * args.step_duration as f64).round().max(1.0) as u64;
    eprintln!(
        "herald-loadgen: fan-out step: {total} events at {rate} /s to {} connections",
        args.clients
    );
    let t0 = Instant::now();
    let published = publisher
        .publish(total, Pace::Rate(rate), args.in_flight)
        .await;
    let (within, waited) =
        streaming::wait_caught_up(fleet, &published, Duration::from_secs_f64(args.grace)).await;
    let mut window = t0.elapsed();
    let cpu = cpu0.until(&CpuSnapshot::take_all(&pids, st.target.nats_pid));
    let quarantined = EdgeMetrics::sum(&st.metrics().await?).quarantined;
    let mut drained = within;
    if !within {
        let (d, _) =
            streaming::wait_caught_up(fleet, &published, Duration::from_secs(args.drain_timeout))
                .await;
        drained = d;
        window = t0.elapsed();
    }
    let logs = fleet.take_events();
    let after = EdgeMetrics::sum(&st.metrics().await?);
    let verdict = verify::verify(&published.acked, &logs);
    let latency = verify::latency(&logs);
    let achieved = published.stored as f64 / published.send_time.as_secs_f64().max(1e-3);
    let disconnects = fleet.disconnects() - d0;
    let sustained = within
        && verdict.exact()
        && verdict.expected > 0
        && disconnects == 0
        && published.errors == 0
        && achieved >= rate * RATE_SHARE;
    Ok((
        Step {
            rate,
            achieved,
            stored: published.stored,
            publish_errors: published.errors,
            catch_up: within.then_some(waited),
            window,
            verdict,
            latency,
            disconnects,
            reasons: streaming::reasons_since(&reasons0, &fleet.end_reasons()),
            slow_closes: after.slow_closes.saturating_sub(before.slow_closes),
            history_reads: after.history_reads.saturating_sub(before.history_reads),
            quarantined,
            cpu,
            sustained,
        },
        drained,
    ))
}
