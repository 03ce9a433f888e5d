//! One long-poll chain per task, each on its own HTTP/1 connection: an
//! opening poll with `timeout=0` fixes the chain's starting cursor, then
//! polls repeat with `lastSeq` passed on and `timeout=<hold>` until the
//! benchmark stops them. Every poll carries `org=<org>`, as the SDK's do,
//! so a load balancer in front can hash on it. Every event received is logged with its wake
//! latency (arrival time minus the publish time embedded in its payload).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use herald_proto::poll::PollResponse;
use http::header::{AUTHORIZATION, HOST};
use http::{HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use std::fmt::Write as _;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Pause after a failed poll or connection before the next try.
const RETRY_AFTER: Duration = Duration::from_millis(250);
/// How much longer than its hold a poll may take before it counts as hung.
const HOLD_SLACK: Duration = Duration::from_secs(10);
/// Bound on opening a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What every poller shares.
#[derive(Debug)]
pub struct PollConfig {
    /// The edge's address.
    pub addr: SocketAddr,
    /// `Host` header value.
    pub host: HeaderValue,
    /// `services=` value, comma-separated.
    pub services: String,
    /// Hold asked of each poll.
    pub hold: Duration,
}

/// One poller to start.
#[derive(Debug, Clone)]
pub struct PollerPlan {
    /// Index of the org the poller's token names.
    pub org: u32,
    /// That org's id, sent as `org=` on every poll.
    pub org_id: String,
    /// The poller's bearer token.
    pub token: String,
}

/// Shared progress of all pollers.
pub struct Shared {
    /// Cancelled to end every chain.
    pub stop: CancellationToken,
    ready: AtomicUsize,
    /// Highest event sequence each poller has received, by poller index.
    pub received_up_to: Box<[AtomicU64]>,
    /// Failed polls and connections over all pollers.
    pub errors: AtomicU64,
    gate: Semaphore,
}

impl Shared {
    /// Pollers whose chain is open (opening poll answered).
    pub fn ready(&self) -> usize {
        self.ready.load(Relaxed)
    }
}

/// What one poller saw.
#[derive(Debug, Default)]
pub struct PollerLog {
    /// Org index.
    pub org: u32,
    /// Sequences received, in arrival order.
    pub seqs: Vec<u64>,
    /// Wake latency of each event that carried a publish time, in µs.
    pub latencies_us: Vec<u32>,
    /// Publish time of each of those events, ns since the Unix epoch.
    pub published_ns: Vec<u64>,
    /// Events whose sequence was not above every earlier one (duplicates included).
    pub out_of_order: u64,
    /// Polls answered with 200.
    pub polls: u64,
    /// Failed polls and connections.
    pub errors: u64,
    /// Answers that carried a `reset`.
    pub resets: u64,
    /// Connections opened.
    pub connects: u64,
    /// The first failure, for the summary.
    pub first_error: Option<String>,
}

/// The running pollers.
pub struct Pollers {
    handles: Vec<JoinHandle<PollerLog>>,
    /// Their shared progress.
    pub shared: Arc<Shared>,
}

impl Pollers {
    /// Starts one task per plan; at most `open_at_once` open their chain at a time.
    pub fn start(config: Arc<PollConfig>, plans: Vec<PollerPlan>, open_at_once: usize) -> Self {
        let shared = Arc::new(Shared {
            stop: CancellationToken::new(),
            ready: AtomicUsize::new(0),
            received_up_to: plans.iter().map(|_| AtomicU64::new(0)).collect(),
            errors: AtomicU64::new(0),
            gate: Semaphore::new(open_at_once.max(1)),
        });
        let handles = plans
            .into_iter()
            .enumerate()
            .map(|(i, plan)| tokio::spawn(run(i, plan, Arc::clone(&config), Arc::clone(&shared))))
            .collect();
        Self { handles, shared }
    }

    /// Stops every chain and returns what each poller saw, by poller index.
    pub async fn stop(self) -> Vec<PollerLog> {
        self.shared.stop.cancel();
        let mut logs = Vec::with_capacity(self.handles.len());
        for h in self.handles {
            logs.push(h.await.unwrap_or_default());
        }
        logs
    }
}

/// An event as the load generator reads it: the sequence and the publish
/// time stamp, everything else skipped.
#[derive(Deserialize)]
struct LoadEvent {
    seq: u64,
    #[serde(default)]
    payload: Option<Stamp>,
}

#[derive(Deserialize)]
struct Stamp {
    /// Publish wall-clock time, ns since the Unix epoch.
    #[serde(default)]
    t: u64,
}

/// Why a poll failed.
enum Failure {
    /// The connection is unusable; open a new one.
    Connection(String),
    /// The edge answered with an error status; the connection stays.
    Status(StatusCode, String),
}

/// Wall-clock time, ns since the Unix epoch.
pub fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// One HTTP/1 connection to the edge.
struct Conn {
    sender: SendRequest<Empty<Bytes>>,
    task: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn connect(addr: SocketAddr) -> Result<Conn, String> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(Conn { sender, task })
}

/// Sends one poll and reads the whole answer; returns the body and the
/// wall-clock time it was complete.
async fn poll_once(
    conn: &mut Conn,
    config: &PollConfig,
    auth: &HeaderValue,
    uri: &str,
) -> Result<(Bytes, u64), Failure> {
    conn.sender
        .ready()
        .await
        .map_err(|e| Failure::Connection(e.to_string()))?;
    let request = Request::get(uri)
        .header(HOST, config.host.clone())
        .header(AUTHORIZATION, auth.clone())
        .body(Empty::new())
        .map_err(|e| Failure::Connection(format!("request: {e}")))?;
    let response = conn
        .sender
        .send_request(request)
        .await
        .map_err(|e| Failure::Connection(e.to_string()))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| Failure::Connection(e.to_string()))?
        .to_bytes();
    let at = wall_ns();
    if status != StatusCode::OK {
        return Err(Failure::Status(
            status,
            String::from_utf8_lossy(&body).chars().take(200).collect(),
        ));
    }
    Ok((body, at))
}

