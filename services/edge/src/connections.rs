//! Open stream connections (WebSocket and SSE) of this node: counted against
//! the node and per-user limits, and reachable by (org, user) so control
//! messages from any node can change or close them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

use std::collections::VecDeque;

use tokio::sync::Notify;

/// Commands a connection accepts from outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Change the subscription in place.
    Update {
        /// New services.
        services: Vec<String>,
        /// New property filter.
        property: Option<String>,
    },
    /// Close with this code and reason.
    Close {
        /// WebSocket close code.
        code: u16,
        /// Why.
        reason: String,
    },
}

/// Transport of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// WebSocket stream.
    WebSocket,
    /// Server-Sent Events.
    Sse,
}

/// Commands queued per connection before further ones are dropped.
const CONTROL_QUEUE: usize = 16;

/// A connection's queue of control commands. Allocated only when used: a
/// channel would cost every idle connection a preallocated block.
#[derive(Default)]
struct Inbox {
    queue: Mutex<VecDeque<Control>>,
    ready: Notify,
}

impl Inbox {
    fn try_send(&self, control: Control) -> bool {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() >= CONTROL_QUEUE {
            return false;
        }
        q.push_back(control);
        drop(q);
        self.ready.notify_one();
        true
    }

    fn pop(&self) -> Option<Control> {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
    }
}

struct Entry {
    id: u64,
    inbox: Arc<Inbox>,
    transport: Transport,
}

type Key = (Arc<str>, Arc<str>);

/// The node's open connections.
#[derive(Default)]
pub struct Connections {
    by_user: Mutex<HashMap<Key, Vec<Entry>>>,
    next_id: AtomicU64,
    websocket: AtomicU64,
    sse: AtomicU64,
    /// Connections currently quarantined as slow.
    pub quarantined: AtomicU64,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitError {
    /// `HERALD_MAX_CONNECTIONS` reached.
    Node,
    /// `HERALD_MAX_CONNECTIONS_PER_USER` reached.
    User,
}

/// A registered connection; unregisters on drop.
pub struct Registration {
    conns: Arc<Connections>,
    key: Key,
    id: u64,
    transport: Transport,
    inbox: Arc<Inbox>,
}

impl Registration {
    /// Connection id, unique on this node.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The next command for this connection (cancel-safe). Never `None`;
    /// the option keeps call sites shaped like a channel's.
    pub async fn recv(&self) -> Option<Control> {
        loop {
            if let Some(c) = self.inbox.pop() {
                return Some(c);
            }
            self.inbox.ready.notified().await;
        }
    }

    /// A command already queued, without waiting.
    pub fn try_recv(&self) -> Option<Control> {
        self.inbox.pop()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut map = self.conns.map();
        if let Some(list) = map.get_mut(&self.key) {
            list.retain(|e| e.id != self.id);
            if list.is_empty() {
                map.remove(&self.key);
            }
        }
        self.conns.counter(self.transport).fetch_sub(1, Relaxed);
    }
}

impl Connections {
    fn map(&self) -> MutexGuard<'_, HashMap<Key, Vec<Entry>>> {
        self.by_user.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn counter(&self, t: Transport) -> &AtomicU64 {
        match t {
            Transport::WebSocket => &self.websocket,
            Transport::Sse => &self.sse,
        }
    }

    /// Open WebSocket and SSE connections.
    pub fn counts(&self) -> (u64, u64) {
        (self.websocket.load(Relaxed), self.sse.load(Relaxed))
    }

