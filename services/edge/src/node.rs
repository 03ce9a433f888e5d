//! The bundle of one running node's parts, handed by the server to the
//! HTTP handlers and the ops tasks. Layers below the transports never see
//! it: the org layer gets its [`Upstream`], the NATS layer its own parts.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::auth::Verifier;
use crate::config::Config;
use crate::nats::connection;
use crate::nats::rooms::{RoomSettings, RoomStore};
use crate::nats::stream::StreamSettings;
use crate::nats::streams::Streams;
use crate::nats::uploads::{UploadSettings, UploadStore};
use crate::ops::connections::Connections;
use crate::ops::connections::Transport;
use crate::ops::metrics::{Gauges, Metrics, NatsCounters, PartitionGauges};
use crate::ops::process;
use crate::ops::switches::Switches;
use crate::ops::telemetry;
use crate::org::buffer::{BufferLimits, ByteBudget};
use crate::org::decode::StoredEvent;
use crate::org::live::QueueLimits;
use crate::org::registry::Registry;
use crate::org::{OrgLimits, Upstream};
use crate::room::registry::Rooms;
use crate::transport::ratelimit::RateLimiter;

/// Client telemetry reports a user may send a second, sustained. The SDK
/// flushes every 30 s per tab, so this leaves room for many tabs.
const TELEMETRY_RATE: u32 = 1;
/// Client telemetry reports a user may send at once (page hides of several
/// tabs, a flush after a burst of reconnects).
const TELEMETRY_BURST: u32 = 10;

/// Shared state of a running node.
pub struct Node {
    /// Settings.
    pub config: Config,
    /// This node's id.
    pub node_id: String,
    /// NATS connection.
    pub client: async_nats::Client,
    /// The event streams (one per partition) and their sampled heads.
    pub streams: Arc<Streams>,
    /// Publishing through JetStream with dedup and retries.
    pub publisher: herald_publisher::Publisher,
    /// Token checks.
    pub verifier: Verifier,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Bytes of every org buffer on this node, against `HERALD_BUFFER_BYTES`.
    pub buffer_budget: Arc<ByteBudget>,
    /// Org states held by this node.
    pub orgs: Registry,
    /// Cancelled when the node starts draining.
    pub draining: CancellationToken,
    /// Polls in progress.
    pub polls: AtomicU64,
    /// Open WebSocket and SSE connections.
    pub connections: Arc<Connections>,
    /// Kill switches.
    pub switches: Arc<Switches>,
    /// `update-services` calls per (org, user).
    pub control_limiter: RateLimiter,
    /// Client telemetry reports per (org, user): its own budget, so an SDK
    /// reporting cannot starve the user's control calls.
    pub telemetry_limiter: RateLimiter,
    /// Rooms with members on this node.
    pub rooms: Arc<Rooms>,
    /// Room messages per (org, user), over WebSocket and HTTP.
    pub room_limiter: RateLimiter,
    /// Uploads' bytes and records in NATS.
    pub uploads: Arc<UploadStore>,
}

