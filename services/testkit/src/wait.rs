//! Bounded waits on conditions, instead of sleeps that guess how long a
//! condition takes: [`eventually`] (and [`eventually_mut`]) polls any probe
//! until it holds, [`wait_metric`] waits on a node's JSON metrics, and
//! [`held_poll`] starts a long-poll and returns once the node really holds it.
//!
//! Every wait has a timeout and panics, naming what it waited for and the
//! last value it saw, when the timeout passes.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use serde_json::Value;
use tokio::task::JoinHandle;
use tokio::time::error::Elapsed;
use tokio::time::Instant;

use crate::fixture::Polled;
use crate::http::get_json;

/// Pause between two attempts of [`eventually`].
const POLL_EVERY: Duration = Duration::from_millis(50);
/// How long [`held_poll`] waits for the node to hold the poll.
const HOLD_TIMEOUT: Duration = Duration::from_secs(15);

/// What one attempt of [`eventually`] found: the value waited for, or not
/// yet (with what was seen instead, when the probe can tell).
///
/// Implemented for `Option<T>` (`None`: not yet, nothing to report) and for
/// `Result<T, E>` with a displayable `E` (`Err(seen)`: not yet, and `seen`
/// is quoted in the timeout's panic as the last observed value).
pub trait Outcome {
    /// The value the wait returns.
    type Value;
    /// `Ok(value)` when the condition holds; else what was seen, if anything.
    fn into_outcome(self) -> Result<Self::Value, Option<String>>;
}

impl<T> Outcome for Option<T> {
    type Value = T;
    fn into_outcome(self) -> Result<T, Option<String>> {
        self.ok_or(None)
    }
}

impl<T, E: fmt::Display> Outcome for Result<T, E> {
    type Value = T;
    fn into_outcome(self) -> Result<T, Option<String>> {
        self.map_err(|seen| Some(seen.to_string()))
    }
}

/// Runs `probe` until it reports the condition met, every 50 ms for at most
/// `timeout`, and returns the value it produced.
///
/// `probe` is a closure returning a future (`|| async { … }`) that yields
/// an [`Outcome`]: `Some(value)` / `Ok(value)` ends the wait; `None` or
/// `Err(seen)` means not yet, and `seen` is remembered as the last observed
/// value. An attempt still running at the deadline is cut off. For a probe
/// that updates what it captures (gathering events over several polls, or
/// reading frames from a client it borrows mutably), use
/// [`eventually_mut`].
///
/// Panics when `timeout` passes, with `what` (say what was awaited, e.g.
/// `"a reset after the stream was recreated"`), the time waited, the number
/// of attempts and the last observed value.
pub async fn eventually<R, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> R::Value
where
    R: Outcome,
    F: FnMut() -> Fut,
    Fut: Future<Output = R>,
{
    let mut attempts = Attempts::new(timeout, what);
    loop {
        let outcome = tokio::time::timeout_at(attempts.deadline, probe()).await;
        if let Some(value) = attempts.record(outcome) {
            return value;
        }
        attempts.pause().await;
    }
}

/// [`eventually`] for an async closure (`async || { … }`) whose attempts may
/// borrow and update what it captures, e.g. a cursor and the events read so
/// far, or a WebSocket client. Its future cannot be proven `Send` (a
/// compiler limitation), so it is for the test's own task, not inside
/// `tokio::spawn`.
pub async fn eventually_mut<R: Outcome>(
    timeout: Duration,
    what: &str,
    mut probe: impl AsyncFnMut() -> R,
) -> R::Value {
    let mut attempts = Attempts::new(timeout, what);
    loop {
        let outcome = tokio::time::timeout_at(attempts.deadline, probe()).await;
        if let Some(value) = attempts.record(outcome) {
            return value;
        }
        attempts.pause().await;
    }
}

/// The bookkeeping of [`eventually`]: the deadline, the attempts so far and
/// the last value seen.
struct Attempts<'a> {
    what: &'a str,
    started: Instant,
    deadline: Instant,
    count: u32,
    last: Option<String>,
}

impl<'a> Attempts<'a> {
    fn new(timeout: Duration, what: &'a str) -> Self {
        let started = Instant::now();
        Self {
            what,
            started,
            deadline: started + timeout,
            count: 0,
            last: None,
        }
    }

    /// The value when the attempt met the condition; panics when it ran
    /// into the deadline.
    fn record<R: Outcome>(&mut self, attempt: Result<R, Elapsed>) -> Option<R::Value> {
        self.count += 1;
        match attempt {
            Ok(outcome) => match outcome.into_outcome() {
                Ok(value) => Some(value),
                Err(seen) => {
                    self.last = seen.or(self.last.take());
                    None
                }
            },
            Err(_) => panic!(
                "timed out after {:?} waiting for {}: attempt {} was still running at the \
                 deadline; last observed: {}",
                self.started.elapsed(),
                self.what,
                self.count,
                self.last.as_deref().unwrap_or("nothing reported")
            ),
        }
    }

