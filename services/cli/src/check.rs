//! `herald check`: is this deployment one the edges can serve from? One
//! line per check, `ok`, `warn` or `FAILED` with the reason; the command
//! fails when any check failed. Checks that need an earlier one (the
//! streams need the JetStream API, everything needs NATS) are skipped when
//! it failed.
//!
//! - NATS reachable, JetStream enabled for these credentials.
//! - The stream, or the K partition streams, exist with the subjects and
//!   the RePublish to `herald.live.>` that Herald creates them with
//!   ([`herald_publisher::stream`]).
//! - An event of each partition lands in its stream: the edge's probe
//!   ([`herald_publisher::probe`]), which stores nothing; with one
//!   partition, no stored event carries a partition token (servers that
//!   partition while the edges do not).
//! - Permissions: whether these credentials may publish to `herald.live.x`
//!   (a publisher must not: it could forge live messages).
//! - Each `--edges` URL answers `GET /readyz` with 200.

use std::time::Duration;

use async_nats::jetstream::stream::LastRawMessageErrorKind;
use async_nats::{Client, ConnectOptions, Event};
use clap::Args;
use herald_proto::subject::{EVENTS_PREFIX, LIVE_PREFIX};
use herald_proto::Partitions;
use herald_publisher::probe::{probe_partition, ProbeError, PROBE_TIMEOUT};
use herald_publisher::stream::{differences, partition_stream, republishes_live, StreamLimits};
use tokio::sync::mpsc;

use crate::connect::NatsArgs;
use crate::error::CliError;

/// Server errors kept while checking permissions; later ones are dropped
/// (the first few name every refusal a check causes).
const SERVER_ERRORS: usize = 64;
/// How long after a flush the permission check waits for refusals.
const REFUSAL_WAIT: Duration = Duration::from_millis(500);
/// Longest wait for an edge's `/readyz`.
const READYZ_TIMEOUT: Duration = Duration::from_secs(5);
/// Subject of the forged-live-message probe: under `herald.live` but not an
/// event subject, so no edge takes it for an event even when allowed.
const LIVE_PROBE: &str = "herald.live.x";
/// Config fields a deployment chooses (`HERALD_STREAM_REPLICAS`,
/// `HERALD_STREAM_MAX_AGE`, the body limit); differences there are not
/// reported.
const DEPLOYMENT_FIELDS: [&str; 3] = ["max_age", "num_replicas", "max_message_size"];

/// `herald check`.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Comma-separated edge base URLs whose `GET /readyz` must answer 200.
    #[arg(long, value_delimiter = ',')]
    pub edges: Vec<String>,
    /// NATS connection and stream layout.
    #[command(flatten)]
    pub nats: NatsArgs,
}

/// The verdict of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// As it should be.
    Ok,
    /// Works, but worth a look.
    Warn,
    /// Herald cannot work this way.
    Failed,
}

impl Status {
    /// The word printed at the start of the line.
    pub fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warn => "warn",
            Self::Failed => "FAILED",
        }
    }
}

/// Prints each result as it comes and counts the failures.
#[derive(Debug, Default)]
struct Report {
    failed: usize,
}

impl Report {
    fn record(&mut self, status: Status, name: &str, detail: impl AsRef<str>) {
        if status == Status::Failed {
            self.failed += 1;
        }
        println!("{:<6} {name}: {}", status.label(), detail.as_ref());
    }
}

/// Runs every check; [`CliError::ChecksFailed`] when any failed.
pub async fn run(args: CheckArgs) -> Result<(), CliError> {
    args.nats.validate()?;
    let partitions = args.nats.partitions()?;
    let mut report = Report::default();
    check_nats(&args.nats, partitions, &mut report).await;
    let http = reqwest::Client::builder()
        .timeout(READYZ_TIMEOUT)
        .build()
        .map_err(|e| CliError::Unavailable(format!("HTTP client: {e}")))?;
    for edge in &args.edges {
        check_edge(&http, edge, &mut report).await;
    }
    match report.failed {
        0 => Ok(()),
        n => Err(CliError::ChecksFailed(n)),
    }
}

