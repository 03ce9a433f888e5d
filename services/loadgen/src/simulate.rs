//! `herald-loadgen simulate`: the scaled capacity simulation. `--orgs`
//! orgs (events go to any of them), the first `--active-orgs` with
//! `--clients` WebSocket clients between them, placed org-affine on
//! `--edges` edges of a 3-server JetStream cluster with `--partitions` R3
//! streams; `--rate` events/s for `--duration` s.
//!
//! Before publishing, the capacity model ([`crate::capacity`]) predicts, from
//! inputs measured by the other scenarios (`--kib-per-connection`,
//! `--cpu-us-per-delivery`, `--cpu-us-per-ingest`,
//! `--nats-cpu-us-per-event`), what the simulation should show; the run
//! measures the same quantities, and the report sets them side by side with
//! the factor between them. It also prints the full-size plan
//! (`--model-orgs`, same ratios) that `docs/capacity.md` explains. Every
//! delivery is checked (0 lost, duplicated, reordered).

use std::collections::BTreeSet;
use std::time::Duration;

use crate::capacity::{self, Inputs, NodeSize, Plan};
use crate::cli::SimulateArgs;
use crate::cluster::ClusterTarget;
use crate::error::LoadError;
use crate::natsmon;
use crate::phase;
use crate::procfs;
use crate::publish::{Pace, Publisher};
use crate::report::{Goal, Report};
use crate::routing::Routing;
use crate::streaming::{self, org_ids};

/// The model's inputs for `orgs` orgs at the simulation's ratios.
pub fn inputs(args: &SimulateArgs, orgs: f64) -> Result<Inputs, LoadError> {
    let machine = |v: &[f64], what: &str| match v {
        [cores, mem_gib, price_per_hour] => Ok(NodeSize {
            cores: *cores,
            mem_gib: *mem_gib,
            price_per_hour: *price_per_hour,
        }),
        _ => Err(LoadError::Setup(format!(
            "--{what}-machine takes cores,GiB,price"
        ))),
    };
    let sim_orgs = args.orgs as f64;
    Ok(Inputs {
        orgs,
        users_per_org: args.users_per_org,
        concurrency: args.clients as f64 / (sim_orgs * args.users_per_org),
        active_org_share: args.active_orgs as f64 / sim_orgs,
        events_per_org_s: args.rate / sim_orgs,
        kib_per_connection: args.kib_per_connection,
        kib_per_org: args.kib_per_org,
        cpu_us_per_delivery: args.cpu_us_per_delivery,
        cpu_us_per_ingest: args.cpu_us_per_ingest,
        cpu_us_per_connection_s: args.cpu_us_per_connection_s,
        cpu_us_per_org_s: args.cpu_us_per_org_s,
        nats_cpu_us_per_org_s: args.nats_cpu_us_per_org_s,
        nats_cpu_us_per_event: args.nats_cpu_us_per_event,
        nats_idle_cores: args.nats_idle_cores,
        stream_events_s: args.stream_events_s,
        utilisation: args.utilisation,
        edge: machine(&args.edge_machine, "edge")?,
        nats: machine(&args.nats_machine, "nats")?,
        min_nats: 3.0,
        // Two edges must carry the load when one fails.
        min_edges: 3.0,
    })
}

