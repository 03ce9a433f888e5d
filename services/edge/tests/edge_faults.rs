//! Edge faults on the deployment topology under steady load: a 3-server
//! JetStream cluster with the partition mapping and K = 4 R3 partition
//! streams, three edges that know every server, and a real nginx in front
//! with the repository's `deploy/nginx/herald.conf` (hash on `org=`). A
//! fleet of clients over many orgs uses every transport through nginx, all
//! sending `org=<org>` as the SDK does: WebSocket with JSON and with
//! MessagePack, SSE and long-poll; the stream clients reconnect with their
//! cursor when a connection ends, long-poll chains pass theirs on.
//!
//! Two faults: an edge SIGKILLed and restarted 10 s later on the same port,
//! and a rolling restart of every edge with a SIGTERM drain. Each must lose,
//! duplicate and reorder nothing for any client (checked against the
//! publish acks). The stall each fault causes is measured and printed, not
//! asserted (tests never assert on wall-clock speed): publish → receive per
//! transport (p50, p99, max, and p99 per 5 s of publishing), reconnect
//! times, when nginx gave a restarted edge clients again, the longest
//! JetStream ack of a probe publisher (a NATS stall shows apart from an
//! edge stall), and how often an edge's audit had to recover events its
//! live feed missed (those arrive late, up to the audit interval).
//!
//! nginx checks its upstreams passively: an edge it could not reach stays
//! out of the rotation for `fail_timeout` (10 s). The rolling restart
//! therefore moves to the next edge only once nginx sends clients to the
//! restarted one again; otherwise nginx soon has no edge left and answers 502.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use herald_loadgen::fleet::{ClientRecord, End, Fleet, FleetConfig, Transport};
use herald_loadgen::probe::Probe;
use herald_loadgen::publish::{Pace, Published, Publisher};
use herald_loadgen::streaming::{self, org_ids, plan_clients, Mix, Placement};
use herald_loadgen::verify::{self, Latency};
use herald_proto::Partitions;
use herald_testkit::{stable_port, EdgeOptions, EdgeProcess, NatsCluster, Nginx, SECRET};

const EDGE: &str = env!("CARGO_BIN_EXE_herald-edge");
/// Partition streams, as every clustered deployment ships them.
const K: u32 = 4;
/// Edges behind nginx.
const EDGES: usize = 3;
/// Clients, each its own user and connection.
const CLIENTS: usize = 1_500;
/// Orgs they are spread over (client i in org i mod ORGS).
const ORGS: usize = 40;
/// Events published per second, over all orgs.
const RATE: f64 = 150.0;
/// A quarter of the clients on each transport; the rest WebSocket JSON.
const MIX: Mix = Mix {
    sse: 0.25,
    longpoll: 0.25,
    msgpack: 0.25,
};
/// Services events go to; every client subscribes to all.
const SERVICES: [&str; 3] = ["finance", "tasks", "guest"];
/// Clients opening their first connection at once.
const CONNECT_CONCURRENCY: usize = 64;
/// Publishes awaiting their ack at most.
const IN_FLIGHT: usize = 256;
/// Longest wait for every client's first ack.
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for every client to receive its org's last event.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(45);
/// How long a SIGTERMed edge may drain before it is SIGKILLed (its own
/// drain timeout is 8 s).
const DRAIN_BOUND: Duration = Duration::from_secs(15);
/// Longest wait for nginx to send clients to a restarted edge again.
const SERVING_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on a whole test; the processes stop on drop when it expires.
const TEST_TIMEOUT: Duration = Duration::from_secs(240);

/// The deployment topology. Fields drop in order: nginx, the edges (SIGKILL),
/// then NATS.
struct Topology {
    nginx: Nginx,
    edges: Vec<EdgeProcess>,
    cluster: NatsCluster,
}

