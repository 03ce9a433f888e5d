//! `herald-loadgen ingest`: with every poll held, publish as fast as NATS
//! acknowledges (many publishes in flight) to the polled orgs, and measure
//! the rate the edge ingests at (its `events.ingested` counter over time)
//! and whether every poller catches up.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cli::IngestArgs;
use crate::error::LoadError;
use crate::outcome::Outcome;
use crate::probe::Probe;
use crate::procfs::{self, CpuSnapshot};
use crate::publish::{Pace, Publisher};
use crate::report::{Goal, Report};
use crate::session::{wait_until, Session};

/// Ingestion rate goal, events/s.
const GOAL_INGEST_RATE: f64 = 50_000.0;
/// How often the edge's ingested counter is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// Window of the peak ingestion rate.
const PEAK_WINDOW: Duration = Duration::from_secs(1);

/// Samples of the edge's ingested counter: (time since start, count).
type Samples = Arc<Mutex<Vec<(Duration, u64)>>>;

/// Runs the scenario.
pub async fn run(args: IngestArgs) -> Result<Report, LoadError> {
    if args.events == 0 {
        return Err(LoadError::Setup("--events must be above zero".into()));
    }
    let session = Session::open(&args.target, &args.polls).await?;
    let mut publisher = Publisher::connect(
        &session.target.nats_url,
        session.orgs.clone(),
        args.polls.services.clone(),
    )
    .await?;
    let pids = (session.target.edge_pid, session.target.nats_pid);
    eprintln!(
        "herald-loadgen: publishing {} events flat out, {} in flight",
        args.events, args.in_flight
    );

    let before = session.metrics().await?;
    let cpu0 = CpuSnapshot::take(pids.0, pids.1);
    let t0 = Instant::now();
    let samples: Samples = Arc::default();
    let stop = CancellationToken::new();
    let sampler = tokio::spawn(sample(
        session.probe.clone(),
        t0,
        Arc::clone(&samples),
        stop.clone(),
    ));
    let published = publisher
        .publish(args.events, Pace::FlatOut, args.in_flight)
        .await;
    let publish_rate = published.stored as f64 / published.ack_time.as_secs_f64().max(1e-3);
    eprintln!(
        "herald-loadgen: {} stored in {:.1} s ({publish_rate:.0} /s); waiting for the edge and the pollers",
        published.stored,
        published.ack_time.as_secs_f64()
    );

    // Time until the edge has ingested every stored event.
    let goal = before.ingested + published.stored;
    let timeout = Duration::from_secs(args.catch_up_timeout);
    let ingested_all = {
        let samples = Arc::clone(&samples);
        wait_until(timeout, "the edge to ingest every event", || {
            let last = samples
                .try_lock()
                .ok()
                .and_then(|s| s.last().map(|x| x.1))
                .unwrap_or(0);
            (
                last >= goal,
                format!(
                    "{} of {} ingested",
                    last.saturating_sub(before.ingested),
                    published.stored
                ),
            )
        })
        .await
        .is_ok()
    };
    let ingest_time = t0.elapsed();
    let (caught_up, _) = session.wait_caught_up(&published, timeout).await;
    let cpu = cpu0.until(&CpuSnapshot::take(pids.0, pids.1));
    stop.cancel();
    let _ = sampler.await;
    let after = session.metrics().await?;
    let rss_end = pids.0.and_then(procfs::rss_kib);
    let opening = session.opening.clone();
    let (logs, target) = session.close().await;
    if let Some(dir) = &args.output.logs {
        target.save_logs(dir)?;
    }
    drop(target);

    let samples = samples.lock().await.clone();
    let ingested = after.ingested.saturating_sub(before.ingested);
    let ingest_rate = published.stored as f64 / ingest_time.as_secs_f64();
    let peak = peak_rate(&samples, PEAK_WINDOW);
    let outcome = Outcome::new(
        opening, published, &logs, before, after, cpu, caught_up, rss_end,
    );

    let title = args.output.title.clone().unwrap_or_else(|| {
        format!(
            "ingest: {} events flat out, {} polls / {} orgs",
            args.events, args.polls.polls, args.polls.orgs
        )
    });
    let mut r = Report::new(title);
    r.figure(
        "JetStream publish rate (acks)",
        format!("{publish_rate:.0} events/s"),
    );
    r.figure(
        "edge ingestion, publish start to last event ingested",
        if ingested_all {
            format!(
                "{:.0} events/s ({} events in {:.2} s)",
                ingest_rate,
                outcome.published.stored,
                ingest_time.as_secs_f64()
            )
        } else {
            format!(
                "incomplete: {ingested} of {} within the timeout",
                outcome.published.stored
            )
        },
    );
    r.figure(
        "edge ingestion, best 1 s window",
        format!("{peak:.0} events/s"),
    );
    outcome.add_to(&mut r);
    r.goal(Goal::new(
        "events/s ingested by the edge",
        &format!("≥ {GOAL_INGEST_RATE:.0}"),
        format!("{ingest_rate:.0} (best 1 s: {peak:.0})"),
        Some(ingested_all && ingest_rate >= GOAL_INGEST_RATE),
    ));
    Ok(r)
}

async fn sample(probe: Probe, t0: Instant, samples: Samples, stop: CancellationToken) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        if let Ok(m) = probe.metrics().await {
            samples.lock().await.push((t0.elapsed(), m.ingested));
        }
    }
}

/// Highest rate over any stretch of samples at least `window` long.
fn peak_rate(samples: &[(Duration, u64)], window: Duration) -> f64 {
    let mut best = 0.0_f64;
    let mut i = 0;
    for j in 0..samples.len() {
        while i + 1 < j && samples[j].0 - samples[i + 1].0 >= window {
            i += 1;
        }
        let dt = samples[j].0.saturating_sub(samples[i].0);
        if dt >= window {
            best = best.max(samples[j].1.saturating_sub(samples[i].1) as f64 / dt.as_secs_f64());
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_rate_over_a_window() {
        let s: Vec<(Duration, u64)> = [
            (0, 0),
            (500, 100),
            (1000, 200),
            (1500, 1200),
            (2000, 2200),
            (2500, 2300),
        ]
        .iter()
        .map(|&(ms, n)| (Duration::from_millis(ms), n))
        .collect();
        assert_eq!(peak_rate(&s, Duration::from_secs(1)), 2000.0);
        assert_eq!(peak_rate(&s[..2], Duration::from_secs(1)), 0.0);
    }
}
