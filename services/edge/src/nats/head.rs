//! Samples the stream's head (first and last sequence, epoch) at a fixed
//! interval. The sample drives readiness, history-gone checks, audits, and
//! the reset of every org buffer when the stream is recreated.

use std::sync::Arc;

use crate::node::Node;

/// Samples until the node drains.
pub async fn sample(node: Arc<Node>) {
    let mut failing = false;
    let mut warned_republish = false;
    loop {
        let previous = node.current_head();
        match node.fresh_head().await {
            Ok(head) => {
                node.rotate_head(previous);
                if failing {
                    tracing::info!(stream = %node.stream.name(), "stream reachable again");
                    failing = false;
                }
                if !head.republishes && !warned_republish {
                    tracing::error!(
                        stream = %node.stream.name(),
                        "stream does not RePublish herald.events.> to herald.live.>; events will only arrive through audits (slow)"
                    );
                    warned_republish = true;
                }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot sample the stream head");
                    failing = true;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(node.config.head_interval) => {}
            _ = node.draining.cancelled() => break,
        }
    }
}
