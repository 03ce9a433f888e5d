//! Server-Sent Events on the wire (`text/event-stream`): one frame is the
//! lines up to a blank line, with `id:`, `event:`, `data:` fields and `:`
//! comments. [`SseFrame::encode`] writes a frame, [`SseDecoder`] turns bytes
//! as they arrive into frames. Invariant: decoding what `encode` wrote gives
//! the same frame back, however the bytes are split. Pure: no I/O.

use std::fmt::Write as _;

/// One SSE frame (a message, or a comment-only keep-alive).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseFrame {
    /// `id:` field: the last event id a reconnecting client sends back.
    pub id: Option<String>,
    /// `event:` field: the event type.
    pub event: Option<String>,
    /// `data:` lines joined by `\n`; empty when the frame has none.
    pub data: String,
    /// Comment lines (`:` lines, text after the colon and one optional
    /// space) joined by `\n`; `None` when the frame has none.
    pub comment: Option<String>,
}

impl SseFrame {
    /// The frame as sent: comment lines, `id`, `event`, one `data:` line per
    /// line of [`data`](Self::data) (`\n`, `\r\n` or `\r` apart; they
    /// decode as `\n`), then the blank line. A frame with nothing in it is
    /// just the blank line, which decodes to no frame. Line breaks in `id`,
    /// `event` or a comment line would end the field early; they are
    /// replaced by a space.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(self.data.len() + 32);
        let field = |out: &mut String, name: &str, value: &str| {
            let value = value.replace(['\r', '\n'], " ");
            let _ = writeln!(out, "{name}: {value}");
        };
        for line in self.comment.iter().flat_map(|c| c.split('\n')) {
            field(&mut out, "", line);
        }
        if let Some(id) = &self.id {
            field(&mut out, "id", id);
        }
        if let Some(event) = &self.event {
            field(&mut out, "event", event);
        }
        if !self.data.is_empty() {
            let data = self.data.replace("\r\n", "\n").replace('\r', "\n");
            for line in data.split('\n') {
                let _ = writeln!(out, "data: {line}");
            }
        }
        out.push('\n');
        out
    }
}

/// Incremental decoder: feed bytes as they arrive with
/// [`push`](Self::push), take whole frames with [`next_frame`](Self::next_frame).
/// Lines may end in `\n`, `\r\n` or `\r`; a frame ends at a blank line.
/// Fields other than `id`, `event` and `data` (e.g. `retry`) are ignored; a
/// line without a colon is a field with an empty value. Text is UTF-8; a
/// character split across chunks decodes whole.
#[derive(Debug, Default)]
pub struct SseDecoder {
    /// Received bytes with line ends made `\n`, not yet part of a frame.
    buf: Vec<u8>,
    /// The last byte pushed was a `\r`: a `\n` right after it belongs to it.
    after_cr: bool,
    /// `buf[..searched]` holds no blank line (but may end in one `\n`).
    searched: usize,
}

impl SseDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.reserve(bytes.len());
        for &b in bytes {
            match b {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\r' => {
                    self.buf.push(b'\n');
                    self.after_cr = true;
                }
                _ => {
                    self.buf.push(b);
                    self.after_cr = false;
                }
            }
        }
    }

    /// Bytes received that do not make a whole frame yet.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next whole frame, if one has arrived. Blank lines between
    /// frames yield nothing.
    pub fn next_frame(&mut self) -> Option<SseFrame> {
        let lead = self.buf.iter().take_while(|&&b| b == b'\n').count();
        if lead > 0 {
            self.buf.drain(..lead);
            self.searched = self.searched.saturating_sub(lead);
        }
        // Where the last search stopped: a large frame arriving in many
        // chunks is scanned once, not once per chunk.
        let from = self.searched.saturating_sub(1);
        let Some(at) = self.buf[from..].windows(2).position(|w| w == b"\n\n") else {
            self.searched = self.buf.len();
            return None;
        };
        let end = from + at;
        let frame = parse_block(&String::from_utf8_lossy(&self.buf[..end]));
        self.buf.drain(..end + 2);
        self.searched = 0;
        Some(frame)
    }
}

