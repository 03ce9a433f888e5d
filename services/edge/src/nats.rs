//! The node's NATS connection: reconnects forever, and turns the client's
//! connection events into the signals the rest of the node needs (readiness,
//! and "live messages may have been lost" for gap detection).

use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event};
use tokio::sync::mpsc;

use crate::config::Config;

/// Something that can have cost the node live messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossSignal {
    /// The connection came (back) up; anything published while it was down was missed.
    Reconnected,
    /// A subscription overflowed and messages were dropped client-side.
    SlowConsumer,
}

/// Messages buffered per subscription before the client drops (and reports a
/// slow consumer). Large enough to ride out a burst; bounded so a stuck org
/// task cannot grow memory without limit.
const SUBSCRIPTION_CAPACITY: usize = 16 * 1024;

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
/// forever with capped backoff; connection events arrive on the returned channel.
///
/// Credentials (`HERALD_NATS_USER`/`_PASSWORD`, `_TOKEN`, `_CREDS_FILE`, or
/// `user:password@` in the URL) go to the client as options; the addresses
/// it is given, and logs, carry none.
pub async fn connect(
    config: &Config,
    node_id: &str,
) -> Result<(Client, mpsc::Receiver<LossSignal>), NatsError> {
    let (addrs, auth) = config.nats_connection()?;
    let (tx, rx) = mpsc::channel(64);
    let options = ConnectOptions::new()
        .name(format!("herald-edge {node_id}"))
        .custom_inbox_prefix(INBOX_PREFIX)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .subscription_capacity(SUBSCRIPTION_CAPACITY)
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
                let signal = match event {
                    Event::Connected => {
                        tracing::info!("nats connected");
                        Some(LossSignal::Reconnected)
                    }
                    Event::Disconnected => {
                        tracing::warn!("nats disconnected");
                        None
                    }
                    Event::SlowConsumer(sid) => {
                        tracing::warn!(sid, "nats slow consumer: live messages dropped, will refill from the stream");
                        Some(LossSignal::SlowConsumer)
                    }
                    other => {
                        tracing::info!(event = %other, "nats event");
                        None
                    }
                };
                if let Some(signal) = signal {
                    // A full channel already holds a pending signal of the same effect.
                    let _ = tx.try_send(signal);
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
