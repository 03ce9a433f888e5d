//! The command line: `herald-loadgen longpoll …`, `ingest …`, the
//! stream scenarios `stream …`, `fanout …` and `resume …`, and the
//! scale-out scenarios on a NATS cluster `partitions …`, `affinity …` and
//! `simulate …`, the chat-room scenario `rooms …` and the tus upload
//! scenario `uploads …`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Benchmarks a Herald edge node.
#[derive(Debug, Parser)]
#[command(
    name = "herald-loadgen",
    version,
    about = "Herald benchmark load generator"
)]
pub struct Cli {
    /// The benchmark to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The benchmarks.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Hold N long-polls over M orgs, publish at a fixed rate, measure wake
    /// latency, completeness, ingestion and edge memory per held poll.
    Longpoll(LongpollArgs),
    /// Hold long-polls, publish as fast as possible, measure the rate the
    /// edge ingests at and whether every poller catches up.
    Ingest(IngestArgs),
    /// Hold N WebSocket (optionally some SSE and long-poll) clients over M
    /// orgs on one or more edges, publish at a fixed rate; publish-to-receive
    /// latency, exactly-once in-order delivery, connect time and edge memory
    /// per idle connection.
    Stream(StreamArgs),
    /// K WebSocket connections in one org; publish at increasing rates and
    /// find the highest fan-out rate every connection keeps up with, without loss.
    Fanout(FanoutArgs),
    /// Clients on edge A, publishing throughout, `kill -9` edge A mid-run:
    /// clients resume on edge B with their last seq; lost and duplicated
    /// events per client and time to recover.
    Resume(ResumeArgs),
    /// On a 3-server JetStream cluster, K = 1 then K = 4 partition streams
    /// in the same run: flat-out publish throughput and publish-to-deliver
    /// latency through an edge, side by side with their ratio.
    Partitions(PartitionsArgs),
    /// 3 edges on a 3-server cluster, clients over many orgs placed
    /// org-affine then round-robin: events ingested per edge, subscriptions
    /// per NATS server, and a stand-in for per-partition interest.
    Affinity(AffinityArgs),
    /// The scaled capacity simulation (many orgs, 3 edges, 3 servers):
    /// memory per connection, CPU per delivery, subscriptions per server,
    /// deliveries/s, against what the capacity model predicts.
    Simulate(SimulateArgs),
    /// N members of one room of one org over two edges, each its own user
    /// on a WebSocket: join with history, message and typing latency to
    /// every member, exactly-once delivery, close → offline presence at
    /// the other edge, edge memory per joined member.
    Rooms(RoomsArgs),
    /// tus uploads through one edge: one large file streamed in one PATCH
    /// and in checksummed chunks, concurrent uploads, edge memory during
    /// them, a direct object-store write for comparison, and the time to
    /// resume on another edge after `kill -9` of the one uploading.
    Uploads(UploadsArgs),
    /// Herald beside Nchan, Pushpin and NATS over WebSocket (bench/peers),
    /// one load client, each system fresh per scenario: memory per idle
    /// WebSocket and SSE connection; publish → receive latency, deliveries
    /// and server CPU per delivery at a moderate rate.
    Compare(CompareArgs),
}

/// Which edge and NATS to use.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// Start a private nats-server (`HERALD_NATS_SERVER`, `.tools/bin` or
    /// `PATH`) and a `herald-edge` from `--edge-bin`; `--edge`, `--nats` and
    /// `--edge-pid` are then ignored.
    #[arg(long)]
    pub spawn: bool,

    /// The `herald-edge` binary `--spawn` runs (build it with
    /// `cargo build --release -p herald-edge`).
    #[arg(long, default_value = "target/release/herald-edge")]
    pub edge_bin: PathBuf,

    /// Extra `KEY=VALUE` environment for the spawned edge (repeatable).
    #[arg(long = "edge-env", value_name = "KEY=VALUE")]
    pub edge_env: Vec<String>,

    /// Base URL of a running edge node.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub edge: String,

    /// NATS URL the events are published to.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    pub nats: String,

    /// HS256 secret the edge verifies tokens with (generated with `--spawn`).
    #[arg(long, env = "HERALD_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Process id of a running edge, to read its memory and CPU time.
    #[arg(long)]
    pub edge_pid: Option<u32>,

    /// Process id of a running nats-server, to read its CPU time.
    #[arg(long)]
    pub nats_pid: Option<u32>,

    /// Edge nodes `--spawn` starts, all on the one nats-server (stream
    /// scenarios; `longpoll` and `ingest` use exactly one).
    #[arg(long, default_value_t = 1)]
    pub edge_nodes: usize,

    /// Base URLs of running edge nodes, comma-separated (stream scenarios;
    /// replaces `--edge`).
    #[arg(long, value_delimiter = ',')]
    pub edges: Vec<String>,

    /// Process ids of the `--edges`, in the same order (memory and CPU
    /// readings; `resume` kills the first with SIGKILL).
    #[arg(long, value_delimiter = ',')]
    pub edge_pids: Vec<u32>,
}

