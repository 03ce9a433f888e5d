//! A stand-in for per-partition interest, which the edge does not
//! implement: per node, one plain NATS client on that node's server holding
//! the subscriptions a node would need if it took interest per partition
//! (`herald.live.*.*.*.<k>` for every partition k that one of its orgs lies
//! in; `herald.live.>` with one partition) and counting what it receives.
//! That count is what such a node would have to ingest (decode, sequence
//! and drop when it has no client for the org); the stand-in only counts.
//!
//! Each subscription's channel is large (64 Ki messages) and the count is
//! compared with what was published, so a slow stand-in shows up as a
//! shortfall rather than as a smaller ingest figure.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use futures::StreamExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::LoadError;

/// Messages a stand-in subscription buffers before the client drops some.
const CAPACITY: usize = 65_536;

/// The subjects of per-partition interest in `partitions` (of `k` streams).
pub fn subjects(k: u32, partitions: &BTreeSet<u32>) -> Vec<String> {
    if k <= 1 {
        return vec!["herald.live.>".to_owned()];
    }
    partitions
        .iter()
        .map(|p| format!("herald.live.*.*.*.{p}"))
        .collect()
}

/// The partitions (of `k`) that `orgs` lie in.
pub fn partitions_of<'a>(k: u32, orgs: impl IntoIterator<Item = &'a str>) -> BTreeSet<u32> {
    let p =
        herald_proto::Partitions::new(k.max(1)).unwrap_or_else(herald_proto::Partitions::single);
    orgs.into_iter().map(|o| p.of(o)).collect()
}

/// One stand-in per node, counting.
pub struct StandIns {
    counts: Vec<Arc<AtomicU64>>,
    subscriptions: Vec<usize>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl StandIns {
    /// For node i: connects to `servers[i]` and subscribes to the
    /// per-partition subjects of `partitions[i]` (of `k` streams).
    pub async fn start(
        servers: &[String],
        k: u32,
        partitions: &[BTreeSet<u32>],
    ) -> Result<Self, LoadError> {
        let stop = CancellationToken::new();
        let mut out = Self {
            counts: Vec::new(),
            subscriptions: Vec::new(),
            stop: stop.clone(),
            tasks: Vec::new(),
        };
        for (server, parts) in servers.iter().zip(partitions) {
            let client = async_nats::ConnectOptions::new()
                .name("herald-loadgen-standin")
                .subscription_capacity(CAPACITY)
                .connect(server.as_str())
                .await
                .map_err(|e| LoadError::Nats(format!("stand-in connect {server}: {e}")))?;
            let count = Arc::new(AtomicU64::new(0));
            let subjects = subjects(k, parts);
            out.subscriptions.push(subjects.len());
            for subject in subjects {
                let mut sub = client
                    .subscribe(subject.clone())
                    .await
                    .map_err(|e| LoadError::Nats(format!("stand-in subscribe {subject}: {e}")))?;
                let (count, stop) = (Arc::clone(&count), stop.clone());
                out.tasks.push(tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            _ = stop.cancelled() => break,
                            m = sub.next() => match m {
                                Some(_) => { count.fetch_add(1, Relaxed); }
                                None => break,
                            },
                        }
                    }
                }));
            }
            client
                .flush()
                .await
                .map_err(|e| LoadError::Nats(format!("stand-in flush: {e}")))?;
            out.counts.push(count);
        }
        Ok(out)
    }

    /// Messages received so far, per node.
    pub fn counts(&self) -> Vec<u64> {
        self.counts.iter().map(|c| c.load(Relaxed)).collect()
    }

    /// Subscriptions held, per node.
    pub fn subscriptions(&self) -> &[usize] {
        &self.subscriptions
    }

    /// Stops counting and closes the subscriptions.
    pub async fn stop(self) {
        self.stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_per_partition() {
        let parts: BTreeSet<u32> = [0, 2].into_iter().collect();
        assert_eq!(
            subjects(4, &parts),
            vec!["herald.live.*.*.*.0", "herald.live.*.*.*.2"]
        );
        assert_eq!(subjects(1, &parts), vec!["herald.live.>"]);
        let all = partitions_of(
            4,
            (0..100)
                .map(|i| format!("o{i}"))
                .collect::<Vec<_>>()
                .iter()
                .map(String::as_str),
        );
        assert_eq!(all.len(), 4, "100 orgs cover all 4 partitions");
        assert_eq!(partitions_of(1, ["a", "b"]).len(), 1);
    }
}
