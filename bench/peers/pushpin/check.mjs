// Smoke check of the Pushpin peer, run by `bench/peers/peers.sh check
// pushpin` against a peer it started:
//
//   node --experimental-websocket check.mjs <workdir>/urls.env
//
// 1. An SSE, a WebSocket and a long-poll subscriber on one channel (each
//    subscribed by origin.mjs's GRIP answer); three messages published with
//    one POST /publish/ each, every item carrying the three formats
//    (http-stream, ws-message, http-response); SSE and WebSocket get all
//    three, in order, the long-poll the first.
// 2. Resume: the SSE client disconnects after the third, two more are
//    published, and a new SSE request with `Last-Event-ID: 3` gets nothing:
//    Pushpin keeps no messages, and the header only reaches the origin
//    (checked in its log), which would have to replay from a store of its
//    own. Reported as the documented behaviour, not a failure.
// Exits non-zero on any failure.
import fs from 'node:fs';
import path from 'node:path';
import assert from 'node:assert/strict';
import { channel, deadline as failAfter, readEnv, sleep, sse, until, url, ws } from '../check-lib.mjs';

const urlsFile = process.argv[2];
const env = readEnv(urlsFile);
const deadline = failAfter('pushpin');

// One GRIP item in the three formats, as the benchmark publishes.
async function publish(id, data) {
  const item = {
    channel,
    id: String(id),
    formats: {
      'http-stream': { content: `id: ${id}\ndata: ${data}\n\n` },
      'ws-message': { content: data },
      'http-response': { body: data },
    },
  };
  const res = await fetch(env.PUB_HTTP, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ items: [item] }),
  });
  assert.equal(res.status, 200, `publish status ${res.status}: ${await res.text()}`);
}


// --- 1. three messages to SSE, WebSocket and long-poll ---------------------
const s1 = sse(url(env.SUB_SSE));
const w1 = ws(url(env.SUB_WS));
await w1.open;
const poll1 = fetch(url(env.SUB_POLL));
await s1.opened;
// Pushpin has no "subscribed" signal for WebSocket-over-HTTP or a held
// long-poll: the subscribe happens when the origin's answer comes back
// through zurl, within milliseconds on loopback.
await sleep(500);

for (const [i, m] of ['m1', 'm2', 'm3'].entries()) await publish(i + 1, m);
await until('pushpin', 'SSE and WebSocket receive 3', () => s1.events.length >= 3 && w1.messages.length >= 3);
assert.deepEqual(s1.events.map((e) => e.data), ['m1', 'm2', 'm3']);
assert.deepEqual(w1.messages, ['m1', 'm2', 'm3']);
const p1 = await poll1;
const p1body = await p1.text();
assert.equal(p1.status, 200);
assert.equal(p1body, 'm1');
console.log(`pushpin: SSE got ${JSON.stringify(s1.events)}`);
console.log(`pushpin: WebSocket got ${JSON.stringify(w1.messages)}`);
console.log(`pushpin: long-poll got "${p1body}"`);

// --- 2. resume after a disconnect: nothing ---------------------------------
const lastId = s1.events[2].id;
s1.close();
w1.close();
await sleep(300);
await publish(4, 'm4');
await publish(5, 'm5');
const s2 = sse(url(env.SUB_SSE), { 'Last-Event-ID': lastId });
await s2.opened;
await sleep(500);
assert.deepEqual(s2.events, [], 'Pushpin replays nothing');
const originLog = fs.readFileSync(path.join(path.dirname(urlsFile), 'origin.log'), 'utf8');
assert.ok(originLog.includes(`last-event-id=${lastId}`), 'Last-Event-ID reaches the origin');
console.log(`pushpin: resume from id ${lastId} (Last-Event-ID): got nothing of m4, m5; the header reached the origin, which keeps no messages`);
s2.close();
clearTimeout(deadline);
console.log('pushpin: ok (3 messages on SSE, WebSocket and long-poll; no resume, as expected)');
process.exit(0);
