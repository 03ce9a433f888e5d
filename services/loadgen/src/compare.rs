//! `compare`: Herald beside its peers (Nchan, Pushpin, NATS over
//! WebSocket; `bench/peers`), with one load client, on one machine, each
//! system fresh for each scenario and stopped before the next starts:
//!
//! - **idle memory**: `--idle-connections` subscribers over
//!   `--idle-channels` channels, over WebSocket, then over SSE; the
//!   server's resident memory (every process of it; Herald's edge, with
//!   nats-server's growth beside it) before and after, per connection;
//! - **latency**: `--latency-connections` WebSocket subscribers over
//!   `--latency-channels` channels, events published at `--rate` for
//!   `--duration` seconds, each to one channel in turn; publish → receive
//!   latency, deliveries owed and received, the server's CPU time and
//!   that time per delivery (Herald: the edge, and nats-server beside it).
//!
//! Every event carries its send time as a marker (see [`crate::subscriber`]).

use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cli::CompareArgs;
use crate::error::LoadError;
use crate::peer::{Running, System};
use crate::poller::wall_ns;
use crate::procfs::{self, CpuSnapshot};
use crate::report::Report;
use crate::subscriber::{self, Tally};

/// Subscribers opening at the same time.
const OPEN_CONCURRENCY: usize = 128;
/// Longest wait for every subscriber to be in place.
const OPEN_WAIT: Duration = Duration::from_secs(120);
/// Pause before a memory reading.
const SETTLE: Duration = Duration::from_secs(3);
/// Wait after the last publish for the last deliveries.
const DRAIN: Duration = Duration::from_secs(3);

/// What one system measured.
#[derive(Default)]
struct Measured {
    idle_ws_kib: Option<f64>,
    idle_sse_kib: Option<f64>,
    /// The same with the broker's growth (Herald: nats-server) added.
    idle_ws_with_broker_kib: Option<f64>,
    idle_sse_with_broker_kib: Option<f64>,
    latency: Option<Latency>,
    notes: Vec<String>,
}

struct Latency {
    us: Histogram<u64>,
    owed: u64,
    received: u64,
    /// CPU seconds of the server's processes, and of its broker.
    cpu_s: Option<f64>,
    broker_cpu_s: Option<f64>,
    published: usize,
}

/// Memory growth per connection: the server's, and with its broker's.
struct PerConnection {
    server: Option<f64>,
    with_broker: Option<f64>,
}

/// Runs the scenarios on every system of `--systems`.
pub async fn run(args: CompareArgs) -> Result<Report, LoadError> {
    let systems = args
        .systems
        .iter()
        .map(|s| System::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    let repo = std::env::current_dir()?;
    if !repo.join("bench/peers/peers.sh").is_file() {
        return Err(LoadError::Setup(
            "run from the repository root (bench/peers/peers.sh is used to start the peers)".into(),
        ));
    }
    // Every subscriber is a socket of this process.
    let fd_limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0);
    let most = args.idle_connections.max(args.latency_connections) as u64;
    if fd_limit < most + 256 {
        return Err(LoadError::Setup(format!(
            "the open-files limit is {fd_limit}: {most} subscribers need about {}",
            most + 256
        )));
    }
    let mut results = Vec::new();
    for system in systems {
        let mut m = Measured::default();
        println!("compare: {system}: idle WebSocket");
        let ws = idle(&args, system, &repo, false, &mut m.notes).await?;
        (m.idle_ws_kib, m.idle_ws_with_broker_kib) = (ws.server, ws.with_broker);
        if system.has_sse() {
            println!("compare: {system}: idle SSE");
            let sse = idle(&args, system, &repo, true, &mut m.notes).await?;
            (m.idle_sse_kib, m.idle_sse_with_broker_kib) = (sse.server, sse.with_broker);
        }
        println!("compare: {system}: latency");
        m.latency = Some(latency(&args, system, &repo, &mut m.notes).await?);
        results.push((system, m));
    }
    Ok(report(&args, &results))
}

fn channels(n: usize) -> Vec<String> {
    let run = rand::random::<u16>();
    (0..n).map(|i| format!("c{run:04x}x{i}")).collect()
}