/// How many polls, over how many orgs and services.
#[derive(Debug, Clone, Args)]
pub struct PollArgs {
    /// Concurrent long-poll chains, each on its own connection.
    #[arg(long, default_value_t = 10_000)]
    pub polls: usize,

    /// Orgs the polls are spread over (poll i belongs to org i mod M).
    #[arg(long, default_value_t = 2_000)]
    pub orgs: usize,

    /// Services events are published to; every poll subscribes to all of them.
    #[arg(long, value_delimiter = ',', default_value = "finance,tasks,guest")]
    pub services: Vec<String>,

    /// Hold each poll asks for, in seconds (`timeout=`).
    #[arg(long, default_value_t = 25)]
    pub poll_timeout: u64,

    /// Polls being opened at the same time while ramping up.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,

    /// Prefix of the org ids (`<prefix>-o<i>`) and user ids.
    #[arg(long, default_value = "load")]
    pub prefix: String,
}

/// Where results go besides standard output.
#[derive(Debug, Clone, Args)]
pub struct OutputArgs {
    /// Append a results section to this Markdown file.
    #[arg(long)]
    pub markdown: Option<PathBuf>,

    /// Title of the results section.
    #[arg(long)]
    pub title: Option<String>,

    /// Copy the logs of a spawned edge and nats-server into this directory.
    #[arg(long)]
    pub logs: Option<PathBuf>,
}

/// `herald-loadgen longpoll`.
#[derive(Debug, Clone, Args)]
pub struct LongpollArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub target: TargetArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub polls: PollArgs,

    /// Events published per second.
    #[arg(long, default_value_t = 500.0)]
    pub rate: f64,

    /// Seconds of publishing.
    #[arg(long, default_value_t = 60)]
    pub duration: u64,

    /// Publishes awaiting their ack at most.
    #[arg(long, default_value_t = 1024)]
    pub in_flight: usize,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
}

/// `herald-loadgen ingest`.
#[derive(Debug, Clone, Args)]
pub struct IngestArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub target: TargetArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub polls: PollArgs,

    /// Events to publish, as fast as NATS acknowledges them.
    #[arg(long, default_value_t = 200_000)]
    pub events: u64,

    /// Publishes awaiting their ack at most.
    #[arg(long, default_value_t = 4096)]
    pub in_flight: usize,

    /// Seconds the pollers get to receive every event after the last ack.
    #[arg(long, default_value_t = 60)]
    pub catch_up_timeout: u64,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
}

/// Stream clients: how many, over how many orgs, over which transports.
#[derive(Debug, Clone, Args)]
pub struct StreamClientArgs {
    /// Concurrent clients, each with its own connection and user.
    #[arg(long, default_value_t = 20_000)]
    pub clients: usize,

    /// Orgs the clients are spread over (client i belongs to org i mod M).
    #[arg(long, default_value_t = 4_000)]
    pub orgs: usize,

    /// Share of the clients that use SSE instead of WebSocket (0–1).
    #[arg(long, default_value_t = 0.0)]
    pub sse_share: f64,

    /// Share of the clients that long-poll instead of WebSocket (0–1).
    #[arg(long, default_value_t = 0.0)]
    pub longpoll_share: f64,

    /// Share of the clients that use WebSocket with MessagePack
    /// (`herald.v1.msgpack`) instead of JSON (0–1).
    #[arg(long, default_value_t = 0.0)]
    pub msgpack_share: f64,

