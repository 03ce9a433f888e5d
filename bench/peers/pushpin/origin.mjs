// The GRIP origin behind the Pushpin peer (bench/peers/pushpin): Pushpin
// forwards every subscriber request here once; this answers with GRIP
// instructions that make Pushpin hold the connection subscribed to the
// channel, and is not involved again until the connection ends. Publishing
// goes straight to Pushpin's publish endpoint, never through here.
//
//   node origin.mjs <port>            prints `listening <port>` when ready
//
// GET /sub/<channel> (the same path as the Nchan peer), by request:
// - WebSocket (Pushpin's WebSocket-over-HTTP: a POST with Content-Type
//   application/websocket-events): OPEN, then a `subscribe` control message;
//   published `ws-message` items arrive as text messages.
// - Accept: text/event-stream: SSE, `Grip-Hold: stream`; published
//   `http-stream` items are appended to the body.
// - anything else: long-poll, `Grip-Hold: response`, 55 s; a published
//   `http-response` item answers it, the timeout answers 204.
//
// There is no message store: a Last-Event-ID (header or last_event_id
// query argument) reaches this origin and is counted in the log, but
// nothing is replayed.
import http from 'node:http';

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port <= 0) {
  console.error('usage: node origin.mjs <port>');
  process.exit(2);
}

let resumeAsked = 0;

function channelOf(url) {
  const m = /^\/sub\/([^/?]+)/.exec(url);
  return m ? decodeURIComponent(m[1]) : null;
}

// WebSocket-over-HTTP events: "TYPE[ hexlen]\r\n[content\r\n]".
function wsEvent(type, content) {
  if (content === undefined) return `${type}\r\n`;
  return `${type} ${Buffer.byteLength(content).toString(16)}\r\n${content}\r\n`;
}

function webSocketOverHttp(req, res, channel, body) {
  const headers = {
    'Content-Type': 'application/websocket-events',
    'Sec-WebSocket-Extensions': 'grip',
  };
  let out = '';
  if (body.startsWith('OPEN\r\n')) {
    out += wsEvent('OPEN');
    out += wsEvent('TEXT', `c:${JSON.stringify({ type: 'subscribe', channel })}`);
  } else if (body.includes('CLOSE')) {
    out += wsEvent('CLOSE');
  }
  // Messages a client sends are ignored (the benchmark's clients send none).
  res.writeHead(200, headers);
  res.end(out);
}

const server = http.createServer((req, res) => {
  const channel = channelOf(req.url);
  if (!channel) {
    res.writeHead(404, { 'Content-Type': 'text/plain' });
    res.end('not found\n');
    return;
  }
  const lastId = req.headers['last-event-id']
    ?? new URL(req.url, 'http://origin').searchParams.get('last_event_id');
  if (lastId) {
    resumeAsked += 1;
    console.log(`resume asked channel=${channel} last-event-id=${lastId} (total ${resumeAsked}): nothing to replay`);
  }

  if ((req.headers['content-type'] ?? '').startsWith('application/websocket-events')) {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => webSocketOverHttp(req, res, channel, Buffer.concat(chunks).toString()));
    return;
  }
  req.resume();
  if ((req.headers.accept ?? '').includes('text/event-stream')) {
    res.writeHead(200, {
      'Content-Type': 'text/event-stream',
      'Cache-Control': 'no-cache',
      'Grip-Hold': 'stream',
      'Grip-Channel': channel,
    });
    // An SSE comment, so the client sees the stream open at once.
    res.end(':subscribed\n\n');
    return;
  }
  res.writeHead(204, {
    'Grip-Hold': 'response',
    'Grip-Channel': channel,
    'Grip-Timeout': '55',
  });
  res.end();
});

server.keepAliveTimeout = 60_000;
server.listen(port, '127.0.0.1', () => console.log(`listening ${port}`));
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0));
}
