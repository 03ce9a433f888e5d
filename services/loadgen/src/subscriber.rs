//! One subscriber of the side-by-side benchmark (`compare`), the same
//! client for every system: a WebSocket or an SSE stream on one channel,
//! held until told to stop. It knows nothing of any wire format beyond
//! opening the stream: every published event carries a marker
//! `@<send time, ns>@` in its text, which survives each system's framing
//! (JSON envelopes, SSE `data:` lines, NATS `MSG` frames), so the client
//! only scans what it reads for markers, and logs each one's latency (or,
//! for the resume scenario, the marker itself). Over SSE it also keeps
//! the last event id, to come back with it as `Last-Event-ID`; a
//! long-poll subscriber only holds its request.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use http::header::{ACCEPT, AUTHORIZATION, HOST};
use http::{HeaderValue, Request};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::peer::{Hello, Subscription};
use crate::poller::wall_ns;

/// Bound on connecting, the upgrade or response head, and the first
/// sign that the subscription is in place.
const OPEN_TIMEOUT: Duration = Duration::from_secs(15);

/// Shared tallies of a group of subscribers.
#[derive(Default)]
pub struct Tally {
    /// Subscriptions in place.
    pub ready: AtomicUsize,
    /// Subscribers that failed (to open, or later).
    pub failed: AtomicUsize,
    /// Of those, the ones that had been in place (the server ended them,
    /// or a read failed).
    pub lost: AtomicUsize,
    /// The first failure, for the report.
    pub first_error: Mutex<Option<String>>,
}

impl Tally {
    fn fail(&self, e: String) {
        self.failed.fetch_add(1, Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        first.get_or_insert(e);
    }
}

/// Finds `@<digits>@` markers in a byte stream cut anywhere.
#[derive(Default)]
pub struct MarkerScanner {
    pending: Vec<u8>,
}

impl MarkerScanner {
    /// Feeds `bytes`; calls `found` with each complete marker's number.
    pub fn feed(&mut self, bytes: &[u8], mut found: impl FnMut(u64)) {
        self.pending.extend_from_slice(bytes);
        let mut keep_from = 0;
        let mut i = 0;
        let data = &self.pending;
        while i < data.len() {
            if data[i] != b'@' {
                i += 1;
                continue;
            }
            let digits = data[i + 1..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            let end = i + 1 + digits;
            if end >= data.len() {
                // Cut mid-marker: keep it for the next bytes.
                keep_from = i;
                break;
            }
            if digits > 0 && data[end] == b'@' {
                if let Ok(n) = std::str::from_utf8(&data[i + 1..end]).unwrap_or("").parse() {
                    found(n);
                }
                i = end + 1;
            } else {
                i += 1;
            }
            keep_from = i;
        }
        if i >= data.len() {
            keep_from = data.len();
        }
        self.pending.drain(..keep_from);
    }
}

/// Attempts at opening a subscription before the subscriber gives up (a
/// real client retries too).
const OPEN_ATTEMPTS: usize = 3;
/// Pause between two attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// What a subscriber keeps of each marker it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Its latency, in µs.
    Latency,
    /// The marker's number itself.
    Marker,
}

/// What one subscriber did.
#[derive(Default)]
pub struct Outcome {
    /// Its subscription was in place.
    pub ready: bool,
    /// The latency (µs) of every marker it read ([`Keep::Latency`]).
    pub latencies: Vec<u32>,
    /// Every marker it read ([`Keep::Marker`]).
    pub markers: Vec<u64>,
    /// The last SSE event id it read.
    pub last_id: Option<String>,
}

impl Outcome {
    fn found(&mut self, keep: Keep) -> impl FnMut(u64) + '_ {
        move |marker| match keep {
            Keep::Latency => {
                let us = wall_ns().saturating_sub(marker) / 1_000;
                self.latencies.push(u32::try_from(us).unwrap_or(u32::MAX));
            }
            Keep::Marker => self.markers.push(marker),
        }
    }
}

/// Finds the `id:` lines of an SSE stream cut anywhere; keeps the last.
#[derive(Default)]
struct SseIds {
    line: Vec<u8>,
    last: Option<String>,
}

impl SseIds {
    fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                if let Some(id) = self.line.strip_prefix(b"id:") {
                    let id = String::from_utf8_lossy(id).trim().to_owned();
                    self.last = Some(id);
                }
                self.line.clear();
            } else if self.line.len() < 256 {
                self.line.push(b);
            }
        }
    }
}

