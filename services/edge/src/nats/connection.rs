//! The node's NATS connection: reconnects forever, and turns the client's
//! connection events into the signals the rest of the node needs (readiness,
//! and a counter of "live messages may have been lost" that every org's live
//! pump watches).

use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event};
use tokio::sync::watch;

use crate::config::Config;

/// Prefix of the node's request inboxes. Publishers may subscribe to
/// `_INBOX.>` (their JetStream acks arrive there); the node's own replies
/// (stream reads, KV values) must stay out of their reach.
pub const INBOX_PREFIX: &str = "_HERALD_EDGE";

/// Why the node could not set up its NATS connection.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// The server list or the credentials cannot work.
    #[error(transparent)]
    Credentials(#[from] herald_publisher::CredentialsError),
    /// The client refused to start.
    #[error(transparent)]
    Connect(#[from] async_nats::ConnectError),
}

/// Connects to NATS. Retries the first connection and every reconnection
/// forever with capped backoff. The returned counter moves on every event
/// that can have cost live messages (a slow consumer, a new connection).
///
/// Credentials (`HERALD_NATS_USER`/`_PASSWORD`, `_TOKEN`, `_CREDS_FILE`, or
/// `user:password@` in the URL) go to the client as options; the addresses
/// it is given, and logs, carry none.
pub async fn connect(
    config: &Config,
    node_id: &str,
) -> Result<(Client, watch::Receiver<u64>), NatsError> {
    let (addrs, auth) = config.nats_connection()?;
    let (tx, rx) = watch::channel(0u64);
    let tx = std::sync::Arc::new(tx);
    let options = ConnectOptions::new()
        .name(format!("herald-edge {node_id}"))
        .custom_inbox_prefix(INBOX_PREFIX)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .subscription_capacity(config.nats_subscription_capacity.max(1))
        .connection_timeout(Duration::from_secs(3))
        .request_timeout(Some(Duration::from_secs(5)))
        .ping_interval(Duration::from_secs(10))
        .reconnect_delay_callback(|attempt| {
            let ms = 100u64.saturating_mul(1 << attempt.min(5)).min(2_000);
            Duration::from_millis(ms)
        })
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                let lost = match event {
                    Event::Connected => {
                        tracing::info!("nats connected");
                        true
                    }
                    Event::Disconnected => {
                        tracing::warn!("nats disconnected");
                        false
                    }
                    Event::SlowConsumer(sid) => {
                        tracing::warn!(sid, "nats slow consumer: live messages dropped, will refill from the stream");
                        true
                    }
                    other => {
                        tracing::info!(event = %other, "nats event");
                        false
                    }
                };
                if lost {
                    tx.send_modify(|n| *n = n.wrapping_add(1));
                }
            }
        });
    let client = auth.apply(options).await?.connect(addrs).await?;
    Ok((client, rx))
}

/// True while the client has a live connection.
pub fn is_connected(client: &Client) -> bool {
    matches!(
        client.connection_state(),
        async_nats::connection::State::Connected
    )
}
