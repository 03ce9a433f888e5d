//! Presence as every node computes it: the entries each node keeps in NATS
//! for a room (its users there and their state), merged into one state per
//! user, and the changes a new entry makes to that merge.
//!
//! Invariant: a user is `online` while any node's entry has them online,
//! `away` while entries have them and all say away, `offline` when no
//! entry has them; a change is reported exactly when that merged state
//! moves, whichever node's entry moved it. Pure: no I/O, no clock.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use herald_proto::room::{Member, PresenceState};

use crate::nats::rooms::PresenceEntry;

/// The presence entries of every room of one org, by node.
#[derive(Debug, Default)]
pub struct PresenceView {
    rooms: HashMap<String, HashMap<String, PresenceEntry>>,
}

impl PresenceView {
    /// Sets `node`'s entry for `room` (an empty entry removes it); returns
    /// the users whose merged state changed, with their new state.
    pub fn apply(
        &mut self,
        room: &str,
        node: &str,
        entry: PresenceEntry,
    ) -> Vec<(String, PresenceState)> {
        let nodes = self.rooms.entry(room.to_owned()).or_default();
        let old = nodes.get(node).cloned().unwrap_or_default();
        let touched: BTreeSet<String> = old
            .users
            .keys()
            .chain(entry.users.keys())
            .cloned()
            .collect();
        let before: Vec<PresenceState> = touched.iter().map(|u| merged(nodes, u)).collect();
        if entry.users.is_empty() {
            nodes.remove(node);
        } else {
            nodes.insert(node.to_owned(), entry);
        }
        let changes = touched
            .into_iter()
            .zip(before)
            .filter_map(|(u, was)| {
                let now = merged(nodes, &u);
                (now != was).then_some((u, now))
            })
            .collect();
        if nodes.is_empty() {
            self.rooms.remove(room);
        }
        changes
    }

    /// The merged state of `user` in `room`.
    pub fn state(&self, room: &str, user: &str) -> PresenceState {
        self.rooms
            .get(room)
            .map_or(PresenceState::Offline, |nodes| merged(nodes, user))
    }

    /// Every user present in `room`, online or away, by user id.
    pub fn members(&self, room: &str) -> Vec<Member> {
        let Some(nodes) = self.rooms.get(room) else {
            return Vec::new();
        };
        let users: BTreeSet<&String> = nodes.values().flat_map(|e| e.users.keys()).collect();
        users
            .into_iter()
            .map(|u| Member {
                user_id: u.clone(),
                state: merged(nodes, u),
            })
            .collect()
    }
}

fn merged(nodes: &HashMap<String, PresenceEntry>, user: &str) -> PresenceState {
    let mut state = PresenceState::Offline;
    for e in nodes.values() {
        match e.users.get(user) {
            Some(PresenceState::Online) => return PresenceState::Online,
            Some(PresenceState::Away) => state = PresenceState::Away,
            _ => {}
        }
    }
    state
}

/// A node's entry for a room from its local connections' `(user, away)`:
/// a user is online here while any of their connections is not away.
pub fn local_entry<'a>(connections: impl Iterator<Item = (&'a str, bool)>) -> PresenceEntry {
    let mut users: BTreeMap<String, PresenceState> = BTreeMap::new();
    for (user, away) in connections {
        let state = if away {
            PresenceState::Away
        } else {
            PresenceState::Online
        };
        users
            .entry(user.to_owned())
            .and_modify(|s| {
                if state == PresenceState::Online {
                    *s = PresenceState::Online;
                }
            })
            .or_insert(state);
    }
    PresenceEntry { users }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PresenceState::{Away, Offline, Online};

    fn entry(users: &[(&str, PresenceState)]) -> PresenceEntry {
        PresenceEntry {
            users: users.iter().map(|(u, s)| ((*u).to_owned(), *s)).collect(),
        }
    }

    #[test]
    fn a_user_is_online_while_any_node_has_them_online() {
        let mut v = PresenceView::default();
        assert_eq!(
            v.apply("r", "a", entry(&[("u1", Online)])),
            [("u1".into(), Online)]
        );
        // A second node adds nothing new.
        assert_eq!(v.apply("r", "b", entry(&[("u1", Away)])), []);
        assert_eq!(v.state("r", "u1"), Online);
        // Node a's connection goes away: b still holds u1, away.
        assert_eq!(
            v.apply("r", "a", PresenceEntry::default()),
            [("u1".into(), Away)]
        );
        assert_eq!(
            v.apply("r", "b", PresenceEntry::default()),
            [("u1".into(), Offline)]
        );
        assert!(v.members("r").is_empty());
    }

    #[test]
    fn only_users_whose_merged_state_moved_are_reported() {
        let mut v = PresenceView::default();
        v.apply("r", "a", entry(&[("u1", Online), ("u2", Online)]));
        assert_eq!(
            v.apply("r", "a", entry(&[("u1", Online), ("u3", Away)])),
            [("u2".into(), Offline), ("u3".into(), Away)]
        );
        assert_eq!(
            v.members("r"),
            [
                Member {
                    user_id: "u1".into(),
                    state: Online
                },
                Member {
                    user_id: "u3".into(),
                    state: Away
                }
            ]
        );
        // Rooms do not meet.
        assert_eq!(v.state("s", "u1"), Offline);
    }

    #[test]
    fn a_local_entry_is_online_when_any_connection_is() {
        let e = local_entry([("u1", true), ("u1", false), ("u2", true)].into_iter());
        assert_eq!(e, entry(&[("u1", Online), ("u2", Away)]));
        let e = local_entry([("u1", false), ("u1", true)].into_iter());
        assert_eq!(e, entry(&[("u1", Online)]));
    }
}
