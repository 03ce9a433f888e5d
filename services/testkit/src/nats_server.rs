//! Real `nats-server` processes for tests: a single JetStream server on an
//! ephemeral port that can be killed and restarted on the same port with its
//! store kept, and a loopback JetStream cluster of N such servers.
//!
//! Client ports are the kernel's choice (`-p -1`), read back from the
//! server's ports file (`--ports_file_dir`), so no other process can take
//! them between choice and bind. So is each server's HTTP monitoring port
//! (`-m -1`: `/varz`, `/subsz`, `/connz`, …), which benchmarks read
//! subscription counts from. A cluster's route ports must be known
//! before its servers start (each names the others'); they are picked free
//! and the cluster is started again on new ones (3 times at most) when one
//! was taken meanwhile. A restart reuses the ports the server had.
//!
//! Either kind runs open (anyone may do anything) or with the NATS users the
//! project ships in `nats/herald.conf` ([`NatsServer::start_with_accounts`],
//! [`NatsCluster::start_with_accounts`]): `edge` may do everything,
//! `publisher` only publish `herald.events.>`.

use std::ffi::OsString;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use async_nats::ServerAddr;
use tempfile::TempDir;
use tokio::time::{sleep, timeout, Instant};

use crate::http::free_ports;
use crate::process;

/// How long a server may take to accept clients after it is spawned.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a cluster may take to elect a JetStream meta leader.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a SIGTERMed server may take to exit before it is SIGKILLed.
const TERMINATE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on one readiness probe, so a hung probe cannot eat the deadline
/// (a JetStream request without a meta leader otherwise waits 5 s).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between readiness probes.
const PROBE_EVERY: Duration = Duration::from_millis(50);
/// `cluster_name` shared by the servers of a [`NatsCluster`].
const CLUSTER_NAME: &str = "herald-testkit";
/// Times a cluster is started on fresh route ports when one was taken.
const CLUSTER_ATTEMPTS: usize = 3;
/// Passwords the accounts config reads from the environment, as given to
/// test servers.
const EDGE_PASSWORD: &str = "edge-test-password";
const PUBLISHER_PASSWORD: &str = "publisher-test-password";

/// A user of the shipped accounts config, with its test password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsUser {
    /// User name.
    pub name: String,
    /// Password.
    pub password: String,
}

impl NatsUser {
    /// `edge`: everything in the account (JetStream API, live feed, control
    /// subjects, KV buckets).
    pub fn edge() -> NatsUser {
        NatsUser {
            name: "edge".into(),
            password: EDGE_PASSWORD.into(),
        }
    }

    /// `publisher`: may publish `herald.events.>` and receive replies on `_INBOX.>`.
    pub fn publisher() -> NatsUser {
        NatsUser {
            name: "publisher".into(),
            password: PUBLISHER_PASSWORD.into(),
        }
    }

    /// Connect options that log in as this user.
    pub fn options(&self) -> async_nats::ConnectOptions {
        async_nats::ConnectOptions::with_user_and_password(self.name.clone(), self.password.clone())
    }
}

/// The accounts config the project ships, `nats/herald.conf`.
pub fn accounts_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../nats/herald.conf")
}

/// The environment the accounts config reads its passwords from.
fn accounts_env() -> Vec<(String, String)> {
    vec![
        ("HERALD_NATS_EDGE_PASSWORD".into(), EDGE_PASSWORD.into()),
        (
            "HERALD_NATS_PUBLISHER_PASSWORD".into(),
            PUBLISHER_PASSWORD.into(),
        ),
    ]
}

/// The `nats-server` binary to run: `$HERALD_NATS_SERVER` if set, else
/// `<workspace>/.tools/bin/nats-server` if present, else `nats-server` from
/// `PATH`. Panics, pointing at `scripts/setup.sh`, when none exists.
pub fn nats_server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("HERALD_NATS_SERVER") {
        return PathBuf::from(path);
    }
    let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools/bin/nats-server");
    if tools.is_file() {
        return tools;
    }
    let on_path = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file());
    on_path.unwrap_or_else(|| {
        panic!(
            "nats-server not found: set HERALD_NATS_SERVER, or run `scripts/setup.sh` \
             to install it into .tools/bin, or put nats-server on PATH"
        )
    })
}

