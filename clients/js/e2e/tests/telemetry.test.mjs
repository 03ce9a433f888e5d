// Client telemetry in a real browser: a tab reporting every session
// (sampleRate 1) becomes leader, receives an event, reconnects after the
// network went away, and is hidden: its real sendBeacon reaches the edge,
// token in the body and not in the URL, and the edge's metrics count what
// happened. Then a second tab takes over leadership and reports that.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Stack, T, sleep, waitFor, waitSettled } from '../harness.mjs';

let stack;

/** The `client` figures of every running edge, summed. */
async function clientMetrics() {
  const sum = { events: {}, reconnects: {}, latencyCount: 0 };
  for (const e of stack.edges) {
    if (!e.child.running) continue;
    const r = await fetch(`${e.url}/v2/realtime/metrics`, { signal: AbortSignal.timeout(5000) });
    const c = (await r.json()).client ?? {};
    for (const [k, v] of Object.entries(c.events ?? {})) sum.events[k] = (sum.events[k] ?? 0) + v;
    for (const [k, v] of Object.entries(c.reconnects ?? {})) sum.reconnects[k] = (sum.reconnects[k] ?? 0) + v;
    sum.latencyCount += c.deliveryLatencyMs?.count ?? 0;
  }
  return sum;
}

const telemetryRequests = (ctx) => ctx.__rec.requests.filter((r) => new URL(r.url).pathname === '/v2/telemetry/client');

describe('client telemetry', { timeout: 180_000 }, () => {
  before(async () => {
    stack = await new Stack().start();
  });

  after(async () => {
    await stack?.stop();
  });

  it('counts a real tab’s leader changes, reconnect and delivery latency at the edge', { timeout: 120_000 }, async () => {
    const ctx = await stack.newContext();
    try {
      const before = await clientMetrics();
      const opts = { transports: ['websocket'], telemetry: { sampleRate: 1 } };
      const a = await stack.openTab(ctx, opts);
      await waitSettled([a]);

      // An event: its stored timestamp gives the delivery latency (after
      // the first 2 s of a connection, which the SDK counts as catch-up).
      await sleep(2_200);
      const run = `tele-${Date.now()}`;
      const pub = await stack.publish({ service: 'finance', payload: { run } });
      await waitFor(async () => (await T.events(a, run)).some((e) => e.seq === pub.seq), { what: 'the event in tab a' });

      // The network goes away and comes back: a real reconnect.
      await ctx.setOffline(true);
      await waitFor(async () => (await T.state(a)).status !== 'live', { timeout: 8000, what: 'tab a to notice offline' });
      await sleep(500);
      await ctx.setOffline(false);
      await waitFor(async () => (await T.state(a)).status === 'live', { timeout: 30_000, what: 'tab a live again' });
      await waitFor(async () => Object.values((await T.state(a)).services).some((s) => s.reconnects > 0), {
        what: 'the reconnect counted in tab a',
      });

      // Hidden: everything queued leaves with sendBeacon.
      await a.evaluate(() => window.T.hide());
      const afterHide = await waitFor(
        async () => {
          const m = await clientMetrics();
          const grew = (k) => (m.events[k] ?? 0) > (before.events[k] ?? 0);
          return grew('leader_acquired') && grew('reconnect') && m.latencyCount > before.latencyCount ? m : false;
        },
        { timeout: 10_000, what: 'the edges to count tab a’s reports' },
      );
      assert.ok((afterHide.reconnects.websocket ?? 0) > (before.reconnects.websocket ?? 0), JSON.stringify(afterHide));

      // How it was sent: a POST without Authorization header and without a
      // token in the URL (a beacon carries it in its JSON body).
      const sent = telemetryRequests(ctx);
      assert.ok(sent.length >= 1, 'a telemetry request was made');
      const posts = sent.filter((r) => r.method === 'POST');
      assert.ok(posts.length >= 1, JSON.stringify(sent.map((r) => r.method)));
      for (const r of sent) assert.equal(new URL(r.url).searchParams.has('token'), false, r.url);
      await waitFor(() => posts.every((r) => r.headers !== undefined), { what: 'request headers recorded' });
      const beacons = posts.filter((r) => r.headers.authorization === undefined);
      assert.ok(beacons.length >= 1, 'the hide sent a beacon (no Authorization header)');
      await a.evaluate(() => window.T.show());

      // A second tab follows; the first closes; the second takes over.
      const b = await stack.openTab(ctx, opts);
      await waitFor(async () => (await T.state(b)).role === 'follower', { timeout: 10_000, what: 'tab b to follow' });
      await a.evaluate(() => window.T.close());
      await waitFor(async () => (await T.state(b)).role === 'leader', { timeout: 10_000, what: 'tab b to take over' });
      await b.evaluate(() => window.T.hide());
      const afterTakeover = await waitFor(
        async () => {
          const m = await clientMetrics();
          return (m.events.leader_takeover ?? 0) > (before.events.leader_takeover ?? 0) ? m : false;
        },
        { timeout: 10_000, what: 'the edges to count tab b’s takeover' },
      );
      assert.equal(stack.violations.length, 0, stack.violations.join('\n'));
      stack.figure(
        'telemetry',
        `edges counted ${JSON.stringify(afterTakeover.events)}, reconnects ${JSON.stringify(afterTakeover.reconnects)}, ` +
          `${afterTakeover.latencyCount} latency sample(s); ${sent.length} request(s) before the takeover, ${beacons.length} by beacon`,
      );
    } finally {
      await ctx.setOffline(false).catch(() => {});
      await stack.closeContext(ctx);
    }
  });
});
