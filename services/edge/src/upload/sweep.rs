//! The sweep every node runs over unfinished uploads: it removes those
//! whose time is up (their bytes first, then their record) and finishes
//! those whose last byte is stored but whose node died before announcing
//! them. Nodes sweep independently; both actions are idempotent.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use herald_publisher::Publisher;
use tokio_util::sync::CancellationToken;

use crate::nats::uploads::{now_ms, UploadStore};
use crate::ops::metrics::Metrics;
use crate::upload::completion;

/// Longest pause between two sweeps.
const MAX_PERIOD: Duration = Duration::from_secs(60);

/// How often to sweep when uploads expire after `expires`: a minute, or
/// a quarter of a short expiry (at least a second).
pub fn period(expires: Duration) -> Duration {
    (expires / 4).clamp(Duration::from_secs(1), MAX_PERIOD)
}

/// Sweeps every `period` until `stop`.
pub async fn run(
    store: Arc<UploadStore>,
    publisher: Publisher,
    metrics: Arc<Metrics>,
    period: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = sweep(&store, &publisher, &metrics).await {
            tracing::debug!(error = %e, "upload sweep stopped early; next one retries");
        }
    }
}

async fn sweep(
    store: &UploadStore,
    publisher: &Publisher,
    metrics: &Metrics,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let now = now_ms();
    for record in store.unfinished().await? {
        let progress = store.progress(&record).await?;
        if progress.offset == record.length {
            completion::complete(store, publisher, &record, &progress).await?;
            metrics.uploads_completed.fetch_add(1, Relaxed);
            tracing::info!(org = %record.org, id = %record.id, "finished an upload its node left unannounced");
        } else if record.expired(now) {
            store.remove(&record).await?;
            metrics.uploads_expired.fetch_add(1, Relaxed);
            tracing::debug!(org = %record.org, id = %record.id, "removed an expired upload");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_each_minute_or_four_times_per_short_expiry() {
        assert_eq!(period(Duration::from_secs(24 * 3600)), MAX_PERIOD);
        assert_eq!(period(Duration::from_secs(8)), Duration::from_secs(2));
        assert_eq!(period(Duration::from_secs(1)), Duration::from_secs(1));
    }
}
