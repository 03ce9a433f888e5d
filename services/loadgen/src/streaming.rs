//! What the stream scenarios (`stream`, `fanout`, `resume`) share: their
//! whole set-up in one call ([`Scenario::start`]: preparing the edges with
//! open-files limits and connection caps, planning clients over orgs,
//! transports and edges, connecting the publisher, opening the clients and
//! measuring the edges' memory per idle connection) and tear-down
//! ([`finish`]), waiting for every client to catch up, and the figures
//! every stream report carries.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use tokio::time::Instant;

use crate::cli::TargetArgs;
use crate::error::LoadError;
use crate::fleet::{ClientPlan, ClientRecord, Fleet, FleetConfig, Transport};
use crate::poller::PollerLog;
use crate::probe::{EdgeMetrics, Probe};
use crate::procfs::{self, CpuUse};
use crate::publish::{Published, Publisher};
use crate::report::{opt1, Report};
use crate::session::{wait_for_metrics, wait_until, UserTokens};
use crate::target::Target;
use crate::verify::{self, Latency, Verdict};

/// File descriptors the load generator keeps free beyond one per client.
const SPARE_FDS: u64 = 64;
/// File descriptors an edge needs beyond one per connection (listener,
/// NATS, epoll, log, …; an idle edge holds about 20).
const EDGE_SPARE_FDS: u64 = 48;
/// Ephemeral ports left to everything else when planning source addresses.
const PORT_RESERVE: u32 = 4_000;
/// Longest wait for every client to be acked.
const OPEN_TIMEOUT: Duration = Duration::from_secs(240);
/// Longest wait for the edges to count every connection.
const HELD_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause with every client connected and nothing published, so the edges'
/// memory settles before it is read.
const SETTLE: Duration = Duration::from_secs(3);
/// Width of the windows of the p99 timeline.
pub const TIMELINE_WINDOW: Duration = Duration::from_secs(5);

/// The edges and NATS of a stream scenario, with a metrics probe per edge.
pub struct StreamTarget {
    /// The system under test.
    pub target: Target,
    /// One probe per edge, in edge order.
    pub probes: Vec<Probe>,
    /// The open-files limit in force (inherited by spawned edges).
    pub fd_limit: u64,
}

impl StreamTarget {
    /// Checks the open-files limits for `clients` in all and `per_edge` on
    /// the busiest edge, then spawns or locates the target. Spawned edges
    /// get connection caps that admit every client (before `--edge-env`).
    pub async fn prepare(
        args: &TargetArgs,
        clients: usize,
        per_edge: usize,
    ) -> Result<Self, LoadError> {
        let fd_limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0);
        let hard = procfs::nofile_limits().map_or(fd_limit, |(_, h)| h);
        let need = clients as u64 + SPARE_FDS;
        if fd_limit < need {
            return Err(LoadError::Setup(format!(
                "the open-files limit is {fd_limit} (hard limit {hard}); {clients} clients need at least {need}: \
                 raise the hard limit (needs CAP_SYS_RESOURCE) or run fewer clients"
            )));
        }
        let edge_need = per_edge as u64 + EDGE_SPARE_FDS;
        if args.spawn && fd_limit < edge_need {
            return Err(LoadError::Setup(format!(
                "a spawned edge inherits the open-files limit {fd_limit}; {per_edge} connections on one edge \
                 need at least {edge_need}: raise the hard limit, add --edge-nodes, or run fewer clients"
            )));
        }
        let defaults = [
            (
                "HERALD_MAX_CONNECTIONS".to_owned(),
                (per_edge + 1_000).max(100_000).to_string(),
            ),
            (
                "HERALD_MAX_CONNECTIONS_PER_USER".to_owned(),
                "1000".to_owned(),
            ),
        ];
        let target = Target::prepare(args, &defaults).await?;
        let mut probes = Vec::with_capacity(target.edges.len());
        for edge in &target.edges {
            let probe = Probe::new(&edge.url)?;
            wait_for_metrics(&probe).await?;
            probes.push(probe);
        }
        Ok(Self {
            target,
            probes,
            fd_limit,
        })
    }

    /// Edge addresses, in edge order.
    pub fn edge_addrs(&self) -> Vec<SocketAddr> {
        self.target.edges.iter().map(|e| e.addr).collect()
    }

    /// Metrics of the edges in `which`.
    pub async fn metrics_of(&self, which: &[usize]) -> Result<Vec<EdgeMetrics>, LoadError> {
        let mut out = Vec::with_capacity(which.len());
        for &i in which {
            out.push(self.probes[i].metrics().await?);
        }
        Ok(out)
    }

    /// Metrics of every edge.
    pub async fn metrics(&self) -> Result<Vec<EdgeMetrics>, LoadError> {
        let all: Vec<usize> = (0..self.probes.len()).collect();
        self.metrics_of(&all).await
    }

    /// `VmRSS` of every edge, KiB.
    pub fn rss(&self) -> Vec<Option<u64>> {
        self.target
            .edges
            .iter()
            .map(|e| e.pid.and_then(procfs::rss_kib))
            .collect()
    }
}