impl Node {
    /// Assembles the node's parts around a NATS connection.
    pub fn new(
        config: Config,
        node_id: String,
        client: async_nats::Client,
        losses: watch::Receiver<u64>,
        verifier: Verifier,
    ) -> Arc<Self> {
        let control_limiter = RateLimiter::new(config.control_rate, config.control_burst);
        let telemetry_limiter = RateLimiter::new(TELEMETRY_RATE, TELEMETRY_BURST);
        let switches = Switches::new(config.disabled, &config.disabled_services)
            .with_known(config.known_services());
        let settings = StreamSettings::new(
            config.stream_replicas,
            config.stream_max_age,
            config.max_event_bytes,
            config.history_reads,
            config.nats_subscription_capacity,
        );
        let partitions = config.partitioning();
        let streams = Arc::new(Streams::new(&client, &config.stream, partitions, settings));
        // Bounded so an HTTP publish answers within about 15 s even when JetStream is away.
        let retry = herald_publisher::RetryPolicy {
            attempts: 6,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            ack_timeout: Duration::from_secs(2),
        };
        let publisher = herald_publisher::Publisher::new(client.clone())
            .with_stream(config.stream.clone())
            .with_partitions(partitions)
            .with_retry(retry);
        let buffer_budget = ByteBudget::new(config.buffer_bytes);
        let metrics = Arc::new(Metrics::default());
        let upstream = Arc::new(Upstream {
            client: client.clone(),
            losses,
            streams: Arc::clone(&streams),
            metrics: Arc::clone(&metrics),
            max_event_bytes: config.max_event_bytes,
            audit_interval: config.audit_interval,
        });
        let limits = OrgLimits {
            buffer: BufferLimits {
                events: config.org_buffer_events,
                bytes: config.org_buffer_bytes.max(1),
                budget: Arc::clone(&buffer_budget),
            },
            live: QueueLimits {
                messages: config.live_queue_messages.max(1),
                bytes: config.live_queue_bytes.max(1),
            },
            max_read_bytes: config.max_read_bytes,
        };
        let draining = CancellationToken::new();
        let room_store = RoomStore::new(
            client.clone(),
            RoomSettings {
                stream: config.rooms_stream.clone(),
                replicas: config.stream_replicas,
                max_age: config.room_max_age,
                per_room: config.room_history,
            },
        );
        let rooms = Rooms::new(
            room_store,
            client.clone(),
            node_id.clone(),
            Arc::clone(&metrics),
            draining.clone(),
        );
        let uploads = Arc::new(UploadStore::new(
            client.clone(),
            UploadSettings {
                replicas: config.stream_replicas,
            },
        ));
        let rate = herald_proto::room::MESSAGES_PER_SECOND;
        Arc::new(Self {
            config,
            node_id,
            client,
            streams,
            publisher,
            verifier,
            metrics,
            buffer_budget,
            orgs: Registry::new(upstream, limits),
            draining,
            polls: AtomicU64::new(0),
            connections: Arc::new(Connections::default()),
            switches: Arc::new(switches),
            control_limiter,
            telemetry_limiter,
            rooms,
            room_limiter: RateLimiter::new(rate, rate),
            uploads,
        })
    }

    /// Ready: connected to NATS and the stream answered recently.
    pub fn is_ready(&self) -> bool {
        let recent = (self.config.head_interval * 3).max(Duration::from_secs(5));
        self.streams.all_recent(recent)
            && connection::is_connected(&self.client)
            && !self.draining.is_cancelled()
    }

    /// Records a sampled span (`HERALD_TRACE_DELIVERY_SAMPLE`) for the
    /// delivery of each traced event among `events` to one client of `org`
    /// over `transport`.
    pub fn trace_deliveries(&self, org: &str, events: &[Arc<StoredEvent>], transport: Transport) {
        let sample = self.config.trace_delivery_sample;
        for event in events {
            if let Some(ingest) = event.trace() {
                telemetry::delivery_span(ingest, org, event.seq(), transport.name(), sample);
            }
        }
    }

    /// Gauges for the metrics endpoints.
    pub fn gauges(&self) -> Gauges {
        let o = self.orgs.stats();
        let (websocket, sse) = self.connections.counts();
        let rooms = self.rooms.gauges();
        Gauges {
            websocket,
            sse,
            longpoll: self.polls.load(Relaxed),
            orgs_total: o.total,
            orgs_active: o.active,
            orgs_untrusted: o.untrusted,
            buffered_events: o.buffered,
            waiters: o.waiters,
            quarantined: self.connections.quarantined.load(Relaxed),
            buffered_bytes: self.buffer_budget.used() as u64,
            stream_reads: self.streams.read_requests(),
            head_samples: self.streams.head_samples(),
            leader_changes: self.streams.leader_changes(),
            nats_connected: u64::from(connection::is_connected(&self.client)),
            nats: {
                let s = self.client.statistics();
                NatsCounters {
                    connects: s.connects.load(Relaxed),
                    messages_in: s.in_messages.load(Relaxed),
                    bytes_in: s.in_bytes.load(Relaxed),
                    messages_out: s.out_messages.load(Relaxed),
                    bytes_out: s.out_bytes.load(Relaxed),
                }
            },
            process: process::read(),
            room_orgs: rooms.orgs,
            rooms: rooms.rooms,
            room_members: rooms.members,
            partitions: self
                .streams
                .all()
                .iter()
                .map(|h| PartitionGauges {
                    last_seq: h.current().map(|head| head.last_seq),
                    sample_age: h.sample_age(),
                })
                .collect(),
        }
    }
}
