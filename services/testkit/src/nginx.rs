//! A real nginx in front of edge nodes, configured with the repository's own
//! `deploy/nginx/herald.conf`, as `scripts/cluster.sh` and Docker Compose
//! run it: the harness writes a main `nginx.conf` into a private prefix
//! directory (a temp dir) that includes the repo's file, and beside it the
//! two per-deployment includes that file expects, `herald-edges.conf` (one
//! `server` line per edge) and `herald-listen.conf` (its `listen`).
//!
//! nginx runs in the foreground as one process (`daemon off;
//! master_process off;`), so its PID is all there is to stop: SIGTERM, then
//! SIGKILL when it lingers, also on drop. A master process would leave its
//! workers serving after a SIGKILL. The port is picked free (bound to port
//! 0 and released) and the start retried on a fresh one when another
//! process took it meanwhile. The binary comes from `HERALD_NGINX`, `PATH`
//! or `/usr/sbin/nginx`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use tempfile::TempDir;
use tokio::time::Instant;

use crate::http::free_ports;
use crate::process;

/// How long nginx may take to accept connections after it is spawned.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a SIGTERMed nginx may take to exit before it is SIGKILLed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between probes while nginx starts.
const PROBE_EVERY: Duration = Duration::from_millis(50);
/// Starts on fresh ports when the chosen one was taken in between.
const ATTEMPTS: usize = 3;
/// Connections nginx handles at once: each proxied client takes two (its
/// own and the one to the edge), and fault tests hold thousands.
const WORKER_CONNECTIONS: usize = 16_384;

/// The nginx binary: `$HERALD_NGINX` if set, else `nginx` from `PATH`, else
/// `/usr/sbin/nginx`. Panics, saying how to install it, when none exists.
pub fn nginx_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("HERALD_NGINX") {
        return PathBuf::from(path);
    }
    let on_path = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("nginx"))
        .find(|candidate| candidate.is_file());
    let sbin = PathBuf::from("/usr/sbin/nginx");
    on_path
        .or_else(|| sbin.is_file().then_some(sbin))
        .unwrap_or_else(|| {
            panic!(
                "nginx not found: install it (Debian/Ubuntu: apt-get install nginx; \
                 scripts/test.sh does this when run as root), or set HERALD_NGINX \
                 to the binary"
            )
        })
}

/// The repository's nginx config for the edges, `deploy/nginx/herald.conf`.
pub fn herald_conf() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/nginx/herald.conf")
}

/// A running nginx in front of a fixed list of edges. Dropping it stops
/// the process (SIGTERM, then SIGKILL) and removes its prefix directory.
pub struct Nginx {
    child: Option<Child>,
    addr: SocketAddr,
    /// The prefix: config, includes, pid file, logs, temp paths.
    dir: TempDir,
}

impl Nginx {
    /// Starts nginx with `deploy/nginx/herald.conf` proxying to `edges` on
    /// a free loopback port and waits (10 s at most) until it accepts
    /// connections. Panics with nginx's error log when it cannot start.
    pub async fn start(edges: &[SocketAddr]) -> Nginx {
        assert!(!edges.is_empty(), "nginx needs at least one edge");
        let bin = nginx_binary();
        for attempt in 1..=ATTEMPTS {
            let dir = tempfile::Builder::new()
                .prefix("herald-nginx-")
                .tempdir()
                .expect("create temp dir for nginx");
            let addr: SocketAddr = ([127, 0, 0, 1], free_ports(1)[0]).into();
            write_config(dir.path(), addr, edges);
            let mut command = Command::new(&bin);
            command
                .arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(dir.path().join("nginx.conf"))
                .arg("-e")
                .arg(dir.path().join("error.log"));
            let child = process::spawn_logged(&mut command, &dir.path().join("stdout.log"));
            let mut nginx = Nginx {
                child: Some(child),
                addr,
                dir,
            };
            match nginx.wait_accepting().await {
                Ok(()) => return nginx,
                // Another process took the port between its choice and the bind.
                Err(why) if attempt < ATTEMPTS && why.contains("Address already in use") => {
                    eprintln!("nginx attempt {attempt}: port {} was taken; retrying", addr);
                }
                Err(why) => panic!("nginx {} {why}", bin.display()),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Waits until nginx accepts TCP connections on its port; `Err` carries
    /// why not, with its error log.
    async fn wait_accepting(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().and_then(process::exited) {
                self.child = None;
                return Err(format!(
                    "exited ({status}) at startup:\n{}",
                    self.error_log()
                ));
            }
            if let Ok(Ok(_)) =
                tokio::time::timeout(PROBE_EVERY, tokio::net::TcpStream::connect(self.addr)).await
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.stop_now();
                return Err(format!(
                    "did not accept connections on {} within {START_TIMEOUT:?}:\n{}",
                    self.addr,
                    self.error_log()
                ));
            }
            tokio::time::sleep(PROBE_EVERY).await;
        }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The process id while nginx runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// nginx's error log (and anything it printed) so far.
    pub fn error_log(&self) -> String {
        let mut out = process::read_log(&self.dir.path().join("error.log"));
        let printed = process::read_log(&self.dir.path().join("stdout.log"));
        if !printed.trim().is_empty() {
            let _ = write!(out, "\n--- nginx stdout/stderr ---\n{printed}");
        }
        out
    }

    /// The access log: one line per request with its org and the edge
    /// nginx chose (`edge=<addr>`).
    pub fn access_log(&self) -> String {
        process::read_log(&self.dir.path().join("access.log"))
    }

    /// Stops nginx: SIGTERM, then SIGKILL if it is still there after 5 s.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::sigterm(child.id());
            if process::wait_timeout(&mut child, STOP_TIMEOUT)
                .await
                .is_none()
            {
                process::kill_and_reap(&mut child);
            }
        }
    }

