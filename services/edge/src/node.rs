//! Everything one edge node shares between its tasks and request handlers.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::auth::Verifier;
use crate::org::buffer::{BufferLimits, ByteBudget};
use crate::config::Config;
use crate::ops::connections::Connections;
use crate::nats::stream::{EventStream, StreamError, StreamHead};
use crate::ops::metrics::{Gauges, Metrics};
use crate::transport::ratelimit::RateLimiter;
use crate::org::registry::Registry;
use crate::ops::switches::Switches;

/// Shared state of a running node.
pub struct Node {
    /// Settings.
    pub config: Config,
    /// This node's id.
    pub node_id: String,
    /// NATS connection.
    pub client: async_nats::Client,
    /// Moves on every NATS event that can have cost live messages.
    pub losses: watch::Receiver<u64>,
    /// The event stream.
    pub stream: EventStream,
    /// Publishing through JetStream with dedup and retries.
    pub publisher: herald_publisher::Publisher,
    /// Token checks.
    pub verifier: Verifier,
    /// Counters.
    pub metrics: Metrics,
    /// Bytes of every org buffer on this node, against `HERALD_BUFFER_BYTES`.
    pub buffer_budget: Arc<ByteBudget>,
    /// Org states held by this node.
    pub orgs: Registry,
    /// Latest sample of the stream head (`None` until the first succeeds).
    pub head: watch::Sender<Option<StreamHead>>,
    head_ok_at: AtomicU64,
    started: Instant,
    /// Cancelled when the node starts draining.
    pub draining: CancellationToken,
    /// Polls in progress.
    pub polls: AtomicU64,
    /// Open WebSocket and SSE connections.
    pub connections: Arc<Connections>,
    /// Kill switches.
    pub switches: Switches,
    /// The periodic sample before the latest one (one to two head intervals old).
    aged_head: std::sync::Mutex<Option<StreamHead>>,
    /// When the last head request started, and what it found (single-flight).
    head_sample: tokio::sync::Mutex<Option<(Instant, StreamHead)>>,
    /// `update-services` calls per (org, user).
    pub control_limiter: RateLimiter,
}

impl Node {
    /// Assembles the node state.
    pub fn new(
        config: Config,
        node_id: String,
        client: async_nats::Client,
        losses: watch::Receiver<u64>,
        verifier: Verifier,
    ) -> Arc<Self> {
        let (config_disabled, config_disabled_services) =
            (config.disabled, config.disabled_services.clone());
        let control_limiter = RateLimiter::new(config.control_rate, config.control_burst);
        let switches = Switches::new(config_disabled, &config_disabled_services)
            .with_known(config.known_services());
        let stream = EventStream::new(
            client.clone(),
            &config.stream,
            config.stream_replicas,
            config.stream_max_age,
            config.max_event_bytes,
            config.history_reads,
        );
        // Bounded so an HTTP publish answers within about 15 s even when JetStream is away.
        let retry = herald_publisher::RetryPolicy {
            attempts: 6,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            ack_timeout: Duration::from_secs(2),
        };
        let publisher = herald_publisher::Publisher::new(client.clone())
            .with_stream(config.stream.clone())
            .with_retry(retry);
        let buffer_budget = ByteBudget::new(config.buffer_bytes);
        Arc::new(Self {
            config,
            node_id,
            client,
            losses,
            stream,
            publisher,
            verifier,
            metrics: Metrics::default(),
            buffer_budget,
            orgs: Registry::default(),
            head: watch::channel(None).0,
            head_ok_at: AtomicU64::new(0),
            started: Instant::now(),
            draining: CancellationToken::new(),
            polls: AtomicU64::new(0),
            connections: Arc::new(Connections::default()),
            switches,
            head_sample: tokio::sync::Mutex::new(None),
            aged_head: std::sync::Mutex::new(None),
            control_limiter,
        })
    }

    /// How much each org buffer may hold.
    pub fn buffer_limits(&self) -> BufferLimits {
        BufferLimits {
            events: self.config.org_buffer_events,
            bytes: self.config.org_buffer_bytes.max(1),
            budget: Arc::clone(&self.buffer_budget),
        }
    }

    /// Milliseconds since the node started (a cheap monotonic clock).
    pub fn uptime_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Records a fresh head sample.
    pub fn set_head(&self, head: StreamHead) {
        self.head_ok_at.store(self.uptime_ms().max(1), Relaxed);
        self.head.send_if_modified(|h| {
            if h.as_ref() == Some(&head) {
                false
            } else {
                *h = Some(head);
                true
            }
        });
    }

    /// A head sampled after this call began: covers every event stored
    /// before it. Concurrent callers share one request.
    pub async fn fresh_head(&self) -> Result<StreamHead, StreamError> {
        let asked = Instant::now();
        let mut last = self.head_sample.lock().await;
        if let Some((started, head)) = &*last {
            if *started >= asked {
                return Ok(head.clone());
            }
        }
        let started = Instant::now();
        let head = self.stream.head().await?;
        *last = Some((started, head.clone()));
        self.set_head(head.clone());
        Ok(head)
    }

    /// Records a periodic sample; the one it replaces becomes the aged head.
    pub fn rotate_head(&self, previous: Option<StreamHead>) {
        *self.aged_head.lock().unwrap_or_else(|p| p.into_inner()) = previous;
    }

    /// A head sampled at least one head interval ago (periodic audits read up to it).
    pub fn aged_head(&self) -> Option<StreamHead> {
        self.aged_head
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The latest head sample.
    pub fn current_head(&self) -> Option<StreamHead> {
        self.head.borrow().clone()
    }

    /// Ready: connected to NATS and the stream answered recently.
    pub fn is_ready(&self) -> bool {
        let ok_at = self.head_ok_at.load(Relaxed);
        let fresh = Duration::from_millis(self.uptime_ms().saturating_sub(ok_at))
            <= (self.config.head_interval * 3).max(Duration::from_secs(5));
        ok_at > 0
            && fresh
            && crate::nats::connection::is_connected(&self.client)
            && !self.draining.is_cancelled()
    }

    /// Gauges for the metrics endpoints.
    pub fn gauges(&self) -> Gauges {
        let o = self.orgs.stats();
        let (websocket, sse) = self.connections.counts();
        Gauges {
            websocket,
            sse,
            longpoll: self.polls.load(Relaxed),
            orgs_total: o.total,
            orgs_active: o.active,
            buffered_events: o.buffered,
            waiters: o.waiters,
            quarantined: self.connections.quarantined.load(Relaxed),
            buffered_bytes: self.buffer_budget.used() as u64,
            stream_reads: self.stream.read_requests(),
        }
    }
}
