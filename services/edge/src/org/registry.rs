//! The orgs a node holds state for. An org's state (buffer, NATS interest)
//! is created when its first client arrives and released once it has had no
//! client for `HERALD_ORG_IDLE_EVICT`.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::org::hub::OrgHub;
use crate::org::{feed, OrgLimits, Upstream};

/// An org's state cannot be created yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the event stream is not reachable yet")]
pub struct StreamNotReached;

/// Counts for the metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct RegistryStats {
    /// Orgs held.
    pub total: u64,
    /// Orgs with a client now.
    pub active: u64,
    /// Events buffered over all orgs.
    pub buffered: u64,
    /// Held polls over all orgs.
    pub waiters: u64,
    /// Orgs whose feed is not trusted yet (just subscribed, or recovering
    /// from a possible loss): their live messages are checked against the stream.
    pub untrusted: u64,
}

/// Org states by org id.
pub struct Registry {
    orgs: Mutex<HashMap<Arc<str>, Arc<OrgHub>>>,
    upstream: Arc<Upstream>,
    limits: OrgLimits,
    /// The clock of `OrgHub::last_used_ms`.
    started: Instant,
}

/// A client's use of an org; the org is not evicted while a lease lives.
pub struct Lease {
    hub: Arc<OrgHub>,
    started: Instant,
}

impl Deref for Lease {
    type Target = OrgHub;
    fn deref(&self) -> &OrgHub {
        &self.hub
    }
}

impl Lease {
    /// The leased hub, to keep beyond a borrow.
    pub fn hub(&self) -> Arc<OrgHub> {
        Arc::clone(&self.hub)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.hub
            .last_used_ms
            .store(millis_since(self.started), Relaxed);
        self.hub.users.fetch_sub(1, Relaxed);
    }
}

fn millis_since(start: Instant) -> u64 {
    start.elapsed().as_millis() as u64
}

impl Registry {
    /// No org held yet; each org's feed will read from `upstream`.
    pub fn new(upstream: Arc<Upstream>, limits: OrgLimits) -> Self {
        Self {
            orgs: Mutex::default(),
            upstream,
            limits,
            started: Instant::now(),
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<OrgHub>>> {
        self.orgs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Leases `org`, creating its state and starting its ingestion when new.
    /// Fails while the stream head is unknown (NATS not reached yet).
    pub fn lease(&self, org: &str) -> Result<Lease, StreamNotReached> {
        let mut map = self.map();
        let hub = match map.get(org) {
            Some(hub) => Arc::clone(hub),
            None => {
                let heads = Arc::clone(self.upstream.streams.for_org(org));
                let head = heads.current().ok_or(StreamNotReached)?;
                let hub = OrgHub::new(
                    org,
                    Arc::clone(&self.upstream),
                    heads,
                    &self.limits,
                    head.last_seq,
                    head.epoch,
                );
                map.insert(Arc::clone(&hub.org), Arc::clone(&hub));
                tokio::spawn(feed::run(Arc::clone(&hub)));
                hub
            }
        };
        hub.users.fetch_add(1, Relaxed);
        Ok(Lease {
            hub,
            started: self.started,
        })
    }

    /// Releases orgs without clients for longer than `idle`; returns how many.
    pub fn evict_idle(&self, idle: Duration) -> usize {
        let now_ms = millis_since(self.started);
        let idle_ms = idle.as_millis() as u64;
        let mut map = self.map();
        let before = map.len();
        map.retain(|_, hub| {
            let keep = hub.users.load(Relaxed) > 0
                || now_ms.saturating_sub(hub.last_used_ms.load(Relaxed)) < idle_ms;
            if !keep {
                hub.cancel.cancel();
            }
            keep
        });
        before - map.len()
    }

    /// Stops every org's ingestion.
    pub fn shutdown(&self) {
        for hub in self.map().drain().map(|(_, h)| h) {
            hub.cancel.cancel();
        }
    }

    /// Counts of one org (an org admin's view of the metrics): zero when
    /// the node holds no state for it.
    pub fn org_stats(&self, org: &str) -> RegistryStats {
        let map = self.map();
        let Some(hub) = map.get(org) else {
            return RegistryStats::default();
        };
        RegistryStats {
            total: 1,
            active: u64::from(hub.users.load(Relaxed) > 0),
            buffered: hub.buffered() as u64,
            waiters: hub.waiters.load(Relaxed) as u64,
            untrusted: u64::from(!hub.trusted.load(Relaxed)),
        }
    }

    /// Counts for the metrics.
    pub fn stats(&self) -> RegistryStats {
        let map = self.map();
        let mut s = RegistryStats {
            total: map.len() as u64,
            ..RegistryStats::default()
        };
        for hub in map.values() {
            if hub.users.load(Relaxed) > 0 {
                s.active += 1;
            }
            s.buffered += hub.buffered() as u64;
            s.waiters += hub.waiters.load(Relaxed) as u64;
            s.untrusted += u64::from(!hub.trusted.load(Relaxed));
        }
        s
    }
}
