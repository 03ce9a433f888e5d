//! The system under test: an edge node and the NATS it reads from, either
//! started here (`--spawn`: a private nats-server and a `herald-edge`
//! process, both gone when the benchmark ends) or already running.

use std::net::SocketAddr;
use std::path::Path;

use herald_testkit::{EdgeOptions, EdgeProcess, NatsServer};

use crate::cli::TargetArgs;
use crate::error::LoadError;
use crate::procfs;

/// Environment the spawned edge always gets: public metrics (the benchmark
/// reads them without an admin token) and quiet logs.
const SPAWN_ENV: [(&str, &str); 2] = [("HERALD_METRICS_PUBLIC", "true"), ("RUST_LOG", "warn")];

/// The edge and NATS a benchmark drives.
pub struct Target {
    /// Base URL of the edge, `http://host:port`.
    pub edge_url: String,
    /// Socket address of the edge, resolved once.
    pub edge_addr: SocketAddr,
    /// Where events are published.
    pub nats_url: String,
    /// HS256 secret for poller tokens.
    pub jwt_secret: String,
    /// Edge process id, when known (memory and CPU readings).
    pub edge_pid: Option<u32>,
    /// nats-server process id, when known (CPU readings).
    pub nats_pid: Option<u32>,
    // Field order matters: the edge is killed before its nats-server.
    _edge: Option<EdgeProcess>,
    _nats: Option<NatsServer>,
}

impl Target {
    /// Spawns or locates the edge and NATS described by `args`.
    pub async fn prepare(args: &TargetArgs) -> Result<Self, LoadError> {
        if args.spawn {
            Self::spawn(args).await
        } else {
            Self::external(args).await
        }
    }

    async fn spawn(args: &TargetArgs) -> Result<Self, LoadError> {
        if !args.edge_bin.is_file() {
            return Err(LoadError::Setup(format!(
                "edge binary {} not found; build it with `cargo build --release -p herald-edge` or pass --edge-bin",
                args.edge_bin.display()
            )));
        }
        let secret = args
            .jwt_secret
            .clone()
            .unwrap_or_else(|| format!("loadgen-{:032x}", rand::random::<u128>()));
        let nats = NatsServer::start().await;
        let nats_pid = procfs::find_pid(&["nats-server", &nats.port().to_string()]);
        let mut opts = EdgeOptions::new(nats.url(), secret.clone());
        for (k, v) in SPAWN_ENV {
            opts = opts.with_env(k, v);
        }
        for kv in &args.edge_env {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| LoadError::Setup(format!("--edge-env {kv}: expected KEY=VALUE")))?;
            opts = opts.with_env(k, v);
        }
        let edge = EdgeProcess::spawn(&args.edge_bin, opts).await;
        Ok(Self {
            edge_url: edge.base_url(),
            edge_addr: edge.addr(),
            nats_url: nats.url(),
            jwt_secret: secret,
            edge_pid: Some(edge.pid()),
            nats_pid,
            _edge: Some(edge),
            _nats: Some(nats),
        })
    }

    /// Copies the logs of a spawned edge and nats-server into `dir` (as
    /// `edge.log` and `nats-server.log`); they are deleted with the processes.
    pub fn save_logs(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        if let Some(edge) = &self._edge {
            std::fs::write(dir.join("edge.log"), edge.log())?;
        }
        if let Some(nats) = &self._nats {
            std::fs::write(dir.join("nats-server.log"), nats.log())?;
        }
        Ok(())
    }

    async fn external(args: &TargetArgs) -> Result<Self, LoadError> {
        let secret = args.jwt_secret.clone().ok_or_else(|| {
            LoadError::Setup(
                "--jwt-secret (or HERALD_JWT_SECRET) is required without --spawn".into(),
            )
        })?;
        let edge_url = args.edge.trim_end_matches('/').to_owned();
        let authority = edge_url.strip_prefix("http://").ok_or_else(|| {
            LoadError::Setup(format!(
                "--edge {edge_url}: only http:// URLs are supported"
            ))
        })?;
        let edge_addr = tokio::net::lookup_host(authority)
            .await
            .map_err(|e| LoadError::Setup(format!("resolve {authority}: {e}")))?
            .next()
            .ok_or_else(|| LoadError::Setup(format!("{authority} resolves to no address")))?;
        Ok(Self {
            edge_url,
            edge_addr,
            nats_url: args.nats.clone(),
            jwt_secret: secret,
            edge_pid: args.edge_pid,
            nats_pid: args.nats_pid,
            _edge: None,
            _nats: None,
        })
    }
}
