//! `rooms`: N members of one room of one org, spread evenly over two (or
//! more) edges, each its own user on its own WebSocket connection. For each
//! N of `--members`, on a fresh target: the room is pre-filled over HTTP,
//! then every member connects and joins with history, a few senders `say`
//! at a modest rate, a few users type, and some members on the first edge
//! close their connection. Measures join → `joined` time, message and
//! typing latency to every member (send time stamped in the text; the
//! typer's send time for typing), exactly-once delivery of every message
//! to every member, the time from a close to the `offline` presence frame
//! at the members on another edge, and each edge's memory per joined
//! member.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use herald_testkit::TokenBuilder;
use http::header::AUTHORIZATION;
use http::HeaderValue;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::cli::RoomsArgs;
use crate::error::LoadError;
use crate::poller::wall_ns;
use crate::probe::Probe;
use crate::procfs::{self, CpuSnapshot, CpuUse};
use crate::report::{opt1, Goal, Report};
use crate::session::wait_for_metrics;
use crate::target::Target;

/// The room every member joins.
const ROOM: &str = "bench";
/// Bound on connecting and the `ack` after `hello`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Bound on one `join` → `joined`.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for every member to be connected.
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause before a memory reading.
const SETTLE: Duration = Duration::from_secs(2);
/// Longest wait for the presence frames of the joins to stop arriving.
const QUIET_TIMEOUT: Duration = Duration::from_secs(40);
/// Longest wait for every message after the last send.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);
/// Pause between typing rounds (the server drops a user's typing more
/// often than every 2 s).
const TYPING_GAP: Duration = Duration::from_millis(2_500);
/// Pause between two closes of the presence phase.
const CLOSE_GAP: Duration = Duration::from_millis(250);
/// Wait after the last close for the `offline` frames.
const PRESENCE_WAIT: Duration = Duration::from_secs(8);
/// Messages a prefill writer posts (the limit is 10/s per user and node).
const PREFILL_PER_WRITER: usize = 5;
/// Seed targets.
const GOAL_MESSAGE_MS: f64 = 100.0;
const GOAL_TYPING_MS: f64 = 100.0;
const GOAL_HISTORY_MS: f64 = 1_000.0;
const GOAL_PRESENCE_MS: f64 = 5_000.0;

/// What the orchestrator asks a member to do.
enum Cmd {
    Join(u32, oneshot::Sender<()>),
    Say(String),
    Typing,
    Close,
}

/// What one member saw.
#[derive(Default)]
struct MemberLog {
    join_ms: Option<f64>,
    history_len: usize,
    history_last: u64,
    members_at_join: usize,
    /// (clientMsgId, seq, receive ns - send ns in the text, µs).
    messages: Vec<(String, u64, u64)>,
    /// Wall ns of this member's own typing frames.
    typing_sent: Vec<u64>,
    /// (typer, receive wall ns).
    typing: Vec<(String, u64)>,
    /// (user, receive instant) of `offline` frames.
    offline: Vec<(String, Instant)>,
    presence_frames: u64,
    frames: u64,
    closed_at: Option<Instant>,
    errors: Vec<String>,
    /// The connection ended without being asked to.
    dropped: Option<String>,
}

struct Member {
    user: String,
    edge: usize,
    tx: mpsc::UnboundedSender<Cmd>,
    log: Arc<Mutex<MemberLog>>,
    handle: JoinHandle<()>,
}

impl Member {
    fn log(&self) -> MutexGuard<'_, MemberLog> {
        lock(&self.log)
    }
}

fn lock(log: &Mutex<MemberLog>) -> MutexGuard<'_, MemberLog> {
    log.lock().unwrap_or_else(|p| p.into_inner())
}

/// A server frame, as far as the benchmark reads it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Frame {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    client_msg_id: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    history: Vec<Hist>,
    #[serde(default)]
    members: Vec<serde::de::IgnoredAny>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
struct Hist {
    seq: u64,
}

/// Latency summary, ms.
#[derive(Debug, Clone, Copy, Default)]
struct Pct {
    n: usize,
    p50: f64,
    p99: f64,
    max: f64,
}

impl Pct {
    fn of(mut v: Vec<f64>) -> Self {
        if v.is_empty() {
            return Self::default();
        }
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Self {
            n: v.len(),
            p50: at(0.50),
            p99: at(0.99),
            max: v[v.len() - 1],
        }
    }

