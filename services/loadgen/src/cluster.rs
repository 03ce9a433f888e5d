//! The clustered target of the scale-out scenarios (`partitions`,
//! `affinity`, `simulate`): a real 3-server JetStream cluster on loopback
//! (the testkit's [`NatsCluster::start_partitioned`], with the partition
//! mapping for K streams) and E `herald-edge` processes with
//! `HERALD_PARTITIONS=K` and `HERALD_STREAM_REPLICAS=3`.
//!
//! Edge i is given only the URL of server `i mod 3`, so the subscriptions a
//! server holds for its local clients are known: which server an edge talks
//! to is part of what the scenarios measure. Dropping the target kills the
//! edges first, then the servers (field order).

use std::path::Path;

use herald_testkit::{EdgeOptions, EdgeProcess, NatsCluster};

use crate::error::LoadError;
use crate::fleet::{Fleet, FleetConfig};
use crate::probe::Probe;
use crate::procfs::{self, CpuSnapshot};
use crate::routing::Routing;
use crate::session::wait_for_metrics;
use crate::streaming::{self, Mix, Opening, Placement, StreamTarget};
use crate::target::Target;

/// NATS servers in the cluster.
pub const SERVERS: usize = 3;
/// File descriptors an edge needs beyond one per connection.
const EDGE_SPARE_FDS: u64 = 48;
/// File descriptors the load generator keeps for itself.
const SPARE_FDS: u64 = 128;

/// A 3-server JetStream cluster with K partition streams and edges on it.
pub struct ClusterTarget {
    /// The edges, their probes and the open-files limit (dropped first).
    pub st: StreamTarget,
    /// Partition streams.
    pub partitions: u32,
    cluster: NatsCluster,
}

