//! The control messages both streams send (`ack`, `reset`, `updated`),
//! built from a connection's state as [`ServerMessage`] values.
//!
//! Invariant: WebSocket and SSE send the same proto values for the same
//! moment (a WebSocket frame; SSE's `data:` line, named by its `event:`
//! line), so the two transports cannot drift apart field by field; and
//! every `reset` built here is counted in the metrics exactly once.

use herald_proto::stream::{Filters, ServerMessage};
use herald_proto::ResetReason;

use crate::auth::Principal;
use crate::delivery::filter::Filter;
use crate::delivery::reader::Reader;
use crate::node::Node;
use crate::ops::connections::Registration;

/// `ack`: the connection is accepted; `seq` is where its reader starts.
pub fn ack(
    node: &Node,
    registration: &Registration,
    principal: &Principal,
    reader: &Reader,
) -> ServerMessage {
    ServerMessage::Ack {
        connection_id: format!("{}-{}", node.node_id, registration.id()),
        node_id: node.node_id.clone(),
        epoch: reader.epoch().to_owned(),
        seq: reader.cursor(),
        expires_at: principal.exp.saturating_mul(1000),
    }
}

/// `reset`: the client must refetch; `head` is where delivery goes on.
pub fn reset(node: &Node, reason: ResetReason, head: u64) -> ServerMessage {
    node.metrics.count_reset(reason);
    ServerMessage::Reset { reason, seq: head }
}

/// `updated`: the subscription now in force (`services` empty when every
/// service the token allows is delivered).
pub fn updated(filter: &Filter) -> ServerMessage {
    ServerMessage::Updated {
        services: filter.services().unwrap_or_default(),
        filters: Filters {
            property_id: filter.property().map(str::to_owned),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn principal() -> Principal {
        Principal {
            user: "u1".into(),
            org: "acme".into(),
            props: None,
            svcs: Some(HashSet::from(["tasks".to_owned(), "finance".to_owned()])),
            role: None,
            rooms: None,
            exp: 0,
        }
    }

    #[test]
    fn updated_names_the_subscription_as_the_websocket_and_sse_send_it() {
        let p = principal();
        let all = Filter::new(&p, None, None, Default::default()).unwrap();
        assert_eq!(
            serde_json::to_string(&updated(&all)).unwrap(),
            r#"{"type":"updated","services":[],"filters":{}}"#
        );
        let some = Filter::new(
            &p,
            Some(vec!["tasks".into(), "finance".into()]),
            Some("p1".into()),
            Default::default(),
        )
        .unwrap();
        assert_eq!(
            serde_json::to_string(&updated(&some)).unwrap(),
            r#"{"type":"updated","services":["finance","tasks"],"filters":{"propertyId":"p1"}}"#
        );
    }
}