    fn text(&self) -> String {
        format!(
            "{:.1} / {:.1} / {:.1} ms ({} samples)",
            self.p50, self.p99, self.max, self.n
        )
    }
}

/// The figures of one N.
struct RunResult {
    members: usize,
    per_edge: Vec<usize>,
    connect_s: f64,
    join: Pct,
    join_wall_s: f64,
    quiet_join: Pct,
    history_ok: usize,
    presence_quiet_s: f64,
    presence_frames: u64,
    rss_before: Vec<Option<u64>>,
    rss_connected: Vec<Option<u64>>,
    rss_after: Vec<Option<u64>>,
    sent: usize,
    msg: Pct,
    msg_same: Pct,
    msg_cross: Pct,
    owed: usize,
    lost: usize,
    duplicated: usize,
    reordered: usize,
    msg_cpu: CpuUse,
    join_cpu: CpuUse,
    typing: Typing,
    typing_burst: Typing,
    presence: Pct,
    presence_owed: usize,
    presence_got: usize,
    presence_worst_close: f64,
    errors: Vec<String>,
    error_count: usize,
    dropped: usize,
}

impl RunResult {
    fn kib_per_member(&self) -> Vec<Option<f64>> {
        Self::per_member(&self.rss_before, &self.rss_after, &self.per_edge)
    }

    /// Growth from `from` to `to` per member of each edge, KiB.
    fn per_member(
        from: &[Option<u64>],
        to: &[Option<u64>],
        per_edge: &[usize],
    ) -> Vec<Option<f64>> {
        from.iter()
            .zip(to)
            .zip(per_edge)
            .map(|((b, a), &n)| {
                Some(a.as_ref()?.saturating_sub(*b.as_ref()?) as f64 / n.max(1) as f64)
            })
            .collect()
    }
}

/// Runs the scenario for every N of `--members` and reports.
pub async fn run(args: RoomsArgs) -> Result<Report, LoadError> {
    if args.members.is_empty() || args.members.iter().any(|&n| n < 4) {
        return Err(LoadError::Setup(
            "--members: each N must be at least 4".into(),
        ));
    }
    if args.services.is_empty() {
        return Err(LoadError::Setup("--services must not be empty".into()));
    }
    let need = *args.members.iter().max().unwrap_or(&0) as u64 + 256;
    let fd_limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0);
    if fd_limit < need {
        return Err(LoadError::Setup(format!(
            "the open-files limit is {fd_limit}; {need} are needed"
        )));
    }
    let mut results = Vec::new();
    for &n in &args.members {
        results.push(run_one(&args, n).await?);
    }
    Ok(report(&args, &results))
}

async fn run_one(args: &RoomsArgs, n: usize) -> Result<RunResult, LoadError> {
    let target = Target::prepare(&args.target, &[]).await?;
    if target.edges.len() < 2 {
        return Err(LoadError::Setup(
            "rooms needs at least two edges (--spawn --edge-nodes 2, or --edges a,b)".into(),
        ));
    }
    let result = measure(args, n, &target).await;
    if let Some(dir) = &args.output.logs {
        let _ = target.save_logs(&dir.join(format!("rooms-{n}")));
    }
    // Dropping the target stops spawned edges, then the nats-server.
    drop(target);
    result
}

