//! `herald publish`: one event through [`Publisher`], so it carries
//! `Nats-Msg-Id: <org>:<service>:<eventId>` and `Nats-Expected-Stream`
//! (the org's partition stream), and retries are deduplicated by JetStream.

use std::path::PathBuf;

use clap::Args;
use herald_proto::{Encoding, EventBody, EventSubject};
use herald_publisher::{OutgoingEvent, PublishError, Publisher, RetryPolicy};

use crate::connect::NatsArgs;
use crate::error::CliError;

/// Publish attempts: enough to ride out a leader election, few enough that
/// an operator is not left waiting.
const ATTEMPTS: u32 = 3;

/// `herald publish`.
#[derive(Debug, Clone, Args)]
pub struct PublishArgs {
    /// Organisation.
    #[arg(long)]
    pub org: String,
    /// Publishing service, e.g. `finance`.
    #[arg(long)]
    pub service: String,
    /// Property id; absent for an org-wide event.
    #[arg(long)]
    pub property: Option<String>,
    /// Event type, e.g. `expense.created`.
    #[arg(long = "type")]
    pub event_type: String,
    /// Event id (the dedup key, with org and service); random when absent.
    /// Publishing the same id again within 2 minutes stores nothing new.
    #[arg(long)]
    pub id: Option<String>,
    /// The payload, any JSON value (default `null`).
    #[arg(long, conflicts_with = "data_file")]
    pub data: Option<String>,
    /// Read the JSON payload from this file (`-` for stdin).
    #[arg(long)]
    pub data_file: Option<PathBuf>,
    /// Send the body as MessagePack (`Content-Type: application/msgpack`).
    #[arg(long)]
    pub msgpack: bool,
    /// NATS connection and stream layout.
    #[command(flatten)]
    pub nats: NatsArgs,
}

impl PublishArgs {
    /// Checks the flags and builds the event; nothing is sent.
    pub fn event(&self) -> Result<OutgoingEvent, CliError> {
        self.nats.validate()?;
        let subject = EventSubject::new(&self.org, &self.service, self.property.as_deref())
            .map_err(CliError::usage)?;
        if self.event_type.is_empty() {
            return Err(CliError::Usage("--type is empty".into()));
        }
        if self.id.as_deref() == Some("") {
            return Err(CliError::Usage("--id is empty".into()));
        }
        let payload = match (&self.data, &self.data_file) {
            (Some(text), _) => parse_payload(text, "--data")?,
            (None, Some(path)) => {
                let text = if path.as_os_str() == "-" {
                    std::io::read_to_string(std::io::stdin())
                } else {
                    std::fs::read_to_string(path)
                }
                .map_err(|e| CliError::Usage(format!("reading {}: {e}", path.display())))?;
                parse_payload(&text, &path.display().to_string())?
            }
            (None, None) => serde_json::Value::Null,
        };
        let body = EventBody {
            event_type: Some(self.event_type.clone()),
            event_id: self.id.clone(),
            payload,
            ..EventBody::default()
        };
        let encoding = if self.msgpack {
            Encoding::MessagePack
        } else {
            Encoding::Json
        };
        Ok(OutgoingEvent::new(subject, body).with_encoding(encoding))
    }
}

fn parse_payload(text: &str, from: &str) -> Result<serde_json::Value, CliError> {
    serde_json::from_str(text)
        .map_err(|e| CliError::Usage(format!("{from} is not valid JSON: {e}")))
}

/// Publishes the event and prints `{"seq":…,"stream":…,"duplicate":…}`.
pub async fn run(args: PublishArgs) -> Result<(), CliError> {
    let event = args.event()?;
    let client = args.nats.connect(async_nats::ConnectOptions::new()).await?;
    let publisher = Publisher::new(client.clone())
        .with_stream(args.nats.stream.clone())
        .with_partitions(args.nats.partitions()?)
        .with_retry(RetryPolicy {
            attempts: ATTEMPTS,
            ..RetryPolicy::default()
        });
    let result = publisher.publish(event).await;
    // Best effort: the ack is in, nothing is buffered that matters.
    let _ = client.drain().await;
    match result {
        Ok(ack) => {
            // Written by hand to keep the fields in this order.
            println!(
                r#"{{"seq":{},"stream":{},"duplicate":{}}}"#,
                ack.seq,
                serde_json::Value::from(ack.stream),
                ack.duplicate
            );
            Ok(())
        }
        Err(e @ PublishError::Invalid(_)) => Err(CliError::usage(e)),
        Err(e) => Err(CliError::Unavailable(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        publish: PublishArgs,
    }

    fn parse(extra: &[&str]) -> PublishArgs {
        let base = ["x", "--org", "acme", "--service", "finance", "--type", "t"];
        Cli::try_parse_from(base.iter().chain(extra.iter()).copied())
            .expect("valid arguments")
            .publish
    }

    #[test]
    fn builds_the_event_from_flags() {
        let ev = parse(&["--property", "p1", "--id", "e-1", "--data", r#"{"a":1}"#])
            .event()
            .expect("event");
        assert_eq!(ev.subject.to_subject(), "herald.events.acme.finance.p1");
        assert_eq!(ev.body.event_id.as_deref(), Some("e-1"));
        assert_eq!(ev.body.payload, serde_json::json!({"a": 1}));
        assert_eq!(ev.encoding, Encoding::Json);
        let wide = parse(&["--msgpack"]).event().expect("event");
        assert_eq!(wide.subject.property, None);
        assert_eq!(wide.encoding, Encoding::MessagePack);
        assert_eq!(wide.body.payload, serde_json::Value::Null);
    }

    #[test]
    fn refuses_bad_input_as_usage_errors() {
        for bad in [
            &["--data", "{not json"][..],
            &["--property", "p.1"],
            &["--property", "_"],
            &["--id", ""],
            &["--data-file", "/nonexistent/payload.json"],
        ] {
            let err = parse(bad).event().expect_err("refused");
            assert_eq!(err.exit_code(), 64, "{bad:?}");
        }
    }
}
