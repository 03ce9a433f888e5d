//! `herald-loadgen affinity`: 3 edges on a 3-server JetStream cluster
//! (edge i on server i), `--clients` WebSocket clients over `--orgs` orgs,
//! placed first org-affine (every user of an org on the edge its org
//! hashes to) and then round-robin, each on a fresh cluster, with the same
//! load (`--rate` events/s to random orgs for `--duration` s). For each:
//! - events ingested per edge (the edge's `events.ingested`) — the cost of
//!   per-org interest, which the edge implements;
//! - what per-partition interest would ingest per node, measured by a
//!   stand-in ([`crate::standin`]): one subscriber per node on that node's
//!   server holding `herald.live.*.*.*.<k>` for each partition its orgs
//!   lie in;
//! - subscriptions per NATS server (`/subsz`, `/connz?subs=1`) for both;
//! - edge CPU per delivery and per ingested event, and edge memory per
//!   connection and per org held, solved from the two runs (same
//!   deliveries and connections, different ingest and orgs per edge);
//! - deliveries checked: 0 lost, duplicated, reordered.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::capacity;
use crate::cli::AffinityArgs;
use crate::cluster::{ClusterCpuUse, ClusterTarget, SERVERS};
use crate::error::LoadError;
use crate::natsmon::{self, ServerSubs};
use crate::phase::{self, Phase};
use crate::procfs;
use crate::publish::{Pace, Publisher};
use crate::report::{opt1, Goal, Report};
use crate::routing::Routing;
use crate::standin::{self, StandIns};
use crate::streaming::{self, org_ids};

/// What one routing measured.
struct Run {
    routing: Routing,
    phase: Phase,
    /// Orgs with clients on each edge.
    orgs_per_edge: Vec<usize>,
    /// Subscriptions per server before any client, with per-org interest
    /// held, and with the stand-ins' per-partition interest added.
    subs_base: Vec<ServerSubs>,
    subs_per_org: Vec<ServerSubs>,
    subs_both: Vec<ServerSubs>,
    /// Stand-in: messages per node, subscriptions per node.
    standin_counts: Vec<u64>,
    standin_subs: Vec<usize>,
    kib_per_connection: Option<f64>,
    rss_before: Vec<Option<u64>>,
    rss_held: Vec<Option<u64>>,
    /// CPU with every client connected and nothing published.
    idle: ClusterCpuUse,
    load: (Option<f64>, Option<f64>),
}

impl Run {
    /// Edge CPU over the phase, µs.
    fn edge_cpu_us(&self) -> f64 {
        self.phase.cpu.edges_total() / 100.0 * self.phase.window.as_secs_f64() * 1e6
    }

    /// Edge CPU over the phase beyond what the edges use idle, µs.
    fn edge_cpu_us_marginal(&self) -> f64 {
        (self.phase.cpu.edges_total() - self.idle.edges_total()).max(0.0) / 100.0
            * self.phase.window.as_secs_f64()
            * 1e6
    }

    /// Org-edge pairs: orgs held, summed over the edges.
    fn pairs(&self) -> f64 {
        self.orgs_per_edge.iter().sum::<usize>() as f64
    }
}

