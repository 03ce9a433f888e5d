// Smoke check of the NATS-over-WebSocket peer, run by
// `bench/peers/peers.sh check nats-ws` against a peer it started:
//
//   node --experimental-websocket check.mjs <workdir>/urls.env
//
// 1. A WebSocket subscriber speaking the NATS protocol (CONNECT, SUB, PING,
//    then MSG frames) on subject `bench.<channel>`; three messages published
//    over a plain NATS connection (PUB) on the client port; the subscriber
//    gets all three, in order.
// 2. Resume: core NATS has none. The subscriber disconnects, two more are
//    published, a new subscriber gets nothing of them (checked, and
//    reported as the documented behaviour, not a failure).
// Exits non-zero on any failure.
import net from 'node:net';
import assert from 'node:assert/strict';
import { deadline as failAfter, readEnv, sleep } from '../check-lib.mjs';

const env = readEnv(process.argv[2]);
const subject = `bench.check-${process.pid}`;
const deadline = failAfter('nats-ws');
const CONNECT = 'CONNECT {"verbose":false,"pedantic":false,"protocol":1,"headers":false,"no_responders":false}\r\n';

// Parses the server side of the NATS protocol: INFO, PING, PONG, +OK, -ERR
// lines and `MSG <subject> <sid> [reply] <bytes>\r\n<payload>\r\n`.
function natsParser(onOp) {
  let buf = Buffer.alloc(0);
  return (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    for (;;) {
      const eol = buf.indexOf('\r\n');
      if (eol < 0) return;
      const line = buf.subarray(0, eol).toString();
      if (line.startsWith('MSG ')) {
        const parts = line.split(' ');
        const size = Number(parts[parts.length - 1]);
        if (buf.length < eol + 2 + size + 2) return;
        const payload = buf.subarray(eol + 2, eol + 2 + size).toString();
        buf = buf.subarray(eol + 2 + size + 2);
        onOp('MSG', { subject: parts[1], payload });
      } else {
        buf = buf.subarray(eol + 2);
        onOp(line.split(' ')[0], line);
      }
    }
  };
}

// A WebSocket NATS subscriber; `ready` resolves on the PONG after SUB.
function subscriber() {
  const sock = new WebSocket(env.SUB_WS);
  sock.binaryType = 'arraybuffer';
  const messages = [];
  let resolveReady;
  const ready = new Promise((r) => { resolveReady = r; });
  const parse = natsParser((op, arg) => {
    if (op === 'INFO') sock.send(`${CONNECT}SUB ${subject} 1\r\nPING\r\n`);
    else if (op === 'PING') sock.send('PONG\r\n');
    else if (op === 'PONG') resolveReady();
    else if (op === 'MSG') messages.push(arg.payload);
    else if (op === '-ERR') throw new Error(`nats-ws check: server said ${arg}`);
  });
  sock.onmessage = (m) => parse(Buffer.from(m.data));
  sock.onerror = (e) => { console.error('nats-ws check: WebSocket error', e.message ?? e); process.exit(1); };
  return { messages, ready, close: () => sock.close() };
}

// Publishes over a plain NATS connection; resolves once the server has
// processed them (the PONG after the PUBs).
function publish(payloads) {
  const { hostname, port } = new URL(env.PUB_NATS);
  return new Promise((resolve, reject) => {
    const conn = net.connect(Number(port), hostname);
    conn.on('error', reject);
    conn.on('data', natsParser((op, arg) => {
      if (op === 'INFO') {
        let out = CONNECT;
        for (const p of payloads) out += `PUB ${subject} ${Buffer.byteLength(p)}\r\n${p}\r\n`;
        conn.write(`${out}PING\r\n`);
      } else if (op === 'PONG') {
        conn.end();
        resolve();
      } else if (op === '-ERR') reject(new Error(`nats-ws check: server said ${arg}`));
    }));
  });
}

async function until(what, cond, ms = 5000) {
  for (let t = 0; t < ms; t += 20) {
    if (cond()) return;
    await sleep(20);
  }
  throw new Error(`nats-ws check: ${what} did not happen within ${ms} ms`);
}

// --- 1. three messages --------------------------------------------------------
const s1 = subscriber();
await s1.ready;
await publish(['m1', 'm2', 'm3']);
await until('WebSocket receives 3', () => s1.messages.length >= 3);
assert.deepEqual(s1.messages, ['m1', 'm2', 'm3']);
console.log(`nats-ws: WebSocket subscriber on ${subject} got ${JSON.stringify(s1.messages)}`);

// --- 2. no resume -------------------------------------------------------------
s1.close();
await sleep(100);
await publish(['m4', 'm5']);
const s2 = subscriber();
await s2.ready;
await sleep(300);
assert.deepEqual(s2.messages, [], 'core NATS replays nothing');
console.log('nats-ws: resume: a new subscriber after m4, m5 were published while it was away got nothing (core NATS keeps no messages)');
s2.close();
clearTimeout(deadline);
console.log('nats-ws: ok (3 messages over WebSocket; no resume, as expected)');
process.exit(0);
