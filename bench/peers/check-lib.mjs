// What the peers' smoke checks (*/check.mjs, run by `peers.sh check`)
// share: the peer's urls.env, a channel of the check's own, a deadline, and
// SSE and WebSocket readers that collect what arrives.
import fs from 'node:fs';
import assert from 'node:assert/strict';

/** The KEY=VALUE lines of a urls.env file. */
export function readEnv(file) {
  return Object.fromEntries(
    fs.readFileSync(file, 'utf8').trim().split('\n').map((l) => l.split(/=(.*)/s).slice(0, 2)),
  );
}

/** A channel name of this check, and a URL template filled with it. */
export const channel = `check-${process.pid}`;
export const url = (template) => template.replace('{channel}', channel);
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Waits until `cond()` (sync or async) holds; throws after `ms`. */
export async function until(name, what, cond, ms = 5000) {
  for (let t = 0; t < ms; t += 20) {
    if (await cond()) return;
    await sleep(20);
  }
  throw new Error(`${name} check: ${what} did not happen within ${ms} ms`);
}

/** Ends the process with a failure after `ms` unless cleared. */
export function deadline(name, ms = 20_000) {
  return setTimeout(() => { console.error(`${name} check: timed out after ${ms / 1000} s`); process.exit(1); }, ms);
}

/**
 * An EventSource-like reader over fetch: collects {id, data} events;
 * `opened` resolves on the stream's first bytes.
 */
export function sse(target, headers = {}) {
  const ctrl = new AbortController();
  const events = [];
  let resolveOpened;
  const opened = new Promise((r) => { resolveOpened = r; });
  const done = (async () => {
    const res = await fetch(target, { headers: { Accept: 'text/event-stream', ...headers }, signal: ctrl.signal });
    assert.equal(res.status, 200, `SSE status ${res.status}`);
    const decoder = new TextDecoder();
    let buf = '';
    for await (const chunk of res.body) {
      resolveOpened();
      buf += decoder.decode(chunk, { stream: true });
      let end;
      while ((end = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, end);
        buf = buf.slice(end + 2);
        const ev = { id: null, data: [] };
        for (const line of block.split('\n')) {
          if (line.startsWith('id: ')) ev.id = line.slice(4);
          else if (line.startsWith('data: ')) ev.data.push(line.slice(6));
        }
        if (ev.data.length) events.push({ id: ev.id, data: ev.data.join('\n') });
      }
    }
  })().catch((e) => { if (e.name !== 'AbortError') throw e; });
  return { events, opened, close: () => ctrl.abort(), done };
}

/** A WebSocket that collects its text messages. */
export function ws(target) {
  const sock = new WebSocket(target);
  const messages = [];
  sock.onmessage = (m) => messages.push(String(m.data));
  const open = new Promise((resolve, reject) => { sock.onopen = resolve; sock.onerror = reject; });
  return { messages, open, close: () => sock.close() };
}