    /// Services events are published to; every client subscribes to all of them.
    #[arg(long, value_delimiter = ',', default_value = "finance,tasks,guest")]
    pub services: Vec<String>,

    /// Clients connecting (up to their ack) at the same time while ramping up.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,

    /// Prefix of the org ids (`<prefix>-o<i>`) and user ids (`<prefix>-u<i>`).
    #[arg(long, default_value = "load")]
    pub prefix: String,
}

/// `herald-loadgen stream`.
#[derive(Debug, Clone, Args)]
pub struct StreamArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub target: TargetArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub clients: StreamClientArgs,

    /// Events published per second.
    #[arg(long, default_value_t = 2_000.0)]
    pub rate: f64,

    /// Seconds of publishing.
    #[arg(long, default_value_t = 60)]
    pub duration: u64,

    /// Publishes awaiting their ack at most.
    #[arg(long, default_value_t = 1024)]
    pub in_flight: usize,

    /// Seconds the clients get to receive every event after the last ack.
    #[arg(long, default_value_t = 30)]
    pub catch_up_timeout: u64,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
}

/// `herald-loadgen fanout`.
#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub target: TargetArgs,

    /// WebSocket connections, all in one org, each its own user.
    #[arg(long, default_value_t = 5_000)]
    pub clients: usize,

    /// Publish rates to try, events/s, in increasing order; stops at the
    /// first rate not sustained.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "5,10,20,40,60,80,100,150,200,300,400"
    )]
    pub rates: Vec<f64>,

    /// Seconds of publishing per rate.
    #[arg(long, default_value_t = 10)]
    pub step_duration: u64,

    /// A rate is sustained when every connection has every event within
    /// this many seconds after the last publish ack (and nothing was lost,
    /// repeated, reordered, and no connection dropped).
    #[arg(long, default_value_t = 2.0)]
    pub grace: f64,

    /// After the first rate not sustained, rates tried between it and the
    /// last sustained one (bisection).
    #[arg(long, default_value_t = 2)]
    pub refine: u32,

    /// Longest wait for every connection to catch up between rates.
    #[arg(long, default_value_t = 60)]
    pub drain_timeout: u64,

    /// Services events are published to; every client subscribes to all of them.
    #[arg(long, value_delimiter = ',', default_value = "finance,tasks,guest")]
    pub services: Vec<String>,

    /// Clients connecting (up to their ack) at the same time while ramping up.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,

    /// Prefix of the org id (`<prefix>-fanout`) and user ids.
    #[arg(long, default_value = "load")]
    pub prefix: String,

    /// Publishes awaiting their ack at most.
    #[arg(long, default_value_t = 1024)]
    pub in_flight: usize,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
}

/// `herald-loadgen resume`.
#[derive(Debug, Clone, Args)]
pub struct ResumeArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub target: TargetArgs,

    /// WebSocket clients, all connected to the first edge.
    #[arg(long, default_value_t = 2_000)]
    pub clients: usize,

    /// Orgs the clients are spread over (client i belongs to org i mod M).
    #[arg(long, default_value_t = 400)]
    pub orgs: usize,

    /// Events published per second, before, during and after the kill.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,

    /// Seconds of publishing.
    #[arg(long, default_value_t = 40)]
    pub duration: u64,

    /// Seconds after publishing starts at which the first edge is killed.
    #[arg(long, default_value_t = 15.0)]
    pub kill_after: f64,

    /// Publishes awaiting their ack at most.
    #[arg(long, default_value_t = 1024)]
    pub in_flight: usize,

    /// Seconds the clients get to receive every event after the last ack.
    #[arg(long, default_value_t = 60)]
    pub catch_up_timeout: u64,

    /// Services events are published to; every client subscribes to all of them.
    #[arg(long, value_delimiter = ',', default_value = "finance,tasks,guest")]
    pub services: Vec<String>,

    /// Clients connecting (up to their ack) at the same time while ramping up.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,

    /// Prefix of the org ids and user ids.
    #[arg(long, default_value = "load")]
    pub prefix: String,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
}

