//! `herald-demo run`: connect, make sure the stream exists, then publish
//! simulated events at a steady rate until the duration ends or shutdown
//! is signalled, logging a summary every [`SUMMARY_EVERY`].

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::ServerAddr;
use clap::Args;
use herald_proto::Partitions;
use herald_publisher::{
    redact_urls, CredentialsError, NatsAuth, NatsServers, PublishError, Publisher,
};
use tokio::time::{sleep_until, Instant};

use crate::error::DemoError;
use crate::pacing::Pacer;
use crate::simulation::Simulation;
use crate::stream::ensure_stream;

/// Default NATS URL.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
/// Default events per second, all orgs together.
pub const DEFAULT_RATE: f64 = 5.0;
/// Default orgs.
pub const DEFAULT_ORGS: &str = "acme-hotels,globex-resorts,initech-inns";
/// Default properties per org.
pub const DEFAULT_PROPERTIES_PER_ORG: usize = 3;
/// Default stream name.
pub const DEFAULT_STREAM: &str = herald_publisher::DEFAULT_STREAM;
/// How often the run logs a summary.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(10);
/// How long the stream check waits for JetStream's answer.
const STREAM_CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// Highest rate accepted; beyond it the demo is a load generator.
pub const MAX_RATE: f64 = 10_000.0;
/// Most properties per org accepted.
pub const MAX_PROPERTIES_PER_ORG: usize = 1_000;

/// Configuration of `herald-demo run`.
#[derive(Clone, Args)]
pub struct RunConfig {
    /// NATS server URL(s), comma-separated; may carry `user:password@`.
    #[arg(long, env = "HERALD_NATS_URL", default_value = DEFAULT_NATS_URL, hide_env_values = true)]
    pub nats_url: String,
    /// NATS user (the `publisher` user of the shipped NATS config).
    #[arg(long, env = "HERALD_NATS_USER")]
    pub nats_user: Option<String>,
    /// Password of the NATS user.
    #[arg(long, env = "HERALD_NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<String>,
    /// Events per second, all orgs together.
    #[arg(long, default_value_t = DEFAULT_RATE)]
    pub rate: f64,
    /// Comma-separated org ids.
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_ORGS)]
    pub orgs: Vec<String>,
    /// Properties simulated per org.
    #[arg(long, default_value_t = DEFAULT_PROPERTIES_PER_ORG)]
    pub properties_per_org: usize,
    /// JetStream stream; created when missing, never changed when present.
    #[arg(long, env = "HERALD_STREAM", default_value = DEFAULT_STREAM)]
    pub stream: String,
    /// Event streams orgs are spread over (`HERALD_PARTITIONS` of the
    /// edges): each event is expected in its org's partition stream. Above 1
    /// the demo creates no stream (the edges create the partition streams).
    #[arg(long, env = "HERALD_PARTITIONS", default_value_t = 1)]
    pub partitions: u32,
    /// Stop after this long (seconds, or a span like `90s`, `5m`); default: run until stopped.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            nats_url: DEFAULT_NATS_URL.to_owned(),
            nats_user: None,
            nats_password: None,
            rate: DEFAULT_RATE,
            orgs: DEFAULT_ORGS.split(',').map(str::to_owned).collect(),
            properties_per_org: DEFAULT_PROPERTIES_PER_ORG,
            stream: DEFAULT_STREAM.to_owned(),
            partitions: 1,
            duration: None,
        }
    }
}

/// Plain seconds (`30`) or a humantime span (`30s`, `5m`).
fn parse_duration(s: &str) -> Result<Duration, String> {
    match s.parse::<u64>() {
        Ok(secs) => Ok(Duration::from_secs(secs)),
        Err(_) => humantime::parse_duration(s).map_err(|e| e.to_string()),
    }
}