async fn measure(args: &RoomsArgs, n: usize, target: &Target) -> Result<RunResult, LoadError> {
    let edges: Vec<SocketAddr> = target.edges.iter().map(|e| e.addr).collect();
    let pids = target.edge_pids();
    for e in &target.edges {
        wait_for_metrics(&Probe::new(&e.url)?).await?;
    }
    let org = format!("{}-rooms{n}-{:08x}", args.prefix, rand::random::<u32>());
    let tokens = TokenBuilder::new(&target.jwt_secret);
    let token = |user: &str| tokens.clone().sub(user).org(&org).build();

    // Pre-fill the room over HTTP, round-robin over the edges.
    eprintln!(
        "herald-loadgen: rooms N={n}: pre-filling {} messages",
        args.prefill
    );
    let http = reqwest::Client::new();
    for k in 0..args.prefill {
        let user = format!("{}-w{}", args.prefix, k / PREFILL_PER_WRITER);
        let url = format!(
            "{}/v2/rooms/{ROOM}/messages",
            target.edges[k % edges.len()].url
        );
        let resp = http
            .post(&url)
            .bearer_auth(token(&user))
            .json(&serde_json::json!({"text": format!("prefill {k}"), "clientMsgId": format!("p-{k}")}))
            .send()
            .await
            .map_err(|e| LoadError::Edge(format!("POST {url}: {e}")))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            return Err(LoadError::Edge(format!("POST {url}: {status} {body}")));
        }
    }
    tokio::time::sleep(SETTLE).await;
    let rss_before: Vec<Option<u64>> = target
        .edges
        .iter()
        .map(|e| e.pid.and_then(procfs::rss_kib))
        .collect();

    // Connect every member, member i on edge i mod E.
    eprintln!("herald-loadgen: rooms N={n}: connecting {n} members");
    let services_json = serde_json::to_string(&args.services).unwrap_or_else(|_| "[]".into());
    let gate = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<Result<(), String>>();
    let t0 = Instant::now();
    let mut members = Vec::with_capacity(n);
    let mut per_edge = vec![0usize; edges.len()];
    for i in 0..n {
        let user = format!("{}-u{i}", args.prefix);
        let edge = i % edges.len();
        per_edge[edge] += 1;
        let (tx, rx) = mpsc::unbounded_channel();
        let log = Arc::new(Mutex::new(MemberLog::default()));
        let handle = tokio::spawn(member(
            edges[edge],
            org.clone(),
            token(&user),
            services_json.clone(),
            rx,
            Arc::clone(&log),
            Arc::clone(&gate),
            ready_tx.clone(),
        ));
        members.push(Member {
            user,
            edge,
            tx,
            log,
            handle,
        });
    }
    drop(ready_tx);
    let mut acked = 0;
    let deadline = tokio::time::Instant::now() + OPEN_TIMEOUT;
    while acked < n {
        match tokio::time::timeout_at(deadline, ready_rx.recv()).await {
            Ok(Some(Ok(()))) => acked += 1,
            Ok(Some(Err(e))) => {
                stop(members).await;
                return Err(LoadError::Edge(format!("a member could not connect: {e}")));
            }
            Ok(None) | Err(_) => {
                stop(members).await;
                return Err(LoadError::Timeout(format!(
                    "{acked} of {n} members connected"
                )));
            }
        }
    }
    let connect_s = t0.elapsed().as_secs_f64();
    tokio::time::sleep(SETTLE).await;
    let rss_connected: Vec<Option<u64>> = target
        .edges
        .iter()
        .map(|e| e.pid.and_then(procfs::rss_kib))
        .collect();

    // (1) Join, at most `--join-concurrency` at once.
    eprintln!(
        "herald-loadgen: rooms N={n}: joining with history {}",
        args.history
    );
    let cpu0 = CpuSnapshot::take_all(&pids, target.nats_pid);
    let t0 = Instant::now();
    let gate = Arc::new(Semaphore::new(args.join_concurrency.max(1)));
    let mut joins = Vec::with_capacity(n);
    for m in &members {
        let gate = Arc::clone(&gate);
        let tx = m.tx.clone();
        let history = args.history;
        joins.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.ok()?;
            let (done_tx, done_rx) = oneshot::channel();
            tx.send(Cmd::Join(history, done_tx)).ok()?;
            tokio::time::timeout(JOIN_TIMEOUT, done_rx).await.ok()?.ok()
        }));
    }
    let mut joined = 0;
    for j in joins {
        if matches!(j.await, Ok(Some(()))) {
            joined += 1;
        }
    }
    let join_wall_s = t0.elapsed().as_secs_f64();
    if joined < n {
        let errs = first_errors(&members);
        stop(members).await;
        return Err(LoadError::Timeout(format!(
            "{joined} of {n} members joined; {errs}"
        )));
    }
    // The joins' presence frames (N per join) still spread; wait until quiet.
    let t1 = Instant::now();
    let frames = |ms: &[Member]| ms.iter().map(|m| m.log().frames).sum::<u64>();
    let mut last = frames(&members);
    let mut quiet_since = Instant::now();
    while t1.elapsed() < QUIET_TIMEOUT {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = frames(&members);
        if now != last {
            last = now;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() >= Duration::from_secs(1) {
            break;
        }
    }
    let presence_quiet_s = quiet_since.duration_since(t0).as_secs_f64();
    let join_cpu = cpu0.until(&CpuSnapshot::take_all(&pids, target.nats_pid));
    let presence_frames: u64 = members.iter().map(|m| m.log().presence_frames).sum();
    tokio::time::sleep(SETTLE).await;
    let rss_after: Vec<Option<u64>> = target
        .edges
        .iter()
        .map(|e| e.pid.and_then(procfs::rss_kib))
        .collect();
    let join = Pct::of(members.iter().filter_map(|m| m.log().join_ms).collect());
    let expect_last = members
        .iter()
        .map(|m| m.log().history_last)
        .max()
        .unwrap_or(0);
    let history_ok = members
        .iter()
        .filter(|m| {
            let l = m.log();
            l.history_len == (args.history as usize).min(args.prefill).min(100)
                && l.history_last == expect_last
        })
        .count();

    // (1b) Joins into the quiet room: members rejoin one after the other
    // (already present, so no presence change), alternating edges.
    let rejoins = args.rejoins.min(n);
    let mut quiet_joins = Vec::with_capacity(rejoins);
    for k in 0..rejoins {
        let i = (k * (n / rejoins.max(1)) + k % 2).min(n - 1);
        let (done_tx, done_rx) = oneshot::channel();
        let _ = members[i].tx.send(Cmd::Join(args.history, done_tx));
        if let Ok(Ok(())) = tokio::time::timeout(JOIN_TIMEOUT, done_rx).await {
            if let Some(ms) = members[i].log().join_ms {
                quiet_joins.push(ms);
            }
        }
    }
    let quiet_join = Pct::of(quiet_joins);

    // (2) Messages: senders 0..S (alternating edges), `--rate` in total.
    let senders = args.senders.clamp(1, n);
    let total = (args.rate * args.duration as f64).round().max(1.0) as usize;
    eprintln!(
        "herald-loadgen: rooms N={n}: {total} messages from {senders} senders at {}/s",
        args.rate
    );
    let cpu0 = CpuSnapshot::take_all(&pids, target.nats_pid);
    let interval = Duration::from_secs_f64(1.0 / args.rate.max(0.01));
    let start = tokio::time::Instant::now();
    let mut sender_edge: HashMap<String, usize> = HashMap::new();
    for k in 0..total {
        tokio::time::sleep_until(start + interval * k as u32).await;
        let s = k % senders;
        let cmid = format!("m-{k}");
        sender_edge.insert(cmid.clone(), members[s].edge);
        let _ = members[s].tx.send(Cmd::Say(cmid));
    }
    let t1 = Instant::now();
    while t1.elapsed() < DRAIN_TIMEOUT {
        if members.iter().all(|m| m.log().messages.len() >= total) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let msg_cpu = cpu0.until(&CpuSnapshot::take_all(&pids, target.nats_pid));
    let (mut all, mut same, mut cross) = (Vec::new(), Vec::new(), Vec::new());
    let (mut lost, mut duplicated, mut reordered) = (0, 0, 0);
    for m in &members {
        let l = m.log();
        let mut count: HashMap<&str, usize> = HashMap::new();
        let mut prev = 0;
        for (cmid, seq, us) in &l.messages {
            *count.entry(cmid.as_str()).or_default() += 1;
            if *seq <= prev {
                reordered += 1;
            }
            prev = prev.max(*seq);
            let ms = *us as f64 / 1000.0;
            all.push(ms);
            if sender_edge.get(cmid) == Some(&m.edge) {
                same.push(ms);
            } else {
                cross.push(ms);
            }
        }
        for k in 0..total {
            match count.get(format!("m-{k}").as_str()) {
                None => lost += 1,
                Some(&c) if c > 1 => duplicated += c - 1,
                _ => {}
            }
        }
    }

    // (3) Typing: typers S..S+T, one frame per round each, rounds 2.5 s
    // apart; first spread over the round, then all at once.
    let typers: Vec<usize> = (senders..(senders + args.typers).min(n)).collect();
    eprintln!(
        "herald-loadgen: rooms N={n}: typing, {} users × {} rounds, spread then together",
        typers.len(),
        args.typing_rounds
    );
    let typing = typing_phase(&members, &typers, args.typing_rounds, true).await;
    let typing_burst = typing_phase(&members, &typers, args.typing_rounds, false).await;

    // (4) Presence: close members of edge 0 (from the end, not senders or
    // typers), measure the `offline` frame at the members of other edges.
    let first_free = senders + typers.len();
    let closing: Vec<usize> = (first_free..n)
        .rev()
        .filter(|&i| members[i].edge == 0)
        .take(args.closes)
        .collect();
    eprintln!(
        "herald-loadgen: rooms N={n}: closing {} connections",
        closing.len()
    );
    for &c in &closing {
        let _ = members[c].tx.send(Cmd::Close);
        tokio::time::sleep(CLOSE_GAP).await;
    }
    let closed_users: HashMap<String, usize> = closing
        .iter()
        .map(|&c| (members[c].user.clone(), c))
        .collect();
    let watchers: Vec<usize> = (0..n).filter(|&i| members[i].edge != 0).collect();
    let presence_owed = watchers.len() * closing.len();
    let t1 = Instant::now();
    let count_offline = |ms: &[Member]| {
        watchers
            .iter()
            .map(|&w| {
                ms[w]
                    .log()
                    .offline
                    .iter()
                    .filter(|(u, _)| closed_users.contains_key(u))
                    .count()
            })
            .sum::<usize>()
    };
    while t1.elapsed() < PRESENCE_WAIT && count_offline(&members) < presence_owed {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let closed_at: HashMap<&str, Instant> = closing
        .iter()
        .filter_map(|&c| Some((members[c].user.as_str(), members[c].log().closed_at?)))
        .collect();
    let mut presence_lat = Vec::new();
    let mut worst: HashMap<&str, f64> = HashMap::new();
    for &w in &watchers {
        for (u, at) in &members[w].log().offline {
            if let Some((&user, &c)) = closed_at.get_key_value(u.as_str()) {
                let ms = at.saturating_duration_since(c).as_secs_f64() * 1000.0;
                presence_lat.push(ms);
                let e = worst.entry(user).or_default();
                *e = e.max(ms);
            }
        }
    }
    let presence_got = presence_lat.len();
    let presence_worst_close = worst.values().copied().fold(0.0, f64::max);

    let mut errors = Vec::new();
    let mut error_count = 0;
    let mut dropped = 0;
    for (i, m) in members.iter().enumerate() {
        let l = m.log();
        error_count += l.errors.len();
        if errors.len() < 5 {
            errors.extend(l.errors.iter().take(5 - errors.len()).cloned());
        }
        if l.dropped.is_some() && !closing.contains(&i) {
            dropped += 1;
        }
    }
    stop(members).await;
    Ok(RunResult {
        members: n,
        per_edge,
        connect_s,
        join,
        join_wall_s,
        quiet_join,
        history_ok,
        presence_quiet_s,
        presence_frames,
        rss_before,
        rss_connected,
        rss_after,
        sent: total,
        msg: Pct::of(all),
        msg_same: Pct::of(same),
        msg_cross: Pct::of(cross),
        owed: total * n,
        lost,
        duplicated,
        reordered,
        msg_cpu,
        join_cpu,
        typing,
        typing_burst,
        presence: Pct::of(presence_lat),
        presence_owed,
        presence_got,
        presence_worst_close,
        errors,
        error_count,
        dropped,
    })
}

/// One typing phase's figures.
struct Typing {
    lat: Pct,
    owed: usize,
    got: usize,
}

/// Each typer sends `rounds` typing frames 2.5 s apart, `spread` evenly
/// over the round or all at the same instant; then 2.5 s for the frames to
/// arrive (and before a typer may type again). Latency is from the typer's
/// last frame sent before the receipt.
async fn typing_phase(members: &[Member], typers: &[usize], rounds: usize, spread: bool) -> Typing {
    for m in members {
        let mut l = m.log();
        l.typing.clear();
        l.typing_sent.clear();
    }
    let start = tokio::time::Instant::now();
    let step = if spread {
        TYPING_GAP / typers.len().max(1) as u32
    } else {
        Duration::ZERO
    };
    for r in 0..rounds {
        for (j, &t) in typers.iter().enumerate() {
            tokio::time::sleep_until(start + TYPING_GAP * r as u32 + step * j as u32).await;
            let _ = members[t].tx.send(Cmd::Typing);
        }
    }
    tokio::time::sleep(TYPING_GAP).await;
    let sent_by: HashMap<String, Vec<u64>> = typers
        .iter()
        .map(|&t| {
            (
                members[t].user.clone(),
                members[t].log().typing_sent.clone(),
            )
        })
        .collect();
    let mut lat = Vec::new();
    let mut got = 0;
    for m in members {
        for (user, at) in &m.log().typing {
            got += 1;
            if let Some(sent) = sent_by
                .get(user)
                .and_then(|v| v.iter().filter(|&&s| s <= *at).max())
            {
                lat.push((at - sent) as f64 / 1e6);
            }
        }
    }
    Typing {
        lat: Pct::of(lat),
        owed: typers.len() * rounds * (members.len() - 1),
        got,
    }
}

fn first_errors(members: &[Member]) -> String {
    let errs: Vec<String> = members
        .iter()
        .filter_map(|m| {
            let l = m.log();
            l.errors.first().cloned().or_else(|| l.dropped.clone())
        })
        .take(3)
        .collect();
    if errs.is_empty() {
        "no error frames".into()
    } else {
        errs.join("; ")
    }
}

/// Stops every member task (its connection closes).
async fn stop(members: Vec<Member>) {
    for m in members {
        drop(m.tx);
        m.handle.abort();
        let _ = m.handle.await;
    }
}

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

async fn connect(
    addr: SocketAddr,
    org: &str,
    token: &str,
    services_json: &str,
) -> Result<Ws, String> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let mut request = format!("ws://{addr}/v2/realtime/stream?org={org}")
        .into_client_request()
        .map_err(|e| format!("request: {e}"))?;
    let h = request.headers_mut();
    h.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| e.to_string())?,
    );
    h.insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("herald.v1.json"),
    );
    let (mut ws, _) = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio_tungstenite::client_async(request, stream),
    )
    .await
    .map_err(|_| "upgrade timed out".to_owned())?
    .map_err(|e| format!("upgrade: {e}"))?;
    let hello = format!(r#"{{"type":"hello","version":1,"services":{services_json}}}"#);
    ws.send(Message::text(hello))
        .await
        .map_err(|e| format!("send hello: {e}"))?;
    loop {
        let next = tokio::time::timeout(CONNECT_TIMEOUT, ws.next())
            .await
            .map_err(|_| "no ack".to_owned())?;
        match next {
            Some(Ok(Message::Text(t))) => {
                let f: Frame = serde_json::from_str(t.as_str()).map_err(|e| e.to_string())?;
                if f.kind == "ack" {
                    return Ok(ws);
                }
                return Err(format!("expected ack, got {t}"));
            }
            Some(Ok(Message::Close(c))) => return Err(format!("closed: {c:?}")),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("ended before ack".into()),
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn member(
    addr: SocketAddr,
    org: String,
    token: String,
    services_json: String,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
    log: Arc<Mutex<MemberLog>>,
    gate: Arc<Semaphore>,
    ready: mpsc::UnboundedSender<Result<(), String>>,
) {
    let permit = gate.acquire_owned().await;
    let mut ws = match connect(addr, &org, &token, &services_json).await {
        Ok(ws) => ws,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    drop(permit);
    let _ = ready.send(Ok(()));
    let mut join: Option<(Instant, oneshot::Sender<()>)> = None;
    loop {
        tokio::select! {
            cmd = rx.recv() => {
                let out = match cmd {
                    None => return,
                    Some(Cmd::Close) => {
                        lock(&log).closed_at = Some(Instant::now());
                        let _ = ws.close(None).await;
                        return;
                    }
                    Some(Cmd::Join(history, done)) => {
                        join = Some((Instant::now(), done));
                        format!(r#"{{"type":"join","room":"{ROOM}","history":{history}}}"#)
                    }
                    Some(Cmd::Say(cmid)) => format!(
                        r#"{{"type":"say","room":"{ROOM}","text":"lg {}","clientMsgId":"{cmid}"}}"#,
                        wall_ns()
                    ),
                    Some(Cmd::Typing) => {
                        lock(&log).typing_sent.push(wall_ns());
                        format!(r#"{{"type":"typing","room":"{ROOM}"}}"#)
                    }
                };
                if let Err(e) = ws.send(Message::text(out)).await {
                    lock(&log).dropped = Some(format!("send: {e}"));
                    return;
                }
            }
            next = ws.next() => {
                let at_ns = wall_ns();
                let at = Instant::now();
                let text = match next {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(c))) => {
                        lock(&log).dropped = Some(format!("closed: {c:?}"));
                        return;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        lock(&log).dropped = Some(e.to_string());
                        return;
                    }
                    None => {
                        lock(&log).dropped = Some("ended".into());
                        return;
                    }
                };
                let f: Frame = match serde_json::from_str(text.as_str()) {
                    Ok(f) => f,
                    Err(e) => {
                        lock(&log).errors.push(format!("bad frame: {e}"));
                        continue;
                    }
                };
                if f.kind == "ping" {
                    if ws.send(Message::text(r#"{"type":"pong"}"#)).await.is_err() {
                        return;
                    }
                    continue;
                }
                let mut l = lock(&log);
                l.frames += 1;
                match f.kind.as_str() {
                    "joined" => {
                        if let Some((sent, done)) = join.take() {
                            l.join_ms = Some(at.duration_since(sent).as_secs_f64() * 1000.0);
                            l.history_len = f.history.len();
                            l.history_last = f.history.last().map_or(0, |h| h.seq);
                            l.members_at_join = f.members.len();
                            let _ = done.send(());
                        }
                    }
                    "message" => {
                        let sent = f
                            .text
                            .as_deref()
                            .and_then(|t| t.strip_prefix("lg "))
                            .and_then(|t| t.parse::<u64>().ok())
                            .unwrap_or(at_ns);
                        l.messages.push((
                            f.client_msg_id.unwrap_or_default(),
                            f.seq.unwrap_or(0),
                            at_ns.saturating_sub(sent) / 1_000,
                        ));
                    }
                    "typing" => l.typing.push((f.user_id.unwrap_or_default(), at_ns)),
                    "presence" => {
                        l.presence_frames += 1;
                        if f.state.as_deref() == Some("offline") {
                            l.offline.push((f.user_id.unwrap_or_default(), at));
                        }
                    }
                    "error" => l.errors.push(format!(
                        "error {}: {}",
                        f.code.unwrap_or_default(),
                        f.message.unwrap_or_default()
                    )),
                    _ => {}
                }
            }
        }
    }
}

fn kib_text(v: &[Option<u64>]) -> String {
    v.iter()
        .map(|k| opt1(k.map(|k| k as f64 / 1024.0)))
        .collect::<Vec<_>>()
        .join(" / ")
}

fn report(args: &RoomsArgs, results: &[RunResult]) -> Report {
    let mut r = Report::new("Rooms: N members of one room over two edges");
    r.figure(
        "setup",
        format!(
            "{} prefilled messages, join history {}, join concurrency {}, {} senders at {}/s total for {} s, {} typers × {} rounds 2.5 s apart (spread over the round, then all at once), {} closes 250 ms apart",
            args.prefill,
            args.history,
            args.join_concurrency,
            args.senders,
            args.rate,
            args.duration,
            args.typers,
            args.typing_rounds,
            args.closes
        ),
    );
    for x in results {
        let n = x.members;
        let p = |s: &str| format!("[N={n}] {s}");
        let per_edge: Vec<String> = x.per_edge.iter().map(|c| c.to_string()).collect();
        r.figure(
            &p("members per edge; all connected in"),
            format!("{}; {:.1} s", per_edge.join(" / "), x.connect_s),
        );
        r.figure(
            &p("join → joined p50 / p99 / max, every member joining"),
            x.join.text(),
        );
        r.figure(
            &p("join → joined p50 / p99 / max, one at a time into the quiet room"),
            x.quiet_join.text(),
        );
        r.figure(
            &p("all joined in; presence frames quiet after"),
            format!(
                "{:.1} s; {:.1} s ({} presence frames)",
                x.join_wall_s, x.presence_quiet_s, x.presence_frames
            ),
        );
        r.figure(
            &p("joined with the full, latest history"),
            format!("{} of {n}", x.history_ok),
        );
        r.figure(
            &p("CPU while joining (% of one core)"),
            cpu_text(&x.join_cpu),
        );
        r.figure(
            &p("edge VmRSS before / connected / joined, MiB"),
            format!(
                "{} → {} → {}",
                kib_text(&x.rss_before),
                kib_text(&x.rss_connected),
                kib_text(&x.rss_after)
            ),
        );
        let per: Vec<String> = x.kib_per_member().iter().map(|k| opt1(*k)).collect();
        r.figure(&p("edge memory per joined member, KiB"), per.join(" / "));
        let split = |from: &[Option<u64>], to: &[Option<u64>]| {
            RunResult::per_member(from, to, &x.per_edge)
                .iter()
                .map(|k| opt1(*k))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        r.figure(
            &p("  of which connecting / joining, KiB per member"),
            format!(
                "{}; {}",
                split(&x.rss_before, &x.rss_connected),
                split(&x.rss_connected, &x.rss_after)
            ),
        );
        r.figure(&p("message → member p50 / p99 / max"), x.msg.text());
        r.figure(
            &p("  same edge / other edge as sender, p99"),
            format!("{:.1} / {:.1} ms", x.msg_same.p99, x.msg_cross.p99),
        );
        r.figure(
            &p("messages sent; deliveries owed / received"),
            format!("{}; {} / {}", x.sent, x.owed, x.msg.n),
        );
        r.figure(
            &p("lost / duplicated / out of order"),
            format!("{} / {} / {}", x.lost, x.duplicated, x.reordered),
        );
        r.figure(
            &p("CPU while messaging (% of one core)"),
            cpu_text(&x.msg_cpu),
        );
        r.figure(
            &p("typing → member p50 / p99 / max, typers spread over 2.5 s"),
            x.typing.lat.text(),
        );
        r.figure(
            &p("typing → member p50 / p99 / max, all typers at once"),
            x.typing_burst.lat.text(),
        );
        r.figure(
            &p("typing frames owed / received (spread; at once)"),
            format!(
                "{} / {}; {} / {}",
                x.typing.owed, x.typing.got, x.typing_burst.owed, x.typing_burst.got
            ),
        );
        r.figure(
            &p("close → offline at other edge p50 / p99 / max"),
            x.presence.text(),
        );
        r.figure(
            &p("offline frames owed / received; slowest close"),
            format!(
                "{} / {}; {:.0} ms",
                x.presence_owed, x.presence_got, x.presence_worst_close
            ),
        );
        r.figure(
            &p("error frames; unexpected disconnects"),
            format!(
                "{}{}; {}",
                x.error_count,
                if x.errors.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", x.errors.join("; "))
                },
                x.dropped
            ),
        );
    }
    for x in results {
        let n = x.members;
        let exact = x.lost == 0 && x.duplicated == 0 && x.reordered == 0 && x.msg.n > 0;
        r.goal(Goal::new(
            &format!("[N={n}] message → every member, p99"),
            "< 100 ms",
            format!("{:.1} ms", x.msg.p99),
            Some(x.msg.n > 0 && x.msg.p99 < GOAL_MESSAGE_MS),
        ));
        r.goal(Goal::new(
            &format!("[N={n}] every message to every member once, in order"),
            "0 lost, 0 duplicated, 0 reordered",
            format!(
                "{} lost, {} duplicated, {} reordered",
                x.lost, x.duplicated, x.reordered
            ),
            Some(exact),
        ));
        for (how, t) in [("spread", &x.typing), ("all at once", &x.typing_burst)] {
            r.goal(Goal::new(
                &format!("[N={n}] typing → members, p99 ({how})"),
                "< 100 ms",
                format!("{:.1} ms ({} of {} frames)", t.lat.p99, t.got, t.owed),
                Some(t.lat.n > 0 && t.lat.p99 < GOAL_TYPING_MS && t.got == t.owed),
            ));
        }
        r.goal(Goal::new(
            &format!(
                "[N={n}] join with {} messages of history, every member joining, p99",
                args.history
            ),
            "< 1 s",
            format!("{:.1} ms", x.join.p99),
            Some(x.join.n == n && x.join.p99 < GOAL_HISTORY_MS),
        ));
        r.goal(Goal::new(
            &format!(
                "[N={n}] join with {} messages of history, one at a time, p99",
                args.history
            ),
            "< 1 s",
            format!("{:.1} ms", x.quiet_join.p99),
            Some(x.quiet_join.n > 0 && x.quiet_join.p99 < GOAL_HISTORY_MS),
        ));
        r.goal(Goal::new(
            &format!("[N={n}] close → offline at the other edge, max"),
            "≤ 5 s",
            format!(
                "{:.0} ms ({} of {})",
                x.presence.max, x.presence_got, x.presence_owed
            ),
            Some(
                x.presence_owed > 0
                    && x.presence_got == x.presence_owed
                    && x.presence.max <= GOAL_PRESENCE_MS,
            ),
        ));
    }
    r
}

fn cpu_text(c: &CpuUse) -> String {
    format!(
        "edges {}, nats-server {}, loadgen {}, others {}",
        opt1(c.edge),
        opt1(c.nats),
        opt1(c.loadgen),
        opt1(c.others)
    )
}
