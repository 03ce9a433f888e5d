//! Edge node configuration: one struct, read from flags and environment
//! variables (contract section 5), defaults in one place, validated before
//! the node binds anything. Secrets never appear in `Debug` output.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser};
use herald_proto::Partitions;
use herald_publisher::{redact_urls, CredentialsError, NatsAuth, NatsServers};

/// Longest hold a client may ask of a long-poll.
pub const MAX_POLL_TIMEOUT: Duration = Duration::from_secs(55);

/// Every setting of an edge node.
#[derive(Clone, Parser)]
#[command(name = "herald-edge", version, about = "Herald realtime edge node")]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "HERALD_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// NATS server URL(s), comma-separated.
    #[arg(
        long,
        env = "HERALD_NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        hide_env_values = true
    )]
    pub nats_url: String,

    /// Node id reported to clients and in metrics (default: host name plus a random suffix).
    #[arg(long, env = "HERALD_NODE_ID")]
    pub node_id: Option<String>,

    /// JetStream stream holding the events.
    #[arg(long, env = "HERALD_STREAM", default_value = "HERALD_EVENTS")]
    pub stream: String,

    /// Replicas when this node creates the stream.
    #[arg(long, env = "HERALD_STREAM_REPLICAS", default_value_t = 1)]
    pub stream_replicas: usize,

    /// Event streams (`<stream>_0 … <stream>_<K-1>` when above 1), an org's
    /// chosen by the NATS mapping `partition(K, 1)` on its token; every
    /// node and the NATS config must agree.
    #[arg(long, env = "HERALD_PARTITIONS", default_value_t = 1)]
    pub partitions: u32,

    /// Retention when this node creates the stream.
    #[arg(long, env = "HERALD_STREAM_MAX_AGE", default_value = "24h", value_parser = humantime::parse_duration)]
    pub stream_max_age: Duration,

    /// JetStream stream holding room messages (contract section 6).
    #[arg(long, env = "HERALD_ROOMS_STREAM", default_value = "HERALD_ROOMS")]
    pub rooms_stream: String,

    /// Retention of room messages when this node creates their stream.
    #[arg(long, env = "HERALD_ROOM_MAX_AGE", default_value = "30d", value_parser = humantime::parse_duration)]
    pub room_max_age: Duration,

    /// Messages kept per room when this node creates their stream.
    #[arg(long, env = "HERALD_ROOM_HISTORY", default_value_t = 10_000)]
    pub room_history: i64,

    /// Largest upload, in bytes (tus `Tus-Max-Size`; contract section 7).
    #[arg(long, env = "HERALD_UPLOAD_MAX_BYTES", default_value_t = 100 * 1024 * 1024)]
    pub upload_max_bytes: u64,

    /// MIME types an upload may declare, comma-separated (default: JPEG,
    /// PNG, GIF, WebP, PDF, CSV, XLS, XLSX).
    #[arg(long, env = "HERALD_UPLOAD_TYPES", value_delimiter = ',')]
    pub upload_types: Vec<String>,

    /// How long an unfinished upload is kept after its creation.
    #[arg(long, env = "HERALD_UPLOAD_EXPIRES", default_value = "24h", value_parser = humantime::parse_duration)]
    pub upload_expires: Duration,

    /// Largest PATCH body with an `Upload-Checksum` (read whole before it
    /// is stored).
    #[arg(long, env = "HERALD_UPLOAD_CHECKSUM_MAX_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub upload_checksum_max_bytes: usize,

    /// Longest wait for the next byte of a PATCH body.
    #[arg(long, env = "HERALD_UPLOAD_IDLE_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub upload_idle_timeout: Duration,

    /// HS256 secret for client tokens.
    #[arg(long, env = "HERALD_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,

    /// PEM public key (RS256, ES256 or EdDSA) for client tokens.
    #[arg(long, env = "HERALD_JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,

    /// Accept `?token=` on stream and SSE endpoints.
    #[arg(long, env = "HERALD_ALLOW_QUERY_TOKEN", default_value_t = true, action = ArgAction::Set)]
    pub allow_query_token: bool,

    /// Origins allowed by CORS, comma-separated.
    #[arg(long, env = "HERALD_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// Kill switch: refuse realtime connections.
    #[arg(long, env = "HERALD_DISABLED", default_value_t = false, action = ArgAction::Set)]
    pub disabled: bool,

    /// Kill switch: services not delivered, comma-separated.
    #[arg(long, env = "HERALD_DISABLED_SERVICES", value_delimiter = ',')]
    pub disabled_services: Vec<String>,

    /// Serve `/v2/realtime/metrics` without an admin token.
    #[arg(long, env = "HERALD_METRICS_PUBLIC", default_value_t = false, action = ArgAction::Set)]
    pub metrics_public: bool,

    /// OTLP endpoint for traces; tracing export is off when unset. For
    /// `http/protobuf` the base URL (`/v1/traces` is appended).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// Share (0 to 1) of the deliveries of traced events recorded as spans:
    /// one event can reach thousands of clients.
    #[arg(long, env = "HERALD_TRACE_DELIVERY_SAMPLE", default_value_t = 0.01)]
    pub trace_delivery_sample: f64,

    /// `otlp`: also push the node's counters and gauges over OTLP, to
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` (`/metrics` serves them either way).
    #[arg(
        long,
        env = "OTEL_METRICS_EXPORTER",
        value_enum,
        default_value = "none"
    )]
    pub otel_metrics_exporter: MetricsExporter,

    /// Milliseconds between two OTLP metric exports.
    #[arg(long, env = "OTEL_METRIC_EXPORT_INTERVAL", default_value_t = 60_000)]
    pub otel_metric_export_interval_ms: u64,

    /// How traces are sent to `OTEL_EXPORTER_OTLP_ENDPOINT`.
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_PROTOCOL",
        value_enum,
        default_value = "grpc"
    )]
    pub otlp_protocol: OtlpProtocol,

    /// Log as JSON lines instead of text.
    #[arg(long, env = "HERALD_LOG_JSON", default_value_t = false, action = ArgAction::Set)]
    pub log_json: bool,

    /// Recent events cached per org.
    #[arg(long, env = "HERALD_ORG_BUFFER_EVENTS", default_value_t = 200)]
    pub org_buffer_events: usize,

    /// Held polls allowed per org on this node.
    #[arg(long, env = "HERALD_MAX_WAITERS_PER_ORG", default_value_t = 5000)]
    pub max_waiters_per_org: usize,

    /// Idle time after which an org's state and NATS interest are released.
    #[arg(long, env = "HERALD_ORG_IDLE_EVICT", default_value = "2m", value_parser = humantime::parse_duration)]
    pub org_idle_evict: Duration,

    /// Default long-poll hold.
    #[arg(long, env = "HERALD_POLL_TIMEOUT", default_value = "25s", value_parser = humantime::parse_duration)]
    pub poll_timeout: Duration,

    /// Time a stream client has to send `hello`.
    #[arg(long, env = "HERALD_HANDSHAKE_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub handshake_timeout: Duration,

    /// Interval between stream pings.
    #[arg(long, env = "HERALD_PING_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub ping_interval: Duration,

    /// Largest accepted event body, in bytes.
    #[arg(long, env = "HERALD_MAX_EVENT_BYTES", default_value_t = 262_144)]
    pub max_event_bytes: usize,

    /// Connections allowed on this node.
    #[arg(long, env = "HERALD_MAX_CONNECTIONS", default_value_t = 100_000)]
    pub max_connections: usize,

    /// Connections allowed per user on this node.
    #[arg(long, env = "HERALD_MAX_CONNECTIONS_PER_USER", default_value_t = 50)]
    pub max_connections_per_user: usize,

    /// Largest frame a stream client may send, in bytes.
    #[arg(long, env = "HERALD_MAX_FRAME_BYTES", default_value_t = 65_536)]
    pub max_frame_bytes: usize,

    /// Services dropped first for a quarantined (slow) stream connection, comma-separated.
    #[arg(
        long,
        env = "HERALD_LOW_TIER_SERVICES",
        value_delimiter = ',',
        default_value = "analytics,dashboard"
    )]
    pub low_tier_services: Vec<String>,

    /// How long a slow connection stays quarantined.
    #[arg(long, env = "HERALD_QUARANTINE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub quarantine: Duration,

    /// A stream write blocked this long while the connection is behind its buffer closes it with 4008.
    #[arg(long, env = "HERALD_SLOW_CLIENT_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub slow_client_timeout: Duration,

    /// Interval of SSE keep-alive comments.
    #[arg(long, env = "HERALD_SSE_KEEPALIVE", default_value = "15s", value_parser = humantime::parse_duration)]
    pub sse_keepalive: Duration,

    /// How often each active org is checked against the stream for missed
    /// events and to advance quiet cursors.
    #[arg(long, env = "HERALD_AUDIT_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub audit_interval: Duration,

    /// How often the stream's head, first sequence and epoch are sampled.
    #[arg(long, env = "HERALD_HEAD_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub head_interval: Duration,

    /// Longest SIGTERM drain before the process exits.
    #[arg(long, env = "HERALD_DRAIN_TIMEOUT", default_value = "8s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,

    // --- Feed integrity and memory (org feed, buffers, history reads) ---
    /// Live messages the NATS client queues per org subscription before it
    /// drops (a tuning knob; tests make it tiny to force drops).
    #[arg(
        long,
        env = "HERALD_NATS_SUBSCRIPTION_CAPACITY",
        default_value_t = 16_384
    )]
    pub nats_subscription_capacity: usize,

    /// Live messages queued per org between NATS and the org task; past
    /// it (or past `HERALD_LIVE_QUEUE_BYTES`) messages are dropped here and
    /// read back from the stream.
    #[arg(long, env = "HERALD_LIVE_QUEUE_MESSAGES", default_value_t = 16_384)]
    pub live_queue_messages: usize,

    /// Payload bytes queued per org between NATS and the org task.
    #[arg(long, env = "HERALD_LIVE_QUEUE_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub live_queue_bytes: usize,

    /// Stream reads (gap fills and history) in flight at once on this node.
    #[arg(long, env = "HERALD_HISTORY_READS", default_value_t = 32)]
    pub history_reads: usize,

    /// JSON bytes of recent events cached per org (besides the count limit).
    #[arg(long, env = "HERALD_ORG_BUFFER_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub org_buffer_bytes: usize,

    /// JSON bytes of recent events cached over all orgs of this node.
    #[arg(long, env = "HERALD_BUFFER_BYTES", default_value_t = 512 * 1024 * 1024)]
    pub buffer_bytes: usize,

    /// JSON bytes of events in one poll answer or read step (one event
    /// larger than that goes alone).
    #[arg(long, env = "HERALD_MAX_READ_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_read_bytes: usize,

    // --- authz: token audience and issuer ---
    /// When set, tokens must carry this `aud` (401 otherwise).
    #[arg(long, env = "HERALD_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// When set, tokens must carry this `iss` (401 otherwise).
    #[arg(long, env = "HERALD_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    // --- NATS credentials (natsops). One method at most; user and password
    // may instead be written into HERALD_NATS_URL as `nats://user:pass@host`.
    /// NATS user name (needs HERALD_NATS_PASSWORD).
    #[arg(long, env = "HERALD_NATS_USER")]
    pub nats_user: Option<String>,

    /// Password of the NATS user.
    #[arg(long, env = "HERALD_NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<Secret>,

    /// NATS authentication token.
    #[arg(long, env = "HERALD_NATS_TOKEN", hide_env_values = true)]
    pub nats_token: Option<Secret>,

    /// NATS credentials file (`.creds`: user JWT and NKey seed).
    #[arg(long, env = "HERALD_NATS_CREDS_FILE")]
    pub nats_creds_file: Option<PathBuf>,

    // --- WebSocket and SSE streams: outbound limits ---
    /// Largest WebSocket message the server sends, in bytes: an `events`
    /// frame is cut there, and a single larger event goes out alone.
    #[arg(long, env = "HERALD_MAX_BATCH_BYTES", default_value_t = 1_048_576)]
    pub max_batch_bytes: usize,

    /// Frames a WebSocket connection may hold queued behind the one being
    /// written; a client that lets the queue fill is closed with 4008.
    #[arg(long, env = "HERALD_WS_OUTBOUND_FRAMES", default_value_t = 64)]
    pub ws_outbound_frames: usize,

    /// Bytes a WebSocket connection may hold queued behind the one being
    /// written; a client that lets the queue fill is closed with 4008.
    #[arg(long, env = "HERALD_WS_OUTBOUND_BYTES", default_value_t = 1_048_576)]
    pub ws_outbound_bytes: usize,
    // --- HTTP guards and node limits ---
    /// A request body whose bytes stop arriving for this long is cut off (408).
    #[arg(long, env = "HERALD_BODY_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub body_timeout: Duration,

    /// Time a client has to send a request's headers; also how long an idle
    /// keep-alive connection is kept open.
    #[arg(long, env = "HERALD_HEADER_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,

    /// HTTP connections served at once (upgraded WebSockets leave this count
    /// for `HERALD_MAX_CONNECTIONS`); further ones are answered 503 and closed.
    #[arg(long, env = "HERALD_MAX_HTTP_CONNECTIONS", default_value_t = 100_000)]
    pub max_http_connections: usize,

    /// `update-services` calls allowed per second per (org, user).
    #[arg(long, env = "HERALD_CONTROL_RATE", default_value_t = 10)]
    pub control_rate: u32,

    /// Burst of `update-services` calls allowed per (org, user).
    #[arg(long, env = "HERALD_CONTROL_BURST", default_value_t = 20)]
    pub control_burst: u32,

    /// Services that exist, comma-separated; when set, naming any other is 400.
    #[arg(long, env = "HERALD_SERVICES", value_delimiter = ',')]
    pub services: Vec<String>,
}

