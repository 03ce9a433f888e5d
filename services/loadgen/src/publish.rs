//! Publishes load events through JetStream, paced or flat out, with many
//! publishes awaiting their ack at once. Each event goes to a random org,
//! service and property, carries `Nats-Msg-Id: <org>:<service>:<eventId>` and the
//! wall-clock time of its publish (ns) in its payload; the acks give each
//! org's stored sequences, against which deliveries are checked.

use std::fmt::Write as _;
use std::time::Duration;

use async_nats::jetstream::{self, context::Context};
use async_nats::HeaderMap;
use futures::stream::{FuturesUnordered, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use crate::error::LoadError;
use crate::poller::wall_ns;

/// How long one publish may wait for its ack.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// Properties events are spread over (polls subscribe to all properties).
const PROPERTIES: [&str; 4] = ["p0", "p1", "p2", "p3"];

/// How fast to publish.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// This many events per second, on a fixed schedule.
    Rate(f64),
    /// As fast as the acks come back, within the in-flight window.
    FlatOut,
}

/// What a publishing run stored.
#[derive(Debug, Default)]
pub struct Published {
    /// Stored sequences by org index, sorted.
    pub acked: Vec<Vec<u64>>,
    /// Events sent.
    pub sent: u64,
    /// Events acknowledged as newly stored.
    pub stored: u64,
    /// Acks that said "duplicate" (should be none).
    pub duplicates: u64,
    /// Publishes that failed or whose ack never came.
    pub errors: u64,
    /// The first failure.
    pub first_error: Option<String>,
    /// From the first send to the last send.
    pub send_time: Duration,
    /// From the first send to the last ack.
    pub ack_time: Duration,
    /// When the first event was sent.
    pub started: Option<Instant>,
}

impl Published {
    /// Highest stored sequence of org `i` (0 if none).
    pub fn last_of(&self, org: usize) -> u64 {
        self.acked
            .get(org)
            .and_then(|s| s.last())
            .copied()
            .unwrap_or(0)
    }
}

/// Publishes load events to a fixed set of orgs.
pub struct Publisher {
    js: Context,
    orgs: Vec<String>,
    services: Vec<String>,
    /// Makes event ids unique across runs against the same stream.
    run: String,
    /// Index of the next event; event ids stay unique across calls of
    /// [`publish`](Self::publish) (JetStream would drop a repeated id as a duplicate).
    next: u64,
    rng: StdRng,
}

impl Publisher {
    /// Connects to NATS at `url` (comma-separated; `user:password@` in the
    /// URL logs in, e.g. as the `publisher` user of the shipped NATS config).
    pub async fn connect(
        url: &str,
        orgs: Vec<String>,
        services: Vec<String>,
    ) -> Result<Self, LoadError> {
        let shown = herald_publisher::redact_urls(url);
        let bad = |e: herald_publisher::CredentialsError| LoadError::Nats(e.to_string());
        let servers = herald_publisher::NatsServers::parse(url).map_err(bad)?;
        let options = async_nats::ConnectOptions::new()
            .name("herald-loadgen")
            .client_capacity(65_536);
        let options = match &servers.auth {
            Some(auth) => auth.apply(options).await.map_err(bad)?,
            None => options,
        };
        let client = options
            .connect(servers.addrs)
            .await
            .map_err(|e| LoadError::Nats(format!("connect {shown}: {e}")))?;
        let mut js = jetstream::new(client);
        js.set_timeout(ACK_TIMEOUT);
        Ok(Self {
            js,
            orgs,
            services,
            run: format!("{:08x}", rand::random::<u32>()),
            next: 0,
            rng: StdRng::from_os_rng(),
        })
    }

    /// Publishes `total` events at `pace`, at most `window` awaiting their ack.
    pub async fn publish(&mut self, total: u64, pace: Pace, window: usize) -> Published {
        let window = window.max(1);
        let mut out = Published {
            acked: vec![Vec::new(); self.orgs.len()],
            ..Published::default()
        };
        let mut in_flight = FuturesUnordered::new();
        let started = Instant::now();
        out.started = Some(started);
        let mut subject = String::with_capacity(96);
        for i in 0..total {
            if let Pace::Rate(rate) = pace {
                let due = started + Duration::from_secs_f64(i as f64 / rate);
                loop {
                    tokio::select! {
                        biased;
                        Some(r) = in_flight.next(), if !in_flight.is_empty() => record(&mut out, r),
                        _ = tokio::time::sleep_until(due) => break,
                    }
                }
            }
            while in_flight.len() >= window {
                if let Some(r) = in_flight.next().await {
                    record(&mut out, r);
                }
            }
            let org = self.rng.random_range(0..self.orgs.len());
            let service = &self.services[self.rng.random_range(0..self.services.len())];
            let property = PROPERTIES[self.rng.random_range(0..PROPERTIES.len())];
            subject.clear();
            let _ = write!(
                subject,
                "herald.events.{}.{service}.{property}",
                self.orgs[org]
            );
            let n = self.next + i;
            let event_id = format!("{}-{n}", self.run);
            let mut headers = HeaderMap::new();
            headers.insert(
                "Nats-Msg-Id",
                format!("{}:{service}:{event_id}", self.orgs[org]).as_str(),
            );
            let body = format!(
                r#"{{"eventType":"load.tick","eventId":"{event_id}","payload":{{"t":{},"i":{n}}}}}"#,
                wall_ns()
            );
            out.sent += 1;
            match self
                .js
                .publish_with_headers(subject.clone(), headers, body.into())
                .await
            {
                Ok(ack) => {
                    in_flight.push(async move { (org, ack.await.map_err(|e| e.to_string())) })
                }
                Err(e) => record(&mut out, (org, Err(e.to_string()))),
            }
        }
        self.next += total;
        out.send_time = started.elapsed();
        while let Some(r) = in_flight.next().await {
            record(&mut out, r);
        }
        out.ack_time = started.elapsed();
        for seqs in &mut out.acked {
            seqs.sort_unstable();
        }
        out
    }
}

fn record(
    out: &mut Published,
    (org, result): (usize, Result<jetstream::publish::PublishAck, String>),
) {
    match result {
        Ok(ack) if ack.duplicate => out.duplicates += 1,
        Ok(ack) => {
            out.stored += 1;
            out.acked[org].push(ack.sequence);
        }
        Err(e) => {
            out.errors += 1;
            out.first_error.get_or_insert(e);
        }
    }
}