/// What the scale-out scenarios share: the edge binary and the clients.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// The `herald-edge` binary the scenario runs on the cluster it starts
    /// (build it with `cargo build --release -p herald-edge`).
    #[arg(long, default_value = "target/release/herald-edge")]
    pub edge_bin: PathBuf,

    /// Extra `KEY=VALUE` environment for the edges (repeatable).
    #[arg(long = "edge-env", value_name = "KEY=VALUE")]
    pub edge_env: Vec<String>,

    /// Services events are published to; every client subscribes to all of them.
    #[arg(long, value_delimiter = ',', default_value = "finance,tasks,guest")]
    pub services: Vec<String>,

    /// Clients connecting (up to their ack) at the same time while ramping up.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,

    /// Prefix of the org ids (`<prefix>-o<i>`) and user ids.
    #[arg(long, default_value = "load")]
    pub prefix: String,

    /// Seconds the clients get to receive every event after the last ack.
    #[arg(long, default_value_t = 60)]
    pub catch_up_timeout: u64,
}

/// `herald-loadgen partitions`.
#[derive(Debug, Clone, Args)]
pub struct PartitionsArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub cluster: ClusterArgs,

    /// Partition counts to compare, each on a fresh cluster, in this order.
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    pub partitions: Vec<u32>,

    /// WebSocket clients on the one edge.
    #[arg(long, default_value_t = 300)]
    pub clients: usize,

    /// Orgs the clients (and events) are spread over.
    #[arg(long, default_value_t = 100)]
    pub orgs: usize,

    /// Events of the flat-out throughput phase.
    #[arg(long, default_value_t = 20_000)]
    pub events: u64,

    /// Publishes awaiting their ack at most, in the flat-out phase.
    #[arg(long, default_value_t = 256)]
    pub in_flight: usize,

    /// Events/s of the latency phase.
    #[arg(long, default_value_t = 500.0)]
    pub rate: f64,

    /// Seconds of the latency phase.
    #[arg(long, default_value_t = 20)]
    pub duration: u64,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
}

/// `herald-loadgen affinity`.
#[derive(Debug, Clone, Args)]
pub struct AffinityArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub cluster: ClusterArgs,

    /// Partition streams.
    #[arg(long, default_value_t = 4)]
    pub partitions: u32,

    /// Edges (edge i on server i mod 3).
    #[arg(long, default_value_t = 3)]
    pub edges: usize,

    /// WebSocket clients.
    #[arg(long, default_value_t = 3_000)]
    pub clients: usize,

    /// Orgs the clients are spread over (client i in org i mod M).
    #[arg(long, default_value_t = 600)]
    pub orgs: usize,

    /// Events/s published to random orgs.
    #[arg(long, default_value_t = 300.0)]
    pub rate: f64,

    /// Seconds of publishing, per routing.
    #[arg(long, default_value_t = 30)]
    pub duration: u64,

    /// Seconds with every client connected and nothing published, per
    /// routing, to measure idle CPU (pings, audits).
    #[arg(long, default_value_t = 15)]
    pub idle: u64,

    /// Publishes awaiting their ack at most.
    #[arg(long, default_value_t = 1024)]
    pub in_flight: usize,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
}