/// A secret string that never prints.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A setting that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Checks everything that can be checked before binding.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError(m.to_owned()));
        match (&self.jwt_secret, &self.jwt_public_key_file) {
            (None, None) => {
                return bad("one of HERALD_JWT_SECRET or HERALD_JWT_PUBLIC_KEY_FILE is required")
            }
            (Some(_), Some(_)) => {
                return bad("set only one of HERALD_JWT_SECRET and HERALD_JWT_PUBLIC_KEY_FILE")
            }
            (Some(s), None) if s.expose().len() < 16 => {
                return bad("HERALD_JWT_SECRET must be at least 16 bytes")
            }
            _ => {}
        }
        if self.nats_urls().is_empty() {
            return bad("HERALD_NATS_URL is empty");
        }
        if self.otel_metrics_exporter == MetricsExporter::Otlp && self.otlp_endpoint.is_none() {
            return bad("OTEL_METRICS_EXPORTER=otlp needs OTEL_EXPORTER_OTLP_ENDPOINT");
        }
        if self.otel_metric_export_interval_ms == 0 {
            return bad("OTEL_METRIC_EXPORT_INTERVAL must be above zero");
        }
        if !(0.0..=1.0).contains(&self.trace_delivery_sample) {
            return bad("HERALD_TRACE_DELIVERY_SAMPLE must be between 0 and 1");
        }
        self.nats_connection()
            .map_err(|e| ConfigError(e.to_string()))?;
        if herald_proto::subject::check_token("stream", &self.stream).is_err() {
            return bad("HERALD_STREAM must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-'");
        }
        if Partitions::new(self.partitions).is_none() {
            return bad("HERALD_PARTITIONS must be between 1 and 1024");
        }
        if herald_proto::subject::check_token("stream", &self.rooms_stream).is_err()
            || self.rooms_stream == self.stream
        {
            return bad("HERALD_ROOMS_STREAM must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-', and not HERALD_STREAM");
        }
        if self.room_history < 1 {
            return bad("HERALD_ROOM_HISTORY must be at least 1");
        }
        if self.upload_max_bytes == 0 || self.upload_checksum_max_bytes == 0 {
            return bad(
                "HERALD_UPLOAD_MAX_BYTES and HERALD_UPLOAD_CHECKSUM_MAX_BYTES must be at least 1",
            );
        }
        if self.upload_expires.is_zero() || self.upload_idle_timeout.is_zero() {
            return bad("HERALD_UPLOAD_EXPIRES and HERALD_UPLOAD_IDLE_TIMEOUT must be more than 0");
        }
        for t in &self.upload_types {
            if crate::upload::metadata::normalize_type(t).is_err() {
                return bad(&format!("HERALD_UPLOAD_TYPES: {t:?} is not a MIME type"));
            }
        }
        if !(1..=5).contains(&self.stream_replicas) {
            return bad("HERALD_STREAM_REPLICAS must be between 1 and 5");
        }
        if self.org_buffer_events == 0 {
            return bad("HERALD_ORG_BUFFER_EVENTS must be at least 1");
        }
        if self.max_waiters_per_org == 0
            || self.max_connections == 0
            || self.max_connections_per_user == 0
        {
            return bad("waiter and connection limits must be at least 1");
        }
        if self.poll_timeout.is_zero() || self.poll_timeout > MAX_POLL_TIMEOUT {
            return bad("HERALD_POLL_TIMEOUT must be between 1s and 55s");
        }
        if self.max_event_bytes == 0 {
            return bad("HERALD_MAX_EVENT_BYTES must be at least 1");
        }
        if self.max_frame_bytes < 1024 {
            return bad("HERALD_MAX_FRAME_BYTES must be at least 1024");
        }
        for d in [
            self.audit_interval,
            self.head_interval,
            self.ping_interval,
            self.handshake_timeout,
            self.quarantine,
            self.slow_client_timeout,
            self.sse_keepalive,
        ] {
            if d.is_zero() {
                return bad("intervals and timeouts must be above zero");
            }
        }
        if self.jwt_audience.as_deref() == Some("") || self.jwt_issuer.as_deref() == Some("") {
            return bad("HERALD_JWT_AUDIENCE and HERALD_JWT_ISSUER must not be empty when set");
        }
        for o in &self.cors_origins {
            if !is_origin(o) {
                return bad("HERALD_CORS_ORIGINS entries must be origins like https://app.example.com (scheme and host, no path, no '*')");
            }
        }
        if self.max_batch_bytes < 4096 {
            return bad("HERALD_MAX_BATCH_BYTES must be at least 4096");
        }
        if self.ws_outbound_frames < 8 || self.ws_outbound_bytes < 65_536 {
            return bad("HERALD_WS_OUTBOUND_FRAMES must be at least 8 and HERALD_WS_OUTBOUND_BYTES at least 65536");
        }
        for s in &self.disabled_services {
            if herald_proto::subject::check_token("service", s).is_err() {
                return bad("HERALD_DISABLED_SERVICES holds an invalid service name");
            }
        }
        // HTTP guards and node limits.
        if self.body_timeout.is_zero() || self.header_timeout.is_zero() {
            return bad("HERALD_BODY_TIMEOUT and HERALD_HEADER_TIMEOUT must be above zero");
        }
        if self.max_http_connections == 0 {
            return bad("HERALD_MAX_HTTP_CONNECTIONS must be at least 1");
        }
        if self.control_rate == 0 || self.control_burst == 0 {
            return bad("HERALD_CONTROL_RATE and HERALD_CONTROL_BURST must be at least 1");
        }
        for s in self.known_services().iter().flatten() {
            if herald_proto::subject::check_token("service", s).is_err() {
                return bad("HERALD_SERVICES holds an invalid service name");
            }
        }
        Ok(())
    }

    /// `HERALD_PARTITIONS` (one when out of range: `validate` refuses that).
    pub fn partitioning(&self) -> Partitions {
        Partitions::new(self.partitions).unwrap_or_else(Partitions::single)
    }

    /// `HERALD_SERVICES` as a set; `None` when unset (every service name is accepted).
    pub fn known_services(&self) -> Option<std::collections::HashSet<String>> {
        let set: std::collections::HashSet<String> = self
            .services
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        (!set.is_empty()).then_some(set)
    }

    /// The NATS URLs as a list.
    pub fn nats_urls(&self) -> Vec<String> {
        self.nats_url
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The NATS servers (credentials taken out of the URLs) and how to
    /// authenticate: from `HERALD_NATS_USER`/`_PASSWORD`, `_TOKEN` or
    /// `_CREDS_FILE`, else from the URLs. Errors never contain a secret.
    pub fn nats_connection(
        &self,
    ) -> Result<(Vec<async_nats::ServerAddr>, NatsAuth), CredentialsError> {
        let servers = NatsServers::parse(&self.nats_url)?;
        let expose = |s: &Option<Secret>| s.as_ref().map(|s| s.expose().to_owned());
        let auth = NatsAuth {
            user: self.nats_user.clone(),
            password: expose(&self.nats_password),
            token: expose(&self.nats_token),
            creds_file: self.nats_creds_file.clone(),
        }
        .or_from_urls(&servers)?;
        auth.check()?;
        Ok((servers.addrs, auth))
    }

    /// The configured node id, or host name plus a random suffix.
    pub fn resolved_node_id(&self) -> String {
        if let Some(id) = &self.node_id {
            return id.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "edge".to_owned());
        format!("{host}-{:06x}", rand::random::<u32>() & 0xff_ffff)
    }
}