/// Where clients connect first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Each org's users spread over the edges: client i on edge (i / orgs) mod K.
    Spread,
    /// Every client on the first edge.
    First,
}

/// How many clients of each transport; the rest use WebSocket with JSON.
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    /// Share over SSE.
    pub sse: f64,
    /// Share over long-poll.
    pub longpoll: f64,
    /// Share over WebSocket with MessagePack (`herald.v1.msgpack`).
    pub msgpack: f64,
}

impl Mix {
    /// WebSocket (JSON) only.
    pub const WEBSOCKET: Mix = Mix {
        sse: 0.0,
        longpoll: 0.0,
        msgpack: 0.0,
    };
}

impl Placement {
    /// The edge client `i` connects to first, of `edges`, with `orgs` orgs.
    fn home(self, i: usize, orgs: usize, edges: usize) -> usize {
        match self {
            Placement::Spread => (i / orgs.max(1)) % edges.max(1),
            Placement::First => 0,
        }
    }

    /// The most of `clients` clients over `orgs` orgs that one of `edges`
    /// edges gets first.
    pub fn per_edge(self, clients: usize, orgs: usize, edges: usize) -> usize {
        let mut n = vec![0usize; edges.max(1)];
        for i in 0..clients {
            n[self.home(i, orgs, edges)] += 1;
        }
        n.into_iter().max().unwrap_or(0)
    }
}

/// Plans `n` clients: client i is user `<prefix>-u<i>` of org `i mod orgs`;
/// SSE, long-poll and MessagePack clients are picked at random (fixed
/// seed) in their shares; edges by `placement`. Beyond the ephemeral ports of one source
/// address, loopback clients bind to 127.0.0.2, .3, … in turn.
pub fn plan_clients(
    secret: &str,
    prefix: &str,
    n: usize,
    orgs: &[String],
    mix: Mix,
    edges: &[SocketAddr],
    placement: Placement,
) -> Vec<ClientPlan> {
    let n_sse = ((n as f64) * mix.sse).round() as usize;
    let n_lp = (((n as f64) * mix.longpoll).round() as usize).min(n - n_sse.min(n));
    let n_mp = (((n as f64) * mix.msgpack).round() as usize).min(n - n_sse.min(n) - n_lp);
    let mut transports: Vec<Transport> = std::iter::repeat_n(Transport::Sse, n_sse.min(n))
        .chain(std::iter::repeat_n(Transport::LongPoll, n_lp))
        .chain(std::iter::repeat_n(Transport::WebSocketMsgpack, n_mp))
        .collect();
    transports.resize(n, Transport::WebSocket);
    transports.shuffle(&mut StdRng::seed_from_u64(7));
    let budget = procfs::ephemeral_ports()
        .unwrap_or(28_000)
        .saturating_sub(PORT_RESERVE)
        .max(1_000) as usize;
    let mut on_edge = vec![0usize; edges.len()];
    let tokens = UserTokens::new(secret, prefix);
    (0..n)
        .map(|i| {
            let org = (i % orgs.len()) as u32;
            let home = placement.home(i, orgs.len(), edges.len());
            let ordinal = on_edge[home];
            on_edge[home] += 1;
            let source = match edges[home].ip() {
                IpAddr::V4(ip) if ip.is_loopback() && ordinal >= budget => {
                    let k = (ordinal / budget).min(250) as u8;
                    Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + k)))
                }
                _ => None,
            };
            ClientPlan {
                org,
                token: tokens.user(i, &orgs[org as usize]),
                transport: transports[i],
                home,
                source,
            }
        })
        .collect()
}

