//! Open client connections of this node (WebSocket and SSE streams, and
//! long-polls in progress): counted against the node and per-user limits,
//! and indexed by org, then user, so that a control message from any node
//! reaches a user's streams by lookup, never by scanning the node.

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
    /// A long-poll in progress: counted, never sent control commands.
    LongPoll,
}

impl Transport {
    /// Its name in traces and logs.
    pub fn name(self) -> &'static str {
        match self {
            Transport::WebSocket => "websocket",
            Transport::Sse => "sse",
            Transport::LongPoll => "longpoll",
        }
    }
}

/// One org's open connections on this node, by transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OrgCounts {
    /// WebSocket streams.
    pub websocket: u64,
    /// SSE streams.
    pub sse: u64,
    /// Long-polls in progress.
    pub longpoll: u64,
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
    transport: Transport,
    inbox: Arc<Inbox>,
}

type Key = (Arc<str>, Arc<str>);
/// Org → user → that user's connections.
type Index = HashMap<Arc<str>, HashMap<Arc<str>, Vec<Entry>>>;

/// The node's open connections.
#[derive(Default)]
pub struct Connections {
    by_org: Mutex<Index>,
    next_id: AtomicU64,
    websocket: AtomicU64,
    sse: AtomicU64,
    longpoll: AtomicU64,
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

impl LimitError {
    /// What the client is told.
    pub fn message(self) -> &'static str {
        match self {
            Self::Node => "node connection limit reached",
            Self::User => "too many connections for this user",
        }
    }
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
        let (org, user) = &self.key;
        if let Some(users) = map.get_mut(org) {
            if let Some(list) = users.get_mut(user) {
                list.retain(|e| e.id != self.id);
                if list.is_empty() {
                    users.remove(user);
                }
            }
            if users.is_empty() {
                map.remove(org);
            }
        }
        self.conns.counter(self.transport).fetch_sub(1, Relaxed);
    }
}

impl Connections {
    fn map(&self) -> MutexGuard<'_, Index> {
        self.by_org.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn counter(&self, t: Transport) -> &AtomicU64 {
        match t {
            Transport::WebSocket => &self.websocket,
            Transport::Sse => &self.sse,
            Transport::LongPoll => &self.longpoll,
        }
    }

    /// Open WebSocket and SSE connections.
    pub fn counts(&self) -> (u64, u64) {
        (self.websocket.load(Relaxed), self.sse.load(Relaxed))
    }

    /// Every counted connection: streams and polls in progress.
    fn total(&self) -> u64 {
        self.websocket.load(Relaxed) + self.sse.load(Relaxed) + self.longpoll.load(Relaxed)
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
        if self.total() as usize >= max_total {
            return Err(LimitError::Node);
        }
        let (org, user): Key = (org.into(), user.into());
        let users = map.entry(Arc::clone(&org)).or_default();
        if users.get(&user).is_some_and(|l| l.len() >= max_per_user) {
            return Err(LimitError::User);
        }
        let list = users.entry(Arc::clone(&user)).or_default();
        let id = self.next_id.fetch_add(1, Relaxed) + 1;
        let inbox = Arc::new(Inbox::default());
        list.push(Entry {
            id,
            transport,
            inbox: Arc::clone(&inbox),
        });
        let key = (org, user);
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
        // Look the targets up under the lock, queue outside it: registering
        // and closing connections never waits on a large dispatch.
        let inboxes: Vec<Arc<Inbox>> = {
            let map = self.map();
            let Some(users) = map.get(org) else {
                return 0;
            };
            let lists: Vec<&Vec<Entry>> = match user {
                Some(u) => users.get(u).into_iter().collect(),
                None => users.values().collect(),
            };
            lists
                .into_iter()
                .flatten()
                .filter(|e| e.transport != Transport::LongPoll)
                .map(|e| Arc::clone(&e.inbox))
                .collect()
        };
        inboxes
            .iter()
            .filter(|i| i.try_send(control.clone()))
            .count()
    }

    /// Open connections of one org on this node (an org admin's view):
    /// WebSocket streams, SSE streams and long-polls in progress.
    pub fn org_counts(&self, org: &str) -> OrgCounts {
        let map = self.map();
        let mut counts = OrgCounts::default();
        for e in map
            .get(org)
            .into_iter()
            .flat_map(|users| users.values().flatten())
        {
            match e.transport {
                Transport::WebSocket => counts.websocket += 1,
                Transport::Sse => counts.sse += 1,
                Transport::LongPoll => counts.longpoll += 1,
            }
        }
        counts
    }

    /// Sends `control` to every stream connection of the node.
    pub fn broadcast(&self, control: &Control) -> usize {
        let inboxes: Vec<Arc<Inbox>> = self
            .map()
            .values()
            .flat_map(|users| users.values().flatten())
            .filter(|e| e.transport != Transport::LongPoll)
            .map(|e| Arc::clone(&e.inbox))
            .collect();
        inboxes
            .iter()
            .filter(|i| i.try_send(control.clone()))
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
        let counts = |org| {
            let n = c.org_counts(org);
            (n.websocket, n.sse, n.longpoll)
        };
        assert_eq!(counts("acme"), (1, 1, 0));
        assert_eq!(counts("globex"), (1, 0, 0));
        assert_eq!(counts("initech"), (0, 0, 0));
    }

    #[test]
    fn polls_count_toward_the_caps_but_get_no_commands() {
        let c = Arc::new(Connections::default());
        let poll = c
            .register("acme", "u1", Transport::LongPoll, 3, 2)
            .expect("registered");
        let _ws = c
            .register("acme", "u1", Transport::WebSocket, 3, 2)
            .expect("registered");
        assert_eq!(
            c.register("acme", "u1", Transport::LongPoll, 3, 2).err(),
            Some(LimitError::User)
        );
        let _other = c
            .register("acme", "u2", Transport::LongPoll, 3, 2)
            .expect("registered");
        assert_eq!(
            c.register("acme", "u3", Transport::Sse, 3, 2).err(),
            Some(LimitError::Node)
        );
        assert_eq!(c.counts(), (1, 0), "polls are not streams");
        let acme = c.org_counts("acme");
        assert_eq!((acme.websocket, acme.sse, acme.longpoll), (1, 0, 2));
        let close = Control::Close {
            code: 4001,
            reason: "bye".into(),
        };
        assert_eq!(c.dispatch("acme", Some("u1"), &close), 1);
        assert!(poll.try_recv().is_none());
        drop(poll);
        assert!(c.register("acme", "u1", Transport::Sse, 3, 2).is_ok());
        assert_eq!(c.dispatch("nobody", None, &close), 0);
    }
}