/// NATS, JetStream, streams, mapping and permissions.
async fn check_nats(nats: &NatsArgs, partitions: Partitions, report: &mut Report) {
    let (tx, mut server_errors) = mpsc::channel::<String>(SERVER_ERRORS);
    let options = ConnectOptions::new().event_callback(move |event| {
        let tx = tx.clone();
        async move {
            if let Event::ServerError(e) = event {
                // Full: later refusals add nothing the first ones do not say.
                let _ = tx.try_send(e.to_string());
            }
        }
    });
    let client = match nats.connect(options).await {
        Ok(client) => {
            report.record(
                Status::Ok,
                "nats",
                format!("connected to {}", nats.shown_servers()),
            );
            client
        }
        Err(e) => {
            report.record(Status::Failed, "nats", e.to_string());
            return;
        }
    };
    let mut js = async_nats::jetstream::new(client.clone());
    js.set_timeout(PROBE_TIMEOUT);
    let account = js.query_account().await;
    let jetstream_api = account.is_ok();
    match account {
        Ok(account) => report.record(
            Status::Ok,
            "jetstream",
            format!("enabled ({} stream(s) in the account)", account.streams),
        ),
        Err(e) => report.record(
            Status::Failed,
            "jetstream",
            format!("the JetStream API is not available to these credentials: {e}"),
        ),
    }
    if jetstream_api {
        check_streams(&js, nats, partitions, report).await;
    }
    // Publishing needs no JetStream API: a publisher's credentials still
    // show where its events land.
    check_mapping(&js, nats, partitions, report).await;
    check_permissions(&client, &mut server_errors, report).await;
    let _ = client.drain().await;
}

/// Each stream exists, stores its partition's subjects and RePublishes them.
async fn check_streams(
    js: &async_nats::jetstream::Context,
    nats: &NatsArgs,
    partitions: Partitions,
    report: &mut Report,
) {
    let mut good = 0;
    for k in 0..partitions.count() {
        let want = partition_stream(&nats.stream, partitions, k, StreamLimits::default());
        let name = want.name.clone();
        let what = format!("stream {name}");
        let info = match js.get_stream(&name).await {
            Ok(mut stream) => match stream.info().await {
                Ok(info) => info.clone(),
                Err(e) => {
                    report.record(Status::Failed, &what, format!("cannot read its info: {e}"));
                    continue;
                }
            },
            Err(e) => {
                report.record(
                    Status::Failed,
                    &what,
                    format!("missing or unreadable ({e}); an edge creates it at start"),
                );
                continue;
            }
        };
        let have = &info.config;
        let mut failures = Vec::new();
        if !have.subjects.contains(&want.subjects[0]) {
            failures.push(format!(
                "stores {:?}, not {}",
                have.subjects, want.subjects[0]
            ));
        }
        if !republishes_live(have) {
            failures.push(format!(
                "does not RePublish to {LIVE_PREFIX}.> (found {:?}): the edges would see no live events",
                have.republish
            ));
        }
        if !failures.is_empty() {
            report.record(Status::Failed, &what, failures.join("; "));
            continue;
        }
        let notes: Vec<String> = differences(&want, have)
            .into_iter()
            .filter(|d| {
                !DEPLOYMENT_FIELDS
                    .iter()
                    .chain(&["subjects", "republish"])
                    .any(|f| d.starts_with(&format!("{f}:")))
            })
            .collect();
        if notes.is_empty() {
            good += 1;
        } else {
            report.record(
                Status::Warn,
                &what,
                format!("differs from what Herald creates: {}", notes.join("; ")),
            );
        }
    }
    if good > 0 {
        let names = if partitions.is_partitioned() {
            format!(
                "{} partition streams {}_0..{}_{}",
                good,
                nats.stream,
                nats.stream,
                partitions.count() - 1
            )
        } else {
            format!("stream {}", nats.stream)
        };
        let of_all = if good == partitions.count() {
            String::new()
        } else {
            format!(" ({good} of {})", partitions.count())
        };
        report.record(
            Status::Ok,
            "streams",
            format!(
                "{names}{of_all}: subjects and RePublish to {LIVE_PREFIX}.> as Herald creates them"
            ),
        );
    }
}

/// An event of each partition's orgs lands in that partition's stream.
async fn check_mapping(
    js: &async_nats::jetstream::Context,
    nats: &NatsArgs,
    partitions: Partitions,
    report: &mut Report,
) {
    let name = if partitions.is_partitioned() {
        "mapping"
    } else {
        "routing"
    };
    let advice = match partitions.mapping() {
        Some((from, to)) => format!(
            "; the NATS servers need the subject mapping {from} -> {to} (HERALD_PARTITIONS={})",
            partitions.count()
        ),
        None => String::new(),
    };
    let mut failed = false;
    for k in 0..partitions.count() {
        let stream = partitions.stream_name(&nats.stream, k);
        let why = match probe_partition(js, partitions, k, &stream).await {
            Ok(()) => continue,
            Err(ProbeError::NoStream(d)) => format!("no stream stores them ({d}){advice}"),
            Err(ProbeError::Elsewhere(d)) => format!("they do not land in {stream} ({d}){advice}"),
            Err(ProbeError::Unreachable(d)) => {
                format!(
                    "no answer to the probe ({d}); can these credentials publish herald.events.>?"
                )
            }
        };
        failed = true;
        report.record(
            Status::Failed,
            name,
            format!("events of partition {k}: {why}"),
        );
    }
    if !partitions.is_partitioned() {
        failed |= check_unpartitioned_subjects(js, nats, report).await;
    }
    if !failed {
        let detail = if partitions.is_partitioned() {
            format!(
                "an event of each of the {} partitions lands in its stream",
                partitions.count()
            )
        } else {
            format!("events land in {}", nats.stream)
        };
        report.record(Status::Ok, name, detail);
    }
}

