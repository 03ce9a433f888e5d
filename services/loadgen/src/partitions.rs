//! `herald-loadgen partitions`: K = 1 and K = 4 partition streams (any
//! list), each on a fresh 3-server JetStream cluster with R3 streams, in one
//! run, with the same clients, orgs and load:
//! - **throughput**: `--events` published flat out with at most
//!   `--in-flight` awaiting their ack (stored ÷ first send to last ack);
//! - **latency**: `--rate` events/s for `--duration` s, publish → receive
//!   through one edge (on server 0) to `--clients` WebSocket clients.
//!
//! Every delivery of both phases is checked (0 lost, duplicated,
//! reordered). The report puts the K values side by side with the ratio of
//! each to the first.

use std::time::Duration;

use crate::cli::PartitionsArgs;
use crate::cluster::ClusterTarget;
use crate::error::LoadError;
use crate::phase::{self, Phase};
use crate::procfs;
use crate::publish::{Pace, Publisher};
use crate::report::{Goal, Report};
use crate::routing::Routing;
use crate::streaming::{self, org_ids};

/// What one K measured.
struct Run {
    k: u32,
    throughput: Phase,
    latency: Phase,
    kib_per_connection: Option<f64>,
    load: (Option<f64>, Option<f64>),
}

/// Runs the scenario.
pub async fn run(args: PartitionsArgs) -> Result<Report, LoadError> {
    if args.partitions.is_empty() || args.clients == 0 || args.orgs == 0 || args.events == 0 {
        return Err(LoadError::Setup(
            "--partitions, --clients, --orgs and --events must not be empty or zero".into(),
        ));
    }
    if !args.rate.is_finite() || args.rate <= 0.0 || args.duration == 0 {
        return Err(LoadError::Setup(
            "--rate and --duration must be above zero".into(),
        ));
    }
    let mut runs = Vec::with_capacity(args.partitions.len());
    for &k in &args.partitions {
        runs.push(one(&args, k).await?);
    }

    let title = args.output.title.clone().unwrap_or_else(|| {
        format!(
            "partitions: K = {} on a 3-server cluster (R3), {} clients / {} orgs on one edge",
            args.partitions
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(" vs "),
            args.clients,
            args.orgs
        )
    });
    let mut r = Report::new(title);
    let base = &runs[0];
    let row = |f: &dyn Fn(&Run) -> f64, unit: &str, digits: usize| -> String {
        let b = f(base);
        runs.iter()
            .map(|x| {
                let v = f(x);
                let ratio = if b > 0.0 { v / b } else { 0.0 };
                if std::ptr::eq(x, base) {
                    format!("K={}: {v:.digits$} {unit}", x.k)
                } else {
                    format!("K={}: {v:.digits$} {unit} (× {ratio:.2})", x.k)
                }
            })
            .collect::<Vec<_>>()
            .join(" | ")
    };
    r.figure(
        "flat-out publish throughput (stored ÷ first send to last ack)",
        row(&|x| x.throughput.publish_rate(), "events/s", 0),
    );
    r.figure(
        "  NATS CPU per stored event, flat out (3 servers together)",
        row(
            &|x| {
                x.throughput.cpu.servers / 100.0 * x.throughput.window.as_secs_f64() * 1e6
                    / x.throughput.published.stored.max(1) as f64
            },
            "µs",
            0,
        ),
    );
    r.figure(
        "  CPU flat out (% of one core): NATS servers / edge / loadgen / rest",
        runs.iter()
            .map(|x| {
                let c = &x.throughput.cpu;
                format!(
                    "K={}: {:.0} / {:.0} / {:.0} / {:.0}",
                    x.k,
                    c.servers,
                    c.edges_total(),
                    c.loadgen,
                    c.others
                )
            })
            .collect::<Vec<_>>()
            .join(" | "),
    );
    r.figure(
        &format!("latency at {} events/s: p50", args.rate),
        row(&|x| x.latency.latency.p50, "ms", 2),
    );
    r.figure(
        &format!("latency at {} events/s: p99", args.rate),
        row(&|x| x.latency.latency.p99, "ms", 2),
    );
    r.figure(
        &format!("latency at {} events/s: max", args.rate),
        row(&|x| x.latency.latency.max, "ms", 2),
    );
    r.figure(
        &format!(
            "  NATS CPU at {} events/s (% of one core, 3 servers)",
            args.rate
        ),
        row(&|x| x.latency.cpu.servers, "%", 1),
    );
    r.figure(
        &format!("  NATS CPU per stored event at {} events/s", args.rate),
        row(
            &|x| {
                x.latency.cpu.servers / 100.0 * x.latency.window.as_secs_f64() * 1e6
                    / x.latency.published.stored.max(1) as f64
            },
            "µs",
            0,
        ),
    );
    r.figure(
        "  edge memory per idle connection",
        row(&|x| x.kib_per_connection.unwrap_or(0.0), "KiB", 1),
    );
    for x in &runs {
        r.figure(
            &format!("K={} correctness, flat out", x.k),
            x.throughput.correctness(),
        );
        r.figure(
            &format!("K={} correctness, at {} events/s", x.k, args.rate),
            x.latency.correctness(),
        );
        r.figure(
            &format!("K={} machine load average at start / end", x.k),
            format!(
                "{} / {}",
                x.load.0.map_or("n/a".into(), |v| format!("{v:.2}")),
                x.load.1.map_or("n/a".into(), |v| format!("{v:.2}"))
            ),
        );
    }
    let exact = runs
        .iter()
        .all(|x| x.throughput.exact() && x.latency.exact());
    r.goal(Goal::exact(
        "every event to every client of its org, once, in order (all K, both phases)",
        exact,
    ));
    Ok(r)
}