    /// [`stop`](Self::stop) without a runtime, for `Drop`: the wait blocks
    /// the thread, briefly.
    fn stop_now(&mut self) {
        if let Some(child) = self.child.take() {
            process::stop_blocking(child, STOP_TIMEOUT);
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// Writes the main config, the two includes of `herald.conf` and the temp
/// directories into the prefix `dir`.
fn write_config(dir: &Path, listen: SocketAddr, edges: &[SocketAddr]) {
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    };
    std::fs::create_dir_all(dir.join("tmp")).expect("create nginx temp dir");
    let mut servers = String::new();
    for edge in edges {
        let _ = writeln!(servers, "server {edge};");
    }
    write("herald-edges.conf", servers);
    write("herald-listen.conf", format!("listen {listen};\n"));
    let d = dir.display();
    let conf = herald_conf();
    write(
        "nginx.conf",
        format!(
            "# Written by herald-testkit; the Herald part is deploy/nginx/herald.conf.\n\
             daemon off;\n\
             master_process off;\n\
             worker_rlimit_nofile {files};\n\
             pid {d}/nginx.pid;\n\
             error_log {d}/error.log notice;\n\
             events {{\n    worker_connections {WORKER_CONNECTIONS};\n}}\n\
             http {{\n    \
                 log_format herald '$remote_addr [$time_local] \"$request\" $status '\n                      \
                 'org=$arg_org edge=$upstream_addr ${{request_time}}s';\n    \
                 access_log {d}/access.log herald;\n    \
                 client_body_temp_path {d}/tmp/body;\n    \
                 proxy_temp_path {d}/tmp/proxy;\n    \
                 fastcgi_temp_path {d}/tmp/fastcgi;\n    \
                 uwsgi_temp_path {d}/tmp/uwsgi;\n    \
                 scgi_temp_path {d}/tmp/scgi;\n    \
                 include {conf};\n\
             }}\n",
            files = WORKER_CONNECTIONS + 64,
            conf = conf.display(),
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{get_json, refused_port};

    #[tokio::test]
    async fn serves_the_repo_config_and_stops() {
        // An edge that refuses connections: nginx answers for it.
        let edge = refused_port();
        let mut nginx = Nginx::start(&[([127, 0, 0, 1], edge.port()).into()]).await;
        let (status, body, _) = get_json(&format!("{}/metrics", nginx.base_url()), None).await;
        assert_eq!(status, 404, "metrics are not routed: {body}");
        assert_eq!(body["error"]["code"], "not_found");
        let (status, _, _) = get_json(
            &format!("{}/v1/realtime/poll?org=acme", nginx.base_url()),
            None,
        )
        .await;
        assert_eq!(status, 502, "no edge answers");
        // nginx writes the log line after the answer: wait for it a moment.
        for _ in 0..50 {
            if nginx.access_log().contains("org=acme") {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(
            nginx.access_log().contains("org=acme"),
            "{}",
            nginx.access_log()
        );
        let pid = nginx.pid().expect("running");
        nginx.stop().await;
        assert!(nginx.pid().is_none());
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "nginx {pid} is gone"
        );
    }
}