/// With one partition, events must be stored without a partition token: a
/// server that maps them to partitions (its `HERALD_PARTITIONS` is another
/// K) still stores them in `herald.events.>`, the probe lands, and yet the
/// edges would reject every one. The last stored event with six tokens
/// gives it away. Returns whether the check failed.
async fn check_unpartitioned_subjects(
    js: &async_nats::jetstream::Context,
    nats: &NatsArgs,
    report: &mut Report,
) -> bool {
    let Ok(stream) = js.get_stream(&nats.stream).await else {
        // Reported by the stream check.
        return false;
    };
    let six_tokens = format!("{EVENTS_PREFIX}.*.*.*.*");
    match stream.get_last_raw_message_by_subject(&six_tokens).await {
        Ok(message) => {
            report.record(
                Status::Failed,
                "routing",
                format!(
                    "{} holds {} (seq {}): the NATS servers map events to partitions, but \
                     HERALD_PARTITIONS is 1; the edges reject such events",
                    nats.stream, message.subject, message.sequence
                ),
            );
            true
        }
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => false,
        Err(e) => {
            report.record(
                Status::Warn,
                "routing",
                format!("cannot look for partition tokens in {}: {e}", nats.stream),
            );
            false
        }
    }
}

/// Whether these credentials may forge live messages.
async fn check_permissions(
    client: &Client,
    server_errors: &mut mpsc::Receiver<String>,
    report: &mut Report,
) {
    while server_errors.try_recv().is_ok() {}
    let live = format!("{LIVE_PREFIX}.>");
    let subscription = client.subscribe(live.clone()).await;
    let published = client.publish(LIVE_PROBE, "".into()).await;
    if let Err(e) = published.map_err(|e| e.to_string()).and(
        tokio::time::timeout(REFUSAL_WAIT * 4, client.flush())
            .await
            .map_err(|_| "flush timed out".to_owned())
            .and_then(|r| r.map_err(|e| e.to_string())),
    ) {
        report.record(Status::Failed, "permissions", format!("cannot test: {e}"));
        return;
    }
    let mut refusals = Vec::new();
    let deadline = tokio::time::Instant::now() + REFUSAL_WAIT;
    while let Ok(Some(e)) = tokio::time::timeout_at(deadline, server_errors.recv()).await {
        refusals.push(e.to_lowercase());
    }
    if let Ok(mut s) = subscription {
        let _ = s.unsubscribe().await;
    }
    let refused = |op: &str, subject: &str| {
        refusals
            .iter()
            .any(|e| e.contains(&format!("permissions violation for {op}")) && e.contains(subject))
    };
    let publish_refused = refused("publish", LIVE_PROBE);
    let subscribe_refused = refused("subscription", &live);
    let (status, detail) = match (publish_refused, subscribe_refused) {
        (true, _) => (
            Status::Ok,
            format!("publishing to {LIVE_PROBE} is refused to these credentials"),
        ),
        (false, false) => (
            Status::Warn,
            format!(
                "these credentials may publish to {LIVE_PROBE}: right for the edge's (they also read {live}), \
                 but a publisher's must not (see nats/herald.conf)"
            ),
        ),
        (false, true) => (
            Status::Failed,
            format!(
                "these credentials may publish to {LIVE_PROBE} but not read {live}: \
                 a publisher that can forge live messages (see nats/herald.conf)"
            ),
        ),
    };
    report.record(status, "permissions", detail);
}

/// `GET <edge>/readyz` answers 200.
async fn check_edge(http: &reqwest::Client, edge: &str, report: &mut Report) {
    let url = format!("{}/readyz", edge.trim_end_matches('/'));
    let what = format!("edge {edge}");
    match http.get(&url).send().await {
        Ok(resp) if resp.status() == reqwest::StatusCode::OK => {
            report.record(Status::Ok, &what, "ready (GET /readyz 200)");
        }
        Ok(resp) => {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            let body: String = body.chars().take(200).collect();
            report.record(
                Status::Failed,
                &what,
                format!("not ready: GET /readyz answered {status} {}", body.trim()),
            );
        }
        Err(e) => report.record(Status::Failed, &what, format!("GET {url}: {e}")),
    }
}
