//! Deliveries under load: WebSocket subscribers over a number of
//! channels, events published at a steady rate for a while, each to one
//! channel in turn (the latency scenario: many channels, moderate rate;
//! a fan-out step: one channel, the rate of the step). Measures publish →
//! receive latency, deliveries owed and received (and how many within
//! [`ON_TIME`]), the CPU time of the server, of its broker and of this
//! load client, each per delivery.

use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio_util::sync::CancellationToken;

use super::{channels, failures, open, SETTLE};
use crate::cli::CompareArgs;
use crate::error::LoadError;
use crate::peer::{Running, System, Transport};
use crate::poller::wall_ns;
use crate::procfs::CpuSnapshot;
use crate::subscriber::{Keep, Tally};

/// Wait after the last publish for the last deliveries.
const DRAIN: Duration = Duration::from_secs(3);
/// A delivery later than this counts as received but not on time.
pub const ON_TIME: Duration = Duration::from_secs(2);

/// The load of one run.
#[derive(Clone, Copy)]
pub struct Load {
    /// The scenario's name, for notes.
    pub what: &'static str,
    pub connections: usize,
    pub channels: usize,
    /// Events per second.
    pub rate: f64,
    /// Seconds of publishing.
    pub duration: u64,
}

/// What one run measured.
pub struct Delivered {
    pub load: Load,
    /// Latency of every delivery received, µs.
    pub us: Histogram<u64>,
    /// Time from a publish to the system's answer, µs (Herald: the
    /// JetStream ack, the event stored; Nchan, Pushpin: the HTTP response;
    /// NATS: the flush's PONG).
    pub publish_us: Histogram<u64>,
    /// Deliveries owed to the subscribers in place, and received.
    pub owed: u64,
    pub received: u64,
    /// Received within [`ON_TIME`].
    pub on_time: u64,
    /// Events the system took.
    pub published: usize,
    /// CPU seconds of the server's processes, of its broker, and of this
    /// load client, over the run.
    pub cpu_s: Option<f64>,
    pub broker_cpu_s: Option<f64>,
    pub client_cpu_s: Option<f64>,
    /// Seconds the publishing took (more than planned when the system
    /// takes events slower than the rate), and the whole run with the
    /// drain after it.
    pub publishing_s: f64,
    pub elapsed_s: f64,
}

impl Delivered {
    /// `seconds` per delivery received, in µs.
    pub fn per_delivery_us(&self, seconds: Option<f64>) -> Option<f64> {
        seconds
            .filter(|_| self.received > 0)
            .map(|s| s * 1e6 / self.received as f64)
    }
}

/// Runs `load` on `system`, fresh.
pub async fn run(
    system: System,
    repo: &Path,
    args: &CompareArgs,
    load: &Load,
    notes: &mut Vec<String>,
) -> Result<Delivered, LoadError> {
    let running = Running::start(system, repo, &args.edge_bin).await?;
    let channels = channels(load.channels);
    let (tally, stop) = (Arc::new(Tally::default()), CancellationToken::new());
    let tasks = open(
        &running,
        &channels,
        load.connections,
        Transport::WebSocket,
        Keep::Latency,
        &tally,
        &stop,
    )
    .await?;
    tokio::time::sleep(SETTLE).await;
    let ready = tally.ready.load(Relaxed);
    let mut taken_per_channel = vec![0u64; channels.len()];
    let cpu_before = CpuSnapshot::take_all(&running.pids, running.broker_pid);
    let mut publish_us = Histogram::new_with_bounds(1, 600_000_000, 3)
        .map_err(|e| LoadError::Setup(e.to_string()))?;
    let total = (load.rate * load.duration as f64).round() as u64;
    let started = tokio::time::Instant::now();
    let mut published = 0usize;
    for i in 0..total {
        let due = started + Duration::from_secs_f64(i as f64 / load.rate);
        tokio::time::sleep_until(due).await;
        let c = (i as usize) % channels.len();
        let marker = format!("@{}@", wall_ns());
        let sent = std::time::Instant::now();
        let taken = running.publish(&[channels[c].as_str()], &marker).await;
        publish_us.saturating_record((sent.elapsed().as_micros() as u64).max(1));
        published += taken;
        taken_per_channel[c] += taken as u64;
    }
    let publishing_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(DRAIN).await;
    let cpu = cpu_before.until(&CpuSnapshot::take_all(&running.pids, running.broker_pid));
    let elapsed = started.elapsed().as_secs_f64();
    failures(system, load.what, &tally, notes);
    stop.cancel();
    let mut us = Histogram::new_with_bounds(1, 600_000_000, 3)
        .map_err(|e| LoadError::Setup(e.to_string()))?;
    let (mut owed, mut received, mut on_time) = (0u64, 0u64, 0u64);
    let on_time_us = ON_TIME.as_micros() as u32;
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
            on_time += u64::from(l <= on_time_us);
        }
    }
    if ready < load.connections {
        notes.push(format!(
            "{system} {} at {} ev/s: {ready} of {} subscribers in place",
            load.what, load.rate, load.connections
        ));
    }
    running.stop();
    let seconds = |pct: Option<f64>| pct.map(|pct| pct / 100.0 * elapsed);
    Ok(Delivered {
        load: *load,
        us,
        publish_us,
        owed,
        received,
        on_time,
        published,
        cpu_s: seconds(cpu.edge),
        broker_cpu_s: seconds(cpu.nats),
        client_cpu_s: seconds(cpu.loadgen),
        publishing_s,
        elapsed_s: elapsed,
    })
}
