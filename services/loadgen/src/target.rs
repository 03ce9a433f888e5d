//! The system under test: one or more edge nodes and the NATS they read
//! from, either started here (`--spawn`: a private nats-server and
//! `--edge-nodes` `herald-edge` processes, all gone when the benchmark ends)
//! or already running (`--edge`/`--edges`).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Instant;

use herald_testkit::{EdgeOptions, EdgeProcess, NatsServer};

use crate::cli::TargetArgs;
use crate::error::LoadError;

/// Environment the spawned edge always gets: public metrics (the benchmark
/// reads them without an admin token) and quiet logs, except the node's own
/// info lines: the harness learns the node's port from its `listening` line.
const SPAWN_ENV: [(&str, &str); 2] = [
    ("HERALD_METRICS_PUBLIC", "true"),
    ("RUST_LOG", "warn,herald_edge=info"),
];

/// One edge node of the target.
pub struct EdgeNode {
    /// Base URL, `http://host:port`.
    pub url: String,
    /// Socket address, resolved once.
    pub addr: SocketAddr,
    /// Process id, when known (memory and CPU readings, kill).
    pub pid: Option<u32>,
    /// The process, when spawned here.
    process: Option<EdgeProcess>,
}

/// The edges and NATS a benchmark drives.
pub struct Target {
    /// Base URL of the (first) edge, `http://host:port`.
    pub edge_url: String,
    /// Socket address of the (first) edge, resolved once.
    pub edge_addr: SocketAddr,
    /// Where events are published.
    pub nats_url: String,
    /// HS256 secret for client tokens.
    pub jwt_secret: String,
    /// (First) edge process id, when known (memory and CPU readings).
    pub edge_pid: Option<u32>,
    /// nats-server process id, when known (CPU readings).
    pub nats_pid: Option<u32>,
    /// Every edge node, the first being the one above. Field order matters:
    /// the edges are killed before their nats-server.
    pub edges: Vec<EdgeNode>,
    _nats: Option<NatsServer>,
}

impl Target {
    /// Spawns or locates the edges and NATS described by `args`. A spawned
    /// edge gets `defaults` first, then `--edge-env` (which wins).
    pub async fn prepare(
        args: &TargetArgs,
        defaults: &[(String, String)],
    ) -> Result<Self, LoadError> {
        if args.spawn {
            Self::spawn(args, defaults).await
        } else {
            Self::external(args).await
        }
    }

