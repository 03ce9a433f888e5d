// Smoke check of the Nchan peer, run by `bench/peers/peers.sh check nchan`
// against a peer it started:
//
//   node --experimental-websocket check.mjs <workdir>/urls.env
//
// 1. An SSE, a WebSocket and a long-poll subscriber on one channel; three
//    messages published with POST /pub/<channel>; SSE and WebSocket get all
//    three, in order, the long-poll the first.
// 2. Resume: the SSE client disconnects after the third, two more are
//    published, and a new SSE request with `Last-Event-ID: <third's id>`
//    gets exactly those two; a WebSocket with `?last_event_id=` likewise;
//    a long-poll with `?last_event_id=` gets the next one.
// Exits non-zero on any failure; prints what each transport received.
import assert from 'node:assert/strict';
import { channel, deadline as failAfter, readEnv, sleep, sse, until, url, ws } from '../check-lib.mjs';

const env = readEnv(process.argv[2]);
const deadline = failAfter('nchan');

async function publish(data) {
  const res = await fetch(url(env.PUB_HTTP), { method: 'POST', body: data, headers: { Accept: 'application/json' } });
  assert.ok(res.status === 201 || res.status === 202, `publish status ${res.status}`);
  return res.json();
}

async function channelInfo() {
  const res = await fetch(url(env.PUB_HTTP), { headers: { Accept: 'application/json' } });
  return res.status === 200 ? res.json() : { subscribers: 0, messages: 0 };
}


// --- 1. three messages to SSE, WebSocket and long-poll ---------------------
const s1 = sse(url(env.SUB_SSE));
const w1 = ws(url(env.SUB_WS));
await w1.open;
const poll1 = fetch(url(env.SUB_POLL));
await until('nchan', '3 subscribers', async () => (await channelInfo()).subscribers >= 3);

for (const m of ['m1', 'm2', 'm3']) await publish(m);
await until('nchan', 'SSE and WebSocket receive 3', () => s1.events.length >= 3 && w1.messages.length >= 3);
assert.deepEqual(s1.events.map((e) => e.data), ['m1', 'm2', 'm3']);
assert.deepEqual(w1.messages, ['m1', 'm2', 'm3']);
const p1 = await poll1;
const p1body = await p1.text();
assert.equal(p1.status, 200);
assert.equal(p1body, 'm1');
console.log(`nchan: SSE got ${JSON.stringify(s1.events)}`);
console.log(`nchan: WebSocket got ${JSON.stringify(w1.messages)}`);
console.log(`nchan: long-poll got "${p1body}" (Last-Modified: ${p1.headers.get('last-modified')}, Etag: ${p1.headers.get('etag')})`);

// --- 2. resume after a disconnect ------------------------------------------
const lastId = s1.events[2].id;
s1.close();
w1.close();
await until('nchan', 'subscribers gone', async () => (await channelInfo()).subscribers === 0);
await publish('m4');
await publish('m5');

const s2 = sse(url(env.SUB_SSE), { 'Last-Event-ID': lastId });
const w2 = ws(`${url(env.SUB_WS)}?last_event_id=${encodeURIComponent(lastId)}`);
await w2.open;
const p2 = await fetch(`${url(env.SUB_POLL)}?last_event_id=${encodeURIComponent(lastId)}`);
const p2body = await p2.text();
await until('nchan', 'resumed SSE and WebSocket receive 2', () => s2.events.length >= 2 && w2.messages.length >= 2);
await sleep(200); // nothing more may arrive
assert.deepEqual(s2.events.map((e) => e.data), ['m4', 'm5'], 'SSE resume with Last-Event-ID');
assert.deepEqual(w2.messages, ['m4', 'm5'], 'WebSocket resume with ?last_event_id');
assert.equal(p2body, 'm4', 'long-poll resume with ?last_event_id');
console.log(`nchan: resume from ${lastId}: SSE (Last-Event-ID) got ${JSON.stringify(s2.events.map((e) => e.data))}, `
  + `WebSocket (?last_event_id) got ${JSON.stringify(w2.messages)}, long-poll (?last_event_id) got "${p2body}"`);
s2.close();
w2.close();
clearTimeout(deadline);
console.log('nchan: ok (3 messages on SSE, WebSocket and long-poll; resume returned exactly the missed messages)');
process.exit(0);
