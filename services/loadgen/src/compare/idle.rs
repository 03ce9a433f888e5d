//! Idle memory: `--idle-connections` subscribers over `--idle-channels`
//! channels on one transport, nothing published; the server's resident
//! memory (every process of it; for Herald the edge, with nats-server's
//! growth beside it) before and after, per connection in place.

use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{channels, failures, open, SETTLE};
use crate::cli::CompareArgs;
use crate::error::LoadError;
use crate::peer::{Running, System, Transport};
use crate::procfs;
use crate::subscriber::{Keep, Tally};

/// Memory growth per connection: the server's, and with its broker's.
pub struct PerConnection {
    pub server: Option<f64>,
    pub with_broker: Option<f64>,
}

fn rss_kib(pids: &[u32]) -> Option<u64> {
    pids.iter().map(|&p| procfs::rss_kib(p)).sum()
}

/// Measures `system` fresh with idle subscribers over `transport`.
pub async fn run(
    args: &CompareArgs,
    system: System,
    repo: &Path,
    transport: Transport,
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
        transport,
        Keep::Latency,
        &tally,
        &stop,
    )
    .await?;
    tokio::time::sleep(SETTLE).await;
    let after = rss_kib(&running.pids);
    let broker_after = running.broker_pid.and_then(procfs::rss_kib);
    // Only those still held count (the server may end a held long-poll).
    let ready = tally
        .ready
        .load(Relaxed)
        .saturating_sub(tally.lost.load(Relaxed));
    failures(system, &format!("idle {transport}"), &tally, notes);
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
