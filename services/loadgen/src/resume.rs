//! `herald-loadgen resume`: N WebSocket clients over M orgs, all on the
//! first edge (A); events published at a steady rate throughout; A is
//! killed with SIGKILL mid-run. Each client notices its connection end,
//! reconnects at once to the next edge (B) with `hello` carrying its last
//! seq and epoch, and carries on. At the end every client's events are
//! checked against the acks of its org (lost, duplicated, reordered), and
//! recovery is timed from the kill: to the client's new ack, and to the
//! first events on the new connection.

use std::time::{Duration, Instant};

use crate::cli::ResumeArgs;
use crate::error::LoadError;
use crate::fleet::{Attempt, End};
use crate::probe::EdgeMetrics;
use crate::procfs::{self, CpuSnapshot};
use crate::publish::Pace;
use crate::report::{Goal, Report};
use crate::streaming::{self, Mix, Placement, Running, Scenario};
use crate::verify::{self, Latency};

/// Events published this long after the kill are reported on their own.
const AFTER_KILL: Duration = Duration::from_secs(1);

/// Per-client recovery after the kill, from the attempts it logged.
#[derive(Debug, Default, Clone, Copy)]
struct Recovery {
    /// Kill → the client saw its connection to A end.
    noticed: Option<Duration>,
    /// Kill → ack on the new connection.
    reacked: Option<Duration>,
    /// Kill → first events on a connection opened after the kill.
    first_event: Option<Duration>,
    /// Attempts after the kill that failed before an ack.
    failed_attempts: u32,
}

fn recovery(attempts: &[Attempt], killed: Instant) -> Recovery {
    let mut r = Recovery::default();
    for a in attempts {
        if a.started < killed {
            if let Some(end) = a.ended.filter(|e| *e >= killed && a.end != End::Stopped) {
                r.noticed.get_or_insert(end.duration_since(killed));
            }
            continue;
        }
        match a.acked {
            Some(acked) => {
                r.reacked.get_or_insert(acked.duration_since(killed));
            }
            None => r.failed_attempts += 1,
        }
        if let Some(first) = a.first_event {
            r.first_event.get_or_insert(first.duration_since(killed));
        }
    }
    r
}

