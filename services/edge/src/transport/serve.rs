//! Accepts TCP connections and serves HTTP/1.1 (with upgrades, for
//! WebSockets) on each, with per-connection read buffers capped at 8 KiB:
//! a held long-poll then costs little more than its socket. Stops accepting
//! when the node drains and lets open requests finish.
//!
//! Bounded against clients that hold connections without using them: at
//! most `HERALD_MAX_HTTP_CONNECTIONS` are served at once (a connection over
//! the cap is answered 503 and closed at once, never queued), and request
//! headers must arrive within `HERALD_HEADER_TIMEOUT`, which also closes an
//! idle keep-alive connection. A WebSocket leaves the count when it is
//! upgraded; `HERALD_MAX_CONNECTIONS` bounds it from then on.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::node::Node;

/// Largest read buffer per connection (hyper's minimum; its default grows to ~400 KiB).
const MAX_READ_BUFFER: usize = 8 * 1024;
/// What a connection over the cap gets before it is closed.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
Retry-After: 2\r\nConnection: close\r\nContent-Length: 82\r\n\r\n\
{\"error\":{\"code\":\"overloaded\",\"message\":\"too many HTTP connections on this node\"}}";
/// Pause after a failed accept (e.g. out of file descriptors) before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Counts a served connection; releases its slot when dropped.
struct Slot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    node: Arc<Node>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.node
            .metrics
            .guards
            .http_connections
            .fetch_sub(1, Relaxed);
    }
}

/// Answers a connection over the cap without waiting on it: a write that
/// would block is skipped, and dropping the stream closes it.
fn refuse(node: &Node, stream: TcpStream) {
    node.metrics.guards.http_refused.fetch_add(1, Relaxed);
    let _ = stream.try_write(REFUSAL);
}

/// Serves `app` on `listener` until `draining` is cancelled, then waits for
/// open connections to finish their requests.
pub async fn serve(listener: TcpListener, app: Router, node: Arc<Node>) {
    let draining: CancellationToken = node.draining.clone();
    let header_timeout = node.config.header_timeout;
    let slots = Arc::new(Semaphore::new(node.config.max_http_connections));
    let graceful = GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            _ = draining.cancelled() => break,
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            refuse(&node, stream);
            continue;
        };
        node.metrics.guards.http_connections.fetch_add(1, Relaxed);
        let slot = Slot {
            _permit: permit,
            node: Arc::clone(&node),
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _slot = slot;
            let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
            builder
                .http1()
                .max_buf_size(MAX_READ_BUFFER)
                .writev(true)
                .timer(TokioTimer::new())
                // Hyper starts this timer whenever it waits for a request
                // head, so it bounds idle keep-alive connections as well.
                .header_read_timeout(header_timeout);
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