/// Opens `n` subscribers round-robin over `channels`; returns their tasks
/// once every one is in place (or failed).
async fn open(
    running: &Running,
    channels: &[String],
    n: usize,
    sse: bool,
    tally: &Arc<Tally>,
    stop: &CancellationToken,
) -> Result<Vec<JoinHandle<subscriber::Outcome>>, LoadError> {
    let gate = Arc::new(Semaphore::new(OPEN_CONCURRENCY));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let channel = &channels[i % channels.len()];
        let subscription = running.subscription(channel, sse);
        let (tally, stop, addr) = (Arc::clone(tally), stop.clone(), running.addr);
        // At most OPEN_CONCURRENCY open at a time: each holds a permit
        // until it is in place or failed.
        let permit = Arc::clone(&gate)
            .acquire_owned()
            .await
            .map_err(|e| LoadError::Setup(e.to_string()))?;
        tasks.push(tokio::spawn(subscriber::run(
            addr,
            subscription,
            tally,
            stop,
            permit,
        )));
    }
    let started = Instant::now();
    while tally.ready.load(Relaxed) + tally.failed.load(Relaxed) < n {
        if started.elapsed() > OPEN_WAIT {
            return Err(LoadError::Timeout(format!(
                "{} of {n} subscribers in place after {OPEN_WAIT:?}",
                tally.ready.load(Relaxed)
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(tasks)
}

fn rss_kib(pids: &[u32]) -> Option<u64> {
    pids.iter().map(|&p| procfs::rss_kib(p)).sum()
}

fn failures(system: System, what: &str, tally: &Tally, notes: &mut Vec<String>) {
    let failed = tally.failed.load(Relaxed);
    if failed > 0 {
        let first = tally
            .first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_default();
        notes.push(format!(
            "{system} {what}: {failed} subscribers failed ({first})"
        ));
    }
}

async fn idle(
    args: &CompareArgs,
    system: System,
    repo: &Path,
    sse: bool,
    notes: &mut Vec<String>,
) -> Result<PerConnection, LoadError> {
    let running = Running::start(system, repo, &args.edge_bin).await?;
    tokio::time::sleep(SETTLE).await;
    let before = rss_kib(&running.pids);
    let broker_before = running.broker_pid.and_then(procfs::rss_kib);
    let channels = channels(args.idle_channels);
    let (tally, stop) = (Arc::new(Tally::default()), CancellationToken::new());
    let tasks = open(
        &running,
        &channels,
        args.idle_connections,
        sse,
        &tally,
        &stop,
    )
    .await?;
    tokio::time::sleep(SETTLE).await;
    let after = rss_kib(&running.pids);
    let broker_after = running.broker_pid.and_then(procfs::rss_kib);
    let ready = tally.ready.load(Relaxed);
    failures(
        system,
        if sse { "idle SSE" } else { "idle WebSocket" },
        &tally,
        notes,
    );
    stop.cancel();
    for t in tasks {
        let _ = t.await;
    }
    running.stop();
    let per = |before: Option<u64>, after: Option<u64>| match (before, after) {
        (Some(b), Some(a)) if ready > 0 => Some(a.saturating_sub(b) as f64 / ready as f64),
        _ => None,
    };
    let server = per(before, after);
    let broker = per(broker_before, broker_after);
    Ok(PerConnection {
        server,
        with_broker: match broker {
            Some(b) => server.map(|s| s + b),
            None => server,
        },
    })
}

async fn latency(
    args: &CompareArgs,
    system: System,
    repo: &Path,
    notes: &mut Vec<String>,
) -> Result<Latency, LoadError> {
    let running = Running::start(system, repo, &args.edge_bin).await?;
    let channels = channels(args.latency_channels);
    let (tally, stop) = (Arc::new(Tally::default()), CancellationToken::new());
    let tasks = open(
        &running,
        &channels,
        args.latency_connections,
        false,
        &tally,
        &stop,
    )
    .await?;
    tokio::time::sleep(SETTLE).await;
    let ready = tally.ready.load(Relaxed);
    let mut taken_per_channel = vec![0u64; channels.len()];
    let cpu_before = CpuSnapshot::take_all(&running.pids, running.broker_pid);
    let total = (args.rate * args.duration as f64).round() as u64;
    let started = tokio::time::Instant::now();
    let mut owed = 0u64;
    let mut published = 0usize;
    for i in 0..total {
        let due = started + Duration::from_secs_f64(i as f64 / args.rate);
        tokio::time::sleep_until(due).await;
        let c = (i as usize) % channels.len();
        let marker = format!("@{}@", wall_ns());
        let taken = running.publish(&[channels[c].as_str()], &marker).await;
        published += taken;
        taken_per_channel[c] += taken as u64;
    }
    tokio::time::sleep(DRAIN).await;
    let cpu = cpu_before.until(&CpuSnapshot::take_all(&running.pids, running.broker_pid));
    let elapsed = started.elapsed().as_secs_f64();
    failures(system, "latency", &tally, notes);
    stop.cancel();
    let mut us = Histogram::new_with_bounds(1, 600_000_000, 3)
        .map_err(|e| LoadError::Setup(e.to_string()))?;
    let mut received = 0u64;
    // Subscriber i is on channel i mod channels (opened round-robin); what
    // is owed is what each subscriber in place should have got.
    for (i, t) in tasks.into_iter().enumerate() {
        let Ok(outcome) = t.await else { continue };
        if outcome.ready {
            owed += taken_per_channel[i % channels.len()];
        }
        for l in outcome.latencies {
            us.saturating_record(u64::from(l).max(1));
            received += 1;
        }
    }
    if ready < args.latency_connections {
        notes.push(format!(
            "{system} latency: {ready} of {} subscribers in place",
            args.latency_connections
        ));
    }
    running.stop();
    Ok(Latency {
        us,
        owed,
        received,
        cpu_s: cpu.edge.map(|pct| pct / 100.0 * elapsed),
        broker_cpu_s: running_broker_cpu(cpu.nats, elapsed),
        published,
    })
}

fn running_broker_cpu(pct: Option<f64>, elapsed: f64) -> Option<f64> {
    pct.map(|pct| pct / 100.0 * elapsed)
}

fn kib(v: Option<f64>) -> String {
    v.map_or_else(|| "·".into(), |v| format!("{v:.1} KiB"))
}

fn ratio(v: Option<f64>, herald: Option<f64>) -> String {
    match (v, herald) {
        (Some(v), Some(h)) if h > 0.0 => format!("{:.2}×", v / h),
        _ => "·".into(),
    }
}

/// `text`, and the figure with the broker's growth when it differs.
fn with_broker(text: String, server: Option<f64>, with_broker: Option<f64>) -> String {
    match (server, with_broker) {
        (Some(s), Some(b)) if (b - s).abs() > 0.05 => {
            format!("{text}; with nats-server {}", kib(Some(b)))
        }
        _ => text,
    }
}

fn report(args: &CompareArgs, results: &[(System, Measured)]) -> Report {
    let title =
        args.output.title.clone().unwrap_or_else(|| {
            "Compare: Herald beside Nchan, Pushpin and NATS over WebSocket".into()
        });
    let mut r = Report::new(title);
    let herald = results
        .iter()
        .find(|(s, _)| *s == System::Herald)
        .map(|(_, m)| m);
    for (system, m) in results {
        let h = |f: fn(&Measured) -> Option<f64>| herald.and_then(f);
        r.figure(
            &format!(
                "{system}: memory per idle WebSocket ({} over {} channels)",
                args.idle_connections, args.idle_channels
            ),
            with_broker(
                format!(
                    "{} ({} Herald's)",
                    kib(m.idle_ws_kib),
                    ratio(m.idle_ws_kib, h(|m| m.idle_ws_kib))
                ),
                m.idle_ws_kib,
                m.idle_ws_with_broker_kib,
            ),
        );
        if system.has_sse() {
            r.figure(
                &format!("{system}: memory per idle SSE stream"),
                with_broker(
                    format!(
                        "{} ({} Herald's)",
                        kib(m.idle_sse_kib),
                        ratio(m.idle_sse_kib, h(|m| m.idle_sse_kib))
                    ),
                    m.idle_sse_kib,
                    m.idle_sse_with_broker_kib,
                ),
            );
        }
        if let Some(l) = &m.latency {
            r.figure(
                &format!(
                    "{system}: publish → receive p50 / p99 / max ({} WebSockets over {} channels, {} ev/s for {} s)",
                    args.latency_connections, args.latency_channels, args.rate, args.duration
                ),
                format!(
                    "{:.2} / {:.2} / {:.2} ms",
                    l.us.value_at_quantile(0.5) as f64 / 1e3,
                    l.us.value_at_quantile(0.99) as f64 / 1e3,
                    l.us.max() as f64 / 1e3
                ),
            );
            r.figure(
                &format!("{system}: events taken; deliveries owed / received"),
                format!("{}; {} / {}", l.published, l.owed, l.received),
            );
            let per_delivery = |s: Option<f64>| {
                s.filter(|_| l.received > 0).map_or_else(
                    || "·".into(),
                    |s| format!("{:.1} µs", s * 1e6 / l.received as f64),
                )
            };
            let seconds = |s: Option<f64>| s.map_or_else(|| "·".into(), |s| format!("{s:.2} s"));
            r.figure(
                &format!("{system}: server CPU (every process); per delivery"),
                format!("{}; {}", seconds(l.cpu_s), per_delivery(l.cpu_s)),
            );
            if l.broker_cpu_s.is_some() {
                r.figure(
                    &format!("{system}: its broker's CPU (nats-server, JetStream); per delivery"),
                    format!(
                        "{}; {}",
                        seconds(l.broker_cpu_s),
                        per_delivery(l.broker_cpu_s)
                    ),
                );
            }
        }
        for n in &m.notes {
            r.figure("note", n.clone());
        }
    }
    r
}
