//! The rooms of every org on this node: a hub per org, started by the
//! first join here and stopped once no member has been here for
//! [`IDLE_GRACE`].
//!
//! Invariant: at most one hub per org runs on a node (concurrent first
//! joins share one start), and a hub handed to a join is not stopped under
//! it: handing it out and reaping it both happen under the registry's lock,
//! and handing it out makes it busy again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::nats::rooms::{RoomStore, RoomStoreError};
use crate::ops::metrics::Metrics;
use crate::room::hub::{RoomOrg, IDLE_GRACE};

/// How often idle hubs are looked for.
const REAP_EVERY: Duration = Duration::from_secs(5);

type Slot = Arc<OnceCell<Arc<RoomOrg>>>;

/// Room hubs by org.
pub struct Rooms {
    store: RoomStore,
    /// The stream and bucket exist (made sure of once).
    ensured: OnceCell<()>,
    client: async_nats::Client,
    node_id: String,
    metrics: Arc<Metrics>,
    orgs: Mutex<HashMap<String, Slot>>,
    next_member: AtomicU64,
}

/// Gauges of the rooms on this node.
#[derive(Debug, Default, Clone, Copy)]
pub struct RoomGauges {
    /// Orgs with a running hub.
    pub orgs: u64,
    /// Rooms with a member here.
    pub rooms: u64,
    /// Member connections, summed over rooms.
    pub members: u64,
}

impl Rooms {
    /// No hub yet; the reaper runs until `stop`.
    pub fn new(
        store: RoomStore,
        client: async_nats::Client,
        node_id: String,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) -> Arc<Self> {
        let rooms = Arc::new(Self {
            store,
            ensured: OnceCell::new(),
            client,
            node_id,
            metrics,
            orgs: Mutex::new(HashMap::new()),
            next_member: AtomicU64::new(1),
        });
        tokio::spawn(Arc::clone(&rooms).reap(stop));
        rooms
    }

    /// A new member id (one per connection).
    pub fn member_id(&self) -> u64 {
        self.next_member.fetch_add(1, Relaxed)
    }

    /// The rooms stream and bucket, created first if missing.
    pub async fn store(&self) -> Result<&RoomStore, RoomStoreError> {
        self.ensured.get_or_try_init(|| self.store.ensure()).await?;
        Ok(&self.store)
    }

    /// The org's hub, started if it is not running.
    pub async fn hub(&self, org: &str) -> Result<Arc<RoomOrg>, RoomStoreError> {
        self.store().await?;
        let slot = Arc::clone(
            self.lock()
                .entry(org.to_owned())
                .or_insert_with(|| Arc::new(OnceCell::new())),
        );
        let hub = slot
            .get_or_try_init(|| {
                RoomOrg::start(
                    org,
                    &self.node_id,
                    self.store.clone(),
                    self.client.clone(),
                    Arc::clone(&self.metrics),
                )
            })
            .await?;
        let current = {
            let map = self.lock();
            let current = map.get(org).is_some_and(|s| Arc::ptr_eq(s, &slot));
            if current {
                hub.touch();
            }
            current
        };
        if !current {
            // Reaped meanwhile: start again.
            return Box::pin(self.hub(org)).await;
        }
        Ok(Arc::clone(hub))
    }

    /// The org's hub if it runs.
    pub fn running(&self, org: &str) -> Option<Arc<RoomOrg>> {
        self.lock().get(org).and_then(|s| s.get().cloned())
    }

    /// Gauges over every hub.
    pub fn gauges(&self) -> RoomGauges {
        let hubs: Vec<Arc<RoomOrg>> = self
            .lock()
            .values()
            .filter_map(|s| s.get().cloned())
            .collect();
        RoomGauges {
            orgs: hubs.len() as u64,
            rooms: hubs.iter().map(|h| h.rooms_here() as u64).sum(),
            members: hubs.iter().map(|h| h.members_here() as u64).sum(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.orgs.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn reap(self: Arc<Self>, stop: CancellationToken) {
        let mut every = tokio::time::interval(REAP_EVERY);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = every.tick() => {}
            }
            let now = Instant::now();
            self.lock().retain(|org, slot| {
                let Some(hub) = slot.get() else { return true };
                let idle = hub
                    .idle_since()
                    .is_some_and(|since| now.duration_since(since) >= IDLE_GRACE);
                if idle {
                    tracing::debug!(org, "rooms of the org idle here; stopping their feeds");
                    hub.cancel.cancel();
                }
                !idle
            });
        }
        // Draining: every hub deletes this node's presence entries.
        for slot in self.lock().values() {
            if let Some(hub) = slot.get() {
                hub.cancel.cancel();
            }
        }
    }
}
