//! The systems of the side-by-side benchmark (`compare`): Herald (a
//! private nats-server and one edge, spawned here) and its peers Nchan,
//! Pushpin and NATS over WebSocket, started and stopped by
//! `bench/peers/peers.sh` on 127.0.0.1. For each: where a client
//! subscribes to a channel, how an event is published to one, and which
//! processes are the server (their memory and CPU are what is compared).

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use herald_testkit::TokenBuilder;

use crate::cli::TargetArgs;
use crate::error::LoadError;
use crate::target::Target;

/// The service Herald's subscribers ask for and events are published on.
pub const SERVICE: &str = "bench";

/// A system under comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    /// Herald: one edge on a private nats-server (JetStream).
    Herald,
    /// nginx with the nchan module, one worker.
    Nchan,
    /// Pushpin with zurl and a GRIP origin.
    Pushpin,
    /// nats-server's WebSocket listener, raw NATS protocol, core NATS.
    NatsWs,
}

impl System {
    /// Parses a `--systems` entry.
    pub fn parse(name: &str) -> Result<System, LoadError> {
        match name {
            "herald" => Ok(System::Herald),
            "nchan" => Ok(System::Nchan),
            "pushpin" => Ok(System::Pushpin),
            "nats-ws" => Ok(System::NatsWs),
            other => Err(LoadError::Setup(format!(
                "--systems: {other:?} is not herald, nchan, pushpin or nats-ws"
            ))),
        }
    }

    /// Whether it serves `transport` (NATS over WebSocket serves only
    /// WebSocket).
    pub fn serves(self, transport: Transport) -> bool {
        self != System::NatsWs || transport == Transport::WebSocket
    }

    /// Whether a subscriber that comes back can ask for what it missed
    /// (Herald from JetStream, Nchan from its channel buffer); Pushpin
    /// and core NATS have no history to replay.
    pub fn keeps_history(self) -> bool {
        matches!(self, System::Herald | System::Nchan)
    }
}

/// How a subscriber is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A WebSocket.
    WebSocket,
    /// Server-Sent Events.
    Sse,
    /// One held long-poll request.
    LongPoll,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::WebSocket => "WebSocket",
            Transport::Sse => "SSE",
            Transport::LongPoll => "long-poll",
        })
    }
}

impl fmt::Display for System {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            System::Herald => "Herald",
            System::Nchan => "Nchan",
            System::Pushpin => "Pushpin",
            System::NatsWs => "NATS-WS",
        })
    }
}

/// How a subscriber reaches one channel.
#[derive(Debug, Clone)]
pub enum Subscription {
    /// A WebSocket.
    WebSocket {
        /// `ws://…`.
        url: String,
        /// Its subprotocol, if the system wants one.
        protocol: Option<&'static str>,
        /// A bearer token, if the system checks one.
        bearer: Option<String>,
        /// Sent after the upgrade (Herald's `hello`, or NATS's `CONNECT`
        /// and `SUB`).
        hello: Option<Hello>,
    },
    /// Server-Sent Events.
    Sse {
        /// `GET` this path on the server's address.
        path: String,
        /// A bearer token, if the system checks one.
        bearer: Option<String>,
        /// Sent as `Last-Event-ID`: resume after that event.
        last_event_id: Option<String>,
    },
    /// A long-poll request, held by the server until an event or its
    /// timeout.
    LongPoll {
        /// `GET` this path on the server's address.
        path: String,
        /// A bearer token, if the system checks one.
        bearer: Option<String>,
    },
}

/// What a WebSocket subscriber sends once upgraded.
#[derive(Debug, Clone)]
pub enum Hello {
    /// A text frame (Herald's `hello`).
    Text(String),
    /// NATS protocol: `CONNECT`, `SUB <subject> 1`, `PING` in one binary
    /// frame; the subscription is in place at the `PONG`.
    Nats(String),
}

/// A running system.
pub struct Running {
    /// Which one.
    pub system: System,
    /// Address clients connect to.
    pub addr: std::net::SocketAddr,
    /// Every process of the server (for Herald: the edge).
    pub pids: Vec<u32>,
    /// The broker behind it, if any (Herald's nats-server, with JetStream).
    pub broker_pid: Option<u32>,
    /// Herald's processes, stopped when dropped.
    herald: Option<Target>,
    /// A peer's work directory (stopped through `peers.sh stop`).
    workdir: Option<PathBuf>,
    repo: PathBuf,
    publish: Publish,
}