/// The most clients planned on one edge.
pub fn busiest_edge(plans: &[ClientPlan], edges: usize) -> usize {
    let k = edges.max(1);
    let mut n = vec![0usize; k];
    for p in plans {
        n[p.home % k] += 1;
    }
    n.into_iter().max().unwrap_or(0)
}

/// Figures from opening the clients.
#[derive(Debug, Clone, Default)]
pub struct Opening {
    /// Clients: WebSocket, SSE, long-poll.
    pub clients: (usize, usize, usize),
    /// Orgs they are spread over.
    pub orgs: usize,
    /// Time until every client was acked.
    pub ramp: Duration,
    /// Per-client connect → ack, ms.
    pub connect_ms: Latency,
    /// Attempts that failed while opening.
    pub failures: u64,
    /// Edge `VmRSS` before any client, KiB, per edge.
    pub rss_before: Vec<Option<u64>>,
    /// Edge `VmRSS` with every client connected and idle, KiB, per edge.
    pub rss_held: Vec<Option<u64>>,
    /// Edge open file descriptors with every client connected, per edge.
    pub edge_fds: Vec<Option<usize>>,
    /// Edge metrics with every client connected, per edge.
    pub held: Vec<EdgeMetrics>,
    /// This process's `VmRSS` with every client connected, KiB.
    pub loadgen_rss_kib: Option<u64>,
    /// Open-files limit.
    pub fd_limit: u64,
}

impl Opening {
    /// All clients.
    pub fn total(&self) -> usize {
        self.clients.0 + self.clients.1 + self.clients.2
    }

    /// Edge memory per idle connection, KiB: growth of all edges from
    /// before the clients to all connected and idle, divided by the
    /// clients. Includes the per-org state the clients brought in.
    pub fn kib_per_connection(&self) -> Option<f64> {
        let mut grown = 0u64;
        for (b, h) in self.rss_before.iter().zip(&self.rss_held) {
            grown += h.as_ref()?.saturating_sub(*b.as_ref()?);
        }
        Some(grown as f64 / self.total().max(1) as f64)
    }

    /// Most WebSocket connections one edge reported.
    pub fn max_ws_on_one_edge(&self) -> u64 {
        self.held.iter().map(|m| m.websocket).max().unwrap_or(0)
    }
}

