//! `herald-loadgen longpoll`: N held polls over M orgs, events published at a
//! fixed rate for a fixed time; wake latency, completeness, ingestion rate
//! and edge memory per held poll.

use std::time::Duration;

use tokio::time::Instant;

use crate::cli::LongpollArgs;
use crate::error::LoadError;
use crate::outcome::Outcome;
use crate::procfs::{self, CpuSnapshot};
use crate::publish::{Pace, Publisher};
use crate::report::{Goal, Report};
use crate::session::Session;

/// p99 wake latency goal, ms.
const GOAL_P99_MS: f64 = 20.0;
/// Publish rate the latency goal is set at, events/s.
const GOAL_RATE: f64 = 500.0;
/// How long pollers get to receive the last events after the last ack.
const CATCH_UP: Duration = Duration::from_secs(30);

/// Runs the scenario.
pub async fn run(args: LongpollArgs) -> Result<Report, LoadError> {
    if !args.rate.is_finite() || args.rate <= 0.0 || args.duration == 0 {
        return Err(LoadError::Setup(
            "--rate and --duration must be above zero".into(),
        ));
    }
    let session = Session::open(&args.target, &args.polls).await?;
    let mut publisher = Publisher::connect(
        &session.target.nats_url,
        session.orgs.clone(),
        args.polls.services.clone(),
    )
    .await?;
    let total = (args.rate * args.duration as f64).round() as u64;
    let pids = (session.target.edge_pid, session.target.nats_pid);
    eprintln!(
        "herald-loadgen: publishing {total} events at {} /s",
        args.rate
    );

    let before = session.metrics().await?;
    let cpu0 = CpuSnapshot::take(pids.0, pids.1);
    let t0 = Instant::now();
    let published = publisher
        .publish(total, Pace::Rate(args.rate), args.in_flight)
        .await;
    let (caught_up, _) = session.wait_caught_up(&published, CATCH_UP).await;
    let elapsed = t0.elapsed();
    let cpu = cpu0.until(&CpuSnapshot::take(pids.0, pids.1));
    let after = session.metrics().await?;
    let rss_end = pids.0.and_then(procfs::rss_kib);
    let held_end = after.waiters;
    let opening = session.opening.clone();
    let (logs, target) = session.close().await;
    if let Some(dir) = &args.output.logs {
        target.save_logs(dir)?;
    }
    drop(target);

    let ingested = after.ingested.saturating_sub(before.ingested);
    let ingest_rate = ingested as f64 / elapsed.as_secs_f64();
    let achieved_rate = published.stored as f64 / published.send_time.as_secs_f64().max(1e-3);
    let outcome = Outcome::new(
        opening, published, &logs, before, after, cpu, caught_up, rss_end,
    );

    let title = args.output.title.clone().unwrap_or_else(|| {
        format!(
            "longpoll: {} polls / {} orgs, {} events/s for {} s",
            args.polls.polls, args.polls.orgs, args.rate, args.duration
        )
    });
    let mut r = Report::new(title);
    r.figure(
        "publish rate achieved",
        format!("{achieved_rate:.0} events/s"),
    );
    r.figure(
        "events ingested by the edge",
        format!(
            "{ingested} in {:.1} s = {ingest_rate:.0} events/s",
            elapsed.as_secs_f64()
        ),
    );
    r.figure(
        "polls held at the end (edge `waiters`)",
        held_end.to_string(),
    );
    outcome.add_to(&mut r);
    let p99 = outcome.latency.p99;
    r.goal(Goal::new(
        "p99 publish-to-poller wake latency",
        &format!("< {GOAL_P99_MS} ms at {GOAL_RATE} events/s"),
        format!("{p99:.2} ms at {achieved_rate:.0} events/s"),
        Some(p99 < GOAL_P99_MS && achieved_rate >= GOAL_RATE * 0.99 && outcome.latency.count > 0),
    ));
    Ok(r)
}