    /// Registers a connection of `user` in `org`, within the limits.
    pub fn register(
        self: &Arc<Self>,
        org: &str,
        user: &str,
        transport: Transport,
        max_total: usize,
        max_per_user: usize,
    ) -> Result<Registration, LimitError> {
        let mut map = self.map();
        let (ws, sse) = self.counts();
        if (ws + sse) as usize >= max_total {
            return Err(LimitError::Node);
        }
        let key: Key = (org.into(), user.into());
        let list = map.entry(key.clone()).or_default();
        if list.len() >= max_per_user {
            if list.is_empty() {
                map.remove(&key);
            }
            return Err(LimitError::User);
        }
        let id = self.next_id.fetch_add(1, Relaxed) + 1;
        let inbox = Arc::new(Inbox::default());
        list.push(Entry {
            id,
            inbox: Arc::clone(&inbox),
            transport,
        });
        self.counter(transport).fetch_add(1, Relaxed);
        Ok(Registration {
            conns: Arc::clone(self),
            key,
            id,
            transport,
            inbox,
        })
    }

    /// Sends `control` to every connection of `user` in `org` (every user of
    /// the org when `user` is `None`); returns how many were reached.
    pub fn dispatch(&self, org: &str, user: Option<&str>, control: &Control) -> usize {
        let map = self.map();
        let mut reached = 0;
        for ((o, u), list) in map.iter() {
            if &**o != org || user.is_some_and(|want| want != &**u) {
                continue;
            }
            for e in list {
                if e.inbox.try_send(control.clone()) {
                    reached += 1;
                }
            }
        }
        reached
    }

    /// Open WebSocket and SSE connections of one org (an org admin's view).
    pub fn org_counts(&self, org: &str) -> (u64, u64) {
        let map = self.map();
        let mut counts = (0, 0);
        for e in map
            .iter()
            .filter(|((o, _), _)| &**o == org)
            .flat_map(|(_, l)| l)
        {
            match e.transport {
                Transport::WebSocket => counts.0 += 1,
                Transport::Sse => counts.1 += 1,
            }
        }
        counts
    }

    /// Sends `control` to every connection of the node.
    pub fn broadcast(&self, control: &Control) -> usize {
        self.map()
            .values()
            .flatten()
            .filter(|e| e.inbox.try_send(control.clone()))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enforces_limits_and_unregisters_on_drop() {
        let c = Arc::new(Connections::default());
        let a = c
            .register("acme", "u1", Transport::WebSocket, 3, 2)
            .unwrap();
        let _b = c.register("acme", "u1", Transport::Sse, 3, 2).unwrap();
        assert_eq!(
            c.register("acme", "u1", Transport::WebSocket, 3, 2).err(),
            Some(LimitError::User)
        );
        let _c = c
            .register("acme", "u2", Transport::WebSocket, 3, 2)
            .unwrap();
        assert_eq!(
            c.register("acme", "u3", Transport::WebSocket, 3, 2).err(),
            Some(LimitError::Node)
        );
        assert_eq!(c.counts(), (2, 1));
        drop(a);
        assert_eq!(c.counts(), (1, 1));
        assert!(c.register("acme", "u1", Transport::WebSocket, 3, 2).is_ok());
    }

    #[test]
    fn dispatches_by_org_and_user() {
        let c = Arc::new(Connections::default());
        let a = c
            .register("acme", "u1", Transport::WebSocket, 10, 10)
            .unwrap();
        let b = c.register("acme", "u2", Transport::Sse, 10, 10).unwrap();
        let other = c
            .register("globex", "u1", Transport::WebSocket, 10, 10)
            .unwrap();
        let close = Control::Close {
            code: 4001,
            reason: "bye".into(),
        };
        assert_eq!(c.dispatch("acme", Some("u1"), &close), 1);
        assert_eq!(a.try_recv().unwrap(), close);
        assert!(b.try_recv().is_none());
        assert_eq!(c.dispatch("acme", None, &close), 2);
        assert!(b.try_recv().is_some());
        assert!(other.try_recv().is_none());
        assert_eq!(c.broadcast(&close), 3);
        assert_eq!(c.org_counts("acme"), (1, 1));
        assert_eq!(c.org_counts("globex"), (1, 0));
        assert_eq!(c.org_counts("initech"), (0, 0));
    }
}
