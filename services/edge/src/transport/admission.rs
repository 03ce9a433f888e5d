//! Admission: whether this node takes a new poll, SSE stream or WebSocket
//! stream, checked the same way for all three.
//!
//! Invariant: the checks run in one order: node state (draining; the kill
//! switch for streams, while long-poll keeps working), then the token (and
//! the `org` the client named, which must be the token's), then the
//! subscription, then the connection caps. What passes holds a
//! [`Registration`] that counts against the node's and the user's caps
//! until it is dropped, polls included, so no transport can take another's
//! share. Refusals are [`ApiError`]s: each transport answers them through
//! the one error table (HTTP status, or close code after the upgrade).

use http::HeaderMap;

use crate::auth::{extract_token, find_token, Principal};
use crate::delivery::filter::Filter;
use crate::error::ApiError;
use crate::node::Node;
use crate::ops::connections::{LimitError, Registration, Transport};
use crate::transport::query::Subscription;

/// A poll or SSE request that may be served.
pub struct Admitted {
    /// Who it is.
    pub principal: Principal,
    /// What it may see of what it asked for.
    pub filter: Filter,
    /// Its slot under the connection caps.
    pub registration: Registration,
}

/// Admits a poll or an SSE stream: every check of the module, in order.
/// `query_token` is the query's `token`, which only streams may use.
pub fn admit(
    node: &Node,
    transport: Transport,
    headers: &HeaderMap,
    query_token: Option<&str>,
    subscription: &Subscription,
) -> Result<Admitted, ApiError> {
    open(node, transport)?;
    let token = extract_token(headers, allowed_query_token(node, query_token))?;
    let principal = authenticate(node, token, subscription.org.as_deref())?;
    let filter = subscribe(
        node,
        &principal,
        subscription.services.clone(),
        subscription.property.clone(),
    )?;
    let registration = register(node, &principal, transport)?;
    Ok(Admitted {
        principal,
        filter,
        registration,
    })
}

/// Refuses every new connection while the node drains, and new streams
/// while the kill switch is on.
pub fn open(node: &Node, transport: Transport) -> Result<(), ApiError> {
    node_state(
        transport,
        node.draining.is_cancelled(),
        node.switches.disabled(),
    )
}

/// [`open`] on the node's state: drain first, it refuses everything.
fn node_state(transport: Transport, draining: bool, disabled: bool) -> Result<(), ApiError> {
    if draining {
        return Err(ApiError::Draining);
    }
    if disabled && transport != Transport::LongPoll {
        return Err(ApiError::Disabled);
    }
    Ok(())
}

/// The request's token, if it carries one: `Authorization`, the cookie,
/// then the query's `token` when `HERALD_ALLOW_QUERY_TOKEN` allows it. A
/// malformed header is an error even when another source has a token.
pub fn find<'a>(
    node: &Node,
    headers: &'a HeaderMap,
    query_token: Option<&'a str>,
) -> Result<Option<&'a str>, ApiError> {
    find_token(headers, allowed_query_token(node, query_token))
}

fn allowed_query_token<'a>(node: &Node, query_token: Option<&'a str>) -> Option<&'a str> {
    query_token.filter(|_| node.config.allow_query_token)
}

/// Verifies a token of a client that wants to subscribe: a cross-org token
/// cannot (403, whatever `org` says), and `org`, the org the client named
/// for org-affine routing, must be the token's (403).
pub fn authenticate(node: &Node, token: &str, org: Option<&str>) -> Result<Principal, ApiError> {
    let principal = node.verifier.verify(token)?.must_subscribe()?;
    same_org(&principal, org)?;
    Ok(principal)
}

/// Refuses a client that named another org than its token's: a load
/// balancer hashed it on that org, so serving it would quietly defeat the
/// routing (and hide the client's mix-up).
fn same_org(principal: &Principal, org: Option<&str>) -> Result<(), ApiError> {
    match org {
        Some(org) if org != principal.org => Err(ApiError::Forbidden(
            "org differs from the token's org".into(),
        )),
        _ => Ok(()),
    }
}

/// What `principal` may see of the services and property it asked for.
pub fn subscribe(
    node: &Node,
    principal: &Principal,
    services: Option<Vec<String>>,
    property: Option<String>,
) -> Result<Filter, ApiError> {
    Filter::new(
        principal,
        services,
        property,
        node.switches.disabled_services(),
    )
}

/// Takes a slot under the node's and the user's connection caps.
pub fn register(
    node: &Node,
    principal: &Principal,
    transport: Transport,
) -> Result<Registration, ApiError> {
    Ok(node.connections.register(
        &principal.org,
        &principal.user,
        transport,
        node.config.max_connections,
        node.config.max_connections_per_user,
    )?)
}

/// A stream whose token comes later (in a WebSocket `hello`) counts
/// against no cap until then: refuse it at once when the node is full.
pub fn room_for_anonymous(node: &Node) -> Result<(), ApiError> {
    let (ws, sse) = node.connections.counts();
    if (ws + sse) as usize >= node.config.max_connections {
        return Err(LimitError::Node.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use herald_proto::CloseCode;

    use super::*;

    const ALL: [Transport; 3] = [Transport::LongPoll, Transport::Sse, Transport::WebSocket];

    fn principal(org: &str) -> Principal {
        Principal {
            user: "u1".into(),
            org: org.into(),
            props: None,
            svcs: None,
            role: None,
            rooms: None,
            exp: 0,
        }
    }

    #[test]
    fn the_named_org_must_be_the_tokens() {
        let acme = principal("acme");
        assert!(same_org(&acme, None).is_ok());
        assert!(same_org(&acme, Some("acme")).is_ok());
        for other in ["globex", "ACME", "acme2"] {
            let e = same_org(&acme, Some(other)).unwrap_err();
            assert!(matches!(e, ApiError::Forbidden(_)), "{other}");
            assert_eq!(e.close_code(), CloseCode::Forbidden);
        }
    }

    #[test]
    fn a_draining_node_refuses_every_transport() {
        for t in ALL {
            for disabled in [false, true] {
                let e = node_state(t, true, disabled).unwrap_err();
                assert!(matches!(e, ApiError::Draining), "{t:?}");
                assert_eq!(e.close_code(), CloseCode::Draining);
            }
        }
    }

    #[test]
    fn the_kill_switch_refuses_streams_and_leaves_long_poll() {
        assert!(node_state(Transport::LongPoll, false, true).is_ok());
        for t in [Transport::Sse, Transport::WebSocket] {
            let e = node_state(t, false, true).unwrap_err();
            assert!(matches!(e, ApiError::Disabled), "{t:?}");
            assert_eq!(e.close_code(), CloseCode::Disabled);
            assert_eq!(e.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        }
        for t in ALL {
            assert!(node_state(t, false, false).is_ok(), "{t:?}");
        }
    }
}
