//! The event stream in JetStream: makes sure it exists (never rewriting a
//! stream that differs, only reporting it), samples its head and epoch, and
//! reads an org's stored events by sequence.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::{self, context::Context, message::StreamMessage, stream, ErrorCode};
use futures::StreamExt;
use tokio::sync::Semaphore;

use herald_proto::subject::org_events_filter;
use herald_proto::Partitions;
use herald_publisher::stream::{differences, partition_stream, republishes_live, StreamLimits};

/// Where the stream stands: its first and last sequence and its incarnation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHead {
    /// Oldest sequence still stored (`last + 1` when empty).
    pub first_seq: u64,
    /// Newest sequence stored.
    pub last_seq: u64,
    /// Names this incarnation of the stream (its creation time).
    pub epoch: String,
    /// The stream RePublishes to the live subjects the node subscribes to.
    pub republishes: bool,
    /// The server leading the stream (its RePublisher), when clustered.
    pub leader: Option<String>,
}

/// Failure talking to JetStream. Every kind is worth a retry later: the
/// callers (audits, history reads, head samples) retry or answer 503.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// A JetStream request failed (NATS away, timeout, no leader, refused).
    #[error("jetstream {op}: {source}")]
    Request {
        /// What was asked.
        op: &'static str,
        /// What the client reported.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A batch of stored events stopped arriving before its end.
    #[error("jetstream: a batch of stored events stopped arriving")]
    BatchStalled,
    /// A message of a batch was lost on its way here (the client dropped it,
    /// seen as a gap in the consumer's delivery sequence): the read must not
    /// count as complete past it.
    #[error("jetstream: a stored event was dropped on its way to this node")]
    BatchGap,
    /// The node is shutting down: no new read starts.
    #[error("jetstream: the node is shutting down")]
    ShuttingDown,
}

impl StreamError {
    /// Wraps the client's error of the request `op`.
    fn request<E>(op: &'static str) -> impl FnOnce(E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        move |e| Self::Request {
            op,
            source: Box::new(e),
        }
    }
}

/// Reads of one message by sequence before a read switches to a batch.
const SINGLE_READS: usize = 4;
/// Messages fetched per batch, at most (and at most half the client's
/// subscription capacity: a batch arrives on one subscription, and the
/// client drops what overflows it).
const BATCH: usize = 256;
/// Longest wait for the next message of a batch before the read fails (a
/// batch request lost in a reconnect or a leader change must not hang its
/// reader; single requests have the client's request timeout).
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the server keeps one batch request open.
const FETCH_EXPIRES: Duration = Duration::from_secs(2);
/// How long an abandoned read's consumer lives on the server.
const READ_CONSUMER_IDLE: Duration = Duration::from_secs(10);

/// What [`EventStream::org_messages`] read.
#[derive(Debug, Default)]
pub struct OrgMessages {
    /// The org's stored messages, oldest first.
    pub messages: Vec<StreamMessage>,
    /// The stream holds no message of the org in `(from - 1, complete_to]`
    /// beyond `messages`.
    pub complete_to: u64,
}

/// What the node's event streams share: their settings, and the reads in
/// flight on this node (bounded together, counted together).
#[derive(Clone)]
pub struct StreamSettings {
    /// Replicas and limits of a stream this node creates.
    pub limits: StreamLimits,
    reads: Arc<Semaphore>,
    requests: Arc<AtomicU64>,
    batch: usize,
}

impl StreamSettings {
    /// `replicas` and `max_age` for new streams, `max_event_bytes` per
    /// event, `concurrent_reads` reads at once over all streams, and batches
    /// sized for the client's `subscription_capacity`.
    pub fn new(
        replicas: usize,
        max_age: Duration,
        max_event_bytes: usize,
        concurrent_reads: usize,
        subscription_capacity: usize,
    ) -> Self {
        Self {
            limits: StreamLimits {
                replicas,
                max_age,
                // Headers travel in the same message; leave them room.
                max_message_size: i32::try_from(max_event_bytes.saturating_add(16 * 1024))
                    .unwrap_or(i32::MAX),
            },
            reads: Arc::new(Semaphore::new(concurrent_reads.max(1))),
            requests: Arc::new(AtomicU64::new(0)),
            batch: BATCH.min(subscription_capacity / 2).max(1),
        }
    }

    /// Requests sent so far to read stored events over all streams (one per
    /// message get, consumer creation or batch fetch).
    pub fn read_requests(&self) -> u64 {
        self.requests.load(Relaxed)
    }
}

