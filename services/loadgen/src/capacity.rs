//! The capacity model of `docs/capacity.md`, as arithmetic: from a
//! deployment's size (orgs, users, peak concurrency, event rate) and
//! per-unit costs measured on the benchmark machine (memory per connection,
//! edge CPU per delivery and per ingested event, NATS CPU per stored event,
//! one stream's publish rate), the number of edges, NATS servers and
//! partitions, the subscriptions each NATS server holds, and the cost per
//! million deliveries.
//!
//! Assumptions built in (the document states them with the figures):
//! - every connected user of an org receives every event of that org (an
//!   upper bound: a user who follows one property of five gets fewer);
//! - routing is org-affine, so an org's connected users share one edge and
//!   that edge alone ingests the org's events (per-org interest);
//! - NATS propagates each subscription to every server of the cluster, so
//!   each server's interest graph holds every edge's subscriptions.

/// One kind of machine and what it costs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NodeSize {
    /// Cores.
    pub cores: f64,
    /// Memory, GiB.
    pub mem_gib: f64,
    /// Price, per hour.
    pub price_per_hour: f64,
}

/// What the model is given.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Inputs {
    /// Orgs.
    pub orgs: f64,
    /// Users per org (properties × users per property).
    pub users_per_org: f64,
    /// Share of all users connected at the peak.
    pub concurrency: f64,
    /// Share of orgs with at least one connected user at the peak.
    pub active_org_share: f64,
    /// Events per org per second at the peak (all orgs, connected or not).
    pub events_per_org_s: f64,
    /// Edge memory per connection, KiB (measured).
    pub kib_per_connection: f64,
    /// Edge memory per org it holds (buffer, subscription, feed task), KiB
    /// (measured).
    pub kib_per_org: f64,
    /// Edge CPU per delivery, µs (measured).
    pub cpu_us_per_delivery: f64,
    /// Edge CPU per event ingested from NATS, µs (measured).
    pub cpu_us_per_ingest: f64,
    /// Edge CPU per connection per second with nothing published (pings
    /// and pongs), µs (measured).
    pub cpu_us_per_connection_s: f64,
    /// Edge CPU per org held per second with nothing published (the org's
    /// audits), µs (measured).
    pub cpu_us_per_org_s: f64,
    /// NATS CPU per org held on an edge per second (answering that org's
    /// audits), µs (measured).
    pub nats_cpu_us_per_org_s: f64,
    /// NATS CPU per stored event over the whole cluster (three replicas,
    /// RePublish to the edges), µs (measured).
    pub nats_cpu_us_per_event: f64,
    /// NATS CPU of the cluster with nothing published (Raft heartbeats of
    /// the streams, route pings), cores (measured).
    pub nats_idle_cores: f64,
    /// Events/s one partition stream takes on the cluster (measured).
    pub stream_events_s: f64,
    /// Share of a node's cores and memory the plan may use.
    pub utilisation: f64,
    /// An edge machine.
    pub edge: NodeSize,
    /// A NATS server machine.
    pub nats: NodeSize,
    /// NATS servers at least (a JetStream R3 cluster needs 3).
    pub min_nats: f64,
    /// Edges at least (one may fail).
    pub min_edges: f64,
}

/// What the model computes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    /// Concurrent connections at the peak.
    pub connections: f64,
    /// Orgs with a connected user.
    pub active_orgs: f64,
    /// Connections per active org.
    pub clients_per_active_org: f64,
    /// Events stored per second.
    pub events_s: f64,
    /// Deliveries per second.
    pub deliveries_s: f64,
    /// Events ingested per second by all edges together (per-org interest,
    /// org-affine routing: once per active org).
    pub ingest_s: f64,
    /// Edge cores busy.
    pub edge_cores: f64,
    /// Edges needed for memory.
    pub edges_for_memory: f64,
    /// Edges needed for CPU.
    pub edges_for_cpu: f64,
    /// Edges.
    pub edges: f64,
    /// NATS cores busy.
    pub nats_cores: f64,
    /// NATS servers.
    pub nats_servers: f64,
    /// Partition streams.
    pub partitions: f64,
    /// Per-org interest: subscriptions in each server's interest graph
    /// (every edge's, by route propagation).
    pub subs_per_server_per_org: f64,
    /// Per-org interest: subscriptions of each server's own edges.
    pub local_subs_per_server_per_org: f64,
    /// Per-partition interest: subscriptions in each server's interest graph.
    pub subs_per_server_per_partition: f64,
    /// Per-org interest: events each edge ingests per second.
    pub ingest_per_edge_per_org: f64,
    /// Per-partition interest: events each edge ingests per second (every
    /// edge has orgs in every partition).
    pub ingest_per_edge_per_partition: f64,
    /// Connections per edge.
    pub connections_per_edge: f64,
    /// Edge memory, all edges, for connections and orgs, MiB.
    pub edge_mib: f64,
    /// Edge memory per edge for connections and orgs, MiB.
    pub mib_per_edge: f64,
    /// Edge CPU per edge, % of one core.
    pub cpu_pct_per_edge: f64,
    /// Machines' cost per hour.
    pub cost_per_hour: f64,
    /// Cost per million deliveries.
    pub cost_per_million_deliveries: f64,
}