/// Where the node pushes its metrics besides serving `/metrics`
/// (`OTEL_METRICS_EXPORTER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MetricsExporter {
    /// Nowhere: Prometheus scrapes `/metrics`.
    None,
    /// OTLP, to `OTEL_EXPORTER_OTLP_ENDPOINT`.
    Otlp,
}

/// The OTLP transports the node exports traces with (the OpenTelemetry
/// names of `OTEL_EXPORTER_OTLP_PROTOCOL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OtlpProtocol {
    /// OTLP over gRPC (port 4317 by convention).
    Grpc,
    /// OTLP over HTTP with protobuf bodies (port 4318 by convention).
    #[value(name = "http/protobuf")]
    HttpProtobuf,
}

/// `scheme://host[:port]` with nothing after it, as browsers send in `Origin`.
fn is_origin(o: &str) -> bool {
    let Some(rest) = o
        .strip_prefix("https://")
        .or_else(|| o.strip_prefix("http://"))
    else {
        return false;
    };
    !rest.is_empty() && !rest.contains(['/', '*', '?', '#', ' ', ','])
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("nats_url", &redact_urls(&self.nats_url))
            .field("node_id", &self.node_id)
            .field("stream", &self.stream)
            .field("stream_replicas", &self.stream_replicas)
            .field("partitions", &self.partitions)
            .field("stream_max_age", &self.stream_max_age)
            .field(
                "jwt_secret",
                &self.jwt_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("jwt_public_key_file", &self.jwt_public_key_file)
            .field("allow_query_token", &self.allow_query_token)
            .field("cors_origins", &self.cors_origins)
            .field("disabled", &self.disabled)
            .field("disabled_services", &self.disabled_services)
            .field("metrics_public", &self.metrics_public)
            .field("org_buffer_events", &self.org_buffer_events)
            .field("max_waiters_per_org", &self.max_waiters_per_org)
            .field("org_idle_evict", &self.org_idle_evict)
            .field("poll_timeout", &self.poll_timeout)
            .field("max_event_bytes", &self.max_event_bytes)
            .field("audit_interval", &self.audit_interval)
            .field("jwt_audience", &self.jwt_audience)
            .field("jwt_issuer", &self.jwt_issuer)
            .field("nats_user", &self.nats_user)
            .field("nats_password", &self.nats_password)
            .field("nats_token", &self.nats_token)
            .field("nats_creds_file", &self.nats_creds_file)
            .field("max_batch_bytes", &self.max_batch_bytes)
            .field("ws_outbound_frames", &self.ws_outbound_frames)
            .field("ws_outbound_bytes", &self.ws_outbound_bytes)
            .field("body_timeout", &self.body_timeout)
            .field("header_timeout", &self.header_timeout)
            .field("max_http_connections", &self.max_http_connections)
            .field("services", &self.services)
            .field("upload_max_bytes", &self.upload_max_bytes)
            .field("upload_types", &self.upload_types)
            .field("upload_expires", &self.upload_expires)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        let mut all = vec!["herald-edge"];
        all.extend_from_slice(args);
        Config::try_parse_from(all).unwrap()
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = parse(&["--jwt-secret", "0123456789abcdef"]);
        assert_eq!(c.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(c.stream, "HERALD_EVENTS");
        assert_eq!(c.stream_max_age, Duration::from_secs(86_400));
        assert_eq!(c.org_buffer_events, 200);
        assert_eq!(c.max_waiters_per_org, 5000);
        assert_eq!(c.org_idle_evict, Duration::from_secs(120));
        assert_eq!(c.poll_timeout, Duration::from_secs(25));
        assert_eq!(c.max_event_bytes, 262_144);
        assert_eq!(
            (c.max_connections, c.max_connections_per_user),
            (100_000, 50)
        );
        assert!(c.allow_query_token && !c.disabled && !c.metrics_public);
        assert_eq!(c.max_batch_bytes, 1_048_576);
        c.validate().unwrap();
        let c = parse(&[
            "--jwt-secret",
            "0123456789abcdef",
            "--ws-outbound-frames",
            "0",
        ]);
        assert!(c.validate().is_err());
    }

    #[test]
    fn secret_is_redacted_and_validation_catches_mistakes() {
        let c = parse(&["--jwt-secret", "super-secret-value-123"]);
        assert!(!format!("{c:?}").contains("super-secret"));
        assert!(parse(&[]).validate().is_err());
        assert!(parse(&["--jwt-secret", "short"]).validate().is_err());
        let c = parse(&["--jwt-secret", "0123456789abcdef", "--poll-timeout", "90s"]);
        assert!(c.validate().is_err());
        let c = parse(&["--jwt-secret", "0123456789abcdef", "--stream", "bad.name"]);
        assert!(c.validate().is_err());
        let c = parse(&[
            "--jwt-secret",
            "0123456789abcdef",
            "--allow-query-token",
            "false",
        ]);
        assert!(!c.allow_query_token);
        let with = |o: &str| parse(&["--jwt-secret", "0123456789abcdef", "--cors-origins", o]);
        assert!(with("https://app.example,http://localhost:3000")
            .validate()
            .is_ok());
        for bad in ["*", "app.example", "https://app.example/", "https://"] {
            assert!(with(bad).validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn nats_credentials_are_redacted_and_checked() {
        let c = parse(&[
            "--jwt-secret",
            "0123456789abcdef",
            "--nats-url",
            "nats://edge:url-pass-1@a:4222",
        ]);
        c.validate().expect("valid");
        let (addrs, auth) = c.nats_connection().expect("valid");
        assert_eq!(auth, NatsAuth::user_password("edge", "url-pass-1"));
        assert!(!format!("{addrs:?}").contains("url-pass-1"));
        assert!(!format!("{c:?}").contains("url-pass-1"), "{c:?}");

        let c = parse(&[
            "--jwt-secret",
            "0123456789abcdef",
            "--nats-user",
            "edge",
            "--nats-password",
            "env-pass-2",
        ]);
        c.validate().expect("valid");
        assert_eq!(
            c.nats_connection().expect("valid").1,
            NatsAuth::user_password("edge", "env-pass-2")
        );
        assert!(!format!("{c:?}").contains("env-pass-2"));

        for bad in [
            &["--nats-user", "edge"][..],
            &["--nats-password", "p"],
            &[
                "--nats-user",
                "u",
                "--nats-password",
                "p",
                "--nats-token",
                "t",
            ],
            &["--nats-url", "nats://u:p@a:1", "--nats-token", "t"],
        ] {
            let mut args = vec!["--jwt-secret", "0123456789abcdef"];
            args.extend_from_slice(bad);
            assert!(parse(&args).validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn splits_nats_urls() {
        let c = parse(&[
            "--jwt-secret",
            "0123456789abcdef",
            "--nats-url",
            "nats://a:1, nats://b:2",
        ]);
        assert_eq!(c.nats_urls(), vec!["nats://a:1", "nats://b:2"]);
    }
}