/// `herald-loadgen simulate`. The model inputs default to the values
/// measured on the benchmark machine (docs/capacity.md, "Inputs").
#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub cluster: ClusterArgs,

    /// Partition streams.
    #[arg(long, default_value_t = 4)]
    pub partitions: u32,

    /// Edges (edge i on server i mod 3), clients placed org-affine.
    #[arg(long, default_value_t = 3)]
    pub edges: usize,

    /// Orgs events are published to.
    #[arg(long, default_value_t = 20_000)]
    pub orgs: usize,

    /// Of those, orgs with connected users (the first ones).
    #[arg(long, default_value_t = 5_000)]
    pub active_orgs: usize,

    /// WebSocket clients over the active orgs.
    #[arg(long, default_value_t = 15_000)]
    pub clients: usize,

    /// Users per org the model assumes (5 properties × 5 users).
    #[arg(long, default_value_t = 25.0)]
    pub users_per_org: f64,

    /// Events/s published to random orgs (of all `--orgs`).
    #[arg(long, default_value_t = 1_000.0)]
    pub rate: f64,

    /// Seconds of publishing.
    #[arg(long, default_value_t = 60)]
    pub duration: u64,

    /// Publishes awaiting their ack at most.
    #[arg(long, default_value_t = 1024)]
    pub in_flight: usize,

    /// Model input: edge memory per connection, KiB (measured by `affinity` or `stream`).
    #[arg(long, default_value_t = 15.5)]
    pub kib_per_connection: f64,

    /// Model input: edge memory per org held, KiB (measured by `affinity`).
    #[arg(long, default_value_t = 15.6)]
    pub kib_per_org: f64,

    /// Model input: edge CPU per delivery, µs (measured by `affinity`).
    #[arg(long, default_value_t = 22.5)]
    pub cpu_us_per_delivery: f64,

    /// Model input: edge CPU per ingested event, µs (measured by `affinity`).
    #[arg(long, default_value_t = 95.2)]
    pub cpu_us_per_ingest: f64,

    /// Model input: NATS CPU per stored event, whole cluster, µs (measured by `partitions`).
    #[arg(long, default_value_t = 460.0)]
    pub nats_cpu_us_per_event: f64,

    /// Model input: edge CPU per connection per second, idle, µs (measured by `affinity`).
    #[arg(long, default_value_t = 1.01)]
    pub cpu_us_per_connection_s: f64,

    /// Model input: edge CPU per org held per second, µs: its audits under
    /// load (`affinity` with and without `HERALD_AUDIT_INTERVAL=1h`).
    #[arg(long, default_value_t = 7.2)]
    pub cpu_us_per_org_s: f64,

    /// Model input: NATS CPU per org held on an edge per second, µs: the
    /// org's audits under load (as `--cpu-us-per-org-s`).
    #[arg(long, default_value_t = 26.0)]
    pub nats_cpu_us_per_org_s: f64,

    /// Model input: NATS CPU of the idle cluster, cores (measured by `partitions`).
    #[arg(long, default_value_t = 0.014)]
    pub nats_idle_cores: f64,

    /// Model input: events/s one partition stream takes (measured by `partitions`).
    #[arg(long, default_value_t = 28_130.0)]
    pub stream_events_s: f64,

    /// Orgs of the full-size plan printed beside the simulation (the
    /// simulation's ratios scaled up).
    #[arg(long, default_value_t = 1_000_000.0)]
    pub model_orgs: f64,

    /// Share of a machine's cores and memory the full-size plan may use.
    #[arg(long, default_value_t = 0.5)]
    pub utilisation: f64,

    /// Edge machine of the plan: cores, memory GiB, price per hour.
    #[arg(long, value_delimiter = ',', default_value = "4,16,0.20")]
    pub edge_machine: Vec<f64>,

    /// NATS server machine of the plan: cores, memory GiB, price per hour.
    #[arg(long, value_delimiter = ',', default_value = "8,32,0.50")]
    pub nats_machine: Vec<f64>,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
}

/// `herald-loadgen rooms`.
#[derive(Debug, Clone, Args)]
pub struct RoomsArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub target: TargetArgs,

    /// Room sizes to run, each on a fresh target (with `--spawn`), in order.
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    pub members: Vec<usize>,

    /// Messages posted to the room over HTTP before the members connect.
    #[arg(long, default_value_t = 60)]
    pub prefill: usize,

    /// History each member asks for when it joins.
    #[arg(long, default_value_t = 50)]
    pub history: u32,

    /// Joins in flight at the same time.
    #[arg(long, default_value_t = 32)]
    pub join_concurrency: usize,

    /// Members that join again one after the other once the room is quiet
    /// (join → `joined` without the other joins' load).
    #[arg(long, default_value_t = 20)]
    pub rejoins: usize,

    /// Members that send messages (members 0.., alternating edges).
    #[arg(long, default_value_t = 4)]
    pub senders: usize,

    /// Messages per second, all senders together.
    #[arg(long, default_value_t = 5.0)]
    pub rate: f64,

    /// Seconds of messages.
    #[arg(long, default_value_t = 20)]
    pub duration: u64,

    /// Members that send typing frames (after the senders).
    #[arg(long, default_value_t = 6)]
    pub typers: usize,

    /// Typing frames per typer, 2.5 s apart.
    #[arg(long, default_value_t = 3)]
    pub typing_rounds: usize,

    /// Members of the first edge whose connection is closed, 250 ms apart,
    /// to time the `offline` frame at the members of the other edge(s).
    #[arg(long, default_value_t = 20)]
    pub closes: usize,

    /// Services of each member's `hello`.
    #[arg(long, value_delimiter = ',', default_value = "tasks")]
    pub services: Vec<String>,

    /// Members connecting (up to their ack) at the same time.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,

    /// Prefix of the org id and user ids.
    #[arg(long, default_value = "load")]
    pub prefix: String,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
}

