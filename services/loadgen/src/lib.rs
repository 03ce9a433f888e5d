//! Herald's benchmark load generator.
//!
//! One command reproduces a benchmark: with `--spawn` it starts its own
//! nats-server and `herald-edge` node(s), otherwise it drives edges that
//! already run. The long-poll scenarios hold N long-poll chains over M orgs;
//! the stream scenarios hold N WebSocket (and optionally SSE and long-poll)
//! clients. All publish through JetStream and check every delivery against
//! the publish acks.
//!
//! - [`cli`]: the subcommands `longpoll`, `ingest`, `stream`, `fanout`,
//!   `resume` and their flags.
//! - [`target`]: the edges and NATS under test, spawned or external.
//! - [`session`]: what both scenarios share: opening the polls, memory per
//!   held poll, waiting for pollers to catch up, collecting the results.
//! - [`poller`]: one long-poll chain on its own HTTP/1 connection.
//! - [`publish`]: paced or flat-out JetStream publishing, acks per org.
//! - [`verify`]: lost, duplicated and out-of-order deliveries; latency.
//! - [`probe`], [`procfs`]: the edge's metrics endpoint, and process memory,
//!   CPU time and machine facts from `/proc`.
//! - [`longpoll`], [`ingest`]: the two long-poll scenarios.
//! - [`fleet`]: stream clients, one task per WebSocket or SSE connection,
//!   reconnecting with their cursor; [`streaming`]: what the stream
//!   scenarios share (limits, planning, opening, memory per connection).
//! - [`stream`], [`fanout`], [`resume`]: the three stream scenarios.
//! - [`outcome`]: the figures and goals both scenarios report alike.
//! - [`report`]: the printed summary and the Markdown results section.
//! - Scale-out on a 3-server JetStream cluster: [`cluster`] (the cluster
//!   and its edges), [`natsmon`] (subscriptions per server), [`routing`]
//!   (org-affine or round-robin placement), [`standin`] (per-partition
//!   interest, measured by a stand-in), [`phase`] (one checked publishing
//!   phase), [`capacity`] (the capacity model's arithmetic), and the
//!   scenarios [`partitions`], [`affinity`], [`simulate`].
//! - [`rooms`]: N members of one chat room over two edges (contract
//!   section 6): join with history, message and typing fan-out, presence.
//! - Side by side with the peers (`bench/peers`): [`peer`] (each system,
//!   started, subscribed to and published to), [`subscriber`] (one client
//!   for all of them) and the scenario [`compare`].
//! - [`uploads`]: tus uploads (contract section 7): throughput, edge
//!   memory, resume on another edge after a kill.

pub mod affinity;
pub mod capacity;
pub mod cli;
pub mod cluster;
pub mod compare;
pub mod error;
pub mod fanout;
pub mod fleet;
pub mod ingest;
pub mod longpoll;
pub mod natsmon;
pub mod outcome;
pub mod partitions;
pub mod peer;
pub mod phase;
pub mod poller;
pub mod probe;
pub mod procfs;
pub mod publish;
pub mod report;
pub mod resume;
pub mod rooms;
pub mod routing;
pub mod session;
pub mod simulate;
pub mod standin;
pub mod stream;
pub mod streaming;
pub mod subscriber;
pub mod target;
pub mod uploads;
pub mod verify;

pub use error::LoadError;

/// Runs the subcommand of `cli`, prints its summary and, when asked,
/// appends it to the Markdown file.
pub async fn run(cli: cli::Cli) -> Result<(), LoadError> {
    let command_line = report::command_line();
    let (report, markdown) = match cli.command {
        cli::Command::Longpoll(args) => {
            let markdown = args.output.markdown.clone();
            (longpoll::run(args).await?, markdown)
        }
        cli::Command::Ingest(args) => {
            let markdown = args.output.markdown.clone();
            (ingest::run(args).await?, markdown)
        }
        cli::Command::Stream(args) => {
            let markdown = args.output.markdown.clone();
            (stream::run(args).await?, markdown)
        }
        cli::Command::Fanout(args) => {
            let markdown = args.output.markdown.clone();
            (fanout::run(args).await?, markdown)
        }
        cli::Command::Resume(args) => {
            let markdown = args.output.markdown.clone();
            (resume::run(args).await?, markdown)
        }
        cli::Command::Partitions(args) => {
            let markdown = args.output.markdown.clone();
            (partitions::run(args).await?, markdown)
        }
        cli::Command::Affinity(args) => {
            let markdown = args.output.markdown.clone();
            (affinity::run(args).await?, markdown)
        }
        cli::Command::Simulate(args) => {
            let markdown = args.output.markdown.clone();
            (simulate::run(args).await?, markdown)
        }
        cli::Command::Rooms(args) => {
            let markdown = args.output.markdown.clone();
            (rooms::run(args).await?, markdown)
        }
        cli::Command::Compare(args) => {
            let markdown = args.output.markdown.clone();
            (compare::run(args).await?, markdown)
        }
        cli::Command::Uploads(args) => {
            let markdown = args.output.markdown.clone();
            (uploads::run(args).await?, markdown)
        }
    };
    let report = report.with_command(command_line);
    print!("{}", report.text());
    if let Some(path) = markdown {
        report.append_markdown(&path)?;
        println!("results appended to {}", path.display());
    }
    Ok(())
}
