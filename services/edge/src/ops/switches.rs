//! Kill switches. `HERALD_DISABLED` and `HERALD_DISABLED_SERVICES` set them
//! for one node at start; an operator flips them for the whole cluster at
//! runtime through `PUT /v2/realtime/switches`, which stores them in the NATS
//! key-value bucket `HERALD_SWITCHES`. Every node reads the bucket every
//! `HERALD_HEAD_INTERVAL`; a switch is on when either source turns it on.
//! A value that does not parse is ignored (logged as an error, at most once
//! a minute, and counted): the last good value stays in force, so a broken
//! write cannot silently turn every switch off.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use herald_proto::CloseCode;
use serde::{Deserialize, Serialize};

use tokio_util::sync::CancellationToken;

use crate::delivery::filter::ServiceSet;
use crate::ops::connections::{Connections, Control};
use crate::ops::metrics::Metrics;

/// Bucket holding the cluster-wide switches.
pub const BUCKET: &str = "HERALD_SWITCHES";
/// Key of the switches document.
const KEY: &str = "switches";
/// Least time between two error logs about a malformed stored value.
const MALFORMED_LOG_EVERY: Duration = Duration::from_secs(60);

/// The switches as stored and as answered by the admin endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SwitchState {
    /// Refuse realtime streams.
    #[serde(default)]
    pub disabled: bool,
    /// Services not delivered.
    #[serde(default)]
    pub disabled_services: Vec<String>,
}

/// This node's effective switches.
pub struct Switches {
    env_disabled: bool,
    env_services: Vec<String>,
    known: Option<Arc<HashSet<String>>>,
    disabled: AtomicBool,
    services: RwLock<Arc<ServiceSet>>,
    runtime: RwLock<SwitchState>,
}

impl Switches {
    /// Switches from the node's configuration.
    pub fn new(disabled: bool, services: &[String]) -> Self {
        Self {
            env_disabled: disabled,
            env_services: services.to_vec(),
            known: None,
            disabled: AtomicBool::new(disabled),
            services: RwLock::new(Arc::new(ServiceSet::new(
                services.iter().cloned().collect(),
                None,
            ))),
            runtime: RwLock::new(SwitchState::default()),
        }
    }

    /// Sets the services that exist (`HERALD_SERVICES`); `None` accepts any name.
    pub fn with_known(mut self, known: Option<HashSet<String>>) -> Self {
        self.known = known.map(Arc::new);
        let state = self.runtime();
        self.apply(state);
        self
    }

    /// Realtime streams refused.
    pub fn disabled(&self) -> bool {
        self.disabled.load(Relaxed)
    }

    /// The service rules every filter follows: the services not delivered
    /// and, with `HERALD_SERVICES`, the services that exist.
    pub fn disabled_services(&self) -> Arc<ServiceSet> {
        Arc::clone(&self.services.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The cluster-wide (runtime) part.
    pub fn runtime(&self) -> SwitchState {
        self.runtime
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Applies a runtime state; true when streams just got disabled.
    fn apply(&self, state: SwitchState) -> bool {
        let was = self.disabled();
        let now = self.env_disabled || state.disabled;
        self.disabled.store(now, Relaxed);
        let services: HashSet<String> = self
            .env_services
            .iter()
            .chain(&state.disabled_services)
            .cloned()
            .collect();
        *self.services.write().unwrap_or_else(|p| p.into_inner()) =
            Arc::new(ServiceSet::new(services, self.known.clone()));
        *self.runtime.write().unwrap_or_else(|p| p.into_inner()) = state;
        now && !was
    }
}

/// Why the cluster-wide switches could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The bucket neither exists nor could be created.
    #[error("cannot create the bucket {BUCKET}: {0}")]
    Bucket(#[from] async_nats::jetstream::context::CreateKeyValueError),
    /// The value could not be encoded.
    #[error("cannot encode the switches: {0}")]
    Encode(#[from] serde_json::Error),
    /// The value was not written.
    #[error("cannot write the switches: {0}")]
    Put(#[from] kv::PutError),
}

/// Stores a new cluster-wide state, creating the bucket (with `replicas`)
/// when it does not exist.
pub async fn store(
    client: &async_nats::Client,
    replicas: usize,
    state: &SwitchState,
) -> Result<(), StoreError> {
    let js = jetstream::new(client.clone());
    let store = match js.get_key_value(BUCKET).await {
        Ok(s) => s,
        Err(_) => {
            js.create_key_value(kv::Config {
                bucket: BUCKET.into(),
                history: 1,
                num_replicas: replicas,
                ..Default::default()
            })
            .await?
        }
    };
    let bytes = serde_json::to_vec(state)?;
    store.put(KEY, bytes.into()).await?;
    Ok(())
}

/// Reads the bucket every `interval` until `stop`, applying what it finds;
/// when streams get disabled every open connection is closed.
pub async fn follow(
    switches: Arc<Switches>,
    client: async_nats::Client,
    connections: Arc<Connections>,
    metrics: Arc<Metrics>,
    interval: Duration,
    stop: CancellationToken,
) {
    let js = jetstream::new(client);
    let mut store = None;
    let mut malformed_logged: Option<tokio::time::Instant> = None;
    loop {
        if store.is_none() {
            store = js.get_key_value(BUCKET).await.ok();
        }
        if let Some(s) = &store {
            match s.get(KEY).await {
                Ok(value) => {
                    // A deleted key means no cluster switches; a malformed one
                    // changes nothing.
                    let state = match value.map(|v| serde_json::from_slice::<SwitchState>(&v)) {
                        None => SwitchState::default(),
                        Some(Ok(state)) => state,
                        Some(Err(e)) => {
                            metrics.guards.switch_errors.fetch_add(1, Relaxed);
                            if malformed_logged.is_none_or(|t| t.elapsed() >= MALFORMED_LOG_EVERY) {
                                malformed_logged = Some(tokio::time::Instant::now());
                                tracing::error!(bucket = BUCKET, key = KEY, error = %e,
                                    "malformed kill switches ignored; the last good value stays in force");
                            }
                            switches.runtime()
                        }
                    };
                    if state != switches.runtime() {
                        tracing::warn!(?state, "kill switches changed");
                        if switches.apply(state) {
                            let close = Control::Close {
                                code: CloseCode::Disabled.code(),
                                reason: "realtime disabled".into(),
                            };
                            connections.broadcast(&close);
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "cannot read kill switches"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.cancelled() => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn either_source_turns_a_switch_on() {
        let s = Switches::new(false, &["analytics".into()]);
        assert!(!s.disabled());
        assert!(s.apply(SwitchState {
            disabled: true,
            disabled_services: vec!["tasks".into()]
        }));
        assert!(s.disabled());
        assert!(
            s.disabled_services().is_disabled("analytics")
                && s.disabled_services().is_disabled("tasks")
        );
        assert!(!s.apply(SwitchState::default()));
        assert!(!s.disabled());
        let env = Switches::new(true, &[]);
        env.apply(SwitchState::default());
        assert!(env.disabled(), "the environment's switch stays on");
    }
}
