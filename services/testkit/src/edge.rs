//! A real `herald-edge` process for tests: spawned from the binary the caller
//! names, configured through environment variables (contract section 5),
//! listening on `127.0.0.1:0` (the port is the kernel's choice, read back
//! from the node's `listening addr=…` log line, so no other process can take
//! it in between) or on an address the caller fixed, with its output
//! captured to a log file. It can be restarted on the address it had, so a
//! load balancer's list of edges stays valid across a restart.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tempfile::TempDir;
use tokio::time::Instant;

use crate::http::client;
use crate::process;

/// How long an edge node may take to answer `GET /readyz` with 200.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on one readiness probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between readiness probes.
const PROBE_EVERY: Duration = Duration::from_millis(50);

/// How to configure an edge node. `HERALD_LISTEN` is `listen` when set,
/// else `127.0.0.1:0` (never taken from `env`); `HERALD_NODE_ID` defaults
/// to a unique `edge-<test pid>-<n>` and `RUST_LOG` to the test's own
/// `RUST_LOG`, else `info` (it must let the node's `listening` line through). Entries of `env` override those
/// defaults; `HERALD_*` variables of the test's environment are not passed on.
#[derive(Clone, Default)]
pub struct EdgeOptions {
    /// `HERALD_NATS_URL`: one URL or a comma-separated list.
    pub nats_url: String,
    /// `HERALD_JWT_SECRET` (HS256).
    pub jwt_secret: String,
    /// Further environment variables, e.g. `("HERALD_STREAM_REPLICAS", "3")`.
    pub env: Vec<(String, String)>,
    /// The address to listen on; `None` lets the kernel choose a loopback port.
    pub listen: Option<SocketAddr>,
}

impl EdgeOptions {
    /// Options for a node on `nats_url` that verifies tokens with `jwt_secret`.
    pub fn new(nats_url: impl Into<String>, jwt_secret: impl Into<String>) -> EdgeOptions {
        EdgeOptions {
            nats_url: nats_url.into(),
            jwt_secret: jwt_secret.into(),
            env: Vec::new(),
            listen: None,
        }
    }

    /// Listens on `addr` instead of a port of the kernel's choice (e.g. one
    /// from [`stable_port`](crate::stable_port), behind a load balancer that
    /// must find the node again after a restart).
    pub fn with_listen(mut self, addr: SocketAddr) -> EdgeOptions {
        self.listen = Some(addr);
        self
    }

    /// Adds one environment variable.
    pub fn with_env(mut self, key: impl Into<String>, value: impl Into<String>) -> EdgeOptions {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The `HERALD_NODE_ID` set in `env`, if any (the last one wins).
    pub fn node_id(&self) -> Option<String> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == "HERALD_NODE_ID")
            .map(|(_, v)| v.clone())
    }

    /// The same settings as command-line arguments, for a node built in
    /// the test process ([`InProcessEdge`](crate::InProcessEdge)): the
    /// program name, then `--listen`, `--node-id`, `--nats-url`,
    /// `--jwt-secret` and one `--<name>=<value>` per `HERALD_<NAME>` entry
    /// of `env`, the last one of each name (`HERALD_MAX_WAITERS_PER_ORG`
    /// becomes `--max-waiters-per-org`, as the node's flags are named).
    /// Other entries (`RUST_LOG`) have no flag and are left out.
    pub fn args(&self, node_id: &str, listen: SocketAddr) -> Vec<String> {
        let mut args = vec![
            "herald-edge".to_owned(),
            format!("--listen={listen}"),
            format!("--node-id={node_id}"),
            format!("--nats-url={}", self.nats_url),
            format!("--jwt-secret={}", self.jwt_secret),
        ];
        for (i, (key, value)) in self.env.iter().enumerate() {
            // Like environment variables, a later entry overrides an earlier one.
            let overridden = self.env[i + 1..].iter().any(|(k, _)| k == key);
            if overridden || key == "HERALD_NODE_ID" || key == "HERALD_LISTEN" {
                continue;
            }
            if let Some(name) = key.strip_prefix("HERALD_") {
                let flag = name.to_ascii_lowercase().replace('_', "-");
                args.push(format!("--{flag}={value}"));
            }
        }
        args
    }
}

