//! The node's NATS connection: reconnects forever, and turns the client's
//! connection events into the signals the rest of the node needs (readiness,
//! and a counter of "live messages may have been lost" that every org's live
//! pump watches), and into log lines an operator can act on: one per change
//! of state, naming the servers and why they failed ([`Health`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event};
use tokio::sync::watch;
use tokio::time::Instant;

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
    let tx = Arc::new(tx);
    let servers = addrs
        .iter()
        .map(|a| format!("{}:{}", a.host(), a.port()))
        .collect::<Vec<_>>()
        .join(", ");
    let health = Arc::new(Mutex::new(Health::new(servers)));
    let on_attempt = Arc::clone(&health);
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
        // Called before every connection attempt with each server's last
        // error; it only reads them (None keeps the client's own choice).
        .reconnect_to_server_callback(move |pool, _info| {
            let failures: Vec<(String, String)> = pool
                .iter()
                .filter_map(|s| {
                    let error = s.last_error.clone()?;
                    Some((format!("{}:{}", s.addr.host(), s.addr.port()), error))
                })
                .collect();
            if let Some(line) = lock(&on_attempt).failing(&failures) {
                tracing::warn!("{line}");
            }
            std::future::ready(None)
        })
        .event_callback(move |event| {
            let (tx, health) = (tx.clone(), Arc::clone(&health));
            async move {
                let lost = matches!(event, Event::Connected | Event::SlowConsumer(_));
                match event {
                    Event::Connected => tracing::info!("{}", lock(&health).connected()),
                    Event::Disconnected => tracing::warn!("{}", lock(&health).disconnected()),
                    Event::SlowConsumer(sid) => {
                        tracing::warn!(sid, "nats slow consumer: live messages dropped, will refill from the stream");
                    }
                    // Reconnect failures: the attempt callback names them per server.
                    Event::ClientError(e) => tracing::debug!(error = %e, "nats client error"),
                    other => tracing::info!(event = %other, "nats event"),
                }
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the node has said about its NATS connection, so that it says
/// something once per change of state: connected, disconnected, and the
/// servers failing (each with its reason) while it is not connected.
#[derive(Debug)]
struct Health {
    /// The configured servers, as `host:port`.
    servers: String,
    /// Since when no connection is up (`None` while connected).
    down_since: Option<Instant>,
    /// The failures last reported, as `host:port: reason` lines.
    reported: Vec<(String, String)>,
    /// A connection has been up before.
    was_up: bool,
}

impl Health {
    fn new(servers: String) -> Self {
        Self {
            servers,
            down_since: Some(Instant::now()),
            reported: Vec::new(),
            was_up: false,
        }
    }

    fn connected(&mut self) -> String {
        let line = match (self.was_up, self.down_since) {
            (true, Some(since)) => format!(
                "nats connected again after {:.1} s (servers: {})",
                since.elapsed().as_secs_f64(),
                self.servers
            ),
            _ => format!("nats connected (servers: {})", self.servers),
        };
        self.was_up = true;
        self.down_since = None;
        self.reported.clear();
        line
    }

    fn disconnected(&mut self) -> String {
        self.down_since.get_or_insert_with(Instant::now);
        format!(
            "nats disconnected; reconnecting to {} (live delivery waits, stream reads answer 503)",
            self.servers
        )
    }

    /// A line when the servers failing, or their reasons, changed since the
    /// last one; `None` otherwise.
    fn failing(&mut self, failures: &[(String, String)]) -> Option<String> {
        if failures.is_empty() || failures == self.reported.as_slice() {
            return None;
        }
        self.reported = failures.to_vec();
        let list: Vec<String> = failures.iter().map(|(s, e)| format!("{s}: {e}")).collect();
        Some(format!(
            "nats unreachable; retrying every 2 s at most: {}",
            list.join("; ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail(server: &str, reason: &str) -> (String, String) {
        (server.to_owned(), reason.to_owned())
    }

    #[tokio::test(start_paused = true)]
    async fn says_each_change_of_state_once_with_servers_and_reasons() {
        let mut h = Health::new("n1:4222, n2:4222".into());
        assert_eq!(h.connected(), "nats connected (servers: n1:4222, n2:4222)");
        assert!(h
            .disconnected()
            .contains("reconnecting to n1:4222, n2:4222"));
        let refused = [fail("n1:4222", "connection refused")];
        let line = h.failing(&refused).unwrap();
        assert_eq!(
            line,
            "nats unreachable; retrying every 2 s at most: n1:4222: connection refused"
        );
        // The same failure on the next attempts: nothing new to say.
        assert_eq!(h.failing(&refused), None);
        assert_eq!(h.failing(&[]), None);
        // Another server fails too: said once.
        let both = [refused[0].clone(), fail("n2:4222", "timed out")];
        assert!(h.failing(&both).unwrap().ends_with("n2:4222: timed out"));
        assert_eq!(h.failing(&both), None);
        tokio::time::advance(Duration::from_millis(2500)).await;
        assert_eq!(
            h.connected(),
            "nats connected again after 2.5 s (servers: n1:4222, n2:4222)"
        );
        // A later outage with the same failure is said again.
        h.disconnected();
        assert!(h.failing(&refused).is_some());
    }
}