/// Runs the scenario.
pub async fn run(args: AffinityArgs) -> Result<Report, LoadError> {
    if args.clients == 0 || args.orgs == 0 || args.edges == 0 || args.duration == 0 {
        return Err(LoadError::Setup(
            "--clients, --orgs, --edges and --duration must be above zero".into(),
        ));
    }
    if !args.rate.is_finite() || args.rate <= 0.0 {
        return Err(LoadError::Setup("--rate must be above zero".into()));
    }
    let mut runs = Vec::with_capacity(2);
    for routing in [Routing::OrgAffine, Routing::RoundRobin] {
        runs.push(one(&args, routing).await?);
    }

    let title = args.output.title.clone().unwrap_or_else(|| {
        format!(
            "affinity: {} clients / {} orgs on {} edges, 3-server cluster, K = {}, {} events/s for {} s",
            args.clients, args.orgs, args.edges, args.partitions, args.rate, args.duration
        )
    });
    let mut r = Report::new(title);
    let list = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(" / ");
    for x in &runs {
        let name = x.routing.name();
        let stored = x.phase.published.stored.max(1);
        let ingested = x.phase.ingested();
        let total: u64 = ingested.iter().sum();
        r.figure(
            &format!("{name}: orgs with clients per edge"),
            x.orgs_per_edge
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(" / "),
        );
        r.figure(
            &format!("{name}: events stored"),
            x.phase.published.stored.to_string(),
        );
        r.figure(
            &format!("{name}, per-org interest: events ingested per edge"),
            format!(
                "{} (total {total} = {:.2} × stored)",
                list(&ingested),
                total as f64 / stored as f64
            ),
        );
        let pp: u64 = x.standin_counts.iter().sum();
        r.figure(
            &format!("{name}, per-partition interest (stand-in): events per node"),
            format!(
                "{} (total {pp} = {:.2} × stored; {} subscriptions per node)",
                list(&x.standin_counts),
                pp as f64 / stored as f64,
                x.standin_subs
                    .iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(" / ")
            ),
        );
        let d = |f: &dyn Fn(&ServerSubs) -> u64, a: &[ServerSubs], b: &[ServerSubs]| {
            a.iter()
                .zip(b)
                .map(|(a, b)| f(a).saturating_sub(f(b)).to_string())
                .collect::<Vec<_>>()
                .join(" / ")
        };
        r.figure(
            &format!("{name}, per-org interest: live subscriptions of each server's own clients (server 0 / 1 / 2)"),
            d(&|s| s.local_per_org, &x.subs_per_org, &x.subs_base),
        );
        let graph = |a: &[ServerSubs], b: &[ServerSubs]| {
            natsmon::graph_growth(b, a)
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(" / ")
        };
        r.figure(
            &format!("{name}, per-org interest: each server's interest graph (/subsz) grows by"),
            format!(
                "{} (all servers' per-org subscriptions together: {}, which routes bring to every server; the rest is JetStream's own)",
                graph(&x.subs_per_org, &x.subs_base),
                natsmon::cluster_live_growth(&x.subs_base, &x.subs_per_org, |s| s.local_per_org)
            ),
        );
        r.figure(
            &format!(
                "{name}, per-partition interest: live subscriptions of each server's own clients"
            ),
            d(&|s| s.local_per_partition, &x.subs_both, &x.subs_per_org),
        );
        r.figure(
            &format!(
                "{name}, per-partition interest: each server's interest graph (/subsz) grows by"
            ),
            format!(
                "{} (all servers' per-partition subscriptions together: {})",
                graph(&x.subs_both, &x.subs_per_org),
                natsmon::cluster_live_growth(&x.subs_per_org, &x.subs_both, |s| s
                    .local_per_partition)
            ),
        );
        let c = &x.phase.cpu;
        let delivered: u64 = x.phase.delivered().iter().sum();
        r.figure(
            &format!("{name}: CPU (% of one core): edges / NATS servers / loadgen / rest"),
            format!(
                "{} / {:.1} / {:.1} / {:.1}",
                c.edges
                    .iter()
                    .map(|e| format!("{e:.1}"))
                    .collect::<Vec<_>>()
                    .join(" + "),
                c.servers,
                c.loadgen,
                c.others
            ),
        );
        r.figure(
            &format!("{name}: edge CPU per delivery, ingest included"),
            format!(
                "{:.1} µs ({} deliveries, {:.0}/s)",
                x.edge_cpu_us() / delivered.max(1) as f64,
                delivered,
                delivered as f64 / x.phase.window.as_secs_f64().max(1e-3)
            ),
        );
        r.figure(
            &format!("{name}: edge memory per idle connection / edge VmRSS with all connected"),
            format!(
                "{} KiB / {} MiB",
                opt1(x.kib_per_connection),
                x.rss_held
                    .iter()
                    .map(|k| opt1(k.map(|k| k as f64 / 1024.0)))
                    .collect::<Vec<_>>()
                    .join(" + ")
            ),
        );
        r.figure(
            &format!("{name}: latency p50 / p99 / max"),
            format!(
                "{:.2} / {:.2} / {:.2} ms",
                x.phase.latency.p50, x.phase.latency.p99, x.phase.latency.max
            ),
        );
        r.figure(&format!("{name}: correctness"), x.phase.correctness());
        r.figure(
            &format!("{name}: machine load average at start / end"),
            format!(
                "{} / {}",
                x.load.0.map_or("n/a".into(), |v| format!("{v:.2}")),
                x.load.1.map_or("n/a".into(), |v| format!("{v:.2}"))
            ),
        );
    }
    let (a, b) = (&runs[0], &runs[1]);
    let ia: u64 = a.phase.ingested().iter().sum();
    let ib: u64 = b.phase.ingested().iter().sum();
    r.figure(
        "ingest, round-robin ÷ org-affine (per-org interest)",
        format!("{:.2}", ib as f64 / ia.max(1) as f64),
    );
    let da: u64 = a.phase.delivered().iter().sum();
    let db: u64 = b.phase.delivered().iter().sum();
    match capacity::solve2(
        (a.edge_cpu_us(), ia as f64, da as f64),
        (b.edge_cpu_us(), ib as f64, db as f64),
    ) {
        Some((ingest, delivery)) => r.figure(
            "edge CPU solved from both runs: per ingested event / per delivery",
            format!("{ingest:.1} µs / {delivery:.1} µs"),
        ),
        None => r.figure(
            "edge CPU solved from both runs",
            "not solvable (same ingest in both runs)",
        ),
    }
    let kib = |x: &Run| {
        x.rss_held
            .iter()
            .zip(&x.rss_before)
            .map(|(h, b)| h.unwrap_or(0).saturating_sub(b.unwrap_or(0)) as f64)
            .sum::<f64>()
    };
    let pairs = |x: &Run| x.orgs_per_edge.iter().sum::<usize>() as f64;
    let n = args.clients as f64;
    match capacity::solve2((kib(a), pairs(a), n), (kib(b), pairs(b), n)) {
        Some((per_org, per_connection)) => r.figure(
            "edge memory solved from both runs: per org held / per connection",
            format!(
                "{per_org:.1} KiB / {per_connection:.1} KiB (org-edge pairs {:.0} and {:.0})",
                pairs(a),
                pairs(b)
            ),
        ),
        None => r.figure("edge memory solved from both runs", "not solvable"),
    }
    for x in &runs {
        r.figure(
            &format!(
                "{}: idle CPU with every client connected (% of one core): edges / NATS servers",
                x.routing.name()
            ),
            format!("{:.2} / {:.2}", x.idle.edges_total(), x.idle.servers),
        );
    }
    let idle_us = |x: &Run| x.idle.edges_total() / 100.0 * 1e6;
    match capacity::solve2((idle_us(a), a.pairs(), n), (idle_us(b), b.pairs(), n)) {
        Some((per_org, per_connection)) => r.figure(
            "edge idle CPU solved from both runs: per org held / per connection",
            format!("{per_org:.2} µs/s / {per_connection:.3} µs/s"),
        ),
        None => r.figure("edge idle CPU solved from both runs", "not solvable"),
    }
    let nats_us = |x: &Run| x.idle.servers / 100.0 * 1e6;
    match capacity::solve2((nats_us(a), a.pairs(), 1.0), (nats_us(b), b.pairs(), 1.0)) {
        Some((per_org, base)) => r.figure(
            "NATS idle CPU solved from both runs: per org held on an edge / the rest",
            format!("{per_org:.2} µs/s / {:.3} cores", base / 1e6),
        ),
        None => r.figure("NATS idle CPU solved from both runs", "not solvable"),
    }
    match capacity::solve2(
        (a.edge_cpu_us_marginal(), ia as f64, da as f64),
        (b.edge_cpu_us_marginal(), ib as f64, db as f64),
    ) {
        Some((ingest, delivery)) => r.figure(
            "edge CPU beyond idle, solved from both runs: per ingested event / per delivery",
            format!("{ingest:.1} µs / {delivery:.1} µs"),
        ),
        None => r.figure(
            "edge CPU beyond idle, solved from both runs",
            "not solvable",
        ),
    }
    let exact = runs.iter().all(|x| x.phase.exact());
    r.goal(Goal::exact(
        "every event to every client of its org, once, in order (both routings)",
        exact,
    ));
    Ok(r)
}