/// One `nats-server` child process with JetStream enabled, listening on
/// `127.0.0.1:<port>`. Its port and store directory survive
/// [`stop`](Self::stop) and [`restart`](Self::restart); dropping it kills the
/// process and removes the store.
pub struct NatsServer {
    name: String,
    /// The client port; 0 until the first start has reported it.
    port: u16,
    /// The HTTP monitoring port of the running process; 0 until reported.
    monitor_port: u16,
    /// Holds the store, the log and (in a cluster) the config file.
    dir: TempDir,
    /// Command-line arguments, reused verbatim on restart (the client port
    /// and the ports file directory are added at each spawn).
    args: Vec<OsString>,
    /// Environment of the process (the accounts config's passwords).
    env: Vec<(String, String)>,
    /// Whether the accounts config is loaded; [`connect`](Self::connect) then
    /// logs in as [`NatsUser::edge`].
    accounts: bool,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a standalone JetStream server on a free port and waits (15 s at
    /// most) until it accepts clients.
    pub async fn start() -> NatsServer {
        Self::start_inner(false).await
    }

    /// Like [`start`](Self::start), with the users and permissions of the
    /// shipped `nats/herald.conf`; anonymous clients are refused.
    pub async fn start_with_accounts() -> NatsServer {
        Self::start_inner(true).await
    }

    /// Like [`start`](Self::start), with the subject mapping that spreads
    /// `herald.events.*.*.*` over `partitions` streams (a sixth token,
    /// `partition(K, 1)` of the org), as every shipped NATS config has it
    /// for `HERALD_PARTITIONS` above 1.
    pub async fn start_partitioned(partitions: u32) -> NatsServer {
        let mapping =
            herald_proto::Partitions::new(partitions).and_then(herald_proto::Partitions::mapping);
        Self::start_configured(false, mapping).await
    }

    async fn start_inner(accounts: bool) -> NatsServer {
        Self::start_configured(accounts, None).await
    }

    async fn start_configured(accounts: bool, mapping: Option<(String, String)>) -> NatsServer {
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "testkit-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        );
        let dir = temp_dir();
        let mut args: Vec<OsString> = Vec::new();
        if accounts {
            // Flags after the config file override its settings.
            args.extend(["-c".into(), accounts_config().into_os_string()]);
        }
        if let Some((from, to)) = mapping {
            let path = dir.path().join("mapping.conf");
            std::fs::write(&path, format!("mappings {{\n  \"{from}\": \"{to}\"\n}}\n"))
                .expect("write the mapping config");
            args.extend(["-c".into(), path.into_os_string()]);
        }
        args.extend::<[OsString; 7]>([
            "-js".into(),
            "-a".into(),
            "127.0.0.1".into(),
            "-sd".into(),
            dir.path().join("store").into(),
            "--server_name".into(),
            name.clone().into(),
        ]);
        let mut server = NatsServer::new(name, dir, args, accounts);
        server.spawn();
        if let Err(why) = server.wait_started().await {
            panic!("nats-server {} {why}:\n{}", server.name, server.log());
        }
        server.wait_accepting().await;
        server
    }

    fn new(name: String, dir: TempDir, args: Vec<OsString>, accounts: bool) -> NatsServer {
        NatsServer {
            name,
            port: 0,
            monitor_port: 0,
            dir,
            args,
            env: if accounts { accounts_env() } else { Vec::new() },
            accounts,
            child: None,
        }
    }

    /// The client URL, `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client URL with `user`'s credentials, `nats://user:password@127.0.0.1:<port>`.
    pub fn url_as(&self, user: &NatsUser) -> String {
        format!(
            "nats://{}:{}@127.0.0.1:{}",
            user.name, user.password, self.port
        )
    }

    /// The HTTP monitoring base URL, `http://127.0.0.1:<port>` (`/varz`,
    /// `/subsz`, `/connz?subs=1`, …). The port is the kernel's choice at
    /// every start, so read it again after a restart.
    pub fn monitor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.monitor_port)
    }

    /// Whether the shipped accounts config is loaded.
    pub fn has_accounts(&self) -> bool {
        self.accounts
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id while the server runs (started and not stopped).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The `server_name`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The JetStream store directory, kept across restarts.
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// The file that captures the server's stdout and stderr, across restarts.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats-server.log")
    }

    /// The captured output so far.
    pub fn log(&self) -> String {
        process::read_log(&self.log_path())
    }

    /// Whether the process is running (started and not exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => process::exited(child).is_none(),
            None => false,
        }
    }

    /// Kills the server with SIGKILL and reaps it, as a crash would. No-op
    /// when it is not running.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::kill_and_reap(&mut child);
        }
    }

    /// Stops the server gracefully with SIGTERM and waits for it to exit;
    /// SIGKILLs it if it is still there after 10 s.
    pub async fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::sigterm(child.id());
            if process::wait_timeout(&mut child, TERMINATE_TIMEOUT)
                .await
                .is_none()
            {
                process::kill_and_reap(&mut child);
            }
        }
    }

    /// Starts the server again on the same port with the same store (killing
    /// it first if it still runs) and waits until it accepts clients.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn();
        if let Err(why) = self.wait_started().await {
            panic!(
                "nats-server {} {why} on restart (port {}):\n{}",
                self.name,
                self.port,
                self.log()
            );
        }
        self.wait_accepting().await;
    }

    /// A client connected to this server (as [`NatsUser::edge`] when the
    /// accounts config is loaded).
    pub async fn connect(&self) -> async_nats::Client {
        self.options()
            .connect(self.url())
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.url()))
    }

    /// A client connected as `user`.
    pub async fn connect_as(&self, user: &NatsUser) -> async_nats::Client {
        user.options()
            .connect(self.url())
            .await
            .unwrap_or_else(|e| panic!("connect to {} as {}: {e}", self.url(), user.name))
    }

    fn options(&self) -> async_nats::ConnectOptions {
        if self.accounts {
            NatsUser::edge().options()
        } else {
            async_nats::ConnectOptions::new()
        }
    }

    /// Spawns the process: on the port it had, or on one of the kernel's
    /// choice the first time (see [`wait_started`](Self::wait_started)).
    fn spawn(&mut self) {
        let ports_dir = self.ports_dir();
        std::fs::create_dir_all(&ports_dir)
            .unwrap_or_else(|e| panic!("create {}: {e}", ports_dir.display()));
        let port = if self.port == 0 {
            "-1".to_owned()
        } else {
            self.port.to_string()
        };
        let mut command = Command::new(nats_server_binary());
        command
            .args(&self.args)
            .arg("--ports_file_dir")
            .arg(&ports_dir)
            .args(["-p", &port, "-m", "-1"]);
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        self.child = Some(process::spawn_logged(&mut command, &self.log_path()));
    }

    /// Where the server writes `<binary>_<pid>.ports` once it listens.
    fn ports_dir(&self) -> PathBuf {
        self.dir.path().join("ports")
    }

    /// Waits (15 s at most) until the process has written its ports file,
    /// i.e. it listens, and takes its client port from there. `Err` says
    /// why not: the process exited (e.g. a port was taken), or the file
    /// never came.
    async fn wait_started(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let pid = self.pid().ok_or("was not spawned")?;
        let suffix = format!("_{pid}.ports");
        loop {
            let found = std::fs::read_dir(self.ports_dir())
                .into_iter()
                .flatten()
                .flatten()
                .find(|e| e.file_name().to_string_lossy().ends_with(&suffix));
            if let Some((port, monitor)) = found.and_then(|e| listening_ports(&e.path())) {
                if self.port != 0 && port != self.port {
                    return Err(format!("listens on {port}, not on {}", self.port));
                }
                self.port = port;
                self.monitor_port = monitor;
                return Ok(());
            }
            if !self.is_running() {
                return Err("exited at startup".into());
            }
            if Instant::now() >= deadline {
                return Err(format!("wrote no ports file within {START_TIMEOUT:?}"));
            }
            sleep(PROBE_EVERY).await;
        }
    }

    /// Waits until a client can connect, panicking with the log when the
    /// process exits or the deadline passes.
    async fn wait_accepting(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if !self.is_running() {
                panic!(
                    "nats-server {} exited at startup:\n{}",
                    self.name,
                    self.log()
                );
            }
            if let Ok(Ok(_client)) =
                timeout(PROBE_TIMEOUT, self.options().connect(self.url())).await
            {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "nats-server {} did not accept clients on {} within {START_TIMEOUT:?}:\n{}",
                    self.name,
                    self.url(),
                    self.log()
                );
            }
            sleep(PROBE_EVERY).await;
        }
    }
}