    /// Waits before the next attempt; panics when the deadline has passed.
    async fn pause(&self) {
        let now = Instant::now();
        if now >= self.deadline {
            panic!(
                "timed out after {:?} waiting for {} ({} attempts); last observed: {}",
                self.started.elapsed(),
                self.what,
                self.count,
                self.last.as_deref().unwrap_or("nothing reported")
            );
        }
        tokio::time::sleep(POLL_EVERY.min(self.deadline - now)).await;
    }
}

/// `GET <base_url>/v2/realtime/metrics` without a token: the node's JSON
/// metrics (the fixture nodes serve them publicly). Panics on any status
/// but 200.
pub async fn metrics(base_url: &str) -> Value {
    let (status, body, _) = get_json(&format!("{base_url}/v2/realtime/metrics"), None).await;
    assert_eq!(
        status, 200,
        "GET {base_url}/v2/realtime/metrics (is HERALD_METRICS_PUBLIC set?): {body}"
    );
    body
}

/// Waits (at most `timeout`) until the metric at `pointer` — a JSON pointer
/// into `/v2/realtime/metrics`, e.g. `"/waiters"` or `"/connections/sse"` —
/// of the node at `base_url` equals `want`. Returns the whole metrics
/// document that showed it; panics with the metric's last value on timeout.
pub async fn wait_metric(
    base_url: &str,
    pointer: &str,
    want: impl Into<Value>,
    timeout: Duration,
) -> Value {
    let want = want.into();
    wait_metric_until(base_url, pointer, &format!("= {want}"), timeout, |v| {
        *v == want
    })
    .await
}

/// Like [`wait_metric`], until the metric is a number of at least `min`.
pub async fn wait_metric_at_least(
    base_url: &str,
    pointer: &str,
    min: u64,
    timeout: Duration,
) -> Value {
    wait_metric_until(base_url, pointer, &format!(">= {min}"), timeout, |v| {
        v.as_u64().is_some_and(|n| n >= min)
    })
    .await
}

/// Like [`wait_metric`], until `reached` holds for the metric's value
/// (`Value::Null` while the metric is absent); `condition` describes it for
/// the panic message (e.g. `"> 0"`).
pub async fn wait_metric_until(
    base_url: &str,
    pointer: &str,
    condition: &str,
    timeout: Duration,
    reached: impl Fn(&Value) -> bool,
) -> Value {
    let what = format!("metric {pointer} {condition} on {base_url}");
    eventually(timeout, &what, || async {
        let m = metrics(base_url).await;
        let value = m.pointer(pointer).cloned().unwrap_or(Value::Null);
        if reached(&value) {
            Ok(m)
        } else {
            Err(format!("{pointer} = {value}"))
        }
    })
    .await
}

/// Starts `GET <base_url>/v1/realtime/poll?<query>` with `token` in a task
/// and returns it once the node holds the poll: once the node's `waiters`
/// gauge has risen above what it was before the request. A sleep of a few
/// hundred milliseconds is only a guess at that moment.
///
/// The query must ask for a hold (a `timeout` above 0, and a cursor with
/// nothing after it), and no other poll on that node may start or end in
/// the meantime, or the gauge says nothing about this one. The node's
/// metrics must be public (as on fixture nodes). Panics when the poll is
/// answered without being held, or is not held within 15 s.
pub async fn held_poll(base_url: &str, token: &str, query: &str) -> JoinHandle<Polled> {
    let before = waiters(base_url).await;
    let url = format!("{base_url}/v1/realtime/poll?{query}");
    let bearer = token.to_owned();
    let poll = tokio::spawn(async move {
        let (status, body, headers) = get_json(&url, Some(&bearer)).await;
        Polled {
            status,
            body,
            headers,
        }
    });
    let what = format!("the node at {base_url} to hold the poll ?{query}");
    let held = eventually(HOLD_TIMEOUT, &what, || async {
        if poll.is_finished() {
            return Ok(false);
        }
        let now = waiters(base_url).await;
        if now > before {
            Ok(true)
        } else {
            Err(format!("waiters = {now} (was {before} before the poll)"))
        }
    })
    .await;
    if !held {
        let answer = poll.await.expect("poll task");
        panic!(
            "the poll ?{query} on {base_url} was answered without being held: {} {}",
            answer.status, answer.body
        );
    }
    poll
}

async fn waiters(base_url: &str) -> u64 {
    let m = metrics(base_url).await;
    m["waiters"]
        .as_u64()
        .unwrap_or_else(|| panic!("no waiters gauge in the metrics of {base_url}: {m}"))
}