impl RunConfig {
    /// Checks every field; run nothing on an error.
    pub fn validate(&self) -> Result<(), DemoError> {
        let bad = |m: String| Err(DemoError::Config(m));
        if !(self.rate.is_finite() && self.rate > 0.0 && self.rate <= MAX_RATE) {
            return bad(format!(
                "--rate must be in (0, {MAX_RATE}], got {}",
                self.rate
            ));
        }
        if self.orgs.is_empty() {
            return bad("--orgs is empty".into());
        }
        for (i, org) in self.orgs.iter().enumerate() {
            herald_proto::subject::check_token("org", org)
                .map_err(|e| DemoError::Config(format!("org {org:?}: {e}")))?;
            if self.orgs[..i].contains(org) {
                return bad(format!("org {org:?} is listed twice"));
            }
        }
        if !(1..=MAX_PROPERTIES_PER_ORG).contains(&self.properties_per_org) {
            return bad(format!(
                "--properties-per-org must be 1 to {MAX_PROPERTIES_PER_ORG}"
            ));
        }
        let stream_ok = !self.stream.is_empty()
            && !self
                .stream
                .contains(|c: char| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'));
        if !stream_ok {
            return bad(format!(
                "--stream {:?} is not a valid stream name",
                self.stream
            ));
        }
        if self.duration.is_some_and(|d| d.is_zero()) {
            return bad("--duration must be positive".into());
        }
        self.nats_connection().map(|_| ())
    }

    /// The NATS URLs without credentials, and the credentials (from
    /// `--nats-user`/`--nats-password`, else from the URLs).
    fn nats_connection(&self) -> Result<(Vec<ServerAddr>, NatsAuth), DemoError> {
        let config = |e: CredentialsError| DemoError::Config(e.to_string());
        let servers = NatsServers::parse(&self.nats_url).map_err(config)?;
        let auth = NatsAuth {
            user: self.nats_user.clone(),
            password: self.nats_password.clone(),
            ..NatsAuth::default()
        }
        .or_from_urls(&servers)
        .map_err(config)?;
        auth.check().map_err(config)?;
        Ok((servers.addrs, auth))
    }
}

impl std::fmt::Debug for RunConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunConfig")
            .field("nats_url", &redact_urls(&self.nats_url))
            .field("nats_user", &self.nats_user)
            .field(
                "nats_password",
                &self.nats_password.as_ref().map(|_| "<redacted>"),
            )
            .field("rate", &self.rate)
            .field("orgs", &self.orgs)
            .field("properties_per_org", &self.properties_per_org)
            .field("stream", &self.stream)
            .field("duration", &self.duration)
            .finish()
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Events JetStream stored.
    pub published: u64,
    /// Of those, acked as duplicates.
    pub duplicates: u64,
    /// Events that could not be published.
    pub failed: u64,
    /// Stored events per service.
    pub per_service: BTreeMap<String, u64>,
}

impl RunSummary {
    fn record(
        &mut self,
        service: &str,
        result: &Result<herald_publisher::PublishAck, PublishError>,
    ) {
        match result {
            Ok(ack) => {
                self.published += 1;
                self.duplicates += u64::from(ack.duplicate);
                *self.per_service.entry(service.to_owned()).or_default() += 1;
            }
            Err(_) => self.failed += 1,
        }
    }
}