/// Runs the scenario.
pub async fn run(args: ResumeArgs) -> Result<Report, LoadError> {
    streaming::check_counts(args.clients, args.orgs, 0.0, 0.0)?;
    if !args.rate.is_finite()
        || args.rate <= 0.0
        || !args.kill_after.is_finite()
        || args.kill_after <= 0.0
        || args.kill_after >= args.duration as f64
    {
        return Err(LoadError::Setup(
            "--rate must be above zero and --kill-after within --duration".into(),
        ));
    }
    let mut target_args = args.target.clone();
    if target_args.spawn {
        target_args.edge_nodes = target_args.edge_nodes.max(2);
    } else if target_args.edges.len() < 2 || target_args.edge_pids.is_empty() {
        return Err(LoadError::Setup(
            "resume needs two edges: --spawn (with --edge-nodes ≥ 2), or --edges A,B with --edge-pids for A".into(),
        ));
    }
    let Running {
        mut st,
        mut publisher,
        fleet,
        opening,
        load_start,
    } = Scenario {
        target: &target_args,
        prefix: &args.prefix,
        clients: args.clients,
        orgs: streaming::org_ids(&args.prefix, args.orgs.min(args.clients)),
        services: &args.services,
        mix: Mix::WEBSOCKET,
        placement: Placement::First,
        connect_concurrency: args.connect_concurrency,
    }
    .start()
    .await?;
    let edges = st.target.edges.len();

    let survivors: Vec<usize> = (1..edges).collect();
    let survivor_pids: Vec<u32> = survivors
        .iter()
        .filter_map(|&i| st.target.edges[i].pid)
        .collect();
    let nats_pid = st.target.nats_pid;
    let before = EdgeMetrics::sum(&st.metrics_of(&survivors).await?);
    let cpu0 = CpuSnapshot::take_all(&survivor_pids, nats_pid);
    let total = (args.rate * args.duration as f64).round() as u64;
    eprintln!(
        "herald-loadgen: publishing {total} events at {} /s; killing edge A ({}) after {} s",
        args.rate, st.target.edges[0].url, args.kill_after
    );
    let (rate, in_flight) = (args.rate, args.in_flight);
    let publishing =
        tokio::spawn(async move { publisher.publish(total, Pace::Rate(rate), in_flight).await });
    tokio::time::sleep(Duration::from_secs_f64(args.kill_after)).await;
    let killed = st.target.kill_edge(0)?;
    let killed_wall_ns = crate::poller::wall_ns();
    eprintln!("herald-loadgen: edge A killed (SIGKILL)");
    let recovered_all = streaming_wait_live(&fleet, args.clients, Duration::from_secs(60)).await;
    let all_live_after = killed.elapsed();
    eprintln!(
        "herald-loadgen: {} of {} clients connected again after {:.2} s",
        fleet.live(),
        args.clients,
        all_live_after.as_secs_f64()
    );
    let published = publishing
        .await
        .map_err(|e| LoadError::Nats(format!("publisher task: {e}")))?;
    let (caught_up, _) = streaming::wait_caught_up(
        &fleet,
        &published,
        Duration::from_secs(args.catch_up_timeout),
    )
    .await;
    let cpu = cpu0.until(&CpuSnapshot::take_all(&survivor_pids, nats_pid));
    let after = EdgeMetrics::sum(&st.metrics_of(&survivors).await?);
    let load_end = procfs::loadavg();
    let reasons = streaming::reasons_since(&Default::default(), &fleet.end_reasons());
    let records = streaming::finish(st, fleet, args.output.logs.as_deref()).await?;

    let (logs, transports, attempts) = streaming::split(records);
    let verdict = verify::verify(&published.acked, &logs);
    let latency = verify::latency(&logs);
    let mut lost_clients = 0;
    let mut dup_clients = 0;
    let mut max_lost = 0;
    let mut max_dup = 0;
    for log in &logs {
        let owed = published
            .acked
            .get(log.org as usize)
            .map_or(&[][..], Vec::as_slice);
        let c = verify::check(owed, log);
        lost_clients += usize::from(c.lost > 0);
        dup_clients += usize::from(c.duplicated > 0);
        max_lost = max_lost.max(c.lost);
        max_dup = max_dup.max(c.duplicated);
    }
    let recoveries: Vec<Recovery> = attempts.iter().map(|a| recovery(a, killed)).collect();
    let ms = |pick: fn(&Recovery) -> Option<Duration>| {
        let mut v: Vec<f64> = recoveries
            .iter()
            .filter_map(pick)
            .map(|d| d.as_secs_f64() * 1000.0)
            .collect();
        verify::percentiles(&mut v)
    };
    let after_kill = {
        let end = killed_wall_ns + AFTER_KILL.as_nanos() as u64;
        let mut v: Vec<f64> = logs
            .iter()
            .flat_map(|l| l.published_ns.iter().zip(&l.latencies_us))
            .filter(|(t, _)| (killed_wall_ns..end).contains(t))
            .map(|(_, us)| f64::from(*us) / 1000.0)
            .collect();
        verify::percentiles(&mut v)
    };
    let noticed = ms(|r| r.noticed);
    let reacked = ms(|r| r.reacked);
    let first_event = ms(|r| r.first_event);
    let failed_attempts: u32 = recoveries.iter().map(|r| r.failed_attempts).sum();
    let reconnected = recoveries.iter().filter(|r| r.reacked.is_some()).count();
    let on_b = attempts
        .iter()
        .filter(|a| a.last().is_some_and(|a| a.edge != 0 && a.acked.is_some()))
        .count();
    let mut closes: Vec<String> = attempts
        .iter()
        .flatten()
        .filter_map(|a| match &a.end {
            End::Closed(code, _) => Some(code.to_string()),
            _ => None,
        })
        .collect();
    closes.sort();
    closes.dedup();
    let achieved = published.stored as f64 / published.send_time.as_secs_f64().max(1e-3);
    let first_error = attempts.iter().flatten().find_map(|a| match &a.end {
        End::Failed(e) if a.started >= killed => Some(e.clone()),
        _ => None,
    });

    let title = args.output.title.clone().unwrap_or_else(|| {
        format!(
            "resume: {} clients / {} orgs, {} events/s for {} s, edge A killed after {} s",
            args.clients, args.orgs, args.rate, args.duration, args.kill_after
        )
    });
    let mut r = Report::new(title);
    streaming::add_opening(&mut r, &opening);
    r.figure(
        "events published: sent / stored / duplicate / failed",
        format!(
            "{} / {} / {} / {} at {achieved:.0} events/s, before, during and after the kill",
            published.sent, published.stored, published.duplicates, published.errors
        ),
    );
    let fmt = |l: &Latency| {
        format!(
            "{:.0} / {:.0} / {:.0} ms ({} clients)",
            l.p50, l.p99, l.max, l.count
        )
    };
    r.figure(
        "kill → client saw its connection end, p50 / p99 / max",
        fmt(&noticed),
    );
    r.figure("kill → re-acked on edge B, p50 / p99 / max", fmt(&reacked));
    r.figure(
        "kill → first event on the new connection, p50 / p99 / max",
        fmt(&first_event),
    );
    r.figure(
        "publish → receive latency of events published in the 1 s after the kill, p50 / p99 / max",
        format!(
            "{:.1} / {:.1} / {:.1} ms ({} deliveries)",
            after_kill.p50, after_kill.p99, after_kill.max, after_kill.count
        ),
    );
    r.figure(
        "kill → every client connected again (count of live connections)",
        if recovered_all {
            format!("{:.2} s", all_live_after.as_secs_f64())
        } else {
            format!("not within {:.0} s", all_live_after.as_secs_f64())
        },
    );
    r.figure(
        "why connections ended (before the benchmark stopped them)",
        reasons,
    );
    r.figure(
        "clients re-acked after the kill / on a surviving edge at the end",
        format!("{reconnected} / {on_b} of {}", args.clients),
    );
    r.figure(
        "reconnect attempts that failed before an ack; close codes seen",
        format!(
            "{failed_attempts}; {}",
            if closes.is_empty() {
                "none".to_owned()
            } else {
                closes.join(", ")
            }
        ),
    );
    if let Some(e) = first_error {
        r.figure("first failed reconnect", e);
    }
    r.figure(
        "lost: total (not yet arrived) / clients with any / most for one client",
        format!(
            "{} ({}) / {lost_clients} / {max_lost}",
            verdict.lost, verdict.pending
        ),
    );
    r.figure(
        "duplicated: total / clients with any / most for one client",
        format!("{} / {dup_clients} / {max_dup}", verdict.duplicated),
    );
    streaming::add_delivery(
        &mut r,
        &verdict,
        &latency,
        &logs,
        &transports,
        published.ack_time,
    );
    r.figure(
        "resets received",
        logs.iter().map(|l| l.resets).sum::<u64>().to_string(),
    );
    r.figure(
        "every client caught up",
        if caught_up { "yes" } else { "no" },
    );
    streaming::add_edge_counters(&mut r, &before, &after);
    streaming::add_cpu(&mut r, &cpu, (load_start, load_end));
    r.figure(
        "edges the CPU and counter figures cover",
        format!("the {} surviving edge(s)", survivors.len()),
    );
    r.goal(Goal::new(
        "resume after a node kill",
        "0 lost, 0 duplicated",
        format!(
            "{} lost, {} duplicated, {} reordered over {} clients; {} of {} re-acked, all within {:.2} s (p99 {:.0} ms)",
            verdict.lost,
            verdict.duplicated,
            verdict.out_of_order,
            args.clients,
            reconnected,
            args.clients,
            reacked.max / 1000.0,
            reacked.p99
        ),
        Some(
            verdict.exact()
                && verdict.expected > 0
                && reconnected == args.clients
                && caught_up,
        ),
    ));
    Ok(r)
}