/// Handle on one event stream (the only one, or one partition's).
#[derive(Clone)]
pub struct EventStream {
    js: Context,
    name: String,
    wanted: stream::Config,
    reads: Arc<Semaphore>,
    requests: Arc<AtomicU64>,
    batch: usize,
}

impl EventStream {
    /// A handle on partition `k` of `partitions` (named after `base`);
    /// nothing is sent until a method is called.
    pub fn new(
        client: async_nats::Client,
        base: &str,
        partitions: Partitions,
        k: u32,
        settings: &StreamSettings,
    ) -> Self {
        let wanted = partition_stream(base, partitions, k, settings.limits);
        Self {
            js: jetstream::new(client),
            name: wanted.name.clone(),
            wanted,
            reads: Arc::clone(&settings.reads),
            requests: Arc::clone(&settings.requests),
            batch: settings.batch,
        }
    }

    /// The stream name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The config this node creates the stream with.
    pub fn wanted_config(&self) -> stream::Config {
        self.wanted.clone()
    }

    /// Creates the stream when missing; when it exists with another config,
    /// logs every difference and leaves it alone. Returns its head.
    pub async fn ensure(&self) -> Result<StreamHead, StreamError> {
        match self.js.get_stream(&self.name).await {
            Ok(mut s) => {
                let info = s
                    .info()
                    .await
                    .map_err(StreamError::request("stream info"))?;
                for diff in differences(&self.wanted_config(), &info.config) {
                    tracing::warn!(stream = %self.name, %diff, "existing stream differs from the wanted config; leaving it as it is");
                }
                Ok(head_of(info))
            }
            Err(e) if is_not_found(&e) => {
                tracing::info!(stream = %self.name, replicas = self.wanted.num_replicas, subjects = ?self.wanted.subjects, "creating stream");
                let mut s = self
                    .js
                    .get_or_create_stream(self.wanted_config())
                    .await
                    .map_err(StreamError::request("create stream"))?;
                let info = s
                    .info()
                    .await
                    .map_err(StreamError::request("stream info"))?;
                Ok(head_of(info))
            }
            Err(e) => Err(StreamError::request("get stream")(e)),
        }
    }

    /// Samples the stream's head; recreates the stream if it was deleted.
    pub async fn head(&self) -> Result<StreamHead, StreamError> {
        match self.js.get_stream(&self.name).await {
            Ok(mut s) => {
                let info = s
                    .info()
                    .await
                    .map_err(StreamError::request("stream info"))?;
                Ok(head_of(info))
            }
            Err(e) if is_not_found(&e) => {
                tracing::warn!(stream = %self.name, "stream is gone");
                self.ensure().await
            }
            Err(e) => Err(StreamError::request("get stream")(e)),
        }
    }

    /// The first stored event of `org` with sequence `>= from`, read from the
    /// stream leader (so it is never behind what the leader acknowledged).
    pub async fn next_for_org(
        &self,
        org: &str,
        from: u64,
    ) -> Result<Option<StreamMessage>, StreamError> {
        self.requests.fetch_add(1, Relaxed);
        let handle = self
            .js
            .get_stream_no_info(&self.name)
            .await
            .map_err(StreamError::request("get stream"))?;
        match handle
            .raw_message_builder()
            .sequence(from.max(1))
            .next_by_subject(org_events_filter(org))
            .send()
            .await
        {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(StreamError::request("get message")(e)),
        }
    }
}

impl EventStream {
    /// The org's stored messages with `from <= seq <= until`, oldest first:
    /// at most `max` messages and about `max_bytes` of payload. Short reads
    /// go message by message to the stream leader; longer ones switch to
    /// batches through a short-lived consumer (also served by the leader, so
    /// never behind what it acknowledged). Reads in flight on this node are
    /// bounded; a read waits for its turn.
    pub async fn org_messages(
        &self,
        org: &str,
        from: u64,
        until: u64,
        max: usize,
        max_bytes: usize,
    ) -> Result<OrgMessages, StreamError> {
        let _turn = self
            .reads
            .acquire()
            .await
            .map_err(|_| StreamError::ShuttingDown)?;
        let mut out = OrgMessages {
            messages: Vec::new(),
            complete_to: from.saturating_sub(1),
        };
        let mut bytes = 0;
        let mut next = from;
        while out.messages.len() < SINGLE_READS.min(max) {
            if next > until {
                out.complete_to = until;
                return Ok(out);
            }
            let Some(msg) = self.next_for_org(org, next).await? else {
                out.complete_to = until;
                return Ok(out);
            };
            if msg.sequence > until {
                out.complete_to = until;
                return Ok(out);
            }
            next = msg.sequence.saturating_add(1);
            out.complete_to = msg.sequence;
            bytes += msg.payload.len();
            out.messages.push(msg);
            if out.messages.len() >= max || bytes >= max_bytes {
                return Ok(out);
            }
        }
        if next > until {
            out.complete_to = until;
            return Ok(out);
        }
        let read_from = out.messages.last().map_or(next, |m| m.sequence + 1);
        self.batch_read(
            org,
            next,
            until,
            max - out.messages.len(),
            max_bytes.saturating_sub(bytes),
            &mut out,
        )
        .await?;
        // A consumer that reports nothing more (no pending, an empty fetch)
        // is believed only after the leader confirms it: settling on a
        // wrong "nothing more" would skip stored events for good.
        if out.complete_to == until {
            let after = out
                .messages
                .last()
                .map_or(read_from, |m| m.sequence.saturating_add(1))
                .max(read_from);
            if after <= until {
                if let Some(m) = self.next_for_org(org, after).await? {
                    if m.sequence <= until {
                        out.complete_to = after - 1;
                    }
                }
            }
        }
        Ok(out)
    }