impl ClusterTarget {
    /// Starts the cluster with the mapping for `partitions` streams, then
    /// `edges` edges one after the other (the first creates the R3 streams),
    /// each admitting `per_edge` connections; `edge_env` (`KEY=VALUE`) is
    /// applied last. Checks the open-files limit for `clients` first.
    pub async fn start(
        edge_bin: &Path,
        partitions: u32,
        edges: usize,
        clients: usize,
        per_edge: usize,
        edge_env: &[String],
    ) -> Result<Self, LoadError> {
        if !edge_bin.is_file() {
            return Err(LoadError::Setup(format!(
                "edge binary {} not found; build it with `cargo build --release -p herald-edge` or pass --edge-bin",
                edge_bin.display()
            )));
        }
        if edges == 0 || herald_proto::Partitions::new(partitions).is_none() {
            return Err(LoadError::Setup(
                "at least one edge and 1–1024 partitions are needed".into(),
            ));
        }
        let fd_limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0);
        let need = (clients as u64 + SPARE_FDS).max(per_edge as u64 + EDGE_SPARE_FDS);
        if fd_limit < need {
            return Err(LoadError::Setup(format!(
                "the open-files limit is {fd_limit}; {clients} clients ({per_edge} on the busiest edge) need {need}"
            )));
        }
        eprintln!(
            "herald-loadgen: starting a {SERVERS}-server JetStream cluster, K = {partitions}"
        );
        let cluster = NatsCluster::start_partitioned(SERVERS, partitions).await;
        let secret = format!("loadgen-{:032x}", rand::random::<u128>());
        let mut processes = Vec::with_capacity(edges);
        for i in 0..edges {
            let server = &cluster.servers()[i % SERVERS];
            let mut opts = EdgeOptions::new(server.url(), secret.clone())
                .with_env("HERALD_METRICS_PUBLIC", "true")
                // The testkit finds the port in the `listening` info line.
                .with_env("RUST_LOG", "warn,herald_edge=info")
                .with_env("HERALD_PARTITIONS", partitions.to_string())
                .with_env("HERALD_STREAM_REPLICAS", SERVERS.to_string())
                .with_env(
                    "HERALD_MAX_CONNECTIONS",
                    (per_edge + 1_000).max(100_000).to_string(),
                )
                .with_env("HERALD_MAX_CONNECTIONS_PER_USER", "1000");
            for kv in edge_env {
                let (k, v) = kv.split_once('=').ok_or_else(|| {
                    LoadError::Setup(format!("--edge-env {kv}: expected KEY=VALUE"))
                })?;
                opts = opts.with_env(k, v);
            }
            processes.push(EdgeProcess::spawn(edge_bin, opts).await);
        }
        let target = Target::from_processes(processes, cluster.urls(), secret);
        let mut probes = Vec::with_capacity(edges);
        for edge in &target.edges {
            let probe = Probe::new(&edge.url)?;
            wait_for_metrics(&probe).await?;
            probes.push(probe);
        }
        Ok(Self {
            st: StreamTarget {
                target,
                probes,
                fd_limit,
            },
            partitions,
            cluster,
        })
    }

    /// The server edge `i` talks to.
    pub fn server_of_edge(i: usize) -> usize {
        i % SERVERS
    }

    /// Client URLs of the servers, in order.
    pub fn server_urls(&self) -> Vec<String> {
        self.cluster.servers().iter().map(|s| s.url()).collect()
    }

    /// Monitoring URLs of the servers, in order.
    pub fn monitor_urls(&self) -> Vec<String> {
        self.cluster
            .servers()
            .iter()
            .map(|s| s.monitor_url())
            .collect()
    }

    /// Process ids of the servers.
    pub fn server_pids(&self) -> Vec<u32> {
        self.cluster
            .servers()
            .iter()
            .filter_map(|s| s.pid())
            .collect()
    }

    /// CPU time of the edges and of the servers now.
    pub fn cpu(&self) -> ClusterCpu {
        ClusterCpu {
            edges: self
                .st
                .target
                .edge_pids()
                .iter()
                .map(|&p| CpuSnapshot::take(Some(p), None))
                .collect(),
            // The servers' ticks are summed in the snapshot's edge slot.
            servers: CpuSnapshot::take_all(&self.server_pids(), None),
        }
    }

    /// Opens `clients` WebSocket clients, client i a user of org
    /// `orgs[i mod orgs.len()]`, each on the edge `routing` picks; waits
    /// until every one is acked and reads the edges' memory per connection.
    pub async fn open_clients(
        &self,
        prefix: &str,
        clients: usize,
        orgs: &[String],
        routing: Routing,
        services: &[String],
        connect_concurrency: usize,
    ) -> Result<(Fleet, Opening), LoadError> {
        let addrs = self.st.edge_addrs();
        let mut plans = streaming::plan_clients(
            &self.st.target.jwt_secret,
            prefix,
            clients,
            orgs,
            Mix::WEBSOCKET,
            &addrs,
            Placement::Spread,
        );
        for (i, p) in plans.iter_mut().enumerate() {
            p.home = routing.edge(i, &orgs[p.org as usize], addrs.len());
        }
        let config = FleetConfig {
            edges: addrs,
            services: services.to_vec(),
            connect_concurrency,
            orgs: orgs.to_vec(),
        };
        streaming::open(&self.st, config, plans, orgs.len()).await
    }

    /// `VmRSS` of every server, KiB.
    pub fn server_rss(&self) -> Vec<Option<u64>> {
        self.server_pids()
            .into_iter()
            .map(procfs::rss_kib)
            .collect()
    }
}

/// CPU time of a cluster's processes at one instant.
pub struct ClusterCpu {
    edges: Vec<CpuSnapshot>,
    servers: CpuSnapshot,
}

/// CPU used between two [`ClusterCpu`] readings, % of one core.
#[derive(Debug, Clone, Default)]
pub struct ClusterCpuUse {
    /// Each edge.
    pub edges: Vec<f64>,
    /// All NATS servers together.
    pub servers: f64,
    /// This load generator.
    pub loadgen: f64,
    /// The rest of the machine (other processes, kernel).
    pub others: f64,
}

impl ClusterCpuUse {
    /// All edges together.
    pub fn edges_total(&self) -> f64 {
        self.edges.iter().sum()
    }
}

impl ClusterCpu {
    /// CPU used from `self` to `later`.
    pub fn until(&self, later: &ClusterCpu) -> ClusterCpuUse {
        let edges: Vec<f64> = self
            .edges
            .iter()
            .zip(&later.edges)
            .map(|(a, b)| a.until(b).edge.unwrap_or(0.0))
            .collect();
        let s = self.servers.until(&later.servers);
        let servers = s.edge.unwrap_or(0.0);
        let loadgen = s.loadgen.unwrap_or(0.0);
        let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
        let ours = edges.iter().sum::<f64>() + servers + loadgen;
        let others = s.machine_busy.map_or(0.0, |b| (b * cores - ours).max(0.0));
        ClusterCpuUse {
            edges,
            servers,
            loadgen,
            others,
        }
    }
}