    async fn spawn(args: &TargetArgs, defaults: &[(String, String)]) -> Result<Self, LoadError> {
        if !args.edge_bin.is_file() {
            return Err(LoadError::Setup(format!(
                "edge binary {} not found; build it with `cargo build --release -p herald-edge` or pass --edge-bin",
                args.edge_bin.display()
            )));
        }
        if args.edge_nodes == 0 {
            return Err(LoadError::Setup("--edge-nodes must be at least 1".into()));
        }
        let secret = args
            .jwt_secret
            .clone()
            .unwrap_or_else(|| format!("loadgen-{:032x}", rand::random::<u128>()));
        let nats = NatsServer::start().await;
        let nats_pid = nats.pid();
        let mut opts = EdgeOptions::new(nats.url(), secret.clone());
        for (k, v) in SPAWN_ENV {
            opts = opts.with_env(k, v);
        }
        for (k, v) in defaults {
            opts = opts.with_env(k, v);
        }
        for kv in &args.edge_env {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| LoadError::Setup(format!("--edge-env {kv}: expected KEY=VALUE")))?;
            opts = opts.with_env(k, v);
        }
        let mut edges = Vec::with_capacity(args.edge_nodes);
        for _ in 0..args.edge_nodes {
            let edge = EdgeProcess::spawn(&args.edge_bin, opts.clone()).await;
            edges.push(EdgeNode {
                url: edge.base_url(),
                addr: edge.addr(),
                pid: Some(edge.pid()),
                process: Some(edge),
            });
        }
        Ok(Self {
            edge_url: edges[0].url.clone(),
            edge_addr: edges[0].addr,
            nats_url: nats.url(),
            jwt_secret: secret,
            edge_pid: edges[0].pid,
            nats_pid,
            edges,
            _nats: Some(nats),
        })
    }

    /// The target of edges spawned elsewhere, e.g. on a NATS cluster the
    /// caller keeps (and stops after these edges): publishing goes to
    /// `nats_url`; the edges are killed when the target is dropped.
    pub fn from_processes(edges: Vec<EdgeProcess>, nats_url: String, jwt_secret: String) -> Self {
        let edges: Vec<EdgeNode> = edges
            .into_iter()
            .map(|edge| EdgeNode {
                url: edge.base_url(),
                addr: edge.addr(),
                pid: Some(edge.pid()),
                process: Some(edge),
            })
            .collect();
        Self {
            edge_url: edges.first().map(|e| e.url.clone()).unwrap_or_default(),
            edge_addr: edges
                .first()
                .map_or_else(|| ([127, 0, 0, 1], 0).into(), |e| e.addr),
            nats_url,
            jwt_secret,
            edge_pid: edges.first().and_then(|e| e.pid),
            nats_pid: None,
            edges,
            _nats: None,
        }
    }

    /// Copies the logs of spawned edges and nats-server into `dir` (as
    /// `edge.log`, `edge-1.log`, … and `nats-server.log`); they are deleted
    /// with the processes.
    pub fn save_logs(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        for (i, node) in self.edges.iter().enumerate() {
            if let Some(edge) = &node.process {
                let name = if i == 0 {
                    "edge.log".to_owned()
                } else {
                    format!("edge-{i}.log")
                };
                std::fs::write(dir.join(name), edge.log())?;
            }
        }
        if let Some(nats) = &self._nats {
            std::fs::write(dir.join("nats-server.log"), nats.log())?;
        }
        Ok(())
    }

    /// Kills edge `i` with SIGKILL (a spawned one is also reaped); returns
    /// when the signal was sent.
    pub fn kill_edge(&mut self, i: usize) -> Result<Instant, LoadError> {
        let node = self
            .edges
            .get_mut(i)
            .ok_or_else(|| LoadError::Setup(format!("no edge {i} to kill")))?;
        if let Some(process) = node.process.as_mut() {
            let at = Instant::now();
            process.kill();
            return Ok(at);
        }
        let pid = node.pid.ok_or_else(|| {
            LoadError::Setup("killing an external edge needs its pid (--edge-pids)".into())
        })?;
        let at = Instant::now();
        let status = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()?;
        if !status.success() {
            return Err(LoadError::Edge(format!(
                "kill -KILL {pid} failed: {status}"
            )));
        }
        Ok(at)
    }

    /// Process ids of the edges that have one.
    pub fn edge_pids(&self) -> Vec<u32> {
        self.edges.iter().filter_map(|e| e.pid).collect()
    }

    async fn external(args: &TargetArgs) -> Result<Self, LoadError> {
        let secret = args.jwt_secret.clone().ok_or_else(|| {
            LoadError::Setup(
                "--jwt-secret (or HERALD_JWT_SECRET) is required without --spawn".into(),
            )
        })?;
        let urls: Vec<String> = if args.edges.is_empty() {
            vec![args.edge.clone()]
        } else {
            args.edges.clone()
        };
        let pids: Vec<Option<u32>> = if args.edges.is_empty() {
            vec![args.edge_pid]
        } else {
            (0..urls.len())
                .map(|i| args.edge_pids.get(i).copied())
                .collect()
        };
        let mut edges = Vec::with_capacity(urls.len());
        for (url, pid) in urls.iter().zip(pids) {
            let url = url.trim_end_matches('/').to_owned();
            let authority = url.strip_prefix("http://").ok_or_else(|| {
                LoadError::Setup(format!("edge {url}: only http:// URLs are supported"))
            })?;
            let addr = tokio::net::lookup_host(authority)
                .await
                .map_err(|e| LoadError::Setup(format!("resolve {authority}: {e}")))?
                .next()
                .ok_or_else(|| LoadError::Setup(format!("{authority} resolves to no address")))?;
            edges.push(EdgeNode {
                url,
                addr,
                pid,
                process: None,
            });
        }
        Ok(Self {
            edge_url: edges[0].url.clone(),
            edge_addr: edges[0].addr,
            nats_url: args.nats.clone(),
            jwt_secret: secret,
            edge_pid: edges[0].pid,
            nats_pid: args.nats_pid,
            edges,
            _nats: None,
        })
    }
}
