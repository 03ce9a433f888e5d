//! A Server-Sent Events client for stream tests: reads `/v2/realtime/sse`
//! message by message (`id`, `event`, `data`, comments), decoded by
//! [`herald_proto::sse::SseDecoder`].

use std::time::Duration;

use herald_proto::sse::{SseDecoder, SseFrame};
use reqwest::StatusCode;
use serde_json::Value;

/// How long helpers wait for a message before failing the test.
const WAIT: Duration = Duration::from_secs(10);

/// One SSE message (or a comment-only keep-alive).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SseMessage {
    /// `id:` field.
    pub id: Option<String>,
    /// `event:` field.
    pub event: Option<String>,
    /// `data:` lines joined by newlines.
    pub data: String,
    /// The message held a comment line.
    pub comment: bool,
}

impl From<SseFrame> for SseMessage {
    fn from(f: SseFrame) -> Self {
        SseMessage {
            id: f.id,
            event: f.event,
            data: f.data,
            comment: f.comment.is_some(),
        }
    }
}

impl SseMessage {
    /// `data` parsed as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("data is not JSON ({e}): {}", self.data))
    }
}

/// An open SSE response.
pub struct SseClient {
    response: reqwest::Response,
    decoder: SseDecoder,
}

impl SseClient {
    /// Opens `url` with an optional bearer token and `Last-Event-ID`; returns
    /// the status, and the stream when it is 200.
    pub async fn connect(
        url: &str,
        token: Option<&str>,
        last_event_id: Option<&str>,
    ) -> (StatusCode, Option<SseClient>) {
        let client = reqwest::Client::new();
        let mut req = client.get(url).header("Accept", "text/event-stream");
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        let response = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = response.status();
        if status != StatusCode::OK {
            return (status, None);
        }
        (
            status,
            Some(SseClient {
                response,
                decoder: SseDecoder::new(),
            }),
        )
    }

    /// The next message within `wait`; `None` when the stream ended or nothing came.
    pub async fn next(&mut self, wait: Duration) -> Option<SseMessage> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(frame) = self.decoder.next_frame() {
                return Some(frame.into());
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .ok()?
                .ok()??;
            self.decoder.push(&chunk);
        }
    }

    /// The next message that is not a keep-alive; panics when none comes.
    pub async fn message(&mut self) -> SseMessage {
        loop {
            let m = self.next(WAIT).await.expect("an SSE message");
            if !(m.comment && m.data.is_empty() && m.event.is_none()) {
                return m;
            }
        }
    }

    /// The data of the next `count` event messages (skipping `ack`,
    /// `updated` and keep-alives), checking each `id` is its `seq`.
    pub async fn events(&mut self, count: usize) -> Vec<Value> {
        let mut out = Vec::new();
        while out.len() < count {
            let m = self.message().await;
            match m.event.as_deref() {
                Some("ack") | Some("updated") => continue,
                Some("reset") => panic!("unexpected reset: {}", m.data),
                _ => {}
            }
            let v = m.json();
            assert_eq!(
                m.id.as_deref(),
                v["seq"].as_u64().map(|s| s.to_string()).as_deref(),
                "id is the seq"
            );
            assert_eq!(
                m.event.as_deref(),
                v["service"].as_str(),
                "event is the service"
            );
            out.push(v);
        }
        out
    }
}
