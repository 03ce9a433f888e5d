//! An edge node inside the test process: its server function (edge tests
//! pass `herald_edge::run`) runs as a task on the test's runtime, on a
//! [`TcpListener`] bound to `127.0.0.1:0`, against a real nats-server, until
//! its shutdown future resolves. Starting one costs no process and no
//! binary, and the test can reach into the same runtime; tests that signal,
//! freeze or read the log of a node use [`EdgeProcess`](crate::EdgeProcess).
//!
//! The harness does not depend on `herald-edge` (which depends on it for
//! its tests): the node's config type is any `clap` parser, built from the
//! same [`EdgeOptions`] a process gets, and the server is the function given.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use clap::Parser;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::edge::EdgeOptions;
use crate::http::client;
use crate::wait::eventually;

/// How long an in-process node may take to answer `GET /readyz` with 200.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on one readiness probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The shutdown future handed to the node's server function: resolves when
/// [`InProcessEdge::shutdown`] is called or the handle is dropped.
pub struct Shutdown(oneshot::Receiver<()>);

impl Future for Shutdown {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // A dropped sender is a shutdown too.
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

/// Parses `args` (program name first) into the config type `C`, from the
/// arguments alone: unlike `C::parse_from`, environment variables bound to
/// arguments (`HERALD_*` of the developer's shell) are not read.
/// Panics with clap's message when the arguments are invalid.
pub fn parse_config<C: Parser>(args: &[String]) -> C {
    let command = C::command().mut_args(|arg| arg.env(None));
    let matches = command
        .try_get_matches_from(args)
        .unwrap_or_else(|e| panic!("edge arguments {args:?}: {e}"));
    C::from_arg_matches(&matches).unwrap_or_else(|e| panic!("edge arguments {args:?}: {e}"))
}

/// A running in-process edge node. Dropping it triggers its shutdown and
/// aborts its task.
pub struct InProcessEdge {
    addr: SocketAddr,
    node_id: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), String>>>,
}

impl InProcessEdge {
    /// Binds `127.0.0.1:0`, builds the node's config `C` from `opts` (see
    /// [`EdgeOptions::args`]), calls `run(listener, config, shutdown)` and
    /// runs the future it returns as a task; returns once `GET /readyz`
    /// answers 200 (30 s at most). Edge tests pass `herald_edge::run`.
    ///
    /// Panics when the server function returns (an error) before the node
    /// is ready, or the node is not ready in time.
    pub async fn start<C, F, Fut, E>(opts: &EdgeOptions, run: F) -> InProcessEdge
    where
        C: Parser,
        F: FnOnce(TcpListener, C, Shutdown) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: fmt::Display,
    {
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("local_addr of a bound listener");
        let node_id = opts.node_id().unwrap_or_else(|| {
            format!(
                "inproc-{}-{}",
                std::process::id(),
                STARTED.fetch_add(1, Ordering::Relaxed)
            )
        });
        let config: C = parse_config(&opts.args(&node_id, addr));
        let (stop, shutdown) = oneshot::channel();
        let serving = run(listener, config, Shutdown(shutdown));
        let task = tokio::spawn(async move { serving.await.map_err(|e| e.to_string()) });
        let mut edge = InProcessEdge {
            addr,
            node_id,
            stop: Some(stop),
            task: Some(task),
        };
        edge.wait_ready().await;
        edge
    }

    async fn wait_ready(&mut self) {
        let url = format!("{}/readyz", self.base_url());
        let what = format!("in-process edge {} ready at {url}", self.node_id);
        let task = self.task.as_mut().expect("a started node has its task");
        let ended = eventually(READY_TIMEOUT, &what, || async {
            if task.is_finished() {
                return Ok(true);
            }
            match client().get(&url).timeout(PROBE_TIMEOUT).send().await {
                Ok(r) if r.status().is_success() => Ok(false),
                Ok(r) => Err(format!("readyz answered {}", r.status())),
                Err(e) => Err(format!("readyz: {e}")),
            }
        })
        .await;
        if ended {
            let result = task.await;
            panic!(
                "in-process edge {} ended before it was ready: {result:?}",
                self.node_id
            );
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address the node listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The node id it was given.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Resolves the node's shutdown future (the node drains, like a process
    /// on SIGTERM) and waits up to `timeout` for its server function to
    /// return; `None` if it is still running then (the task is aborted),
    /// else what it returned.
    pub async fn shutdown(mut self, timeout: Duration) -> Option<Result<(), String>> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.as_mut()?;
        match tokio::time::timeout(timeout, task).await {
            Ok(joined) => {
                self.task = None;
                Some(joined.unwrap_or_else(|e| Err(format!("node task failed: {e}"))))
            }
            Err(_) => None,
        }
    }
}

impl Drop for InProcessEdge {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