/// Computes the plan for `i`.
pub fn plan(i: &Inputs) -> Plan {
    let connections = i.orgs * i.users_per_org * i.concurrency;
    let active_orgs = (i.orgs * i.active_org_share).max(1.0);
    let clients_per_active_org = connections / active_orgs;
    let events_s = i.orgs * i.events_per_org_s;
    // Each event of an active org goes to all of its connected users.
    let deliveries_s = events_s * i.active_org_share * clients_per_active_org;
    let ingest_s = events_s * i.active_org_share;
    let edge_cores = (deliveries_s * i.cpu_us_per_delivery
        + ingest_s * i.cpu_us_per_ingest
        + connections * i.cpu_us_per_connection_s
        + active_orgs * i.cpu_us_per_org_s)
        / 1e6;
    let edge_mem_kib = i.edge.mem_gib * 1024.0 * 1024.0 * i.utilisation;
    // Org-affine: each active org's state lives on one edge.
    let memory_kib = connections * i.kib_per_connection + active_orgs * i.kib_per_org;
    let edges_for_memory = (memory_kib / edge_mem_kib).ceil();
    let edges_for_cpu = (edge_cores / (i.edge.cores * i.utilisation)).ceil();
    let edges = edges_for_memory.max(edges_for_cpu).max(i.min_edges);
    let nats_cores = i.nats_idle_cores
        + (events_s * i.nats_cpu_us_per_event + active_orgs * i.nats_cpu_us_per_org_s) / 1e6;
    let nats_servers = (nats_cores / (i.nats.cores * i.utilisation))
        .ceil()
        .max(i.min_nats);
    let partitions = (events_s / (i.stream_events_s * i.utilisation))
        .ceil()
        .max(1.0);
    let subs_per_server_per_org = active_orgs;
    let local_subs_per_server_per_org = active_orgs / nats_servers;
    let subs_per_server_per_partition = edges * partitions;
    let cost_per_hour = edges * i.edge.price_per_hour + nats_servers * i.nats.price_per_hour;
    let cost_per_million_deliveries = if deliveries_s > 0.0 {
        cost_per_hour / (deliveries_s * 3600.0) * 1e6
    } else {
        0.0
    };
    Plan {
        connections,
        active_orgs,
        clients_per_active_org,
        events_s,
        deliveries_s,
        ingest_s,
        edge_cores,
        edges_for_memory,
        edges_for_cpu,
        edges,
        nats_cores,
        nats_servers,
        partitions,
        subs_per_server_per_org,
        local_subs_per_server_per_org,
        subs_per_server_per_partition,
        ingest_per_edge_per_org: ingest_s / edges,
        ingest_per_edge_per_partition: events_s,
        connections_per_edge: connections / edges,
        edge_mib: memory_kib / 1024.0,
        mib_per_edge: memory_kib / edges / 1024.0,
        cpu_pct_per_edge: edge_cores / edges * 100.0,
        cost_per_hour,
        cost_per_million_deliveries,
    }
}

/// How far apart a prediction and a measurement are: the larger of their
/// two ratios (1 = equal, 2 = one is twice the other); `None` when either
/// is not positive.
pub fn agreement(predicted: f64, measured: f64) -> Option<f64> {
    (predicted > 0.0 && measured > 0.0).then(|| (predicted / measured).max(measured / predicted))
}