/// Measures one routing on its own fresh cluster.
async fn one(args: &AffinityArgs, routing: Routing) -> Result<Run, LoadError> {
    let c = &args.cluster;
    let load_start = procfs::loadavg();
    let orgs = org_ids(&c.prefix, args.orgs.min(args.clients));
    let homes: Vec<usize> = (0..args.clients)
        .map(|i| routing.edge(i, &orgs[i % orgs.len()], args.edges))
        .collect();
    let mut per_edge = vec![0usize; args.edges];
    let mut org_sets: Vec<BTreeSet<&str>> = vec![BTreeSet::new(); args.edges];
    for (i, &h) in homes.iter().enumerate() {
        per_edge[h] += 1;
        org_sets[h].insert(orgs[i % orgs.len()].as_str());
    }
    let busiest = per_edge.iter().copied().max().unwrap_or(0);
    let ct = ClusterTarget::start(
        &c.edge_bin,
        args.partitions,
        args.edges,
        args.clients,
        busiest,
        &c.edge_env,
    )
    .await?;
    let monitors = ct.monitor_urls();
    let subs_base = natsmon::read_all(&monitors).await?;
    let mut publisher = Publisher::connect(
        &ct.server_urls().join(","),
        orgs.clone(),
        c.services.clone(),
    )
    .await?;
    eprintln!("herald-loadgen: {}: opening clients", routing.name());
    let (fleet, opening) = ct
        .open_clients(
            &c.prefix,
            args.clients,
            &orgs,
            routing,
            &c.services,
            c.connect_concurrency,
        )
        .await?;
    // Route propagation is asynchronous: give it a moment before counting.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let subs_per_org = natsmon::read_all(&monitors).await?;
    let servers = ct.server_urls();
    let node_servers: Vec<String> = (0..args.edges)
        .map(|i| servers[ClusterTarget::server_of_edge(i) % SERVERS].clone())
        .collect();
    let partitions: Vec<BTreeSet<u32>> = org_sets
        .iter()
        .map(|set| standin::partitions_of(args.partitions, set.iter().copied()))
        .collect();
    let standins = StandIns::start(&node_servers, args.partitions, &partitions).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let subs_both = natsmon::read_all(&monitors).await?;
    eprintln!(
        "herald-loadgen: {}: {} s idle, every client connected",
        routing.name(),
        args.idle
    );
    let idle0 = ct.cpu();
    tokio::time::sleep(Duration::from_secs(args.idle.max(1))).await;
    let idle = idle0.until(&ct.cpu());
    let before = standins.counts();
    eprintln!(
        "herald-loadgen: {}: {} events/s for {} s",
        routing.name(),
        args.rate,
        args.duration
    );
    let total = (args.rate * args.duration as f64).round() as u64;
    let phase = phase::run(
        &ct,
        &fleet,
        &mut publisher,
        total,
        Pace::Rate(args.rate),
        args.in_flight,
        Duration::from_secs(c.catch_up_timeout),
    )
    .await?;
    let standin_counts: Vec<u64> = standins
        .counts()
        .iter()
        .zip(&before)
        .map(|(a, b)| a - b)
        .collect();
    let standin_subs = standins.subscriptions().to_vec();
    standins.stop().await;
    let logs = args
        .output
        .logs
        .as_ref()
        .map(|d| d.join(format!("affinity-{}", routing.name())));
    streaming::finish(ct.st, fleet, logs.as_deref()).await?;
    Ok(Run {
        routing,
        phase,
        orgs_per_edge: org_sets.iter().map(BTreeSet::len).collect(),
        subs_base,
        subs_per_org,
        subs_both,
        standin_counts,
        standin_subs,
        kib_per_connection: opening.kib_per_connection(),
        rss_before: opening.rss_before,
        rss_held: opening.rss_held,
        idle,
        load: (load_start, procfs::loadavg()),
    })
}