/// Starts the clients, waits until every one is acked and the edges count
/// them, lets the edges settle idle and reads their memory.
pub async fn open(
    st: &StreamTarget,
    config: FleetConfig,
    plans: Vec<ClientPlan>,
    orgs: usize,
) -> Result<(Fleet, Opening), LoadError> {
    let n = plans.len();
    let mut opening = Opening {
        orgs,
        fd_limit: st.fd_limit,
        rss_before: st.rss(),
        ..Opening::default()
    };
    eprintln!(
        "herald-loadgen: opening {n} clients over {orgs} orgs on {} edge(s)",
        config.edges.len()
    );
    let started = Instant::now();
    let fleet = Fleet::start(config, plans);
    opening.clients = fleet.counts();
    wait_until(OPEN_TIMEOUT, "every client to be acked", || {
        let ready = fleet.ready();
        (
            ready >= n,
            format!("{ready}/{n} acked, {} failed attempts", fleet.failures()),
        )
    })
    .await?;
    opening.ramp = started.elapsed();
    opening.failures = fleet.failures();
    let (ws, sse, lp) = opening.clients;
    let deadline = Instant::now() + HELD_TIMEOUT;
    loop {
        let m = EdgeMetrics::sum(&st.metrics().await?);
        if m.websocket >= ws as u64 && m.sse >= sse as u64 && m.waiters >= lp as u64 {
            break;
        }
        if Instant::now() >= deadline {
            return Err(LoadError::Timeout(format!(
                "the edges count {} WebSocket, {} SSE, {} held polls of {ws}/{sse}/{lp} after {HELD_TIMEOUT:?}",
                m.websocket, m.sse, m.waiters
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(SETTLE).await;
    opening.rss_held = st.rss();
    opening.edge_fds = st
        .target
        .edges
        .iter()
        .map(|e| e.pid.and_then(procfs::open_fds))
        .collect();
    opening.held = st.metrics().await?;
    opening.loadgen_rss_kib = procfs::rss_kib(std::process::id());
    let mut connect = fleet.connect_times_ms();
    opening.connect_ms = verify::percentiles(&mut connect);
    eprintln!(
        "herald-loadgen: {n} clients acked in {:.1}s; edge memory per connection {} KiB",
        opening.ramp.as_secs_f64(),
        opt1(opening.kib_per_connection())
    );
    Ok((fleet, opening))
}

/// The edges a scenario plans for: `--edge-nodes` when spawning, else the
/// `--edges` given (at least one).
pub fn planned_edges(args: &TargetArgs) -> usize {
    if args.spawn {
        args.edge_nodes.max(1)
    } else {
        args.edges.len().max(1)
    }
}

/// What a stream scenario sets up: its clients over orgs, transports and
/// edges, and the target they run against.
pub struct Scenario<'a> {
    /// The edges and NATS.
    pub target: &'a TargetArgs,
    /// Prefix of org and user ids.
    pub prefix: &'a str,
    /// Clients to open.
    pub clients: usize,
    /// Org ids; client i is in org `i mod orgs.len()`.
    pub orgs: Vec<String>,
    /// Services every client subscribes to and events are published to.
    pub services: &'a [String],
    /// Transports.
    pub mix: Mix,
    /// Edges the clients connect to first.
    pub placement: Placement,
    /// Clients opening at once.
    pub connect_concurrency: usize,
}

/// A stream scenario set up: the target, the publisher, every client open.
pub struct Running {
    /// The edges and NATS.
    pub st: StreamTarget,
    /// Publishes to the scenario's orgs and services.
    pub publisher: Publisher,
    /// The clients.
    pub fleet: Fleet,
    /// What opening the clients measured.
    pub opening: Opening,
    /// Machine load average (1 min) before the clients opened.
    pub load_start: Option<f64>,
}

impl Scenario<'_> {
    /// Prepares the target (open-files limits for the busiest edge),
    /// plans the clients, connects the publisher and opens every client.
    pub async fn start(self) -> Result<Running, LoadError> {
        let per_edge =
            self.placement
                .per_edge(self.clients, self.orgs.len(), planned_edges(self.target));
        let st = StreamTarget::prepare(self.target, self.clients, per_edge).await?;
        let addrs = st.edge_addrs();
        let plans = plan_clients(
            &st.target.jwt_secret,
            self.prefix,
            self.clients,
            &self.orgs,
            self.mix,
            &addrs,
            self.placement,
        );
        let config = FleetConfig {
            edges: addrs,
            services: self.services.to_vec(),
            connect_concurrency: self.connect_concurrency,
            orgs: self.orgs.clone(),
        };
        let load_start = procfs::loadavg();
        let orgs = self.orgs.len();
        let publisher =
            Publisher::connect(&st.target.nats_url, self.orgs, self.services.to_vec()).await?;
        let (fleet, opening) = open(&st, config, plans, orgs).await?;
        Ok(Running {
            st,
            publisher,
            fleet,
            opening,
            load_start,
        })
    }
}

/// Stops every client, saves the spawned processes' logs into `logs` when
/// given, and stops the target; returns what each client saw.
pub async fn finish(
    st: StreamTarget,
    fleet: Fleet,
    logs: Option<&Path>,
) -> Result<Vec<ClientRecord>, LoadError> {
    let records = fleet.stop().await;
    if let Some(dir) = logs {
        st.target.save_logs(dir)?;
    }
    drop(st);
    Ok(records)
}

/// Waits until every client has received the last stored event of its org;
/// returns whether they all did within `timeout`, and the wait.
pub async fn wait_caught_up(
    fleet: &Fleet,
    published: &Published,
    timeout: Duration,
) -> (bool, Duration) {
    let started = Instant::now();
    let done = wait_until(timeout, "every client to catch up", || {
        let n = fleet.behind(|org| published.last_of(org as usize));
        (n == 0, format!("{n} clients behind"))
    })
    .await
    .is_ok();
    (done, started.elapsed())
}

/// Splits client records into their event logs (by client index) and
/// transports.
pub fn split(
    records: Vec<ClientRecord>,
) -> (
    Vec<PollerLog>,
    Vec<Transport>,
    Vec<Vec<crate::fleet::Attempt>>,
) {
    let mut logs = Vec::with_capacity(records.len());
    let mut transports = Vec::with_capacity(records.len());
    let mut attempts = Vec::with_capacity(records.len());
    for r in records {
        transports.push(r.transport);
        logs.push(r.log.events);
        attempts.push(r.log.attempts);
    }
    (logs, transports, attempts)
}

/// Figures about the clients and edge memory.
pub fn add_opening(r: &mut Report, o: &Opening) {
    let (ws, sse, lp) = o.clients;
    r.figure(
        "clients (WebSocket / SSE / long-poll)",
        format!(
            "{} ({ws} / {sse} / {lp}) over {} orgs on {} edge(s)",
            o.total(),
            o.orgs,
            o.held.len()
        ),
    );
    let per_edge: Vec<String> = o
        .held
        .iter()
        .map(|m| format!("{}/{}/{}", m.websocket, m.sse, m.waiters))
        .collect();
    r.figure(
        "edge counts with all connected (WebSocket/SSE/held polls, per edge)",
        per_edge.join(", "),
    );
    r.figure(
        "time until every client was acked",
        format!(
            "{:.1} s ({:.0} clients/s), {} failed attempts",
            o.ramp.as_secs_f64(),
            o.total() as f64 / o.ramp.as_secs_f64().max(1e-3),
            o.failures
        ),
    );
    let c = &o.connect_ms;
    r.figure(
        "connect → ack per client p50 / p99 / max",
        format!("{:.1} / {:.1} / {:.1} ms", c.p50, c.p99, c.max),
    );
    let mib = |v: &[Option<u64>]| {
        v.iter()
            .map(|k| opt1(k.map(|k| k as f64 / 1024.0)))
            .collect::<Vec<_>>()
            .join(" + ")
    };
    r.figure(
        "edge VmRSS: before clients / all connected and idle",
        format!("{} / {} MiB", mib(&o.rss_before), mib(&o.rss_held)),
    );
    r.figure(
        "edge memory per idle connection",
        format!("{} KiB", opt1(o.kib_per_connection())),
    );
    let fds: Vec<String> = o
        .edge_fds
        .iter()
        .map(|f| f.map_or_else(|| "n/a".into(), |f| f.to_string()))
        .collect();
    r.figure(
        "edge open files with all connected / limit",
        format!("{} / {}", fds.join(" + "), o.fd_limit),
    );
    r.figure(
        "load generator VmRSS with all connected",
        format!("{} MiB", opt1(o.loadgen_rss_kib.map(|k| k as f64 / 1024.0))),
    );
}

/// Figures about deliveries and latency.
pub fn add_delivery(
    r: &mut Report,
    v: &Verdict,
    l: &Latency,
    logs: &[PollerLog],
    transports: &[Transport],
    delivery_window: Duration,
) {
    r.figure(
        "deliveries owed / received",
        format!(
            "{} / {} ({} of {} clients exact)",
            v.expected, v.received, v.complete_pollers, v.pollers
        ),
    );
    r.figure(
        "lost (of which not yet arrived) / duplicated / out of order / unexpected",
        format!(
            "{} ({}) / {} / {} / {}",
            v.lost, v.pending, v.duplicated, v.out_of_order, v.unexpected
        ),
    );
    r.figure(
        "deliveries/s (received ÷ first publish to last client caught up)",
        format!(
            "{:.0} ({} in {:.1} s)",
            v.received as f64 / delivery_window.as_secs_f64().max(1e-3),
            v.received,
            delivery_window.as_secs_f64()
        ),
    );
    r.figure(
        "publish → receive latency p50 / p95 / p99 / p99.9 / max",
        format!(
            "{:.2} / {:.2} / {:.2} / {:.2} / {:.2} ms ({} samples)",
            l.p50, l.p95, l.p99, l.p999, l.max, l.count
        ),
    );
    let kinds = [
        Transport::WebSocket,
        Transport::WebSocketMsgpack,
        Transport::Sse,
        Transport::LongPoll,
    ];
    if kinds.iter().filter(|k| transports.contains(k)).count() > 1 {
        for kind in kinds {
            let of: Vec<PollerLog> = logs
                .iter()
                .zip(transports)
                .filter(|(_, t)| **t == kind)
                .map(|(l, _)| PollerLog {
                    latencies_us: l.latencies_us.clone(),
                    ..PollerLog::default()
                })
                .collect();
            if of.is_empty() {
                continue;
            }
            let k = verify::latency(&of);
            r.figure(
                &format!("  {} latency p50 / p99 / max", kind.name()),
                format!(
                    "{:.2} / {:.2} / {:.2} ms ({} samples)",
                    k.p50, k.p99, k.max, k.count
                ),
            );
        }
    }
    let timeline: Vec<String> = verify::p99_timeline(logs, TIMELINE_WINDOW)
        .iter()
        .map(|ms| format!("{ms:.1}"))
        .collect();
    r.figure("p99 per 5 s of publishing (ms)", timeline.join(" "));
}

/// Edge counters over the run.
pub fn add_edge_counters(r: &mut Report, before: &EdgeMetrics, after: &EdgeMetrics) {
    let d = |a: u64, b: u64| a.saturating_sub(b);
    r.figure(
        "edge counters during the run",
        format!(
            "ingested {}, delivered {}, dropped {}, gaps filled {}, history reads {}, resets {}, slow-consumer closes {}",
            d(after.ingested, before.ingested),
            d(after.delivered, before.delivered),
            d(after.dropped, before.dropped),
            d(after.gaps_filled, before.gaps_filled),
            d(after.history_reads, before.history_reads),
            d(after.resets, before.resets),
            d(after.slow_closes, before.slow_closes),
        ),
    );
}

/// CPU use and machine load.
pub fn add_cpu(r: &mut Report, c: &CpuUse, load: (Option<f64>, Option<f64>)) {
    r.figure(
        "CPU while publishing (% of one core)",
        format!(
            "edge {}, nats-server {}, loadgen {}, everything else {}; machine busy {} % of all cores",
            opt1(c.edge),
            opt1(c.nats),
            opt1(c.loadgen),
            opt1(c.others),
            opt1(c.machine_busy)
        ),
    );
    r.figure(
        "machine load average (1 min) at start / end",
        format!("{} / {}", opt_load(load.0), opt_load(load.1)),
    );
}

fn opt_load(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.2}"))
}

/// `reason ×n, …` of the end reasons added since `before`.
pub fn reasons_since(
    before: &std::collections::BTreeMap<String, u64>,
    now: &std::collections::BTreeMap<String, u64>,
) -> String {
    let parts: Vec<String> = now
        .iter()
        .filter_map(|(k, &n)| {
            let d = n - before.get(k).copied().unwrap_or(0).min(n);
            (d > 0).then(|| format!("{k} ×{d}"))
        })
        .collect();
    if parts.is_empty() {
        "none".to_owned()
    } else {
        parts.join(", ")
    }
}

pub use crate::session::org_ids;

/// Checks a client count and share arguments.
pub fn check_counts(clients: usize, orgs: usize, sse: f64, lp: f64) -> Result<(), LoadError> {
    if clients == 0 || orgs == 0 {
        return Err(LoadError::Setup(
            "--clients and --orgs must be above zero".into(),
        ));
    }
    let share_ok = |s: f64| s.is_finite() && (0.0..=1.0).contains(&s);
    if !share_ok(sse) || !share_ok(lp) || sse + lp > 1.0 {
        return Err(LoadError::Setup(
            "--sse-share and --longpoll-share must be within 0–1 and add up to at most 1".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_spread_orgs_transports_and_edges() {
        let orgs = org_ids("t", 4);
        let edges: Vec<SocketAddr> = vec![
            "127.0.0.1:1".parse().expect("addr"),
            "127.0.0.1:2".parse().expect("addr"),
        ];
        let mix = Mix {
            sse: 0.25,
            longpoll: 0.25,
            msgpack: 0.125,
        };
        let plans = plan_clients(
            "secret-secret-secret",
            "t",
            16,
            &orgs,
            mix,
            &edges,
            Placement::Spread,
        );
        let count = |t| plans.iter().filter(|p| p.transport == t).count();
        assert_eq!(
            (
                count(Transport::WebSocket),
                count(Transport::WebSocketMsgpack),
                count(Transport::Sse),
                count(Transport::LongPoll)
            ),
            (6, 2, 4, 4)
        );
        assert_eq!((plans[5].org, plans[5].home), (1, 1));
        assert_eq!(busiest_edge(&plans, 2), 8);
        assert_eq!(Placement::Spread.per_edge(16, 4, 2), 8);
        assert_eq!(
            Placement::Spread.per_edge(5, 1, 2),
            3,
            "one org: round robin"
        );
        assert_eq!(Placement::First.per_edge(5, 3, 2), 5);
        let first = plan_clients(
            "secret-secret-secret",
            "t",
            4,
            &orgs,
            Mix::WEBSOCKET,
            &edges,
            Placement::First,
        );
        assert!(first.iter().all(|p| p.home == 0 && p.source.is_none()));
        assert!(check_counts(1, 1, 0.6, 0.6).is_err() && check_counts(1, 1, 0.1, 0.0).is_ok());
    }
}