/// Two unit costs from two runs that differ in one quantity: each run is
/// `(total, x, y)` with `total = x × a + y × b`; returns `(a, b)` (both
/// kept ≥ 0), `None` when the runs do not tell them apart. E.g. edge CPU
/// per ingested event and per delivery from an org-affine and a
/// round-robin run (same deliveries, different ingest), or memory per org
/// and per connection (same connections, different orgs per edge).
pub fn solve2(one: (f64, f64, f64), two: (f64, f64, f64)) -> Option<(f64, f64)> {
    let (c1, i1, d1) = one;
    let (c2, i2, d2) = two;
    let det = i1 * d2 - i2 * d1;
    if det.abs() < f64::EPSILON {
        return None;
    }
    let a = ((c1 * d2 - c2 * d1) / det).max(0.0);
    let b = if d1 > 0.0 {
        ((c1 - a * i1) / d1).max(0.0)
    } else {
        return None;
    };
    Some((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> Inputs {
        Inputs {
            orgs: 1_000_000.0,
            users_per_org: 25.0,
            concurrency: 0.03,
            active_org_share: 0.25,
            events_per_org_s: 0.05,
            kib_per_connection: 12.0,
            kib_per_org: 0.0,
            cpu_us_per_delivery: 20.0,
            cpu_us_per_ingest: 40.0,
            cpu_us_per_connection_s: 0.0,
            cpu_us_per_org_s: 0.0,
            nats_cpu_us_per_org_s: 0.0,
            nats_cpu_us_per_event: 100.0,
            nats_idle_cores: 0.0,
            stream_events_s: 5_000.0,
            utilisation: 0.5,
            edge: NodeSize {
                cores: 4.0,
                mem_gib: 16.0,
                price_per_hour: 0.2,
            },
            nats: NodeSize {
                cores: 8.0,
                mem_gib: 32.0,
                price_per_hour: 0.5,
            },
            min_nats: 3.0,
            min_edges: 2.0,
        }
    }

    #[test]
    fn the_arithmetic_of_the_document() {
        let p = plan(&inputs());
        assert_eq!(p.connections, 750_000.0);
        assert_eq!(p.active_orgs, 250_000.0);
        assert_eq!(p.clients_per_active_org, 3.0);
        assert_eq!(p.events_s, 50_000.0);
        // 50,000 × 0.25 × 3
        assert_eq!(p.deliveries_s, 37_500.0);
        assert_eq!(p.ingest_s, 12_500.0);
        // (37,500 × 20 + 12,500 × 40) µs/s = 1.25 cores
        assert!((p.edge_cores - 1.25).abs() < 1e-9);
        // 750,000 × 12 KiB = 8.58 GiB over 8 GiB usable per edge → 2
        assert_eq!(p.edges_for_memory, 2.0);
        assert_eq!(p.edges_for_cpu, 1.0);
        assert_eq!(p.edges, 2.0);
        // 50,000 × 100 µs = 5 cores; 4 usable per server → 2, at least 3
        assert_eq!(p.nats_servers, 3.0);
        // 50,000 / 2,500 per stream
        assert_eq!(p.partitions, 20.0);
        assert_eq!(p.subs_per_server_per_org, 250_000.0);
        assert_eq!(p.subs_per_server_per_partition, 40.0);
        assert_eq!(p.ingest_per_edge_per_org, 6_250.0);
        assert_eq!(p.ingest_per_edge_per_partition, 50_000.0);
        assert!((p.cost_per_hour - 1.9).abs() < 1e-9);
        // 1.9 / (37,500 × 3,600) × 1e6
        assert!((p.cost_per_million_deliveries - 0.014_074).abs() < 1e-5);
        // Per-org memory and idle NATS CPU add to the same plan.
        let mut i = inputs();
        i.kib_per_org = 16.0;
        i.nats_idle_cores = 1.0;
        i.cpu_us_per_connection_s = 1.0;
        i.cpu_us_per_org_s = 2.0;
        i.nats_cpu_us_per_org_s = 4.0;
        let q = plan(&i);
        // 1.25 + (750,000 × 1 + 250,000 × 2) / 1e6
        assert!((q.edge_cores - 2.5).abs() < 1e-9);
        // 9,000,000 + 250,000 × 16 = 13,000,000 KiB over 8 GiB usable → 2
        assert!((q.edge_mib - 13_000_000.0 / 1024.0).abs() < 1e-6);
        assert_eq!(q.edges_for_memory, 2.0);
        // 1 + 5 + 250,000 × 4 / 1e6
        assert!((q.nats_cores - 7.0).abs() < 1e-9);
    }

    #[test]
    fn agreement_is_symmetric() {
        assert_eq!(agreement(2.0, 1.0), Some(2.0));
        assert_eq!(agreement(1.0, 2.0), Some(2.0));
        assert_eq!(agreement(0.0, 2.0), None);
    }

    #[test]
    fn splits_cpu_between_ingest_and_delivery() {
        // a = 40 µs per ingest, b = 20 µs per delivery.
        let one = (1_000.0 * 40.0 + 3_000.0 * 20.0, 1_000.0, 3_000.0);
        let two = (3_000.0 * 40.0 + 3_000.0 * 20.0, 3_000.0, 3_000.0);
        let (a, b) = solve2(one, two).expect("solvable");
        assert!((a - 40.0).abs() < 1e-9 && (b - 20.0).abs() < 1e-9);
        assert_eq!(solve2(one, one), None);
    }
}
