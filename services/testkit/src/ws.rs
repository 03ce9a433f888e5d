//! A WebSocket client for stream tests: connects to an edge node's
//! `/v2/realtime/stream` with a token and a subprotocol, speaks JSON or
//! MessagePack frames, and reports close codes.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long helpers wait for a frame before failing the test.
const WAIT: Duration = Duration::from_secs(10);

/// What arrived.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    /// A text (JSON) or binary (MessagePack) frame, as JSON.
    Frame(Value),
    /// A close frame with its code and reason.
    Close(Option<u16>, String),
    /// The connection ended without a close frame.
    Ended,
    /// Nothing within the wait.
    Timeout,
}

/// One stream connection.
pub struct WsClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The subprotocol the server selected.
    pub protocol: Option<String>,
    /// Payload size of the last text or binary frame received, in bytes.
    pub last_frame_bytes: usize,
    /// Whether the last text or binary frame received was binary (MessagePack).
    pub last_frame_binary: bool,
}

impl WsClient {
    /// Connects to `<base>/v2/realtime/stream<query>` with an optional bearer
    /// token and subprotocol.
    pub async fn connect(
        base: &str,
        query: &str,
        token: Option<&str>,
        protocol: Option<&str>,
    ) -> WsClient {
        Self::try_connect(base, query, token, protocol)
            .await
            .unwrap_or_else(|e| panic!("websocket connect to {base}: {e}"))
    }

    /// Like [`connect`](Self::connect), returning the handshake error.
    pub async fn try_connect(
        base: &str,
        query: &str,
        token: Option<&str>,
        protocol: Option<&str>,
    ) -> Result<WsClient, tokio_tungstenite::tungstenite::Error> {
        let url = format!(
            "{}/v2/realtime/stream{query}",
            base.replacen("http", "ws", 1)
        );
        let mut request = url.into_client_request()?;
        if let Some(t) = token {
            request.headers_mut().insert(
                "Authorization",
                format!("Bearer {t}").parse().expect("header"),
            );
        }
        if let Some(p) = protocol {
            request
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", p.parse().expect("header"));
        }
        let (ws, response) = tokio_tungstenite::connect_async(request).await?;
        let protocol = response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(WsClient {
            ws,
            protocol,
            last_frame_bytes: 0,
            last_frame_binary: false,
        })
    }

    /// Connects to `<base>/v2/realtime/stream<query>` with exactly the given
    /// extra request headers (e.g. `Cookie` and `Origin`, as a browser sends them).
    pub async fn connect_with_headers(
        base: &str,
        query: &str,
        headers: &[(&str, &str)],
    ) -> WsClient {
        let url = format!(
            "{}/v2/realtime/stream{query}",
            base.replacen("http", "ws", 1)
        );
        let mut request = url.into_client_request().expect("websocket request");
        for (name, value) in headers {
            let name: tokio_tungstenite::tungstenite::http::HeaderName =
                name.parse().expect("header name");
            request
                .headers_mut()
                .insert(name, value.parse().expect("header value"));
        }
        let (ws, response) = tokio_tungstenite::connect_async(request)
            .await
            .unwrap_or_else(|e| panic!("websocket connect to {base}: {e}"));
        let protocol = response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        WsClient {
            ws,
            protocol,
            last_frame_bytes: 0,
            last_frame_binary: false,
        }
    }

    fn msgpack(&self) -> bool {
        self.protocol.as_deref() == Some("herald.v1.msgpack")
    }

    /// Sends a message in the connection's encoding.
    pub async fn send(&mut self, msg: Value) {
        let frame = if self.msgpack() {
            Message::Binary(rmp_serde::to_vec_named(&msg).expect("msgpack").into())
        } else {
            Message::Text(msg.to_string().into())
        };
        self.ws.send(frame).await.expect("send");
    }

    /// Sends a raw frame; false when the connection no longer takes frames.
    pub async fn send_raw(&mut self, frame: Message) -> bool {
        self.ws.send(frame).await.is_ok()
    }

    /// Sends `hello` and returns the `ack`.
    pub async fn hello(
        &mut self,
        services: &[&str],
        property: Option<&str>,
        last_seq: Option<u64>,
        epoch: Option<&str>,
    ) -> Value {
        let mut hello = json!({"type": "hello", "version": 1, "services": services});
        if let Some(p) = property {
            hello["filters"] = json!({"propertyId": p});
        }
        if let Some(s) = last_seq {
            hello["lastSeq"] = json!(s);
        }
        if let Some(e) = epoch {
            hello["epoch"] = json!(e);
        }
        self.send(hello).await;
        let ack = self.frame().await;
        assert_eq!(ack["type"], "ack", "expected ack, got {ack}");
        ack
    }

    /// The next frame, close or end within `wait`.
    pub async fn recv(&mut self, wait: Duration) -> Received {
        loop {
            let next = match tokio::time::timeout(wait, self.ws.next()).await {
                Err(_) => return Received::Timeout,
                Ok(n) => n,
            };
            return match next {
                None | Some(Err(_)) => Received::Ended,
                Some(Ok(Message::Text(t))) => {
                    self.last_frame_bytes = t.len();
                    self.last_frame_binary = false;
                    Received::Frame(serde_json::from_str(t.as_str()).expect("json frame"))
                }
                Some(Ok(Message::Binary(b))) => {
                    self.last_frame_bytes = b.len();
                    self.last_frame_binary = true;
                    Received::Frame(rmp_serde::from_slice(&b).expect("msgpack frame"))
                }
                Some(Ok(Message::Close(c))) => match c {
                    Some(f) => Received::Close(Some(u16::from(f.code)), f.reason.to_string()),
                    None => Received::Close(None, String::new()),
                },
                Some(Ok(_)) => continue,
            };
        }
    }

    /// The next frame; panics on anything else.
    pub async fn frame(&mut self) -> Value {
        match self.recv(WAIT).await {
            Received::Frame(v) => v,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// Events from `events` frames, skipping pings, until `count` arrived.
    pub async fn events(&mut self, count: usize) -> Vec<Value> {
        let mut out = Vec::new();
        while out.len() < count {
            let f = self.frame().await;
            match f["type"].as_str() {
                Some("events") => {
                    let batch = f["events"].as_array().expect("events array");
                    assert!(
                        batch.iter().all(|e| e["service"] == f["service"]),
                        "one service per frame: {f}"
                    );
                    assert_eq!(
                        batch.last().map(|e| &e["seq"]),
                        Some(&f["seq"]),
                        "frame seq is its last event's"
                    );
                    out.extend(batch.iter().cloned());
                }
                Some("ping") => {}
                _ => panic!("unexpected frame while waiting for events: {f}"),
            }
        }
        out
    }

    /// Reads until the close frame and returns its code (`None` when the
    /// connection ended without one).
    pub async fn close_code(&mut self) -> Option<u16> {
        loop {
            match self.recv(WAIT).await {
                Received::Frame(_) => continue,
                Received::Close(code, _) => return code,
                Received::Ended => return None,
                Received::Timeout => panic!("no close within {WAIT:?}"),
            }
        }
    }

    /// Closes from the client side.
    pub async fn close(mut self) {
        let _ = self
            .ws
            .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            }))
            .await;
    }
}