/// Measures one partition count on its own fresh cluster.
async fn one(args: &PartitionsArgs, k: u32) -> Result<Run, LoadError> {
    let c = &args.cluster;
    let load_start = procfs::loadavg();
    let ct =
        ClusterTarget::start(&c.edge_bin, k, 1, args.clients, args.clients, &c.edge_env).await?;
    let orgs = org_ids(&c.prefix, args.orgs.min(args.clients));
    let mut publisher = Publisher::connect(
        &ct.server_urls().join(","),
        orgs.clone(),
        c.services.clone(),
    )
    .await?;
    let (fleet, opening) = ct
        .open_clients(
            &c.prefix,
            args.clients,
            &orgs,
            Routing::RoundRobin,
            &c.services,
            c.connect_concurrency,
        )
        .await?;
    let catch_up = Duration::from_secs(c.catch_up_timeout);
    eprintln!(
        "herald-loadgen: K = {k}: {} events flat out, {} in flight",
        args.events, args.in_flight
    );
    let throughput = phase::run(
        &ct,
        &fleet,
        &mut publisher,
        args.events,
        Pace::FlatOut,
        args.in_flight,
        catch_up,
    )
    .await?;
    eprintln!(
        "herald-loadgen: K = {k}: {:.0} events/s; now {} events/s for {} s",
        throughput.publish_rate(),
        args.rate,
        args.duration
    );
    let total = (args.rate * args.duration as f64).round() as u64;
    let latency = phase::run(
        &ct,
        &fleet,
        &mut publisher,
        total,
        Pace::Rate(args.rate),
        args.in_flight,
        catch_up,
    )
    .await?;
    eprintln!(
        "herald-loadgen: K = {k}: p50 {:.2} ms, p99 {:.2} ms",
        latency.latency.p50, latency.latency.p99
    );
    let logs = args
        .output
        .logs
        .as_ref()
        .map(|d| d.join(format!("partitions-k{k}")));
    streaming::finish(ct.st, fleet, logs.as_deref()).await?;
    Ok(Run {
        k,
        throughput,
        latency,
        kib_per_connection: opening.kib_per_connection(),
        load: (load_start, procfs::loadavg()),
    })
}