/// Runs the scenario.
pub async fn run(args: SimulateArgs) -> Result<Report, LoadError> {
    if args.orgs == 0
        || args.active_orgs == 0
        || args.active_orgs > args.orgs
        || args.clients < args.active_orgs
        || args.edges == 0
        || args.duration == 0
        || !args.rate.is_finite()
        || args.rate <= 0.0
    {
        return Err(LoadError::Setup(
            "need 0 < --active-orgs ≤ --orgs, --clients ≥ --active-orgs, and --edges, --rate, --duration above zero"
                .into(),
        ));
    }
    let sim = capacity::plan(&inputs(&args, args.orgs as f64)?);
    let full = capacity::plan(&inputs(&args, args.model_orgs)?);
    let c = &args.cluster;
    let load_start = procfs::loadavg();
    let orgs = org_ids(&c.prefix, args.orgs);
    let active = &orgs[..args.active_orgs];
    let mut per_edge = vec![0usize; args.edges];
    let mut org_sets: Vec<BTreeSet<&str>> = vec![BTreeSet::new(); args.edges];
    for i in 0..args.clients {
        let org = active[i % active.len()].as_str();
        let e = Routing::OrgAffine.edge(i, org, args.edges);
        per_edge[e] += 1;
        org_sets[e].insert(org);
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
    let nats_rss_base = ct.server_rss();
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
            active,
            Routing::OrgAffine,
            &c.services,
            c.connect_concurrency,
        )
        .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let subs_held = natsmon::read_all(&monitors).await?;
    let nats_rss = ct.server_rss();
    eprintln!(
        "herald-loadgen: simulate: {} events/s for {} s to {} orgs",
        args.rate, args.duration, args.orgs
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
    let logs = args.output.logs.as_ref().map(|d| d.join("simulate"));
    streaming::finish(ct.st, fleet, logs.as_deref()).await?;
    let load_end = procfs::loadavg();

    // Measured, over the publishing window (first publish to last client
    // caught up).
    let secs = phase.window.as_secs_f64().max(1e-3);
    let deliveries = phase.verdict.received as f64;
    let ingested: Vec<u64> = phase.ingested();
    let ingest_total: u64 = ingested.iter().sum();
    let edge_cores = phase.cpu.edges_total() / 100.0;
    let nats_cores = phase.cpu.servers / 100.0;
    let grown_kib: f64 = opening
        .rss_before
        .iter()
        .zip(&opening.rss_held)
        .map(|(b, h)| h.unwrap_or(0).saturating_sub(b.unwrap_or(0)) as f64)
        .sum();
    let graph: Vec<f64> = natsmon::graph_growth(&subs_base, &subs_held)
        .into_iter()
        .map(|n| n as f64)
        .collect();
    let local: Vec<f64> = subs_held
        .iter()
        .zip(&subs_base)
        .map(|(h, b)| h.local_per_org.saturating_sub(b.local_per_org) as f64)
        .collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let edges = args.edges as f64;
    let servers = monitors.len() as f64;
    let rows: Vec<(&str, f64, f64, &str)> = vec![
        (
            "deliveries/s",
            sim.deliveries_s,
            deliveries / secs,
            "events/s × active share × clients per active org",
        ),
        (
            "events ingested/s, all edges (per-org interest)",
            sim.ingest_s,
            ingest_total as f64 / secs,
            "events/s × active share",
        ),
        (
            "edge memory for the connections and orgs, all edges (MiB)",
            sim.edge_mib,
            grown_kib / 1024.0,
            "connections × KiB per connection + active orgs × KiB per org",
        ),
        (
            "edge CPU, all edges (cores)",
            sim.edge_cores,
            edge_cores,
            "deliveries/s × CPU per delivery + ingest/s × CPU per ingest + connections and orgs × idle CPU",
        ),
        (
            "NATS CPU, all servers (cores)",
            sim.nats_cores,
            nats_cores,
            "idle cluster + events/s × CPU per event + active orgs × audit CPU",
        ),
        (
            "subscriptions added to each server's interest graph (/subsz, mean)",
            sim.subs_per_server_per_org,
            mean(&graph),
            "active orgs (every edge's org subscriptions reach every server)",
        ),
        (
            "per-org subscriptions of each server's own edges (mean)",
            sim.active_orgs / edges.min(servers),
            mean(&local),
            "active orgs ÷ servers with an edge",
        ),
    ];
    let title = args.output.title.clone().unwrap_or_else(|| {
        format!(
            "simulate: {} orgs ({} with {} clients) on {} edges, 3-server cluster, K = {}, {} events/s for {} s",
            args.orgs, args.active_orgs, args.clients, args.edges, args.partitions, args.rate, args.duration
        )
    });
    let mut r = Report::new(title);
    r.figure(
        "model inputs",
        format!(
            "{:.1} KiB per connection, {:.1} KiB per org; edge CPU {:.1} µs per delivery, {:.1} µs per ingested event, {:.2} µs/s per connection, {:.1} µs/s per org; NATS {:.2} cores idle + {:.0} µs per event + {:.1} µs/s per org; {:.0} events/s per stream",
            args.kib_per_connection,
            args.kib_per_org,
            args.cpu_us_per_delivery,
            args.cpu_us_per_ingest,
            args.cpu_us_per_connection_s,
            args.cpu_us_per_org_s,
            args.nats_idle_cores,
            args.nats_cpu_us_per_event,
            args.nats_cpu_us_per_org_s,
            args.stream_events_s
        ),
    );
    let mut worst: f64 = 1.0;
    for (what, predicted, measured, how) in &rows {
        let factor = capacity::agreement(*predicted, *measured);
        if let Some(f) = factor {
            worst = worst.max(f);
        }
        r.figure(
            &format!("{what}: predicted / measured"),
            format!(
                "{predicted:.3} / {measured:.3} (factor {}; model: {how})",
                factor.map_or("n/a".into(), |f| format!("{f:.2}"))
            ),
        );
    }
    r.figure(
        "events ingested per edge",
        ingested
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(" / "),
    );
    r.figure(
        "orgs with clients per edge / clients per edge",
        format!(
            "{} / {}",
            org_sets
                .iter()
                .map(|s| s.len().to_string())
                .collect::<Vec<_>>()
                .join(" + "),
            per_edge
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(" + ")
        ),
    );
    r.figure(
        "measured edge memory per idle connection",
        format!("{:.1} KiB", grown_kib / args.clients.max(1) as f64),
    );
    r.figure(
        "measured edge CPU per delivery, ingest included",
        format!("{:.1} µs", edge_cores * secs * 1e6 / deliveries.max(1.0)),
    );
    r.figure(
        "measured NATS CPU per stored event (3 servers)",
        format!(
            "{:.0} µs",
            nats_cores * secs * 1e6 / phase.published.stored.max(1) as f64
        ),
    );
    let mib = |v: &[Option<u64>]| {
        v.iter()
            .map(|k| k.map_or("n/a".into(), |k| format!("{:.1}", k as f64 / 1024.0)))
            .collect::<Vec<_>>()
            .join(" + ")
    };
    let nats_grown: f64 = nats_rss
        .iter()
        .zip(&nats_rss_base)
        .map(|(h, b)| h.unwrap_or(0).saturating_sub(b.unwrap_or(0)) as f64)
        .sum();
    r.figure(
        "NATS server VmRSS before clients / with all connected",
        format!(
            "{} / {} MiB ({:.2} KiB per interest-graph entry added, all servers)",
            mib(&nats_rss_base),
            mib(&nats_rss),
            nats_grown / graph.iter().sum::<f64>().max(1.0)
        ),
    );
    r.figure(
        "CPU (% of one core): edges / NATS servers / loadgen / rest",
        format!(
            "{} / {:.1} / {:.1} / {:.1}",
            phase
                .cpu
                .edges
                .iter()
                .map(|e| format!("{e:.1}"))
                .collect::<Vec<_>>()
                .join(" + "),
            phase.cpu.servers,
            phase.cpu.loadgen,
            phase.cpu.others
        ),
    );
    r.figure(
        "publish → receive latency p50 / p99 / max",
        format!(
            "{:.2} / {:.2} / {:.2} ms",
            phase.latency.p50, phase.latency.p99, phase.latency.max
        ),
    );
    r.figure("correctness", phase.correctness());
    r.figure(
        "machine load average at start / end",
        format!(
            "{} / {}",
            load_start.map_or("n/a".into(), |v| format!("{v:.2}")),
            load_end.map_or("n/a".into(), |v| format!("{v:.2}"))
        ),
    );
    add_full_plan(&mut r, args.model_orgs, &full);
    r.goal(Goal::new(
        "model and simulation agree",
        "every figure within a factor of 2",
        format!("worst factor {worst:.2}"),
        Some(worst <= 2.0),
    ));
    r.goal(Goal::new(
        "every event to every client of its org, once, in order",
        "0 lost, 0 duplicated, 0 reordered",
        phase.correctness(),
        Some(phase.exact()),
    ));
    Ok(r)
}

/// The full-size plan's figures.
fn add_full_plan(r: &mut Report, orgs: f64, p: &Plan) {
    r.figure(
        &format!("plan for {orgs:.0} orgs: load"),
        format!(
            "{:.0} connections over {:.0} active orgs ({:.1} each), {:.0} events/s, {:.0} deliveries/s, {:.0} ingested/s",
            p.connections, p.active_orgs, p.clients_per_active_org, p.events_s, p.deliveries_s, p.ingest_s
        ),
    );
    r.figure(
        &format!("plan for {orgs:.0} orgs: machines"),
        format!(
            "{:.0} edges (memory needs {:.0}, CPU {:.0}; {:.0} connections, {:.0} MiB, {:.0} % of a core each), {:.0} NATS servers ({:.1} cores busy), {:.0} partitions",
            p.edges, p.edges_for_memory, p.edges_for_cpu, p.connections_per_edge, p.mib_per_edge, p.cpu_pct_per_edge, p.nats_servers, p.nats_cores, p.partitions
        ),
    );
    r.figure(
        &format!("plan for {orgs:.0} orgs: subscriptions per NATS server"),
        format!(
            "per-org interest: {:.0} in each interest graph ({:.0} of its own edges); per-partition: {:.0}",
            p.subs_per_server_per_org, p.local_subs_per_server_per_org, p.subs_per_server_per_partition
        ),
    );
    r.figure(
        &format!("plan for {orgs:.0} orgs: events ingested per edge"),
        format!(
            "per-org interest: {:.0}/s; per-partition interest: {:.0}/s",
            p.ingest_per_edge_per_org, p.ingest_per_edge_per_partition
        ),
    );
    r.figure(
        &format!("plan for {orgs:.0} orgs: cost"),
        format!(
            "{:.2} per hour, {:.4} per million deliveries",
            p.cost_per_hour, p.cost_per_million_deliveries
        ),
    );
}
