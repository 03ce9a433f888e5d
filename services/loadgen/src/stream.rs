//! `herald-loadgen stream`: N clients (WebSocket, optionally shares over SSE
//! and long-poll) over M orgs on one or more edges, events published at a
//! fixed rate for a fixed time; connect time, edge memory per idle
//! connection, publish-to-receive latency, deliveries/s, and exactly-once
//! in-order delivery to every client.

use std::time::Duration;

use tokio::time::Instant;

use crate::cli::StreamArgs;
use crate::error::LoadError;
use crate::probe::EdgeMetrics;
use crate::procfs::{self, CpuSnapshot};
use crate::publish::Pace;
use crate::report::{opt1, Goal, Report};
use crate::streaming::{self, Mix, Placement, Scenario};
use crate::verify;

/// Concurrent WebSocket connections one node should hold.
const GOAL_CONNECTIONS: u64 = 20_000;
/// Orgs those connections are spread over.
const GOAL_ORGS: usize = 4_000;
/// Edge memory per idle connection, KiB.
const GOAL_KIB: f64 = 10.0;
/// p50 publish-to-receive latency at low load, ms.
const GOAL_P50_MS: f64 = 3.0;
/// Highest publish rate counted as low load, events/s.
const LOW_LOAD_RATE: f64 = 500.0;
/// p99 publish-to-receive latency at the goal's connections and rate, ms.
const GOAL_P99_MS: f64 = 20.0;
/// Publish rate of the p99 goal, events/s.
const GOAL_RATE: f64 = 2_000.0;
/// Share of the goal's connections and rate a run must reach for the p99
/// goal to be judged (the open-files limit may keep a node just under).
const GOAL_SHARE: f64 = 0.99;

