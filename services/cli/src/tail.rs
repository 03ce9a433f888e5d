//! `herald tail`: an org's stored events, decoded as the edge delivers
//! them, one JSON line each.
//!
//! It reads the org's partition stream through an ordered consumer
//! filtered on `herald.events.<org>.>`, which matches the stored subjects
//! with and without the partition token; each message is decoded by
//! [`StoredMessage::decode`], so what is printed is what a client of the
//! org would receive, and what the edge would reject is reported on stderr
//! instead. `--service` and `--property` filter like a client's
//! subscription (a property's events plus the org-wide ones).

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream::Stream};
use clap::Args;
use futures::StreamExt;
use herald_proto::stored::StoredMessage;
use herald_proto::subject::{check_token, org_events_filter};
use herald_proto::{DeliveredEvent, Partitions};

use crate::connect::NatsArgs;
use crate::error::CliError;

/// The edge's default `HERALD_MAX_EVENT_BYTES`.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 262_144;
/// With `--no-follow`, the longest wait for the next stored event.
const CATCH_UP_WAIT: Duration = Duration::from_secs(10);
/// How long a consumer made only to count events outlives its last use,
/// should deleting it fail.
const COUNT_CONSUMER_TTL: Duration = Duration::from_secs(10);

/// `herald tail`.
#[derive(Debug, Clone, Args)]
pub struct TailArgs {
    /// Organisation.
    #[arg(long)]
    pub org: String,
    /// Comma-separated services to show (default: all).
    #[arg(long = "service", value_delimiter = ',')]
    pub services: Vec<String>,
    /// Show only this property's events, and the org-wide ones.
    #[arg(long)]
    pub property: Option<String>,
    /// Start at this stream sequence.
    #[arg(long, conflicts_with = "last")]
    pub from_seq: Option<u64>,
    /// Start this many of the org's events back (counted before the
    /// --service and --property filters).
    #[arg(long)]
    pub last: Option<u64>,
    /// Stop once every stored event is printed, instead of following new
    /// ones until Ctrl-C.
    #[arg(long)]
    pub no_follow: bool,
    /// Largest body the edges deliver (their `HERALD_MAX_EVENT_BYTES`).
    #[arg(long, env = "HERALD_MAX_EVENT_BYTES", default_value_t = DEFAULT_MAX_EVENT_BYTES)]
    pub max_event_bytes: usize,
    /// NATS connection and stream layout.
    #[command(flatten)]
    pub nats: NatsArgs,
}

impl TailArgs {
    /// Checks every flag without connecting.
    pub fn validate(&self) -> Result<(), CliError> {
        self.nats.validate()?;
        check_token("org", &self.org).map_err(CliError::usage)?;
        for service in &self.services {
            check_token("service", service).map_err(CliError::usage)?;
        }
        if let Some(p) = &self.property {
            check_token("propertyId", p).map_err(CliError::usage)?;
        }
        if self.from_seq == Some(0) {
            return Err(CliError::Usage("--from-seq starts at 1".into()));
        }
        Ok(())
    }

    /// Whether `event` passes the --service and --property filters.
    pub fn shows(&self, event: &DeliveredEvent) -> bool {
        let service_ok = self.services.is_empty() || self.services.contains(&event.service);
        let property_ok = match (&self.property, &event.property_id) {
            (None, _) | (_, None) => true,
            (Some(want), Some(have)) => want == have,
        };
        service_ok && property_ok
    }
}

/// Prints the org's events until caught up (`--no-follow`) or `shutdown`.
pub async fn run(args: TailArgs, shutdown: impl Future<Output = ()>) -> Result<(), CliError> {
    args.validate()?;
    let partitions = args.nats.partitions()?;
    let client = args.nats.connect(async_nats::ConnectOptions::new()).await?;
    let js = jetstream::new(client);
    let name = partitions.stream_name(&args.nats.stream, partitions.of(&args.org));
    let unavailable = |what: &str, e: &dyn std::fmt::Display| {
        CliError::Unavailable(format!("{what} stream {name}: {e}"))
    };
    let mut stream = js
        .get_stream(&name)
        .await
        .map_err(|e| unavailable("looking up", &e))?;
    let filter = org_events_filter(&args.org);
    let deliver_policy = match (args.from_seq, args.last) {
        (Some(seq), _) => consumer::DeliverPolicy::ByStartSequence {
            start_sequence: seq,
        },
        (None, Some(n)) if n > 0 => start_n_back(&mut stream, &filter, n).await?,
        _ if args.no_follow => consumer::DeliverPolicy::All,
        _ => consumer::DeliverPolicy::New,
    };
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: filter,
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|e| unavailable("reading", &e))?;
    let mut pending = consumer.cached_info().num_pending;
    if args.no_follow && pending == 0 {
        return Ok(());
    }
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| unavailable("reading", &e))?;
    tokio::pin!(shutdown);
    loop {
        let next = async {
            if args.no_follow {
                tokio::time::timeout(CATCH_UP_WAIT, messages.next())
                    .await
                    .map_err(|_| {
                        CliError::Unavailable(format!(
                            "no event within {CATCH_UP_WAIT:?} with {pending} still pending in {name}"
                        ))
                    })
            } else {
                Ok(messages.next().await)
            }
        };
        let message = tokio::select! {
            () = &mut shutdown => return Ok(()),
            next = next => next?,
        };
        let message = match message {
            Some(Ok(m)) => m,
            Some(Err(e)) => return Err(unavailable("reading", &e)),
            None => return Ok(()),
        };
        let Ok(info) = message.info() else {
            continue;
        };
        pending = info.pending;
        let stored_ms =
            i64::try_from(info.published.unix_timestamp_nanos() / 1_000_000).unwrap_or_default();
        print_message(&args, partitions, &message, info.stream_sequence, stored_ms)?;
        if args.no_follow && pending == 0 {
            return Ok(());
        }
    }
}