impl Topology {
    /// Starts NATS, the edges on stable ports (so a restarted edge is where
    /// nginx expects it) and nginx in front.
    async fn start() -> Topology {
        // Thousands of sockets in this process, in nginx and in the edges
        // (which inherit the limit).
        let _ = rlimit::increase_nofile_limit(u64::MAX);
        let cluster = NatsCluster::start_partitioned(3, K).await;
        let mut edges = Vec::with_capacity(EDGES);
        // One after the other: the first creates the streams.
        for i in 1..=EDGES {
            let addr: SocketAddr = ([127, 0, 0, 1], stable_port()).into();
            let opts = EdgeOptions::new(cluster.urls(), SECRET)
                .with_listen(addr)
                .with_env("HERALD_NODE_ID", format!("edge-{i}"))
                .with_env("HERALD_STREAM_REPLICAS", "3")
                .with_env("HERALD_PARTITIONS", K.to_string())
                .with_env("HERALD_METRICS_PUBLIC", "true")
                .with_env("RUST_LOG", "warn,herald_edge=info");
            edges.push(EdgeProcess::spawn(EDGE, opts).await);
        }
        let addrs: Vec<SocketAddr> = edges.iter().map(EdgeProcess::addr).collect();
        let nginx = Nginx::start(&addrs).await;
        Topology {
            nginx,
            edges,
            cluster,
        }
    }

    /// Clients edge `i` holds now: streams and held polls.
    async fn held(&self, i: usize) -> u64 {
        match Probe::new(&self.edges[i].base_url())
            .unwrap()
            .metrics()
            .await
        {
            Ok(m) => m.websocket + m.sse + m.waiters,
            Err(_) => 0,
        }
    }