/// Where events go.
enum Publish {
    /// JetStream, with a token secret for the subscribers.
    Herald {
        js: async_nats::jetstream::Context,
        secret: String,
        run: String,
    },
    /// `POST <url with {channel}>`, the body is the message (Nchan).
    NchanHttp { url: String, http: reqwest::Client },
    /// `POST <url>` with GRIP JSON (Pushpin).
    Grip { url: String, http: reqwest::Client },
    /// Core NATS publish on `bench.<channel>`.
    Nats(async_nats::Client),
}

impl Running {
    /// Starts `system` on a free port; Herald's edge is `edge_bin`.
    pub async fn start(system: System, repo: &Path, edge_bin: &Path) -> Result<Running, LoadError> {
        if system == System::Herald {
            return Self::start_herald(repo, edge_bin).await;
        }
        let name = match system {
            System::Nchan => "nchan",
            System::Pushpin => "pushpin",
            _ => "nats-ws",
        };
        let port = free_port_run(3)?;
        let workdir = std::env::temp_dir().join(format!(
            "herald-compare-{name}-{:08x}",
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&workdir)?;
        let script = repo.join("bench/peers/peers.sh");
        let out = Command::new(&script)
            .args(["start", name, &port.to_string()])
            .arg(&workdir)
            .output()?;
        if !out.status.success() {
            return Err(LoadError::Setup(format!(
                "{} start {name}: {}{}",
                script.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let pids = read_pids(&workdir.join("pids"))?;
        let addr = ([127, 0, 0, 1], port).into();
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(16)
            .build()
            .map_err(|e| LoadError::Setup(format!("http client: {e}")))?;
        let publish = match system {
            System::Nchan => Publish::NchanHttp {
                url: format!("http://127.0.0.1:{port}/pub/{{channel}}"),
                http,
            },
            System::Pushpin => Publish::Grip {
                url: format!("http://127.0.0.1:{}/publish/", port + 1),
                http,
            },
            _ => Publish::Nats(
                async_nats::connect(format!("nats://127.0.0.1:{}", port + 1))
                    .await
                    .map_err(|e| LoadError::Nats(format!("connect to the peer: {e}")))?,
            ),
        };
        Ok(Running {
            system,
            addr,
            pids,
            broker_pid: None,
            herald: None,
            workdir: Some(workdir),
            repo: repo.to_owned(),
            publish,
        })
    }

    async fn start_herald(repo: &Path, edge_bin: &Path) -> Result<Running, LoadError> {
        let args = TargetArgs {
            spawn: true,
            edge_bin: edge_bin.to_owned(),
            edge_env: Vec::new(),
            edge: String::new(),
            nats: String::new(),
            jwt_secret: None,
            edge_pid: None,
            nats_pid: None,
            edge_nodes: 1,
            edges: Vec::new(),
            edge_pids: Vec::new(),
        };
        let target = Target::prepare(&args, &[]).await?;
        crate::session::wait_for_metrics(&crate::probe::Probe::new(&target.edge_url)?).await?;
        let client = async_nats::connect(&target.nats_url)
            .await
            .map_err(|e| LoadError::Nats(format!("connect {}: {e}", target.nats_url)))?;
        Ok(Running {
            system: System::Herald,
            addr: target.edge_addr,
            pids: target.edge_pids(),
            broker_pid: target.nats_pid,
            publish: Publish::Herald {
                js: async_nats::jetstream::new(client),
                secret: target.jwt_secret.clone(),
                run: format!("{:08x}", rand::random::<u32>()),
            },
            herald: Some(target),
            workdir: None,
            repo: repo.to_owned(),
        })
    }

    /// How a subscriber of `channel` connects over `transport` (which the
    /// system serves: [`System::serves`]).
    pub fn subscription(&self, channel: &str, transport: Transport) -> Subscription {
        let addr = self.addr;
        match (&self.publish, transport) {
            (Publish::Herald { secret, .. }, _) => {
                // One user per subscriber: the edge caps connections per
                // user (HERALD_MAX_CONNECTIONS_PER_USER).
                let token = TokenBuilder::new(secret)
                    .org(channel)
                    .sub(&format!("bench-user-{:08x}", rand::random::<u32>()))
                    .build();
                match transport {
                    Transport::WebSocket => Subscription::WebSocket {
                        url: format!("ws://{addr}/v2/realtime/stream?org={channel}"),
                        protocol: Some("herald.v1.json"),
                        bearer: Some(token),
                        hello: Some(Hello::Text(format!(
                            r#"{{"type":"hello","version":1,"services":["{SERVICE}"]}}"#
                        ))),
                    },
                    Transport::Sse => Subscription::Sse {
                        path: format!("/v2/realtime/sse?org={channel}&services={SERVICE}"),
                        bearer: Some(token),
                        last_event_id: None,
                    },
                    Transport::LongPoll => Subscription::LongPoll {
                        path: format!(
                            "/v1/realtime/poll?org={channel}&services={SERVICE}&timeout=55"
                        ),
                        bearer: Some(token),
                    },
                }
            }
            (Publish::Nats(_), _) => Subscription::WebSocket {
                url: format!("ws://{addr}/"),
                protocol: None,
                bearer: None,
                hello: Some(Hello::Nats(format!(
                    "CONNECT {{\"verbose\":false,\"pedantic\":false,\"protocol\":1}}\r\nSUB bench.{channel} 1\r\nPING\r\n"
                ))),
            },
            (_, Transport::Sse) => Subscription::Sse {
                path: format!("/sub/{channel}"),
                bearer: None,
                last_event_id: None,
            },
            (_, Transport::LongPoll) => Subscription::LongPoll {
                path: format!("/sub/{channel}"),
                bearer: None,
            },
            (_, Transport::WebSocket) => Subscription::WebSocket {
                url: format!("ws://{addr}/sub/{channel}"),
                protocol: None,
                bearer: None,
                hello: None,
            },
        }
    }

    /// Publishes one event carrying `marker` to each of `channels`; returns
    /// how many the system took (for Herald: acked by JetStream).
    pub async fn publish(&self, channels: &[&str], marker: &str) -> usize {
        match &self.publish {
            Publish::Herald { js, run, .. } => {
                let mut acks = FuturesUnordered::new();
                for channel in channels {
                    let id = format!("{run}-{}", rand::random::<u64>());
                    let mut headers = async_nats::HeaderMap::new();
                    headers.insert("Nats-Msg-Id", format!("{channel}:{SERVICE}:{id}").as_str());
                    let body = format!(
                        r#"{{"eventType":"bench.tick","eventId":"{id}","payload":{{"m":"{marker}"}}}}"#
                    );
                    let subject = format!("herald.events.{channel}.{SERVICE}.p1");
                    if let Ok(ack) = js.publish_with_headers(subject, headers, body.into()).await {
                        acks.push(std::future::IntoFuture::into_future(ack));
                    }
                }
                let mut taken = 0;
                while let Some(ack) = acks.next().await {
                    taken += usize::from(ack.is_ok());
                }
                taken
            }
            Publish::NchanHttp { url, http } => {
                let posts = channels.iter().map(|channel| {
                    http.post(url.replace("{channel}", channel))
                        .body(marker.to_owned())
                        .send()
                });
                futures::future::join_all(posts)
                    .await
                    .into_iter()
                    .filter(|r| r.as_ref().is_ok_and(|r| r.status().is_success()))
                    .count()
            }
            Publish::Grip { url, http } => {
                let items: Vec<serde_json::Value> = channels
                    .iter()
                    .map(|channel| {
                        serde_json::json!({
                            "channel": channel,
                            "formats": {
                                "ws-message": {"content": marker},
                                "http-stream": {"content": format!("data: {marker}\n\n")},
                                "http-response": {"body": marker},
                            }
                        })
                    })
                    .collect();
                let ok = http
                    .post(url)
                    .json(&serde_json::json!({ "items": items }))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ok {
                    channels.len()
                } else {
                    0
                }
            }
            Publish::Nats(client) => {
                let mut taken = 0;
                for channel in channels {
                    if client
                        .publish(format!("bench.{channel}"), marker.to_owned().into())
                        .await
                        .is_ok()
                    {
                        taken += 1;
                    }
                }
                let _ = client.flush().await;
                taken
            }
        }
    }

    /// Stops every process (by PID: `peers.sh stop`, or the Herald target).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        drop(self.herald.take());
        if let Some(workdir) = self.workdir.take() {
            let _ = Command::new(self.repo.join("bench/peers/peers.sh"))
                .arg("stop")
                .arg(&workdir)
                .output();
            let _ = std::fs::remove_dir_all(&workdir);
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The PIDs of `peers.sh`'s `pids` file (`PID START NAME [PARENT]`).
fn read_pids(path: &Path) -> Result<Vec<u32>, LoadError> {
    let text = std::fs::read_to_string(path)?;
    let pids: Vec<u32> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    if pids.is_empty() {
        return Err(LoadError::Setup(format!(
            "no process in {}",
            path.display()
        )));
    }
    Ok(pids)
}

/// A port `p` such that `p..p + n` are free now.
fn free_port_run(n: u16) -> Result<u16, LoadError> {
    for _ in 0..50 {
        let first = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        if first.checked_add(n).is_none() {
            continue;
        }
        let free = (0..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", first + i)).is_ok());
        if free {
            return Ok(first);
        }
    }
    Err(LoadError::Setup("no run of free ports found".into()))
}
