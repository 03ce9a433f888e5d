//! Opening a stream: the upgrade request (its query's `org` and `token`,
//! node state, the cookie's Origin rule, a token from the header, cookie or
//! query, the caps) and then the client's `hello` (its token when the
//! upgrade had none, the subscription and the resume point, `lastSeq` and
//! `epoch`). The query's `org` is checked against whichever token comes,
//! at the upgrade or at `hello`.
//!
//! Invariant: a connection is counted against the caps from the moment it
//! is authenticated, at the upgrade or at `hello`, and nothing reaches the
//! client before its `hello` was accepted; every refusal is an [`ApiError`]
//! (or a bad `hello`) and closes with the code of the error table, after the
//! upgrade, so that browsers see it.

use std::sync::Arc;

use axum::extract::ws::WebSocket;
use futures::stream::SplitStream;
use futures::StreamExt;
use herald_proto::stream::ClientMessage;
use herald_proto::CloseCode;
use http::{HeaderMap, Method};
use tokio::time::Instant;

use super::codec::{decode, Incoming};
use super::writer::Closing;
use crate::auth::{check_origin, Principal};
use crate::delivery::reader::Reader;
use crate::error::ApiError;
use crate::node::Node;
use crate::ops::connections::{Registration, Transport};
use crate::transport::admission;
use crate::transport::poll::SUBSCRIBE_WAIT;
use crate::transport::query::StreamParams;

/// Who a connection belongs to, as far as the upgrade request tells.
pub(super) enum Admission {
    /// The upgrade carried a valid token: authenticated and registered.
    Authenticated(Box<(Principal, Registration)>),
    /// The upgrade carried no token: it must come in `hello`, and be of
    /// `org` when the query named one.
    AtHello {
        /// The query's `org`.
        org: Option<String>,
    },
}