impl fmt::Debug for EdgeOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EdgeOptions")
            .field("nats_url", &self.nats_url)
            .field("jwt_secret", &"<redacted>")
            .field("env", &self.env)
            .field("listen", &self.listen)
            .finish()
    }
}

/// A running edge node. Dropping it SIGKILLs the process.
pub struct EdgeProcess {
    child: Child,
    addr: SocketAddr,
    node_id: String,
    /// The binary and options it was started with, for [`restart`](Self::restart).
    bin: PathBuf,
    opts: EdgeOptions,
    /// Holds the log file.
    dir: TempDir,
}

impl EdgeProcess {
    /// Spawns the edge binary `bin` (edge tests pass
    /// `env!("CARGO_BIN_EXE_herald-edge")`) and waits (30 s at most) until
    /// `GET /readyz` answers 200. Panics with the captured log if the process
    /// exits or never becomes ready.
    pub async fn spawn(bin: impl AsRef<Path>, opts: EdgeOptions) -> EdgeProcess {
        static SPAWNED: AtomicUsize = AtomicUsize::new(0);
        let bin = bin.as_ref().to_path_buf();
        let dir = tempfile::Builder::new()
            .prefix("herald-edge-")
            .tempdir()
            .expect("create temp dir for edge log");
        let node_id = opts.node_id().unwrap_or_else(|| {
            format!(
                "edge-{}-{}",
                std::process::id(),
                SPAWNED.fetch_add(1, Ordering::Relaxed)
            )
        });
        let log_path = dir.path().join("edge.log");
        let (child, addr) = start(&bin, &opts, &node_id, &log_path).await;
        let mut edge = EdgeProcess {
            child,
            addr,
            node_id,
            bin,
            opts,
            dir,
        };
        edge.wait_ready().await;
        edge
    }

    /// Starts the node again, on the address it had and with the same
    /// options (SIGKILLing it first if it still runs), and waits (30 s at
    /// most) until it is ready. The log file keeps the earlier runs.
    pub async fn restart(&mut self) {
        self.kill();
        let opts = self.opts.clone().with_listen(self.addr);
        let (child, addr) = start(&self.bin, &opts, &self.node_id, &self.log_path()).await;
        self.child = child;
        self.addr = addr;
        self.wait_ready().await;
    }

    async fn wait_ready(&mut self) {
        let bin = self.bin.display();
        let url = format!("{}/readyz", self.base_url());
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = process::exited(&mut self.child) {
                panic!(
                    "edge {bin} exited ({status}) before it was ready:\n{}",
                    self.log()
                );
            }
            let probe = client().get(&url).timeout(PROBE_TIMEOUT).send().await;
            if probe.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "edge {bin} not ready at {url} within {READY_TIMEOUT:?}:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(PROBE_EVERY).await;
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

    /// The node id it was given (`HERALD_NODE_ID`, else the harness's).
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its resident memory now (`VmRSS`), KiB; panics if it cannot be read
    /// (a memory test must not pass on a missing reading).
    pub fn rss_kib(&self) -> u64 {
        let pid = self.pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
    }

    /// Sends SIGTERM (start draining); pair with [`wait_exit`](Self::wait_exit).
    pub fn sigterm(&self) {
        process::sigterm(self.pid());
    }

    /// SIGKILLs the process and reaps it.
    pub fn kill(&mut self) {
        process::kill_and_reap(&mut self.child);
    }

    /// Waits up to `timeout` for the process to exit; `None` if it still runs.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        process::wait_timeout(&mut self.child, timeout).await
    }

    /// The file that captures stdout and stderr.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("edge.log")
    }

    /// The captured stdout and stderr so far.
    pub fn log(&self) -> String {
        process::read_log(&self.log_path())
    }
}