/// Runs one subscriber until `stop`. `opening` is released once the
/// subscription is in place (or given up): the caller bounds how many open
/// at once. Failing to open is retried; a failure once in place ends it.
pub async fn run(
    addr: std::net::SocketAddr,
    subscription: Subscription,
    keep: Keep,
    tally: Arc<Tally>,
    stop: CancellationToken,
    opening: OwnedSemaphorePermit,
) -> Outcome {
    let mut outcome = Outcome::default();
    let mut opening = Some(opening);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let tallied = Ready {
            tally: &tally,
            opening: &mut opening,
        };
        let result = match subscription.clone() {
            Subscription::WebSocket {
                url,
                protocol,
                bearer,
                hello,
            } => {
                websocket(
                    addr,
                    &url,
                    protocol,
                    bearer,
                    hello,
                    tallied,
                    &stop,
                    &mut outcome.found(keep),
                )
                .await
            }
            Subscription::Sse {
                path,
                bearer,
                last_event_id,
            } => {
                let mut ids = SseIds::default();
                let r = sse(
                    addr,
                    &path,
                    bearer,
                    last_event_id,
                    tallied,
                    &stop,
                    &mut ids,
                    &mut outcome.found(keep),
                )
                .await;
                outcome.last_id = ids.last.or(outcome.last_id.take());
                r
            }
            Subscription::LongPoll { path, bearer } => {
                long_poll(addr, &path, bearer, tallied, &stop).await
            }
        };
        outcome.ready = opening.is_none();
        match result {
            Ok(()) => return outcome,
            Err(_) if !outcome.ready && attempt < OPEN_ATTEMPTS && !stop.is_cancelled() => {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(e) => {
                if outcome.ready {
                    tally.lost.fetch_add(1, Relaxed);
                }
                tally.fail(e);
                return outcome;
            }
        }
    }
}

/// Counts the subscription in place and releases its opening permit.
struct Ready<'a> {
    tally: &'a Tally,
    opening: &'a mut Option<OwnedSemaphorePermit>,
}

impl Ready<'_> {
    fn now(&mut self) {
        self.tally.ready.fetch_add(1, Relaxed);
        self.opening.take();
    }
}

#[allow(clippy::too_many_arguments)]
async fn websocket(
    addr: std::net::SocketAddr,
    url: &str,
    protocol: Option<&'static str>,
    bearer: Option<String>,
    hello: Option<Hello>,
    mut tally: Ready<'_>,
    stop: &CancellationToken,
    found: &mut impl FnMut(u64),
) -> Result<(), String> {
    let open = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut request = url
            .into_client_request()
            .map_err(|e| format!("request: {e}"))?;
        if let Some(p) = protocol {
            request
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(p));
        }
        if let Some(token) = &bearer {
            let v = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| e.to_string())?;
            request.headers_mut().insert(AUTHORIZATION, v);
        }
        let (ws, _) = tokio_tungstenite::client_async(request, stream)
            .await
            .map_err(|e| format!("upgrade: {e}"))?;
        Ok::<_, String>(ws)
    };
    let mut ws = tokio::time::timeout(OPEN_TIMEOUT, open)
        .await
        .map_err(|_| "open timed out".to_owned())??;
    // In place: at once (Nchan, Pushpin), at the first frame after `hello`
    // (Herald's ack), or at NATS's PONG.
    let mut ready = hello.is_none();
    let nats = matches!(hello, Some(Hello::Nats(_)));
    match hello {
        Some(Hello::Text(t)) => ws.send(Message::text(t)).await,
        Some(Hello::Nats(t)) => ws.send(Message::binary(t.into_bytes())).await,
        None => Ok(()),
    }
    .map_err(|e| format!("send hello: {e}"))?;
    if ready {
        tally.now();
    }
    let opened = tokio::time::Instant::now();
    let mut scanner = MarkerScanner::default();
    loop {
        let next = tokio::select! {
            () = stop.cancelled() => break,
            n = ws.next() => n,
            () = tokio::time::sleep_until(opened + OPEN_TIMEOUT), if !ready => {
                return Err("not subscribed within 15 s".into());
            }
        };
        let bytes = match next {
            None => return Err("closed by the server".into()),
            Some(Err(e)) => return Err(format!("read: {e}")),
            Some(Ok(Message::Text(t))) => t.as_bytes().to_vec(),
            Some(Ok(Message::Binary(b))) => b.to_vec(),
            Some(Ok(_)) => continue,
        };
        if nats && bytes.windows(6).any(|w| w == b"PING\r\n") {
            ws.send(Message::binary(b"PONG\r\n".to_vec()))
                .await
                .map_err(|e| format!("send PONG: {e}"))?;
        }
        if !ready && (!nats || bytes.windows(6).any(|w| w == b"PONG\r\n")) {
            ready = true;
            tally.now();
        }
        scanner.feed(&bytes, &mut *found);
    }
    let _ = ws.close(None).await;
    Ok(())
}

/// Sends `GET path` on a fresh connection; returns the response future's
/// parts once the request is written (the response may be held).
async fn get(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(http::header::HeaderName, String)],
) -> Result<
    (
        hyper::client::conn::http1::SendRequest<Empty<bytes::Bytes>>,
        Request<Empty<bytes::Bytes>>,
        tokio::task::JoinHandle<()>,
    ),
    String,
> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (sender, connection) =
        hyper::client::conn::http1::handshake::<_, Empty<bytes::Bytes>>(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut request = Request::get(path).header(HOST, addr.to_string());
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let request = request.body(Empty::new()).map_err(|e| e.to_string())?;
    Ok((sender, request, driver))
}

fn bearer_header(bearer: Option<String>) -> Option<(http::header::HeaderName, String)> {
    bearer.map(|token| (AUTHORIZATION, format!("Bearer {token}")))
}

#[allow(clippy::too_many_arguments)]
async fn sse(
    addr: std::net::SocketAddr,
    path: &str,
    bearer: Option<String>,
    last_event_id: Option<String>,
    mut tally: Ready<'_>,
    stop: &CancellationToken,
    ids: &mut SseIds,
    found: &mut impl FnMut(u64),
) -> Result<(), String> {
    let open = async {
        let mut headers = vec![(ACCEPT, "text/event-stream".to_owned())];
        headers.extend(bearer_header(bearer));
        if let Some(id) = last_event_id {
            headers.push((http::header::HeaderName::from_static("last-event-id"), id));
        }
        let (mut sender, request, driver) = get(addr, path, &headers).await?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("request: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("status {}", response.status()));
        }
        Ok::<_, String>((response, driver))
    };
    let (response, driver) = tokio::time::timeout(OPEN_TIMEOUT, open)
        .await
        .map_err(|_| "open timed out".to_owned())??;
    tally.now();
    let mut body = response.into_body();
    let mut scanner = MarkerScanner::default();
    let result = loop {
        let frame = tokio::select! {
            () = stop.cancelled() => break Ok(()),
            f = body.frame() => f,
        };
        match frame {
            None => break Err("the stream ended".into()),
            Some(Err(e)) => break Err(format!("read: {e}")),
            Some(Ok(f)) => {
                if let Some(data) = f.data_ref() {
                    ids.feed(data);
                    scanner.feed(data, &mut *found);
                }
            }
        }
    };
    driver.abort();
    result
}

/// Holds one long-poll request until `stop`. It counts as in place once
/// the request is written; an answer before `stop` (the server ended the
/// hold early) is a failure.
async fn long_poll(
    addr: std::net::SocketAddr,
    path: &str,
    bearer: Option<String>,
    mut tally: Ready<'_>,
    stop: &CancellationToken,
) -> Result<(), String> {
    let headers: Vec<_> = bearer_header(bearer).into_iter().collect();
    let (mut sender, request, driver) =
        tokio::time::timeout(OPEN_TIMEOUT, get(addr, path, &headers))
            .await
            .map_err(|_| "open timed out".to_owned())??;
    let response = sender.send_request(request);
    tokio::pin!(response);
    // Give the request a moment to be written before counting it held.
    let early = tokio::select! {
        r = &mut response => Some(r),
        () = tokio::time::sleep(Duration::from_millis(20)) => None,
    };
    let result = match early {
        Some(r) => Err(answered(r)),
        None => {
            tally.now();
            tokio::select! {
                () = stop.cancelled() => Ok(()),
                r = &mut response => Err(answered(r)),
            }
        }
    };
    driver.abort();
    result
}

fn answered(r: Result<http::Response<hyper::body::Incoming>, hyper::Error>) -> String {
    match r {
        Ok(response) => format!("the held poll was answered early: {}", response.status()),
        Err(e) => format!("request: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(pieces: &[&str]) -> Vec<u64> {
        let mut s = MarkerScanner::default();
        let mut out = Vec::new();
        for p in pieces {
            s.feed(p.as_bytes(), |n| out.push(n));
        }
        out
    }

    #[test]
    fn keeps_the_last_sse_id_across_cuts() {
        let mut ids = SseIds::default();
        ids.feed(b"event: ack\ndata: {}\n\nid: 4");
        assert_eq!(ids.last, None);
        ids.feed(b"2\nevent: bench\ndata: @1@\n\n: keep-alive\nid:43\n");
        assert_eq!(ids.last.as_deref(), Some("43"));
        ids.feed(b"id: 1700000000:0\n");
        assert_eq!(ids.last.as_deref(), Some("1700000000:0"));
    }

    #[test]
    fn finds_markers_in_any_framing_and_across_cuts() {
        assert_eq!(scan(&[r#"{"payload":{"m":"@12@"}}"#]), [12]);
        assert_eq!(scan(&["data: @5@\n\ndata: @6@\n\n"]), [5, 6]);
        assert_eq!(scan(&["MSG bench.c 1 4\r\n@7", "8@\r\n"]), [78]);
        assert_eq!(scan(&["@", "9", "@"]), [9]);
        assert_eq!(scan(&["a@b@@3@ @x@"]), [3]);
        assert_eq!(scan(&["@@", "@4@"]), [4]);
    }
}