/// Checks the upgrade request: its query (first, as poll and SSE parse
/// theirs), node state, the cross-site rule for cookies and, when the
/// request carries a token (header, cookie or query), the token, the
/// query's `org` and the connection caps.
pub(super) fn admit(
    node: &Node,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Admission, ApiError> {
    let params = StreamParams::parse(query)?;
    admission::open(node, Transport::WebSocket)?;
    check_origin(&node.config.cors_origins, headers, &Method::GET, true)?;
    let Some(token) = admission::find(node, headers, params.token.as_deref())? else {
        admission::room_for_anonymous(node)?;
        return Ok(Admission::AtHello { org: params.org });
    };
    let principal = admission::authenticate(node, token, params.org.as_deref())?;
    let registration = admission::register(node, &principal, Transport::WebSocket)?;
    Ok(Admission::Authenticated(Box::new((
        principal,
        registration,
    ))))
}

/// A connection after its `hello`: who it is and where it reads.
pub(super) struct Handshake {
    /// Who it is.
    pub(super) principal: Principal,
    /// Its slot under the caps.
    pub(super) registration: Registration,
    /// Its cursor, at the resume point.
    pub(super) reader: Reader,
    /// The client's `epoch` is not the stream's: send a `reset` first.
    pub(super) epoch_changed: bool,
}

/// The client's `hello`.
#[derive(Debug, PartialEq)]
struct Hello {
    version: u32,
    services: Vec<String>,
    property: Option<String>,
    last_seq: Option<u64>,
    epoch: Option<String>,
    token: Option<String>,
}

impl Hello {
    /// Only version 1 exists.
    fn check_version(&self) -> Result<(), Closing> {
        if self.version == 1 {
            return Ok(());
        }
        Err(Closing::new(
            CloseCode::BadMessage,
            format!("unsupported protocol version {}", self.version),
        ))
    }
}

/// What a frame received before `hello` means.
#[derive(Debug, PartialEq)]
enum First {
    /// The `hello`.
    Hello(Hello),
    /// A WebSocket ping or pong: keep waiting.
    Skip,
    /// The client closed.
    Left,
    /// Anything else: refused with 4000.
    Refused(Closing),
}

fn first(frame: Incoming) -> First {
    match frame {
        Incoming::Message(ClientMessage::Hello {
            version,
            services,
            filters,
            last_seq,
            epoch,
            token,
        }) => First::Hello(Hello {
            version,
            services,
            property: filters.and_then(|f| f.property_id),
            last_seq,
            epoch,
            token,
        }),
        Incoming::Ignore => First::Skip,
        Incoming::Close => First::Left,
        Incoming::Message(_) | Incoming::BadRoom { .. } => First::Refused(Closing::new(
            CloseCode::BadMessage,
            "the first message must be hello",
        )),
        Incoming::Bad(why) => First::Refused(Closing::new(CloseCode::BadMessage, why)),
    }
}

/// Waits for `hello`, authenticates with its token when the upgrade carried
/// none (4001 without a valid one, 4003 when it is not of the query's
/// `org`), and builds the reader; `Ok(None)` when
/// the client left. A `hello` token is ignored when the upgrade was
/// authenticated already.
pub(super) async fn handshake(
    node: &Arc<Node>,
    admission: Admission,
    incoming: &mut SplitStream<WebSocket>,
) -> Result<Option<Handshake>, Closing> {
    let deadline = Instant::now() + node.config.handshake_timeout;
    let hello = loop {
        let frame = tokio::select! {
            f = tokio::time::timeout_at(deadline, incoming.next()) => f,
            _ = node.draining.cancelled() => return Err(ApiError::Draining.into()),
        };
        let frame = match frame {
            Err(_) => {
                return Err(Closing::new(
                    CloseCode::BadMessage,
                    "no hello within the handshake timeout",
                ))
            }
            Ok(None) | Ok(Some(Err(_))) => return Ok(None),
            Ok(Some(Ok(msg))) => decode(msg),
        };
        match first(frame) {
            First::Hello(hello) => break hello,
            First::Skip => continue,
            First::Left => return Ok(None),
            First::Refused(closing) => return Err(closing),
        }
    };
    let (principal, registration) = match admission {
        Admission::Authenticated(admitted) => *admitted,
        Admission::AtHello { org } => {
            let token = hello
                .token
                .as_deref()
                .filter(|t| !t.is_empty())
                .ok_or_else(|| {
                    Closing::new(
                        CloseCode::Unauthenticated,
                        "no token: send it in hello or in Authorization: Bearer",
                    )
                })?;
            let principal = admission::authenticate(node, token, org.as_deref())?;
            let registration = admission::register(node, &principal, Transport::WebSocket)?;
            (principal, registration)
        }
    };
    // After the token: a client without a valid one learns that first.
    hello.check_version()?;
    let filter = admission::subscribe(node, &principal, Some(hello.services), hello.property)?;
    let lease = node.orgs.lease(&principal.org).map_err(ApiError::from)?;
    lease.wait_subscribed(SUBSCRIBE_WAIT).await;
    let mut reader = Reader::new(lease, filter, hello.last_seq);
    let epoch_changed = reader.check_epoch(hello.epoch.as_deref());
    Ok(Some(Handshake {
        principal,
        registration,
        reader,
        epoch_changed,
    }))
}

#[cfg(test)]
mod tests {
    use axum::extract::ws::Message;

    use super::*;

    fn frame(text: &str) -> First {
        first(decode(Message::Text(text.into())))
    }

    #[test]
    fn hello_is_the_first_message_and_the_only_one_taken() {
        let First::Hello(hello) = frame(
            r#"{"type":"hello","version":1,"services":["finance"],"filters":{"propertyId":"p1"},"lastSeq":41,"epoch":"E","token":"t"}"#,
        ) else {
            panic!("not hello");
        };
        assert_eq!(
            hello,
            Hello {
                version: 1,
                services: vec!["finance".into()],
                property: Some("p1".into()),
                last_seq: Some(41),
                epoch: Some("E".into()),
                token: Some("t".into()),
            }
        );
        assert!(hello.check_version().is_ok());
        assert_eq!(
            first(decode(Message::Ping(Default::default()))),
            First::Skip
        );
        assert_eq!(first(decode(Message::Close(None))), First::Left);
        for refused in [r#"{"type":"pong"}"#, "{", r#"{"type":"nope"}"#] {
            let First::Refused(closing) = frame(refused) else {
                panic!("{refused} taken");
            };
            assert_eq!(closing.code, CloseCode::BadMessage, "{refused}");
        }
    }

    #[test]
    fn only_version_1_is_spoken() {
        let First::Hello(hello) = frame(r#"{"type":"hello","version":2,"services":[]}"#) else {
            panic!("not hello");
        };
        assert_eq!(
            hello.check_version().unwrap_err().code,
            CloseCode::BadMessage
        );
    }
}