async fn run(
    index: usize,
    plan: PollerPlan,
    config: Arc<PollConfig>,
    shared: Arc<Shared>,
) -> PollerLog {
    let mut log = PollerLog {
        org: plan.org,
        ..PollerLog::default()
    };
    let Ok(auth) = HeaderValue::from_str(&format!("Bearer {}", plan.token)) else {
        log.errors += 1;
        log.first_error = Some("token is not a valid header value".into());
        return log;
    };
    let mut conn: Option<Conn> = None;
    let mut uri = String::with_capacity(128);
    let mut max_seq = 0;

    // Open the chain: a poll that answers at once with the current cursor.
    let cursor = {
        let Ok(_permit) = shared.gate.acquire().await else {
            return log;
        };
        let _ = write!(
            uri,
            "/v1/realtime/poll?org={}&services={}&timeout=0",
            plan.org_id, config.services
        );
        loop {
            if shared.stop.is_cancelled() {
                return log;
            }
            match step(&mut conn, &config, &auth, &uri, &mut log, &shared).await {
                Some((body, at)) => match handle(&body, at, &mut log, &mut max_seq) {
                    Ok(cursor) => break cursor,
                    Err(e) => fail(&mut log, &shared, e),
                },
                None => tokio::time::sleep(RETRY_AFTER).await,
            }
        }
    };
    shared.ready.fetch_add(1, Relaxed);

    let mut cursor = cursor;
    let bound = config.hold + HOLD_SLACK;
    // The first hold is staggered over 1..=hold seconds, so that the chains
    // renew at a steady rate instead of all timing out together.
    let hold = config.hold.as_secs().max(1);
    let mut timeout = 1 + index as u64 % hold;
    loop {
        uri.clear();
        let _ = write!(
            uri,
            "/v1/realtime/poll?org={}&services={}&lastSeq={cursor}&timeout={timeout}",
            plan.org_id, config.services
        );
        timeout = hold;
        let answer = tokio::select! {
            biased;
            _ = shared.stop.cancelled() => break,
            r = tokio::time::timeout(bound, step(&mut conn, &config, &auth, &uri, &mut log, &shared)) => r,
        };
        let failed = !matches!(answer, Ok(Some(_)));
        match answer {
            Ok(Some((body, at))) => match handle(&body, at, &mut log, &mut max_seq) {
                Ok(next) => {
                    cursor = next;
                    shared.received_up_to[index].store(max_seq, Relaxed);
                }
                Err(e) => fail(&mut log, &shared, e),
            },
            Ok(None) => {}
            Err(_) => {
                fail(
                    &mut log,
                    &shared,
                    format!("poll not answered within {bound:?}"),
                );
                conn = None;
            }
        }
        if failed {
            tokio::select! {
                _ = shared.stop.cancelled() => break,
                _ = tokio::time::sleep(RETRY_AFTER) => {}
            }
        }
    }
    log
}

