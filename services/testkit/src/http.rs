//! Small HTTP helpers for tests: JSON requests over a shared reqwest client,
//! and loopback ports: reserved ones that refuse connections, free ones for
//! the few listeners whose port must be known before they start (cluster
//! routes), and stable ones for listeners restarted on the same port.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

pub use reqwest::header::HeaderMap;
pub use reqwest::StatusCode;
use serde_json::Value;

/// Upper bound for one request; above the longest long-poll hold (55 s) so a
/// held poll is never cut short, yet a hung endpoint still fails the test.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(70);

/// The client shared by every helper, so connections are pooled across calls.
pub fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("build reqwest client")
    })
}

/// `GET url`, optionally with `Authorization: Bearer <bearer>`.
///
/// Returns the status, the body as JSON (`Null` when empty, a JSON string when
/// the body is not JSON) and the response headers. Panics on transport errors.
pub async fn get_json(url: &str, bearer: Option<&str>) -> (StatusCode, Value, HeaderMap) {
    send(client().get(url), bearer).await
}

/// `POST url` with a JSON body, optionally with a bearer token; answers like
/// [`get_json`].
pub async fn post_json(
    url: &str,
    bearer: Option<&str>,
    body: &Value,
) -> (StatusCode, Value, HeaderMap) {
    send(client().post(url).json(body), bearer).await
}

async fn send(
    request: reqwest::RequestBuilder,
    bearer: Option<&str>,
) -> (StatusCode, Value, HeaderMap) {
    let request = match bearer {
        Some(token) => request.bearer_auth(token),
        None => request,
    };
    let response = request.send().await.expect("HTTP request failed");
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.expect("read HTTP response body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, body, headers)
}

/// A loopback port that refuses connections for as long as it lives: bound
/// (so no other process gets it) but never listening. For tests of what a
/// client does when nothing listens.
#[derive(Debug)]
pub struct RefusedPort {
    _socket: tokio::net::TcpSocket,
    port: u16,
}

impl RefusedPort {
    /// The port number.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// Reserves a [`RefusedPort`] on 127.0.0.1.
pub fn refused_port() -> RefusedPort {
    let socket = tokio::net::TcpSocket::new_v4().expect("create a TCP socket");
    socket
        .bind(([127, 0, 0, 1], 0).into())
        .expect("bind 127.0.0.1:0");
    let port = socket
        .local_addr()
        .expect("local_addr of a bound socket")
        .port();
    RefusedPort {
        _socket: socket,
        port,
    }
}

/// `n` distinct TCP ports on 127.0.0.1 that were free a moment ago: all
/// bound to port 0 at once, read, released. Another process may take one
/// before its user binds it, so a user must retry with new ports when a
/// bind fails; only for ports that must be known before the listener
/// starts (cluster routes name each other's). Everything else binds port 0.
pub(crate) fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    listeners
        .iter()
        .map(|l| {
            l.local_addr()
                .expect("local_addr of a bound listener")
                .port()
        })
        .collect()
}

/// Ports below the ephemeral range [`stable_port`] looks at.
const STABLE_SPAN: u16 = 16_384;

/// A TCP port on 127.0.0.1, free a moment ago, below the kernel's ephemeral
/// port range (`net.ipv4.ip_local_port_range`), and not handed out before
/// in this process. Outgoing connections only ever take ephemeral ports, so
/// a listener stopped for a while (an edge killed and restarted behind a
/// load balancer) finds its port still free, even while thousands of
/// clients reconnect meanwhile; a port of the kernel's choice could be taken
/// by one of them. Another test process may still pick the same port (the
/// search starts at a point that depends on the process id and the time),
/// so a failed bind is rare but possible. Falls back to a port of the
/// kernel's choice when the range leaves no room below it.
pub fn stable_port() -> u16 {
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let given = GIVEN.get_or_init(Mutex::default);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let floor = low.saturating_sub(STABLE_SPAN).max(1_024);
    let span = low.saturating_sub(floor);
    if span > 0 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let seed = (std::process::id().wrapping_mul(7_919) ^ nanos) % u32::from(span);
        let mut given = given.lock().unwrap_or_else(|p| p.into_inner());
        for i in 0..u32::from(span) {
            // A stride coprime with most spans spreads consecutive picks.
            let port = floor + ((seed + i * 61) % u32::from(span)) as u16;
            if given.contains(&port) {
                continue;
            }
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                given.insert(port);
                return port;
            }
        }
    }
    free_ports(1)[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok());
        let (a, b) = (stable_port(), stable_port());
        assert_ne!(a, b);
        for port in [a, b] {
            if let Some(low) = low.filter(|&l| l > 1_024) {
                assert!(port < low, "{port} is below {low}");
            }
            TcpListener::bind(("127.0.0.1", port)).expect("still free");
        }
    }
}