/// The frame made of `block`'s lines (no blank line inside).
fn parse_block(block: &str) -> SseFrame {
    let mut frame = SseFrame::default();
    let mut data: Vec<&str> = Vec::new();
    let mut comments: Vec<&str> = Vec::new();
    for line in block.split('\n') {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "" => comments.push(value),
            "id" if !value.contains('\0') => frame.id = Some(value.to_owned()),
            "event" => frame.event = Some(value.to_owned()),
            "data" => data.push(value),
            _ => {}
        }
    }
    frame.data = data.join("\n");
    if !comments.is_empty() {
        frame.comment = Some(comments.join("\n"));
    }
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, event: &str, data: &str) -> SseFrame {
        SseFrame {
            id: Some(id.into()),
            event: Some(event.into()),
            data: data.into(),
            comment: None,
        }
    }

    fn decode_all(bytes: &[u8], chunk: usize) -> Vec<SseFrame> {
        let mut d = SseDecoder::new();
        let mut out = Vec::new();
        for part in bytes.chunks(chunk.max(1)) {
            d.push(part);
            while let Some(f) = d.next_frame() {
                out.push(f);
            }
        }
        assert_eq!(d.pending(), 0, "nothing left over");
        out
    }

    #[test]
    fn encodes_the_edges_frames() {
        assert_eq!(
            event("5", "finance", r#"{"seq":5}"#).encode(),
            "id: 5\nevent: finance\ndata: {\"seq\":5}\n\n"
        );
        let keepalive = SseFrame {
            id: Some("9".into()),
            comment: Some("keep-alive".into()),
            ..SseFrame::default()
        };
        assert_eq!(keepalive.encode(), ": keep-alive\nid: 9\n\n");
        assert_eq!(SseFrame::default().encode(), "\n");
    }

    #[test]
    fn what_is_encoded_decodes_the_same_in_any_chunks() {
        let frames = vec![
            event("1", "ack", r#"{"epoch":"e"}"#),
            event("2", "finance", "line one\nline two"),
            SseFrame {
                comment: Some("keep-alive".into()),
                ..SseFrame::default()
            },
            SseFrame {
                id: Some("3".into()),
                comment: Some("keep-alive".into()),
                ..SseFrame::default()
            },
            event("4", "tasks", "caf\u{e9} \u{1f600}"),
        ];
        let wire: String = frames.iter().map(SseFrame::encode).collect();
        for chunk in [1, 2, 3, 7, wire.len()] {
            assert_eq!(
                decode_all(wire.as_bytes(), chunk),
                frames,
                "chunks of {chunk}"
            );
        }
    }

    #[test]
    fn reads_other_line_ends_and_odd_lines() {
        let wire = b"retry: 100\r\nid: 7\r\ndata\r\ndata:x\r\r\n\n:c\n\n";
        let frames = decode_all(wire, 1);
        assert_eq!(
            frames,
            vec![
                SseFrame {
                    id: Some("7".into()),
                    data: "\nx".into(),
                    ..SseFrame::default()
                },
                SseFrame {
                    comment: Some("c".into()),
                    ..SseFrame::default()
                },
            ]
        );
        let mut d = SseDecoder::new();
        d.push(b"id: 1\ndata: half");
        assert_eq!(d.next_frame(), None, "no frame before the blank line");
        d.push(b"\n\n");
        assert_eq!(d.next_frame().map(|f| f.data), Some("half".into()));
    }

    #[test]
    fn line_breaks_cannot_escape_a_field() {
        let f = SseFrame {
            id: Some("1\n2".into()),
            event: Some("a\r\nb".into()),
            ..SseFrame::default()
        };
        assert_eq!(f.encode(), "id: 1 2\nevent: a  b\n\n");
    }
}
