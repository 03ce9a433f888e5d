//! `compare`: Herald beside its peers (Nchan, Pushpin, NATS over
//! WebSocket; `bench/peers`), with one load client, on one machine, each
//! system fresh for each scenario and stopped before the next starts:
//!
//! - **idle memory** ([`idle`]): subscribers held over many channels, over
//!   WebSocket, SSE and long-poll; the server's resident memory per
//!   connection;
//! - **latency** and **fan-out** ([`delivery`]): events published at a
//!   steady rate to WebSocket subscribers; publish → receive latency,
//!   how soon each publish is answered, deliveries owed and received, and
//!   the server's CPU per delivery; fan-out repeats it on one channel at
//!   rising rates;
//! - **resume** ([`resume`]): SSE subscribers leave, events are published,
//!   they come back with their last event id; what they get of the missed
//!   events.
//!
//! `--scenarios` picks some of them. Every event carries a marker
//! `@<number>@` (see [`crate::subscriber`]).
//! [`report`] writes the figures and each one's ratio to Herald's.

mod delivery;
mod idle;
mod report;
mod resume;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cli::CompareArgs;
use crate::error::LoadError;
use crate::peer::{Running, System, Transport};
use crate::report::Report;
use crate::subscriber::{self, Keep, Tally};

/// Subscribers opening at the same time.
const OPEN_CONCURRENCY: usize = 128;
/// Longest wait for every subscriber to be in place.
const OPEN_WAIT: Duration = Duration::from_secs(120);
/// Pause before a memory reading, and before publishing to subscribers
/// just opened.
const SETTLE: Duration = Duration::from_secs(3);

/// What one system measured.
#[derive(Default)]
struct Measured {
    /// Memory per idle connection, by transport.
    idle: Vec<(Transport, idle::PerConnection)>,
    latency: Option<delivery::Delivered>,
    /// One run per `--fanout-rates` step.
    fanout: Vec<delivery::Delivered>,
    resume: Option<resume::Resumed>,
    notes: Vec<String>,
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
    let most = args
        .idle_connections
        .max(args.latency_connections)
        .max(args.fanout_connections) as u64;
    if fd_limit < most + 256 {
        return Err(LoadError::Setup(format!(
            "the open-files limit is {fd_limit}: {most} subscribers need about {}",
            most + 256
        )));
    }
    for s in &args.scenarios {
        if !["idle", "latency", "fanout", "resume"].contains(&s.as_str()) {
            return Err(LoadError::Setup(format!(
                "--scenarios: {s:?} is not idle, latency, fanout or resume"
            )));
        }
    }
    let runs = |s: &str| args.scenarios.iter().any(|x| x == s);
    let mut results = Vec::new();
    for system in systems {
        let mut m = Measured::default();
        for transport in [Transport::WebSocket, Transport::Sse, Transport::LongPoll] {
            if runs("idle") && system.serves(transport) {
                println!("compare: {system}: idle {transport}");
                let per = idle::run(&args, system, &repo, transport, &mut m.notes).await?;
                m.idle.push((transport, per));
            }
        }
        if runs("latency") {
            println!("compare: {system}: latency");
            let load = delivery::Load {
                what: "latency",
                connections: args.latency_connections,
                channels: args.latency_channels,
                rate: args.rate,
                duration: args.duration,
            };
            m.latency = Some(delivery::run(system, &repo, &args, &load, &mut m.notes).await?);
        }
        for &rate in args.fanout_rates.iter().filter(|_| runs("fanout")) {
            println!("compare: {system}: fan-out at {rate} ev/s");
            let load = delivery::Load {
                what: "fan-out",
                connections: args.fanout_connections,
                channels: 1,
                rate,
                duration: args.fanout_duration,
            };
            let d = delivery::run(system, &repo, &args, &load, &mut m.notes).await?;
            m.fanout.push(d);
        }
        if runs("resume") {
            println!("compare: {system}: resume");
            m.resume = Some(resume::run(system, &repo, &args, &mut m.notes).await?);
        }
        results.push((system, m));
    }
    Ok(report::write(&args, &results))
}

/// `n` fresh channel names.
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
    transport: Transport,
    keep: Keep,
    tally: &Arc<Tally>,
    stop: &CancellationToken,
) -> Result<Vec<JoinHandle<subscriber::Outcome>>, LoadError> {
    let subscriptions =
        (0..n).map(|i| running.subscription(&channels[i % channels.len()], transport));
    open_each(running, subscriptions.collect(), keep, tally, stop).await
}

/// Opens one subscriber per subscription (at most [`OPEN_CONCURRENCY`] at
/// a time), counted in `tally` (fresh for each group); returns their tasks
/// once every one is in place (or failed).
async fn open_each(
    running: &Running,
    subscriptions: Vec<crate::peer::Subscription>,
    keep: Keep,
    tally: &Arc<Tally>,
    stop: &CancellationToken,
) -> Result<Vec<JoinHandle<subscriber::Outcome>>, LoadError> {
    let gate = Arc::new(Semaphore::new(OPEN_CONCURRENCY));
    let n = subscriptions.len();
    let mut tasks = Vec::with_capacity(n);
    for subscription in subscriptions {
        let (tally, stop, addr) = (Arc::clone(tally), stop.clone(), running.addr);
        // Each holds a permit until it is in place or failed.
        let permit = Arc::clone(&gate)
            .acquire_owned()
            .await
            .map_err(|e| LoadError::Setup(e.to_string()))?;
        tasks.push(tokio::spawn(subscriber::run(
            addr,
            subscription,
            keep,
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

/// Notes the subscribers of `tally` that failed, with the first error.
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
