//! What both scenarios share: the target, N long-poll chains over M orgs
//! opened at a bounded pace, the edge's resident memory before the polls
//! and while all of them are held, and waiting for pollers to catch up;
//! and what every scenario names alike: org ids and user tokens.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use herald_testkit::TokenBuilder;
use http::HeaderValue;
use tokio::time::Instant;

use crate::cli::{PollArgs, TargetArgs};
use crate::error::LoadError;
use crate::poller::{PollConfig, PollerLog, PollerPlan, Pollers};
use crate::probe::{EdgeMetrics, Probe};
use crate::procfs;
use crate::publish::Published;
use crate::target::Target;

/// Longest wait for every poll chain to open.
const OPEN_TIMEOUT: Duration = Duration::from_secs(180);
/// Longest wait for the edge to count every poll as held.
const HELD_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for the edge's metrics endpoint to answer at start.
const METRICS_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause once every poll is held, so the edge's memory settles before it is read.
const SETTLE: Duration = Duration::from_secs(2);
/// How often progress is checked and printed while waiting.
const TICK: Duration = Duration::from_millis(100);
/// File descriptors kept free beyond one per poll.
const SPARE_FDS: u64 = 256;

/// Figures from opening the polls.
#[derive(Debug, Clone, Default)]
pub struct Opening {
    /// Polls asked for.
    pub polls: usize,
    /// Orgs they are spread over.
    pub orgs: usize,
    /// Time to open every chain.
    pub ramp: Duration,
    /// Polls the edge reported held (`waiters`) once every chain was open.
    pub held: u64,
    /// Edge `VmRSS` before any poll, KiB.
    pub rss_base_kib: Option<u64>,
    /// Edge `VmRSS` with every poll held, KiB.
    pub rss_held_kib: Option<u64>,
    /// This process's `VmRSS` with every poll held, KiB.
    pub loadgen_rss_kib: Option<u64>,
    /// The open-files limit in force.
    pub fd_limit: u64,
}

impl Opening {
    /// Edge memory per held poll, KiB: growth from before the polls to all
    /// held, divided by the number of polls. Includes the state of the orgs
    /// the polls brought in (buffers, subscriptions, ingestion tasks).
    pub fn kib_per_poll(&self) -> Option<f64> {
        let (base, held) = (self.rss_base_kib?, self.rss_held_kib?);
        Some(held.saturating_sub(base) as f64 / self.polls.max(1) as f64)
    }
}

/// A target with N long-poll chains held on it.
pub struct Session {
    /// The system under test.
    pub target: Target,
    /// Its metrics.
    pub probe: Probe,
    /// Org ids, by org index.
    pub orgs: Vec<String>,
    /// Org index of each poller.
    org_of: Vec<u32>,
    pollers: Pollers,
    /// What opening the polls measured.
    pub opening: Opening,
}

impl Session {
    /// Prepares the target and opens every poll chain.
    pub async fn open(target_args: &TargetArgs, args: &PollArgs) -> Result<Self, LoadError> {
        if args.polls == 0 || args.orgs == 0 || args.services.is_empty() {
            return Err(LoadError::Setup(
                "--polls, --orgs and --services must not be empty".into(),
            ));
        }
        if args.poll_timeout == 0 || args.poll_timeout > 55 {
            return Err(LoadError::Setup(
                "--poll-timeout must be 1..=55 seconds".into(),
            ));
        }
        // One socket per poll; children (a spawned edge) inherit the raised limit.
        let fd_limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0);
        if fd_limit < args.polls as u64 + SPARE_FDS {
            return Err(LoadError::Setup(format!(
                "the open-files limit is {fd_limit}; {} polls need at least {} (raise `ulimit -n`)",
                args.polls,
                args.polls as u64 + SPARE_FDS
            )));
        }
        if target_args.edge_nodes != 1 || target_args.edges.len() > 1 {
            return Err(LoadError::Setup(
                "long-poll scenarios drive one edge; drop --edge-nodes/--edges".into(),
            ));
        }
        let target = Target::prepare(target_args, &[]).await?;
        let probe = Probe::new(&target.edge_url)?;
        wait_for_metrics(&probe).await?;
        let orgs = org_ids(&args.prefix, args.orgs.min(args.polls));
        let mut opening = Opening {
            polls: args.polls,
            orgs: orgs.len(),
            fd_limit,
            rss_base_kib: target.edge_pid.and_then(procfs::rss_kib),
            ..Opening::default()
        };