/// One poll on the current connection (opening one if needed). `None`
/// after a failure, which is logged.
async fn step(
    conn: &mut Option<Conn>,
    config: &PollConfig,
    auth: &HeaderValue,
    uri: &str,
    log: &mut PollerLog,
    shared: &Shared,
) -> Option<(Bytes, u64)> {
    if conn.is_none() {
        match connect(config.addr).await {
            Ok(c) => {
                log.connects += 1;
                *conn = Some(c);
            }
            Err(e) => {
                fail(log, shared, e);
                return None;
            }
        }
    }
    let c = conn.as_mut()?;
    match poll_once(c, config, auth, uri).await {
        Ok(answer) => Some(answer),
        Err(Failure::Connection(e)) => {
            *conn = None;
            fail(log, shared, e);
            None
        }
        Err(Failure::Status(status, body)) => {
            fail(log, shared, format!("{status}: {body}"));
            None
        }
    }
}

fn fail(log: &mut PollerLog, shared: &Shared, error: String) {
    log.errors += 1;
    shared.errors.fetch_add(1, Relaxed);
    if log.first_error.is_none() {
        log.first_error = Some(error);
    }
}

/// Logs the events of an answer; returns the next cursor.
fn handle(body: &[u8], at_ns: u64, log: &mut PollerLog, max_seq: &mut u64) -> Result<u64, String> {
    let answer: PollResponse<LoadEvent> =
        serde_json::from_slice(body).map_err(|e| format!("bad poll answer: {e}"))?;
    log.polls += 1;
    if answer.reset.is_some() {
        log.resets += 1;
    }
    for e in &answer.events {
        if e.seq <= *max_seq {
            log.out_of_order += 1;
        } else {
            *max_seq = e.seq;
        }
        log.seqs.push(e.seq);
        if let Some(t) = e.payload.as_ref().map(|p| p.t).filter(|&t| t > 0) {
            let us = at_ns.saturating_sub(t) / 1_000;
            log.latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
            log.published_ns.push(t);
        }
    }
    Ok(answer.last_seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_events_order_and_latency() {
        let mut log = PollerLog::default();
        let mut max = 0;
        // A null or missing payload carries no stamp; the event still counts.
        let body = br#"{"events":[{"seq":5,"orgId":"o","service":"s","propertyId":null,"eventId":"e","eventType":"t","timestamp":1,"payload":{"t":1000000}},{"seq":4,"payload":null},{"seq":6}],"lastSeq":9,"epoch":"E","reset":null}"#;
        assert_eq!(handle(body, 3_000_000, &mut log, &mut max), Ok(9));
        assert_eq!(
            (
                log.seqs.clone(),
                log.latencies_us.clone(),
                log.out_of_order,
                max
            ),
            (vec![5, 4, 6], vec![2000], 1, 6)
        );
        assert!(handle(b"{}", 0, &mut log, &mut max).is_err());
    }
}