/// `herald-loadgen uploads`.
#[derive(Debug, Clone, Args)]
pub struct UploadsArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub target: TargetArgs,

    /// Size of the single large upload, MiB (at most the edge's
    /// `HERALD_UPLOAD_MAX_BYTES`).
    #[arg(long, default_value_t = 100)]
    pub size_mib: u64,

    /// Chunk of the chunked uploads (one checksummed PATCH each), KiB; the
    /// SDK's default.
    #[arg(long, default_value_t = 64)]
    pub chunk_kib: usize,

    /// Uploads at the same time in the concurrent phase.
    #[arg(long, default_value_t = 20)]
    pub concurrent: usize,

    /// Size of each concurrent upload, MiB.
    #[arg(long, default_value_t = 5)]
    pub each_mib: u64,

    /// Size of the upload of the resume phase, MiB: it is streamed to edge
    /// 1, which is killed part-way, then continued on the next edge, and so
    /// on (one kill per edge after the first; needs `--edge-nodes 2` or more).
    #[arg(long, default_value_t = 32)]
    pub resume_mib: u64,

    /// Base URL of a peer tus server (`http://host:port`) that serves
    /// tus at `/v2/uploads` and a finished file at `<upload>/content`
    /// (`bench/peers/tus-server`): the throughput phases run on it too, in
    /// the same run, and are reported beside Herald's.
    #[arg(long)]
    pub peer_tus_url: Option<String>,

    /// Process id of the peer tus server (memory and CPU readings).
    #[arg(long)]
    pub peer_tus_pid: Option<u32>,

    /// Name of the peer in the report.
    #[arg(long, default_value = "@tus/server")]
    pub peer_name: String,

    /// Prefix of the org id and user id.
    #[arg(long, default_value = "load")]
    pub prefix: String,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
}

/// `herald-loadgen compare`.
#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// Systems to run, in order: herald, nchan, pushpin, nats-ws.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "herald,nchan,pushpin,nats-ws"
    )]
    pub systems: Vec<String>,

    /// Herald's edge binary.
    #[arg(long, default_value = "target/release/herald-edge")]
    pub edge_bin: PathBuf,

    /// Scenarios to run, in this order: idle, latency, fanout, resume.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "idle,latency,fanout,resume"
    )]
    pub scenarios: Vec<String>,

    /// Subscribers of the idle-memory scenario.
    #[arg(long, default_value_t = 10_000)]
    pub idle_connections: usize,

    /// Channels (Herald: orgs) they spread over.
    #[arg(long, default_value_t = 2_000)]
    pub idle_channels: usize,

    /// WebSocket subscribers of the latency scenario.
    #[arg(long, default_value_t = 2_000)]
    pub latency_connections: usize,

    /// Channels they spread over; each event goes to one, in turn.
    #[arg(long, default_value_t = 400)]
    pub latency_channels: usize,

    /// Events per second of the latency scenario.
    #[arg(long, default_value_t = 500.0)]
    pub rate: f64,

    /// Seconds of publishing.
    #[arg(long, default_value_t = 30)]
    pub duration: u64,

    /// WebSocket subscribers of the one channel of the fan-out steps.
    #[arg(long, default_value_t = 2_000)]
    pub fanout_connections: usize,

    /// Events per second of each fan-out step, in order (each on a fresh
    /// system).
    #[arg(long, value_delimiter = ',', default_value = "5,25,100,400")]
    pub fanout_rates: Vec<f64>,

    /// Seconds of publishing of each fan-out step.
    #[arg(long, default_value_t = 10)]
    pub fanout_duration: u64,

    /// SSE subscribers that leave and come back in the resume scenario.
    #[arg(long, default_value_t = 20)]
    pub resume_subscribers: usize,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
}
