//! A real Prometheus scraping edge nodes with the repository's own
//! `deploy/prometheus/prometheus.yml` and `alerts.yml`: both are copied into
//! a private directory (a temp dir) beside the one thing each deployment
//! provides, `targets/herald-edges.json` (the edges to scrape), and queried
//! through Prometheus's HTTP API. Also [`promtool_binary`], for the checks
//! of metrics and rules.
//!
//! Prometheus runs in the foreground; it is stopped by its PID (SIGTERM,
//! then SIGKILL), also on drop. The binaries come from `HERALD_PROMETHEUS` /
//! `HERALD_PROMTOOL`, `.tools/prometheus` (where `scripts/setup.sh` unpacks
//! the Debian package) or `PATH`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::time::Instant;

use crate::http::{client, free_ports};
use crate::process;

/// How long Prometheus may take to answer `/-/ready` after it is spawned.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a SIGTERMed Prometheus may take to exit before it is SIGKILLed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between readiness probes.
const PROBE_EVERY: Duration = Duration::from_millis(100);
/// Starts on fresh ports when the chosen one was taken in between.
const ATTEMPTS: usize = 3;

/// A binary of the Prometheus package: `$<env>` if set, else
/// `.tools/prometheus/<name>`, else `<name>` on `PATH`. Panics, saying how
/// to get it, when none exists.
fn tool(name: &str, env: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env) {
        return PathBuf::from(path);
    }
    let tools = repo().join(".tools/prometheus").join(name);
    if tools.is_file() {
        return tools;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} not found: run scripts/setup.sh (it unpacks the Debian package \
                 prometheus into .tools/prometheus), or set {env}"
            )
        })
}

/// The `promtool` binary (`HERALD_PROMTOOL`, `.tools/prometheus`, `PATH`).
pub fn promtool_binary() -> PathBuf {
    tool("promtool", "HERALD_PROMTOOL")
}

/// The `prometheus` binary (`HERALD_PROMETHEUS`, `.tools/prometheus`, `PATH`).
pub fn prometheus_binary() -> PathBuf {
    tool("prometheus", "HERALD_PROMETHEUS")
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A running Prometheus scraping a fixed list of edges. Dropping it stops
/// the process and removes its directory (config and data).
pub struct Prometheus {
    child: Option<Child>,
    addr: SocketAddr,
    dir: TempDir,
}

impl Prometheus {
    /// Starts Prometheus with the repository's config and alert rules,
    /// scraping `edges` (their `/metrics`), on a free loopback port, and
    /// waits (30 s at most) until it is ready. Panics with its log when it
    /// cannot start.
    pub async fn start(edges: &[SocketAddr]) -> Prometheus {
        let bin = prometheus_binary();
        for attempt in 1..=ATTEMPTS {
            let dir = tempfile::Builder::new()
                .prefix("herald-prometheus-")
                .tempdir()
                .expect("create temp dir for prometheus");
            write_config(dir.path(), edges);
            let addr: SocketAddr = ([127, 0, 0, 1], free_ports(1)[0]).into();
            let mut command = Command::new(&bin);
            command
                .arg(format!(
                    "--config.file={}",
                    dir.path().join("prometheus.yml").display()
                ))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"));
            let child = process::spawn_logged(&mut command, &dir.path().join("prometheus.log"));
            let mut prometheus = Prometheus {
                child: Some(child),
                addr,
                dir,
            };
            match prometheus.wait_ready().await {
                Ok(()) => return prometheus,
                Err(why) if attempt < ATTEMPTS && why.contains("address already in use") => {
                    eprintln!("prometheus attempt {attempt}: port {addr} was taken; retrying");
                }
                Err(why) => panic!("prometheus {} {why}", bin.display()),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let url = format!("{}/-/ready", self.base_url());
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().and_then(process::exited) {
                self.child = None;
                return Err(format!("exited ({status}) at startup:\n{}", self.log()));
            }
            let probe = client().get(&url).timeout(PROBE_EVERY * 5).send().await;
            if probe.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.stop_now();
                return Err(format!(
                    "not ready at {url} within {START_TIMEOUT:?}:\n{}",
                    self.log()
                ));
            }
            tokio::time::sleep(PROBE_EVERY).await;
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What Prometheus logged so far.
    pub fn log(&self) -> String {
        process::read_log(&self.dir.path().join("prometheus.log"))
    }

    /// The `data.result` array of an instant query of `expr`; panics when
    /// Prometheus refuses the query (a syntax error, an unknown function).
    pub async fn query(&self, expr: &str) -> Vec<Value> {
        let response = client()
            .get(format!("{}/api/v1/query", self.base_url()))
            .query(&[("query", expr)])
            .send()
            .await
            .unwrap_or_else(|e| panic!("query {expr}: {e}"));
        let body: Value = response
            .json()
            .await
            .unwrap_or_else(|e| panic!("query {expr}: {e}"));
        assert_eq!(body["status"], "success", "query {expr}: {body}");
        body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The scrape targets and their health (`up`, last error), as
    /// `/api/v1/targets` reports them.
    pub async fn targets(&self) -> Value {
        client()
            .get(format!("{}/api/v1/targets", self.base_url()))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .expect("GET /api/v1/targets")
            .json()
            .await
            .unwrap_or(Value::Null)
    }

    fn stop_now(&mut self) {
        if let Some(child) = self.child.take() {
            process::stop_blocking(child, STOP_TIMEOUT);
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// Copies the repository's `prometheus.yml` and `alerts.yml` into `dir`
/// and writes `targets/herald-edges.json` naming `edges` (and an empty
/// `targets/nats.json`).
fn write_config(dir: &Path, edges: &[SocketAddr]) {
    let shipped = repo().join("deploy/prometheus");
    for name in ["prometheus.yml", "alerts.yml"] {
        std::fs::copy(shipped.join(name), dir.join(name))
            .unwrap_or_else(|e| panic!("copy deploy/prometheus/{name}: {e}"));
    }
    std::fs::create_dir_all(dir.join("targets")).expect("create targets dir");
    let targets: Vec<String> = edges.iter().map(ToString::to_string).collect();
    let file = json!([{"targets": targets, "labels": {"deployment": "herald-test"}}]);
    std::fs::write(
        dir.join("targets/herald-edges.json"),
        serde_json::to_vec_pretty(&file).expect("serialise targets"),
    )
    .expect("write targets/herald-edges.json");
    // No NATS exporter here: the nats job has nothing to scrape.
    std::fs::write(dir.join("targets/nats.json"), "[]\n").expect("write targets/nats.json");
}