/// Runs the demo until `config.duration` passes or `shutdown` completes.
/// `config` must have passed [`RunConfig::validate`].
pub async fn run(
    config: RunConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<RunSummary, DemoError> {
    let (addrs, auth) = config.nats_connection()?;
    let options = auth
        .apply(async_nats::ConnectOptions::new().name("herald-demo"))
        .await
        .map_err(|e| DemoError::Config(e.to_string()))?;
    let client = options.connect(addrs).await.map_err(|e| {
        DemoError::Nats(format!(
            "connecting to {}: {e}",
            redact_urls(&config.nats_url)
        ))
    })?;
    let partitions = Partitions::new(config.partitions).ok_or_else(|| {
        DemoError::Config("HERALD_PARTITIONS must be between 1 and 1024".to_owned())
    })?;
    let mut jetstream = async_nats::jetstream::new(client.clone());
    jetstream.set_timeout(STREAM_CHECK_TIMEOUT);
    if partitions.is_partitioned() {
        tracing::info!(
            partitions = partitions.count(),
            "partitioned: the edges create the partition streams"
        );
    } else if let Err(e) = ensure_stream(&jetstream, &config.stream).await {
        // A publisher-only NATS user may not use the JetStream API (the
        // request is refused and times out); the edges create the stream,
        // and publishing retries until it exists.
        tracing::warn!(error = %e, "cannot check the stream; publishing anyway (the edges create it)");
    }
    let publisher = Publisher::new(client)
        .with_stream(config.stream.clone())
        .with_partitions(partitions);
    let mut simulation = Simulation::new(&config.orgs, config.properties_per_org, rand::random());

    tokio::pin!(shutdown);
    let start = Instant::now();
    let end = config.duration.map(|d| start + d);
    let stop_at = async move {
        match end {
            Some(end) => sleep_until(end).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(stop_at);
    let mut pacer = Pacer::new(config.rate, start);
    let mut summary_tick = tokio::time::interval_at(start + SUMMARY_EVERY, SUMMARY_EVERY);
    let mut total = RunSummary::default();
    let mut window = RunSummary::default();
    tracing::info!(
        rate = config.rate,
        orgs = ?config.orgs,
        properties_per_org = config.properties_per_org,
        stream = %config.stream,
        "publishing simulated events"
    );

    // Events go out one at a time, so an entity's created/updated/deleted
    // events are stored in the order they happened.
    loop {
        let due = pacer.next_due(Instant::now());
        tokio::select! {
            () = &mut shutdown => break,
            () = &mut stop_at => break,
            _ = summary_tick.tick() => {
                log_summary(&window, &total);
                window = RunSummary::default();
                continue;
            }
            () = sleep_until(due) => {}
        }
        let event = simulation.next_event(now_ms());
        let service = event.subject.service.clone();
        let subject = event.subject.to_subject();
        let event_type = event.body.event_type.clone().unwrap_or_default();
        let result = tokio::select! {
            () = &mut shutdown => break,
            result = publisher.publish(event) => result,
        };
        match &result {
            Ok(ack) => tracing::debug!(%subject, %event_type, seq = ack.seq, "published"),
            Err(err) => tracing::warn!(%subject, %event_type, error = %err, "publish failed"),
        }
        window.record(&service, &result);
        total.record(&service, &result);
        pacer.sent();
    }
    tracing::info!(
        published = total.published,
        duplicates = total.duplicates,
        failed = total.failed,
        per_service = ?total.per_service,
        elapsed = ?start.elapsed(),
        "stopped"
    );
    Ok(total)
}

fn log_summary(window: &RunSummary, total: &RunSummary) {
    tracing::info!(
        published = window.published,
        failed = window.failed,
        rate = window.published as f64 / SUMMARY_EVERY.as_secs_f64(),
        per_service = ?window.per_service,
        total_published = total.published,
        total_failed = total.failed,
        "last {}s",
        SUMMARY_EVERY.as_secs()
    );
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunConfig,
    }

    fn parse(args: &[&str]) -> Result<RunConfig, clap::Error> {
        Cli::try_parse_from(std::iter::once("run").chain(args.iter().copied())).map(|c| c.run)
    }

    #[test]
    fn flag_defaults_match_the_default_config() {
        let parsed = parse(&["--nats-url", DEFAULT_NATS_URL, "--stream", DEFAULT_STREAM])
            .expect("defaults parse");
        let default = RunConfig::default();
        assert_eq!(parsed.rate, default.rate);
        assert_eq!(parsed.orgs, default.orgs);
        assert_eq!(parsed.properties_per_org, default.properties_per_org);
        assert_eq!(parsed.duration, None);
        default.validate().expect("defaults are valid");
    }

    #[test]
    fn duration_takes_seconds_or_spans() {
        let secs = parse(&["--duration", "30"]).expect("secs");
        assert_eq!(secs.duration, Some(Duration::from_secs(30)));
        let span = parse(&["--duration", "2m"]).expect("span");
        assert_eq!(span.duration, Some(Duration::from_secs(120)));
        assert!(parse(&["--duration", "soon"]).is_err());
    }

    #[test]
    fn validation_refuses_bad_values() {
        let bad = [
            RunConfig {
                rate: 0.0,
                ..RunConfig::default()
            },
            RunConfig {
                rate: f64::NAN,
                ..RunConfig::default()
            },
            RunConfig {
                orgs: vec![],
                ..RunConfig::default()
            },
            RunConfig {
                orgs: vec!["a.b".into()],
                ..RunConfig::default()
            },
            RunConfig {
                orgs: vec!["a".into(), "a".into()],
                ..RunConfig::default()
            },
            RunConfig {
                properties_per_org: 0,
                ..RunConfig::default()
            },
            RunConfig {
                stream: "HERALD.EVENTS".into(),
                ..RunConfig::default()
            },
            RunConfig {
                duration: Some(Duration::ZERO),
                ..RunConfig::default()
            },
            RunConfig {
                nats_url: "nats://:::bad".into(),
                ..RunConfig::default()
            },
        ];
        for config in bad {
            let err = config.validate().expect_err("refused");
            assert_eq!(err.exit_code(), 64, "{config:?}");
        }
        let cluster = RunConfig {
            nats_url: "nats://a:4222, nats://b:4222".into(),
            ..RunConfig::default()
        };
        assert_eq!(cluster.nats_connection().expect("two urls").0.len(), 2);
        let with_user = RunConfig {
            nats_url: "nats://publisher:s3cret@a:4222".into(),
            ..RunConfig::default()
        };
        let (_, auth) = with_user.nats_connection().expect("credentials");
        assert_eq!(auth, NatsAuth::user_password("publisher", "s3cret"));
        assert!(!format!("{with_user:?}").contains("s3cret"));
    }

    #[test]
    fn summary_counts_outcomes_per_service() {
        let mut s = RunSummary::default();
        let ack = |duplicate| {
            Ok(herald_publisher::PublishAck {
                seq: 1,
                duplicate,
                stream: "S".into(),
            })
        };
        s.record("finance", &ack(false));
        s.record("finance", &ack(true));
        s.record("guest", &Err(PublishError::Invalid("x".into())));
        assert_eq!((s.published, s.duplicates, s.failed), (2, 1, 1));
        assert_eq!(s.per_service.get("finance"), Some(&2));
        assert_eq!(s.per_service.get("guest"), None);
    }
}