        let tokens = UserTokens::new(&target.jwt_secret, &args.prefix);
        let org_of: Vec<u32> = (0..args.polls).map(|i| (i % orgs.len()) as u32).collect();
        let plans = org_of
            .iter()
            .enumerate()
            .map(|(i, &org)| PollerPlan {
                org,
                org_id: orgs[org as usize].clone(),
                token: tokens.user(i, &orgs[org as usize]),
            })
            .collect();
        let authority = target.edge_addr.to_string();
        let config = Arc::new(PollConfig {
            addr: target.edge_addr,
            host: HeaderValue::from_str(&authority).map_err(|e| LoadError::Setup(e.to_string()))?,
            services: args.services.join(","),
            hold: Duration::from_secs(args.poll_timeout),
        });
        let started = Instant::now();
        let pollers = Pollers::start(config, plans, args.connect_concurrency);
        let shared = Arc::clone(&pollers.shared);
        wait_until(OPEN_TIMEOUT, "every poll chain to open", || {
            let ready = shared.ready();
            (
                ready >= args.polls,
                format!(
                    "{ready}/{} polls open, {} errors",
                    args.polls,
                    shared.errors.load(Relaxed)
                ),
            )
        })
        .await?;
        opening.ramp = started.elapsed();

        let deadline = Instant::now() + HELD_TIMEOUT;
        loop {
            let m = probe.metrics().await?;
            if m.waiters >= args.polls as u64 {
                opening.held = m.waiters;
                break;
            }
            if Instant::now() >= deadline {
                return Err(LoadError::Timeout(format!(
                    "the edge holds {} of {} polls after {HELD_TIMEOUT:?}",
                    m.waiters, args.polls
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        tokio::time::sleep(SETTLE).await;
        opening.rss_held_kib = target.edge_pid.and_then(procfs::rss_kib);
        opening.loadgen_rss_kib = procfs::rss_kib(std::process::id());
        eprintln!(
            "herald-loadgen: {} polls over {} orgs open in {:.1}s; edge holds {}",
            args.polls,
            orgs.len(),
            opening.ramp.as_secs_f64(),
            opening.held
        );
        Ok(Self {
            target,
            probe,
            orgs,
            org_of,
            pollers,
            opening,
        })
    }

    /// Current edge metrics.
    pub async fn metrics(&self) -> Result<EdgeMetrics, LoadError> {
        self.probe.metrics().await
    }

    /// Failed polls so far.
    pub fn poll_errors(&self) -> u64 {
        self.pollers.shared.errors.load(Relaxed)
    }

    /// Waits until every poller has received the last stored event of its
    /// org; returns whether they all did within `timeout`, and the wait.
    pub async fn wait_caught_up(
        &self,
        published: &Published,
        timeout: Duration,
    ) -> (bool, Duration) {
        let started = Instant::now();
        let last: Vec<u64> = (0..self.orgs.len()).map(|o| published.last_of(o)).collect();
        let shared = &self.pollers.shared;
        let behind = || {
            self.org_of
                .iter()
                .zip(shared.received_up_to.iter())
                .filter(|(&org, got)| got.load(Relaxed) < last[org as usize])
                .count()
        };
        let caught_up = wait_until(timeout, "every poller to catch up", || {
            let n = behind();
            (n == 0, format!("{n} pollers behind"))
        })
        .await
        .is_ok();
        (caught_up, started.elapsed())
    }

    /// Stops every poll chain; returns the pollers' logs and the target
    /// (dropping it stops a spawned edge and nats-server).
    pub async fn close(self) -> (Vec<PollerLog>, Target) {
        (self.pollers.stop().await, self.target)
    }
}

/// The org ids `<prefix>-o0 … o<n-1>`.
pub fn org_ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-o{i}")).collect()
}

/// Client tokens of every scenario: client i is user `<prefix>-u<i>`.
pub struct UserTokens {
    builder: TokenBuilder,
    prefix: String,
}

impl UserTokens {
    /// Tokens signed with `secret` for users named after `prefix`.
    pub fn new(secret: &str, prefix: &str) -> Self {
        Self {
            builder: TokenBuilder::new(secret),
            prefix: prefix.to_owned(),
        }
    }

    /// The token of client `i`, a user of `org`.
    pub fn user(&self, i: usize, org: &str) -> String {
        self.builder
            .clone()
            .sub(&format!("{}-u{i}", self.prefix))
            .org(org)
            .build()
    }
}

pub(crate) async fn wait_for_metrics(probe: &Probe) -> Result<(), LoadError> {
    let deadline = Instant::now() + METRICS_TIMEOUT;
    loop {
        match probe.metrics().await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// Polls `check` until it says done, printing its progress every few
/// seconds; fails after `timeout`.
pub async fn wait_until(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> (bool, String),
) -> Result<(), LoadError> {
    let started = Instant::now();
    let mut last_print = started;
    loop {
        let (done, progress) = check();
        if done {
            return Ok(());
        }
        if started.elapsed() >= timeout {
            return Err(LoadError::Timeout(format!(
                "waiting {timeout:?} for {what}: {progress}"
            )));
        }
        if last_print.elapsed() >= Duration::from_secs(5) {
            eprintln!("herald-loadgen: waiting for {what}: {progress}");
            last_print = Instant::now();
        }
        tokio::time::sleep(TICK).await;
    }
}