    /// Waits (at most [`SERVING_TIMEOUT`]) until nginx sends clients to
    /// edge `i` again: nginx keeps a node it could not reach out of the
    /// rotation for `fail_timeout` (10 s by default), however soon the node
    /// is back. Returns the wait, or `None` when it never came.
    async fn wait_serving(&self, i: usize) -> Option<Duration> {
        let t0 = Instant::now();
        while t0.elapsed() < SERVING_TIMEOUT {
            if self.held(i).await > 0 {
                return Some(t0.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    /// The edge holding the most client connections and polls.
    async fn busiest_edge(&self) -> usize {
        let mut best = (0, 0);
        for i in 0..self.edges.len() {
            let held = self.held(i).await;
            if held > best.1 {
                best = (i, held);
            }
        }
        best.0
    }
}

/// The clients and the publisher, running.
struct Load {
    fleet: Fleet,
    publishing: tokio::task::JoinHandle<Published>,
    probe: AckProbe,
    /// When publishing started.
    started: Instant,
}

impl Load {
    /// Opens every client through nginx, waits until all are acked, then
    /// publishes at [`RATE`] for `seconds` in the background.
    async fn start(topology: &Topology, seconds: u64) -> Load {
        let orgs = org_ids("fault", ORGS);
        let services: Vec<String> = SERVICES.iter().map(|s| (*s).to_owned()).collect();
        let lb = topology.nginx.addr();
        let plans = plan_clients(
            SECRET,
            "fault",
            CLIENTS,
            &orgs,
            MIX,
            &[lb],
            Placement::First,
        );
        let fleet = Fleet::start(
            FleetConfig {
                edges: vec![lb],
                services: services.clone(),
                connect_concurrency: CONNECT_CONCURRENCY,
                orgs: orgs.clone(),
            },
            plans,
        );
        let opened = Instant::now();
        while fleet.ready() < CLIENTS {
            assert!(
                opened.elapsed() < OPEN_TIMEOUT,
                "{} of {CLIENTS} clients acked after {OPEN_TIMEOUT:?} ({} failed attempts); nginx:\n{}",
                fleet.ready(),
                fleet.failures(),
                topology.nginx.error_log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!(
            "edge_faults: {CLIENTS} clients over {ORGS} orgs acked through nginx in {:.1} s",
            opened.elapsed().as_secs_f64()
        );
        let mut publisher = Publisher::connect(&topology.cluster.urls(), orgs, services)
            .await
            .unwrap();
        let total = (RATE * seconds as f64) as u64;
        let publishing =
            tokio::spawn(
                async move { publisher.publish(total, Pace::Rate(RATE), IN_FLIGHT).await },
            );
        let started = Instant::now();
        Load {
            fleet,
            publishing,
            probe: AckProbe::start(&topology.cluster, started).await,
            started,
        }
    }

    /// Waits for the last publish and for every client to catch up, stops
    /// the clients, checks every delivery and prints the figures.
    async fn finish(self, topology: &Topology, fault: &str, timeline: &str) {
        let published = self.publishing.await.unwrap();
        let acks = self.probe.stop().await;
        assert!(
            published.errors == 0 && published.duplicates == 0,
            "every publish stored once: {} failed ({:?}), {} duplicates",
            published.errors,
            published.first_error,
            published.duplicates
        );
        let (caught_up, waited) =
            streaming::wait_caught_up(&self.fleet, &published, CATCH_UP_TIMEOUT).await;
        let reasons = streaming::reasons_since(&Default::default(), &self.fleet.end_reasons());
        let records = self.fleet.stop().await;
        // An event the live feed missed reaches clients at the next audit
        // (HERALD_AUDIT_INTERVAL, 10 s): such a delivery is late, not lost.
        let audits: Vec<String> = topology
            .edges
            .iter()
            .map(|e| {
                let n = e
                    .log()
                    .lines()
                    .filter(|l| l.contains("audit recovered"))
                    .count();
                format!("{} {n}", e.node_id())
            })
            .collect();
        let report = Figures::of(&published, &records, self.started);
        eprintln!(
            "\n{fault}: {} events published at {RATE}/s to {ORGS} orgs, {CLIENTS} clients through nginx\n  \
             {timeline}\n  \
             caught up: {caught_up} ({:.1} s after the last ack)\n  \
             {acks}\n  \
             audits that recovered events the live feed had missed: {}\n  \
             why stream connections ended: {reasons}\n{}",
            published.stored,
            waited.as_secs_f64(),
            audits.join(", "),
            report.text
        );
        assert!(
            report.exact,
            "{fault}: every client gets every event of its org once, in order:\n{}",
            report.text
        );
    }
}

/// Publishes an event every 100 ms to each partition, in orgs no client
/// reads, and records the longest publish → ack: tells a stall of
/// JetStream from one of the edges in the figures.
struct AckProbe {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<String>,
}

impl AckProbe {
    async fn start(cluster: &NatsCluster, started: Instant) -> AckProbe {
        let js = async_nats::jetstream::new(cluster.connect().await);
        let partitions = Partitions::new(K).unwrap();
        // One org per partition.
        let orgs: Vec<String> = (0..K)
            .map(|k| {
                (0..)
                    .map(|i| format!("probe{i}"))
                    .find(|o| partitions.of(o) == k)
                    .unwrap()
            })
            .collect();
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let (mut longest, mut at, mut failed, mut sent) =
                (Duration::ZERO, Duration::ZERO, 0, 0);
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.changed() => break,
                }
                let acks = orgs.iter().map(|org| {
                    let js = js.clone();
                    async move {
                        let t0 = Instant::now();
                        let ack = tokio::time::timeout(Duration::from_secs(30), async {
                            js.publish(
                                format!("herald.events.{org}.finance._"),
                                "{\"eventType\":\"probe\"}".into(),
                            )
                            .await?
                            .await
                            .map_err(async_nats::Error::from)
                        })
                        .await;
                        (t0, t0.elapsed(), matches!(ack, Ok(Ok(_))))
                    }
                });
                for (t0, took, ok) in futures::future::join_all(acks).await {
                    sent += 1;
                    failed += u32::from(!ok);
                    if took > longest {
                        (longest, at) = (took, t0.duration_since(started));
                    }
                }
            }
            format!(
                "JetStream publish → ack (a probe per partition every 100 ms, {sent} sent, {failed} failed): \
                 longest {:.0} ms, at +{:.1} s",
                longest.as_secs_f64() * 1000.0,
                at.as_secs_f64()
            )
        });
        AckProbe { stop, task }
    }

    async fn stop(self) -> String {
        self.stop.send_replace(true);
        self.task.await.unwrap()
    }
}

/// What the clients saw, per transport.
struct Figures {
    text: String,
    exact: bool,
}

impl Figures {
    fn of(published: &Published, records: &[ClientRecord], started: Instant) -> Figures {
        let kinds = [
            Transport::WebSocket,
            Transport::WebSocketMsgpack,
            Transport::Sse,
            Transport::LongPoll,
        ];
        let mut text = String::new();
        let mut exact = true;
        let mut bad = Vec::new();
        for kind in kinds {
            let of: Vec<&ClientRecord> = records.iter().filter(|r| r.transport == kind).collect();
            let (mut lost, mut dup, mut reordered, mut unexpected, mut resets) = (0, 0, 0, 0, 0);
            let mut events = 0;
            for (i, r) in of.iter().enumerate() {
                let owed = published
                    .acked
                    .get(r.log.events.org as usize)
                    .map_or(&[][..], Vec::as_slice);
                let c = verify::check(owed, &r.log.events);
                lost += c.lost;
                dup += c.duplicated;
                reordered += c.out_of_order;
                unexpected += c.unexpected;
                resets += r.log.events.resets;
                events += c.received;
                if !c.exact() || r.log.events.resets > 0 {
                    exact = false;
                    if bad.len() < 5 {
                        bad.push(format!(
                            "    {} client {i} (org {}): {c:?}, {} resets, first error {:?}",
                            kind.name(),
                            r.log.events.org,
                            r.log.events.resets,
                            r.log.events.first_error
                        ));
                    }
                }
            }
            let logs: Vec<_> = of
                .iter()
                .map(|r| herald_loadgen::poller::PollerLog {
                    latencies_us: r.log.events.latencies_us.clone(),
                    ..Default::default()
                })
                .collect();
            let latency = verify::latency(&logs);
            let reconnect = reconnects(&of, started);
            text.push_str(&format!(
                "  {:<22} {:>4} clients, {:>7} events: lost {lost}, duplicated {dup}, reordered {reordered}, \
                 unexpected {unexpected}, resets {resets}\n  {:<22} publish → receive p50 {:.1} / p99 {:.1} / max {:.0} ms; {}\n",
                kind.name(),
                of.len(),
                events,
                "",
                latency.p50,
                latency.p99,
                latency.max,
                reconnect,
            ));
        }
        let all: Vec<_> = records
            .iter()
            .map(|r| herald_loadgen::poller::PollerLog {
                latencies_us: r.log.events.latencies_us.clone(),
                published_ns: r.log.events.published_ns.clone(),
                ..Default::default()
            })
            .collect();
        let timeline: Vec<String> = verify::p99_timeline(&all, streaming::TIMELINE_WINDOW)
            .iter()
            .map(|ms| format!("{ms:.0}"))
            .collect();
        text.push_str(&format!(
            "  publish → receive p99 per {} s of publishing (ms): {}\n",
            streaming::TIMELINE_WINDOW.as_secs(),
            timeline.join(" ")
        ));
        for b in bad {
            text.push_str(&b);
            text.push('\n');
        }
        Figures { text, exact }
    }
}

/// Reconnect times of stream clients after `started` (an acked connection
/// ended → the next ack), or the failed polls of long-poll chains.
fn reconnects(records: &[&ClientRecord], started: Instant) -> String {
    if records
        .first()
        .is_some_and(|r| r.transport == Transport::LongPoll)
    {
        let failed: u64 = records.iter().map(|r| r.log.events.errors).sum();
        let connects: u64 = records.iter().map(|r| r.log.events.connects).sum();
        let mut first = std::collections::BTreeMap::new();
        for e in records
            .iter()
            .filter_map(|r| r.log.events.first_error.as_ref())
        {
            *first
                .entry(e.chars().take(70).collect::<String>())
                .or_insert(0u32) += 1;
        }
        let first: Vec<String> = first
            .iter()
            .take(3)
            .map(|(k, n)| format!("{k} ×{n}"))
            .collect();
        return format!(
            "{failed} failed polls, {connects} connections opened; first errors: {}",
            if first.is_empty() {
                "none".to_owned()
            } else {
                first.join(", ")
            }
        );
    }
    let mut gaps = Vec::new();
    let mut failed = 0;
    let mut why_failed = std::collections::BTreeMap::new();
    for r in records {
        let attempts = &r.log.attempts;
        for (i, a) in attempts.iter().enumerate() {
            if a.started >= started && a.acked.is_none() && a.end != End::Stopped {
                failed += 1;
                let why = match &a.end {
                    End::Failed(e) => e.chars().take(70).collect(),
                    other => format!("{other:?}"),
                };
                *why_failed.entry(why).or_insert(0u32) += 1;
            }
            let (Some(ended), Some(_)) = (a.ended, a.acked) else {
                continue;
            };
            if a.end == End::Stopped || ended < started {
                continue;
            }
            if let Some(next) = attempts[i + 1..].iter().find_map(|n| n.acked) {
                gaps.push(next.duration_since(ended).as_secs_f64() * 1000.0);
            }
        }
    }
    let l: Latency = verify::percentiles(&mut gaps);
    let mut why: Vec<(u32, String)> = why_failed.into_iter().map(|(k, n)| (n, k)).collect();
    why.sort_unstable_by(|a, b| b.cmp(a));
    let why: Vec<String> = why
        .iter()
        .take(3)
        .map(|(n, k)| format!("{k} ×{n}"))
        .collect();
    format!(
        "{} reconnects, connection end → new ack p50 {:.0} / p99 {:.0} / max {:.0} ms, {failed} failed attempts{}",
        l.count,
        l.p50,
        l.p99,
        l.max,
        if why.is_empty() {
            String::new()
        } else {
            format!(" ({})", why.join(", "))
        }
    )
}

/// `after N s` from the fault, or that it did not happen.
fn since(d: Option<Duration>) -> String {
    d.map_or_else(
        || format!("not within {SERVING_TIMEOUT:?}"),
        |d| format!("after {:.1} s", d.as_secs_f64()),
    )
}

/// Runs `test` with a bound; every process stops on drop when it expires.
async fn bounded(test: impl Future<Output = ()>) {
    if tokio::time::timeout(TEST_TIMEOUT, test).await.is_err() {
        panic!("test did not finish within {TEST_TIMEOUT:?}");
    }
}

/// SIGKILL the busiest edge 8 s into the load; its clients resume through
/// nginx on the other two; the edge comes back on its port 10 s later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_killed_under_load_loses_nothing() {
    bounded(async {
        let mut topology = Topology::start().await;
        let load = Load::start(&topology, 30).await;
        tokio::time::sleep(Duration::from_secs(8)).await;
        let victim = topology.busiest_edge().await;
        let killed = Instant::now();
        let at = killed.duration_since(load.started);
        topology.edges[victim].kill();
        // The edge stays away for 10 s, as the issue asks.
        tokio::time::sleep(Duration::from_secs(10)).await;
        topology.edges[victim].restart().await;
        let back = killed.elapsed();
        let serving = topology.wait_serving(victim).await;
        let timeline = format!(
            "edge-{} SIGKILLed at +{:.1} s, restarted on its port and ready {:.1} s later, \
             given clients by nginx again {}",
            victim + 1,
            at.as_secs_f64(),
            back.as_secs_f64(),
            since(serving.map(|d| back + d))
        );
        load.finish(&topology, "SIGKILL of an edge", &timeline)
            .await;
        drop(topology);
    })
    .await;
}

/// A rolling restart 5 s into the load: each edge in turn gets SIGTERM
/// (drain: streams closed with 1012, held polls answered), is SIGKILLed if
/// it has not exited within 15 s, restarts on its port, and the next one
/// goes once it is ready and nginx gives it clients again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_every_edge_loses_nothing() {
    bounded(async {
        let mut topology = Topology::start().await;
        let load = Load::start(&topology, 45).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let mut steps = Vec::new();
        for i in 0..EDGES {
            let edge = &mut topology.edges[i];
            let t0 = Instant::now();
            let at = t0.duration_since(load.started);
            edge.sigterm();
            let exit = edge.wait_exit(DRAIN_BOUND).await;
            let drained = t0.elapsed();
            if exit.is_none() {
                edge.kill();
            }
            edge.restart().await;
            let ready = t0.elapsed();
            // The next edge goes only once nginx uses this one again: with
            // two nodes out of its rotation at once, nginx has one left, and
            // with all three out it answers 502.
            let serving = topology.wait_serving(i).await;
            steps.push(format!(
                "edge-{} SIGTERM at +{:.1} s: {} after {:.1} s, ready again after {:.1} s, \
                 given clients by nginx again {}",
                i + 1,
                at.as_secs_f64(),
                match exit {
                    Some(status) => format!("exited ({status})"),
                    None => "SIGKILLed (no exit)".to_owned(),
                },
                drained.as_secs_f64(),
                ready.as_secs_f64(),
                since(serving.map(|d| ready + d))
            ));
        }
        load.finish(
            &topology,
            "rolling restart with SIGTERM drain",
            &steps.join("\n  "),
        )
        .await;
        drop(topology);
    })
    .await;
}