impl Drop for EdgeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Spawns `bin` with `opts` (on `opts.listen`, else a port of the kernel's
/// choice) and waits for the address it logs; panics with the log when it
/// exits first or logs none.
async fn start(
    bin: &Path,
    opts: &EdgeOptions,
    node_id: &str,
    log_path: &Path,
) -> (Child, SocketAddr) {
    let mut command = Command::new(bin);
    // HERALD_* variables of the developer's shell must not leak into tests.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("HERALD_") {
            command.env_remove(key);
        }
    }
    let rust_log = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    let listen = opts
        .listen
        .map_or_else(|| "127.0.0.1:0".to_owned(), |a| a.to_string());
    command
        .env("RUST_LOG", rust_log)
        .env("HERALD_NODE_ID", node_id)
        .env("HERALD_NATS_URL", &opts.nats_url)
        .env("HERALD_JWT_SECRET", &opts.jwt_secret)
        .envs(opts.env.iter().map(|(k, v)| (k, v)))
        .env("HERALD_LISTEN", listen);
    // The log of an earlier run may hold its `listening` line: only lines
    // written by this run count.
    let skip = std::fs::metadata(log_path).map_or(0, |m| m.len() as usize);
    let mut child = process::spawn_logged(&mut command, log_path);
    match listening_addr(&mut child, log_path, skip).await {
        Ok(addr) => (child, addr),
        Err(why) => {
            process::kill_and_reap(&mut child);
            panic!(
                "edge {} {why}:\n{}",
                bin.display(),
                process::read_log(log_path)
            );
        }
    }
}

/// Waits (30 s at most) for the `listening` line the node logs once bound,
/// after the first `skip` bytes of the log, and returns its `addr` field
/// (text or JSON log lines); `Err` says why there is none: the process
/// exited, or the line never came.
async fn listening_addr(
    child: &mut Child,
    log_path: &Path,
    skip: usize,
) -> Result<SocketAddr, String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let log = process::read_log(log_path);
        if let Some(addr) = log
            .get(skip..)
            .unwrap_or("")
            .lines()
            .find_map(parse_listening)
        {
            return Ok(addr);
        }
        if let Some(status) = process::exited(child) {
            return Err(format!("exited ({status}) before it logged its address"));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "logged no `listening addr=…` line within {READY_TIMEOUT:?} \
                 (does RUST_LOG hide herald_edge's info lines?)"
            ));
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

/// The address in a `listening` log line: `… listening addr=127.0.0.1:PORT`
/// as text, `…"message":"listening","addr":"127.0.0.1:PORT"…` as JSON.
fn parse_listening(line: &str) -> Option<SocketAddr> {
    if !line.contains("listening") {
        return None;
    }
    let rest = line
        .split_once("addr=")
        .or_else(|| line.split_once("\"addr\":\""))?
        .1;
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '"')
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_become_flags_the_last_of_each_name() {
        let opts = EdgeOptions::new("nats://127.0.0.1:4222", "s3cret")
            .with_env("HERALD_METRICS_PUBLIC", "true")
            .with_env("RUST_LOG", "debug")
            .with_env("HERALD_MAX_WAITERS_PER_ORG", "2")
            .with_env("HERALD_METRICS_PUBLIC", "false");
        let listen: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        assert_eq!(
            opts.args("n1", listen),
            [
                "herald-edge",
                "--listen=127.0.0.1:0",
                "--node-id=n1",
                "--nats-url=nats://127.0.0.1:4222",
                "--jwt-secret=s3cret",
                "--max-waiters-per-org=2",
                "--metrics-public=false",
            ]
        );
    }

    #[test]
    fn the_listening_line_is_parsed_in_text_and_json() {
        let want: SocketAddr = "127.0.0.1:41234".parse().expect("addr");
        assert_eq!(
            parse_listening(
                "2026-01-01T00:00:00.000000Z  INFO herald_edge: listening addr=127.0.0.1:41234"
            ),
            Some(want)
        );
        assert_eq!(
            parse_listening(
                r#"{"timestamp":"x","level":"INFO","fields":{"message":"listening","addr":"127.0.0.1:41234"},"target":"herald_edge"}"#
            ),
            Some(want)
        );
        assert_eq!(
            parse_listening("INFO herald_edge: herald-edge starting addr=Some(127.0.0.1:1)"),
            None
        );
        assert_eq!(parse_listening("INFO herald_edge: draining"), None);
    }
}