/// Waits until `n` stream connections are acked and open again.
async fn streaming_wait_live(fleet: &crate::fleet::Fleet, n: usize, timeout: Duration) -> bool {
    // The dead connections are counted down as clients notice them; give
    // them a moment so the count does not read "all live" before that.
    tokio::time::sleep(Duration::from_millis(20)).await;
    crate::session::wait_until(timeout, "every client to reconnect", || {
        let live = fleet.live();
        (live >= n, format!("{live}/{n} connected"))
    })
    .await
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_is_timed_from_the_kill() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let killed = at(100);
        let attempts = vec![
            Attempt {
                edge: 0,
                started: at(0),
                acked: Some(at(1)),
                first_event: Some(at(50)),
                ended: Some(at(105)),
                end: End::Ended,
            },
            Attempt {
                edge: 1,
                started: at(105),
                acked: None,
                first_event: None,
                ended: Some(at(106)),
                end: End::Failed("refused".into()),
            },
            Attempt {
                edge: 1,
                started: at(300),
                acked: Some(at(310)),
                first_event: Some(at(320)),
                ended: Some(at(900)),
                end: End::Stopped,
            },
        ];
        let r = recovery(&attempts, killed);
        assert_eq!(r.noticed, Some(Duration::from_millis(5)));
        assert_eq!(r.reacked, Some(Duration::from_millis(210)));
        assert_eq!(r.first_event, Some(Duration::from_millis(220)));
        assert_eq!(r.failed_attempts, 1);
    }
}