/// Decodes one stored message and prints it (stdout) or why the edge would
/// skip it (stderr).
fn print_message(
    args: &TailArgs,
    partitions: Partitions,
    message: &jetstream::Message,
    seq: u64,
    stored_ms: i64,
) -> Result<(), CliError> {
    let header = |name: &str| {
        message
            .headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str())
    };
    let stored = StoredMessage {
        seq,
        subject: message.subject.as_str(),
        content_type: header("Content-Type"),
        msg_id: header("Nats-Msg-Id"),
        payload: &message.payload,
        stored_ms,
    };
    match stored.decode(&args.org, partitions, args.max_event_bytes) {
        Ok(event) if args.shows(&event) => {
            use std::io::Write as _;
            let line = serde_json::to_string(&event).unwrap_or_default();
            let mut out = std::io::stdout().lock();
            writeln!(out, "{line}")?;
            out.flush()?;
        }
        Ok(_) => {}
        Err(rejected) => eprintln!("herald: skipped (the edges reject it): {rejected}"),
    }
    Ok(())
}

/// Where to start so that exactly `n` of the org's events (those matching
/// `filter`) come before the head: a binary search over start sequences,
/// counting matches with short-lived consumers (the server counts; nothing
/// is read). All of them when the org has `n` or fewer.
async fn start_n_back(
    stream: &mut Stream,
    filter: &str,
    n: u64,
) -> Result<consumer::DeliverPolicy, CliError> {
    let info = stream
        .info()
        .await
        .map_err(|e| CliError::Unavailable(format!("stream info: {e}")))?;
    let (first, last) = (info.state.first_sequence, info.state.last_sequence);
    if last == 0 || count_from(stream, filter, first).await? <= n {
        return Ok(consumer::DeliverPolicy::All);
    }
    // Invariant: count_from(lo) >= n > count_from(hi).
    let (mut lo, mut hi) = (first, last + 1);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if count_from(stream, filter, mid).await? >= n {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(consumer::DeliverPolicy::ByStartSequence { start_sequence: lo })
}

/// How many messages matching `filter` the stream holds from `seq` on.
async fn count_from(stream: &Stream, filter: &str, seq: u64) -> Result<u64, CliError> {
    let mut consumer = stream
        .create_consumer(consumer::pull::Config {
            filter_subject: filter.to_owned(),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: seq,
            },
            ack_policy: consumer::AckPolicy::None,
            inactive_threshold: COUNT_CONSUMER_TTL,
            memory_storage: true,
            ..Default::default()
        })
        .await
        .map_err(|e| CliError::Unavailable(format!("counting events: {e}")))?;
    let info = consumer
        .info()
        .await
        .map_err(|e| CliError::Unavailable(format!("counting events: {e}")))?;
    let (pending, name) = (info.num_pending, info.name.clone());
    // Best effort: the inactive threshold removes it anyway.
    let _ = stream.delete_consumer(&name).await;
    Ok(pending)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        tail: TailArgs,
    }

    fn parse(args: &[&str]) -> TailArgs {
        Cli::try_parse_from(["x", "--org", "acme"].iter().chain(args.iter()).copied())
            .expect("valid arguments")
            .tail
    }

    fn event(service: &str, property: Option<&str>) -> DeliveredEvent {
        DeliveredEvent {
            seq: 1,
            org_id: "acme".into(),
            service: service.into(),
            property_id: property.map(str::to_owned),
            event_id: "e".into(),
            event_type: "t".into(),
            timestamp: 0,
            entity_type: None,
            entity_id: None,
            payload: serde_json::Value::Null,
        }
    }

    #[test]
    fn filters_like_a_subscription() {
        let all = parse(&[]);
        assert!(all.shows(&event("finance", Some("p1"))));
        let some = parse(&["--service", "finance,tasks", "--property", "p1"]);
        assert!(some.shows(&event("finance", Some("p1"))));
        assert!(some.shows(&event("tasks", None)));
        assert!(!some.shows(&event("finance", Some("p2"))));
        assert!(!some.shows(&event("guest", Some("p1"))));
    }

    #[test]
    fn refuses_bad_flags() {
        for bad in [
            &["--service", "fin.ance"][..],
            &["--property", "p>"],
            &["--from-seq", "0"],
        ] {
            let err = parse(bad).validate().expect_err("refused");
            assert_eq!(err.exit_code(), 64, "{bad:?}");
        }
        assert!(parse(&["--last", "5", "--service", "a"]).validate().is_ok());
    }
}