    async fn batch_read(
        &self,
        org: &str,
        from: u64,
        until: u64,
        max: usize,
        max_bytes: usize,
        out: &mut OrgMessages,
    ) -> Result<(), StreamError> {
        let stream = self
            .js
            .get_stream_no_info(&self.name)
            .await
            .map_err(StreamError::request("get stream"))?;
        self.requests.fetch_add(1, Relaxed);
        let consumer = stream
            .create_consumer(pull::Config {
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: from,
                },
                filter_subject: org_events_filter(org),
                ack_policy: AckPolicy::None,
                inactive_threshold: READ_CONSUMER_IDLE,
                memory_storage: true,
                num_replicas: 1,
                ..Default::default()
            })
            .await
            .map_err(StreamError::request("create read consumer"))?;
        let name = consumer.cached_info().name.clone();
        let result = async {
            let mut bytes = 0;
            let mut taken = 0;
            // Every consumer here is new and acks nothing: it delivers with
            // consumer sequences 1, 2, 3, … and a jump means a lost message.
            let mut delivered = 0;
            loop {
                let want = self.batch.min(max - taken).max(1);
                self.requests.fetch_add(1, Relaxed);
                let mut batch = consumer
                    .fetch()
                    .max_messages(want)
                    .expires(FETCH_EXPIRES)
                    .messages()
                    .await
                    .map_err(StreamError::request("fetch batch"))?;
                let mut got = 0;
                loop {
                    let next = tokio::time::timeout(READ_TIMEOUT, batch.next())
                        .await
                        .map_err(|_| StreamError::BatchStalled)?;
                    let Some(m) = next else { break };
                    let m = m.map_err(|source| StreamError::Request {
                        op: "batch message",
                        source,
                    })?;
                    got += 1;
                    let info = m.info().map_err(|e| StreamError::Request {
                        op: "batch message info",
                        source: e,
                    })?;
                    if info.consumer_sequence != delivered + 1 {
                        return Err(StreamError::BatchGap);
                    }
                    delivered = info.consumer_sequence;
                    let (seq, pending, time) = (info.stream_sequence, info.pending, info.published);
                    if seq > until {
                        out.complete_to = until;
                        return Ok(());
                    }
                    let msg = m.split().0;
                    bytes += msg.payload.len();
                    out.complete_to = seq;
                    out.messages.push(StreamMessage {
                        subject: msg.subject,
                        sequence: seq,
                        headers: msg.headers.unwrap_or_default(),
                        payload: msg.payload,
                        time,
                    });
                    taken += 1;
                    if pending == 0 {
                        out.complete_to = until;
                        return Ok(());
                    }
                    if taken >= max || bytes >= max_bytes {
                        return Ok(());
                    }
                }
                if got == 0 {
                    // Nothing more of the org is stored.
                    out.complete_to = until;
                    return Ok(());
                }
            }
        }
        .await;
        // Best effort: the server drops an idle consumer on its own anyway.
        let _ = stream.delete_consumer(&name).await;
        result
    }
}

fn is_not_found(e: &jetstream::context::GetStreamError) -> bool {
    matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND)
}

fn head_of(info: &stream::Info) -> StreamHead {
    let republishes = republishes_live(&info.config);
    StreamHead {
        first_seq: info.state.first_sequence,
        last_seq: info.state.last_sequence,
        epoch: info.created.unix_timestamp_nanos().to_string(),
        republishes,
        leader: info.cluster.as_ref().and_then(|c| c.leader.clone()),
    }
}