/// The client and monitoring ports in a nats-server ports file,
/// `{"nats":["nats://127.0.0.1:PORT"],"monitoring":["http://127.0.0.1:PORT"]}`;
/// `None` while it is not (fully) written.
fn listening_ports(path: &Path) -> Option<(u16, u16)> {
    let text = std::fs::read_to_string(path).ok()?;
    let ports: serde_json::Value = serde_json::from_str(&text).ok()?;
    let port =
        |key: &str| -> Option<u16> { ports[key][0].as_str()?.rsplit(':').next()?.parse().ok() };
    Some((port("nats")?, port("monitoring")?))
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A JetStream cluster of N `nats-server` processes on loopback: unique
/// server names, one `cluster_name`, explicit routes to each other's cluster
/// ports, one store directory each.
pub struct NatsCluster {
    servers: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `n` servers (3 is the usual size) and waits (30 s at most) until
    /// the cluster has a JetStream meta leader and can place an `n`-replica
    /// stream.
    pub async fn start(n: usize) -> NatsCluster {
        Self::start_inner(n, false).await
    }

    /// Like [`start`](Self::start), each server with the users and
    /// permissions of the shipped `nats/herald.conf` (routes carry every
    /// account); anonymous clients are refused.
    pub async fn start_with_accounts(n: usize) -> NatsCluster {
        Self::start_inner(n, true).await
    }

    /// Like [`start`](Self::start), every server with the subject mapping
    /// that spreads `herald.events.*.*.*` over `partitions` streams (see
    /// [`NatsServer::start_partitioned`]).
    pub async fn start_partitioned(n: usize, partitions: u32) -> NatsCluster {
        let text = herald_proto::Partitions::new(partitions)
            .and_then(herald_proto::Partitions::mapping)
            .map(|(from, to)| format!("mappings {{\n  \"{from}\": \"{to}\"\n}}\n"))
            .unwrap_or_default();
        Self::start_configured(n, false, text).await
    }

    async fn start_inner(n: usize, accounts: bool) -> NatsCluster {
        let accounts_text = if accounts {
            let path = accounts_config();
            std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        } else {
            String::new()
        };
        Self::start_configured(n, accounts, accounts_text).await
    }

    async fn start_configured(n: usize, accounts: bool, accounts_text: String) -> NatsCluster {
        assert!(n > 0, "a cluster needs at least one server");
        for attempt in 1..=CLUSTER_ATTEMPTS {
            let mut servers = Self::configure(n, accounts, &accounts_text);
            // Spawn every server before waiting on any, so routes form at once.
            for server in &mut servers {
                server.spawn();
            }
            let mut failure = None;
            for server in &mut servers {
                if let Err(why) = server.wait_started().await {
                    failure = Some(format!(
                        "nats-server {} {why}:\n{}",
                        server.name,
                        server.log()
                    ));
                    break;
                }
            }
            match failure {
                None => {
                    for server in &mut servers {
                        server.wait_accepting().await;
                    }
                    let cluster = NatsCluster { servers };
                    cluster.wait_ready().await;
                    return cluster;
                }
                // Another process took a route port between its choice and
                // the bind: start again on fresh ports.
                Some(why)
                    if attempt < CLUSTER_ATTEMPTS && why.contains("address already in use") =>
                {
                    eprintln!("nats cluster attempt {attempt}: a route port was taken; retrying");
                    drop(servers);
                }
                Some(why) => panic!("NATS cluster (attempt {attempt}): {why}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// `n` servers (not spawned yet) on fresh route ports, each with its
    /// config file: its name, loopback host, store, and routes to the others.
    fn configure(n: usize, accounts: bool, accounts_text: &str) -> Vec<NatsServer> {
        let route_ports = free_ports(n);
        let mut servers = Vec::with_capacity(n);
        for (i, &route_port) in route_ports.iter().enumerate() {
            let name = format!("testkit-n{i}-{route_port}");
            let dir = temp_dir();
            let routes: Vec<String> = route_ports
                .iter()
                .filter(|&&other| other != route_port)
                .map(|other| format!("\"nats-route://127.0.0.1:{other}\""))
                .collect();
            // The client port comes from the command line (`-p`).
            let mut config = format!(
                "server_name: \"{name}\"\n\
                 host: \"127.0.0.1\"\n\
                 jetstream {{ store_dir: \"{store}\" }}\n\
                 cluster {{\n  \
                   name: \"{CLUSTER_NAME}\"\n  \
                   listen: \"127.0.0.1:{route_port}\"\n  \
                   routes: [{routes}]\n\
                 }}\n",
                store = dir.path().join("store").display(),
                routes = routes.join(", "),
            );
            config.push_str(accounts_text);
            let config_path = dir.path().join("nats-server.conf");
            std::fs::write(&config_path, config)
                .unwrap_or_else(|e| panic!("write {}: {e}", config_path.display()));
            let args = vec!["-c".into(), config_path.into()];
            servers.push(NatsServer::new(name, dir, args, accounts));
        }
        servers
    }

    /// The client URLs of all servers, comma-separated (the form
    /// `HERALD_NATS_URL` takes).
    pub fn urls(&self) -> String {
        let urls: Vec<String> = self.servers.iter().map(NatsServer::url).collect();
        urls.join(",")
    }

    /// All servers, in start order.
    pub fn servers(&self) -> &[NatsServer] {
        &self.servers
    }

    /// Server `i` (0-based).
    pub fn server(&mut self, i: usize) -> &mut NatsServer {
        &mut self.servers[i]
    }

    /// Kills server `i` with SIGKILL.
    pub fn stop(&mut self, i: usize) {
        self.servers[i].stop();
    }

    /// Restarts server `i` with its port and store and waits until it accepts
    /// clients (not until it has caught up; use [`wait_ready`](Self::wait_ready)).
    pub async fn restart(&mut self, i: usize) {
        self.servers[i].restart().await;
    }

    /// A client that knows every server of the cluster (logged in as
    /// [`NatsUser::edge`] when the accounts config is loaded).
    pub async fn connect(&self) -> async_nats::Client {
        let addrs: Vec<ServerAddr> = self
            .servers
            .iter()
            .map(|s| s.url().parse().expect("a nats:// URL parses"))
            .collect();
        self.servers[0]
            .options()
            .connect(addrs)
            .await
            .unwrap_or_else(|e| panic!("connect to cluster {}: {e}", self.urls()))
    }

    /// Waits (30 s at most) until the cluster has a JetStream meta leader and
    /// all servers take part, by creating and deleting a throwaway stream
    /// with one replica per server.
    pub async fn wait_ready(&self) {
        let js = jetstream::new(self.connect().await);
        let config = stream::Config {
            name: "TESTKIT_READY".into(),
            subjects: vec!["testkit.ready".into()],
            num_replicas: self.servers.len(),
            storage: stream::StorageType::Memory,
            ..Default::default()
        };
        self.retry("JetStream meta leader", || async {
            js.create_stream(config.clone())
                .await
                .map_err(|e| format!("create R{} stream: {e}", config.num_replicas))?;
            js.delete_stream(&config.name)
                .await
                .map_err(|e| format!("delete stream: {e}"))?;
            Ok(())
        })
        .await;
    }

    /// Waits (30 s at most) until stream `name` has a leader and every
    /// replica is current, e.g. after a member restart and before publishing
    /// through that member again.
    pub async fn wait_stream_current(&self, name: &str) {
        let js = jetstream::new(self.connect().await);
        self.retry(&format!("stream {name} current"), || async {
            let mut stream = js.get_stream(name).await.map_err(|e| e.to_string())?;
            let info = stream.info().await.map_err(|e| e.to_string())?;
            let placement = info.cluster.as_ref().ok_or("stream is not clustered")?;
            let followers = info.config.num_replicas.saturating_sub(1);
            let current = placement.replicas.iter().filter(|r| r.current).count();
            if placement.leader.is_none() || current < followers {
                return Err(format!(
                    "leader {:?}, {current}/{followers} followers current",
                    placement.leader
                ));
            }
            Ok(())
        })
        .await;
    }

    /// Runs `attempt` (2 s at most each) until it succeeds; panics with the
    /// last error and every server's log after 30 s.
    async fn retry<F, Fut>(&self, what: &str, mut attempt: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        let deadline = Instant::now() + CLUSTER_TIMEOUT;
        loop {
            let error = match timeout(PROBE_TIMEOUT, attempt()).await {
                Ok(Ok(())) => return,
                Ok(Err(e)) => e,
                Err(_) => "attempt timed out".to_owned(),
            };
            if Instant::now() >= deadline {
                let logs: Vec<String> = self
                    .servers
                    .iter()
                    .map(|s| format!("--- {} ---\n{}", s.name(), s.log()))
                    .collect();
                panic!(
                    "NATS cluster: {what} not reached within {CLUSTER_TIMEOUT:?} ({error}):\n{}",
                    logs.join("\n")
                );
            }
            sleep(Duration::from_millis(200)).await;
        }
    }
}

fn temp_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("herald-nats-")
        .tempdir()
        .expect("create temp dir for nats-server")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_ports_from_the_ports_file() {
        let dir = temp_dir();
        let path = dir.path().join("nats-server_1.ports");
        std::fs::write(&path, r#"{"nats":["nats://127.0.0.1:4222"]"#).expect("write");
        assert_eq!(listening_ports(&path), None, "half written");
        std::fs::write(
            &path,
            r#"{"nats":["nats://127.0.0.1:4222"],"monitoring":["http://127.0.0.1:8222"]}"#,
        )
        .expect("write");
        assert_eq!(listening_ports(&path), Some((4222, 8222)));
    }
}