/// Runs the scenario.
pub async fn run(args: StreamArgs) -> Result<Report, LoadError> {
    let c = &args.clients;
    streaming::check_counts(c.clients, c.orgs, c.sse_share, c.longpoll_share)?;
    let mp = c.msgpack_share;
    if !(mp.is_finite() && (0.0..=1.0).contains(&mp)) || c.sse_share + c.longpoll_share + mp > 1.0 {
        return Err(LoadError::Setup(
            "--msgpack-share must be within 0–1 and add up to at most 1 with --sse-share and --longpoll-share".into(),
        ));
    }
    if !args.rate.is_finite() || args.rate <= 0.0 || args.duration == 0 {
        return Err(LoadError::Setup(
            "--rate and --duration must be above zero".into(),
        ));
    }
    let edges = streaming::planned_edges(&args.target);
    let orgs = streaming::org_ids(&c.prefix, c.orgs.min(c.clients));
    let mut run = Scenario {
        target: &args.target,
        prefix: &c.prefix,
        clients: c.clients,
        orgs,
        services: &c.services,
        mix: Mix {
            sse: c.sse_share,
            longpoll: c.longpoll_share,
            msgpack: c.msgpack_share,
        },
        placement: Placement::Spread,
        connect_concurrency: c.connect_concurrency,
    }
    .start()
    .await?;
    let (st, fleet) = (&run.st, &run.fleet);

    let total = (args.rate * args.duration as f64).round() as u64;
    eprintln!(
        "herald-loadgen: publishing {total} events at {} /s",
        args.rate
    );
    let pids = st.target.edge_pids();
    let nats_pid = st.target.nats_pid;
    let before = EdgeMetrics::sum(&st.metrics().await?);
    let disconnects_before = fleet.disconnects();
    let cpu0 = CpuSnapshot::take_all(&pids, nats_pid);
    let t0 = Instant::now();
    let published = run
        .publisher
        .publish(total, Pace::Rate(args.rate), args.in_flight)
        .await;
    let (caught_up, _) = streaming::wait_caught_up(
        fleet,
        &published,
        Duration::from_secs(args.catch_up_timeout),
    )
    .await;
    let window = t0.elapsed();
    let cpu = cpu0.until(&CpuSnapshot::take_all(&pids, nats_pid));
    let after = EdgeMetrics::sum(&st.metrics().await?);
    let load_end = procfs::loadavg();
    let disconnects = fleet.disconnects() - disconnects_before;
    let reasons = streaming::reasons_since(&Default::default(), &fleet.end_reasons());
    let rss_end: Vec<Option<u64>> = st.rss();
    let records = streaming::finish(run.st, run.fleet, args.output.logs.as_deref()).await?;
    let opening = run.opening;

    let (logs, transports, _) = streaming::split(records);
    let verdict = verify::verify(&published.acked, &logs);
    let latency = verify::latency(&logs);
    let achieved = published.stored as f64 / published.send_time.as_secs_f64().max(1e-3);
    let first_error = logs.iter().find_map(|l| l.first_error.clone());

    let title = args.output.title.clone().unwrap_or_else(|| {
        let mix = if c.sse_share > 0.0 || c.longpoll_share > 0.0 || mp > 0.0 {
            format!(
                " ({:.0} % SSE, {:.0} % long-poll, {:.0} % MessagePack)",
                c.sse_share * 100.0,
                c.longpoll_share * 100.0,
                mp * 100.0
            )
        } else {
            String::new()
        };
        format!(
            "stream: {} clients{mix} / {} orgs on {edges} edge(s), {} events/s for {} s",
            c.clients, c.orgs, args.rate, args.duration
        )
    });
    let mut r = Report::new(title);
    streaming::add_opening(&mut r, &opening);
    r.figure(
        "edge VmRSS at the end",
        rss_end
            .iter()
            .map(|k| opt1(k.map(|k| k as f64 / 1024.0)))
            .collect::<Vec<_>>()
            .join(" + ")
            + " MiB",
    );
    r.figure(
        "events published: sent / stored / duplicate / failed",
        format!(
            "{} / {} / {} / {} at {achieved:.0} events/s",
            published.sent, published.stored, published.duplicates, published.errors
        ),
    );
    if let Some(e) = &published.first_error {
        r.figure("first publish failure", e.clone());
    }
    streaming::add_delivery(&mut r, &verdict, &latency, &logs, &transports, window);
    r.figure(
        "every client caught up",
        if caught_up { "yes" } else { "no" },
    );
    r.figure(
        "connections lost during the run (reconnected with lastSeq)",
        format!("{disconnects} ({reasons})"),
    );
    if let Some(e) = first_error {
        r.figure("first client failure", e);
    }
    streaming::add_edge_counters(&mut r, &before, &after);
    streaming::add_cpu(&mut r, &cpu, (run.load_start, load_end));

    let ws_one = opening.max_ws_on_one_edge();
    r.goal(Goal::new(
        "concurrent WebSocket connections on one node",
        &format!("{GOAL_CONNECTIONS} across {GOAL_ORGS} orgs"),
        format!("{ws_one} across {} orgs", opening.orgs),
        Some(ws_one >= GOAL_CONNECTIONS && opening.orgs >= GOAL_ORGS),
    ));
    let kib = opening.kib_per_connection();
    r.goal(Goal::new(
        "edge memory per idle connection",
        &format!("≤ {GOAL_KIB} KiB"),
        format!("{} KiB", opt1(kib)),
        kib.map(|k| k <= GOAL_KIB),
    ));
    let l = &latency;
    let has = l.count > 0;
    r.goal(Goal::new(
        "p50 publish-to-receive latency at low load",
        &format!("< {GOAL_P50_MS} ms (≤ {LOW_LOAD_RATE} events/s)"),
        format!("{:.2} ms at {achieved:.0} events/s", l.p50),
        match (has, l.p50 < GOAL_P50_MS) {
            (false, _) => None,
            (true, true) => Some(true),
            (true, false) if achieved <= LOW_LOAD_RATE * 1.01 => Some(false),
            _ => None,
        },
    ));
    let at_goal_load =
        ws_one as f64 >= GOAL_CONNECTIONS as f64 * GOAL_SHARE && achieved >= GOAL_RATE * GOAL_SHARE;
    r.goal(Goal::new(
        "p99 publish-to-receive latency",
        &format!("< {GOAL_P99_MS} ms at {GOAL_CONNECTIONS} connections and {GOAL_RATE} events/s"),
        format!(
            "{:.2} ms at {ws_one} WebSocket connections on one node and {achieved:.0} events/s",
            l.p99
        ),
        (has && at_goal_load).then_some(l.p99 < GOAL_P99_MS),
    ));
    r.goal(Goal::new(
        "every event to every client of its org, once, in order",
        "0 lost, 0 duplicated, 0 reordered",
        format!(
            "{} lost, {} duplicated, {} reordered",
            verdict.lost, verdict.duplicated, verdict.out_of_order
        ),
        Some(verdict.exact() && verdict.expected > 0),
    ));
    Ok(r)
}
