//! Resume after a disconnect: subscribers of one channel read a first
//! batch of events, leave, miss a second batch published while they are
//! away, and come back (over SSE with their last event id as
//! `Last-Event-ID`, as a browser's EventSource does; NATS over WebSocket
//! has no SSE and no id, so its subscribers simply subscribe again), then
//! a third batch is published. Counted: the missed events each got on
//! return, the later ones, and any event read twice.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{channels, failures, open, open_each};
use crate::cli::CompareArgs;
use crate::error::LoadError;
use crate::peer::{Running, Subscription, System, Transport};
use crate::subscriber::{Keep, Outcome, Tally};

/// Events in each batch.
const BATCH: u64 = 10;
/// Pause between two events of a batch (keeps them in order).
const SPACING: Duration = Duration::from_millis(20);
/// Wait for a batch's deliveries, and for the server to notice the
/// subscribers left.
const QUIET: Duration = Duration::from_secs(1);

/// What the returning subscribers got.
pub struct Resumed {
    /// The transport they came back over.
    pub transport: Transport,
    /// Subscribers that came back.
    pub subscribers: usize,
    /// Events missed while away, owed and read on return.
    pub missed_owed: u64,
    pub missed_read: u64,
    /// Events published after the return, owed and read.
    pub later_owed: u64,
    pub later_read: u64,
    /// Events read a second time (before and after leaving, or twice
    /// after).
    pub repeated: u64,
    /// Subscribers that had no event id to come back with.
    pub without_id: usize,
}

/// Markers of batch `b` (0: before, 1: away, 2: after).
fn batch(b: u64) -> std::ops::Range<u64> {
    (b + 1) * 1_000..(b + 1) * 1_000 + BATCH
}

async fn publish(running: &Running, channel: &str, b: u64) -> u64 {
    let mut taken = 0;
    for m in batch(b) {
        taken += running.publish(&[channel], &format!("@{m}@")).await as u64;
        tokio::time::sleep(SPACING).await;
    }
    taken
}

async fn collect(tasks: Vec<tokio::task::JoinHandle<Outcome>>) -> Vec<Outcome> {
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.unwrap_or_default());
    }
    out
}

/// Runs the scenario on `system`, fresh.
pub async fn run(
    system: System,
    repo: &Path,
    args: &CompareArgs,
    notes: &mut Vec<String>,
) -> Result<Resumed, LoadError> {
    let transport = if system.serves(Transport::Sse) {
        Transport::Sse
    } else {
        Transport::WebSocket
    };
    let running = Running::start(system, repo, &args.edge_bin).await?;
    let channel = channels(1).remove(0);
    let n = args.resume_subscribers;

    let (tally, stop) = (Arc::new(Tally::default()), CancellationToken::new());
    let first = open(
        &running,
        std::slice::from_ref(&channel),
        n,
        transport,
        Keep::Marker,
        &tally,
        &stop,
    )
    .await?;
    tokio::time::sleep(QUIET).await;
    let before_taken = publish(&running, &channel, 0).await;
    tokio::time::sleep(QUIET).await;
    stop.cancel();
    let first = collect(first).await;
    failures(system, "resume (first connection)", &tally, notes);
    tokio::time::sleep(QUIET).await;

    let away_taken = publish(&running, &channel, 1).await;
    let mut without_id = 0;
    let returning: Vec<Subscription> = first
        .iter()
        .map(|o| {
            let mut s = running.subscription(&channel, transport);
            if let Subscription::Sse { last_event_id, .. } = &mut s {
                *last_event_id = o.last_id.clone();
                without_id += usize::from(o.last_id.is_none());
            }
            s
        })
        .collect();
    let (tally, stop) = (Arc::new(Tally::default()), CancellationToken::new());
    let second = open_each(&running, returning, Keep::Marker, &tally, &stop).await?;
    tokio::time::sleep(QUIET).await;
    let after_taken = publish(&running, &channel, 2).await;
    tokio::time::sleep(QUIET * 2).await;
    stop.cancel();
    let second = collect(second).await;
    failures(system, "resume (on return)", &tally, notes);
    running.stop();

    let mut resumed = Resumed {
        transport,
        subscribers: 0,
        missed_owed: 0,
        missed_read: 0,
        later_owed: 0,
        later_read: 0,
        repeated: 0,
        without_id,
    };
    let mut first_read_before = 0u64;
    for (before, after) in first.iter().zip(&second) {
        first_read_before += before
            .markers
            .iter()
            .filter(|m| batch(0).contains(m))
            .count() as u64;
        if !after.ready {
            continue;
        }
        resumed.subscribers += 1;
        resumed.missed_owed += away_taken;
        resumed.later_owed += after_taken;
        let mut seen: HashSet<u64> = before.markers.iter().copied().collect();
        resumed.repeated += (before.markers.len() - seen.len()) as u64;
        for &m in &after.markers {
            if !seen.insert(m) {
                resumed.repeated += 1;
            } else if batch(1).contains(&m) {
                resumed.missed_read += 1;
            } else if batch(2).contains(&m) {
                resumed.later_read += 1;
            }
        }
    }
    let owed_before = before_taken * first.iter().filter(|o| o.ready).count() as u64;
    if first_read_before < owed_before {
        notes.push(format!(
            "{system} resume: the first batch reached {first_read_before} of {owed_before} deliveries before the subscribers left"
        ));
    }
    Ok(resumed)
}
