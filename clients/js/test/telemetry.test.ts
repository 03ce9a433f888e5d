import { afterEach, describe, expect, it } from 'vitest';
import { createClientInternal } from '../src/client.js';
import { FLUSH_MS, MAX_BATCH, MAX_QUEUE, Telemetry, type TelemetrySender } from '../src/telemetry.js';
import type { RealtimeClient, RealtimeOptions } from '../src/types.js';
import { ev, flush, World, type Tab } from './fakes.js';

/** A sender that records what it was asked to send. */
class RecordingSender implements TelemetrySender {
  posts: Array<{ url: string; body: { events: Array<{ name: string; value: number; attrs?: unknown }>; token?: string }; headers: Record<string, string> }> = [];
  beacons: Array<{ url: string; body: { events: Array<{ name: string; value: number }>; token?: string } }> = [];
  beaconAccepts = true;
  throwOnPost = false;

  post(url: string, body: string, headers: Record<string, string>): Promise<unknown> {
    if (this.throwOnPost) throw new Error('fetch exploded');
    this.posts.push({ url, body: JSON.parse(body), headers });
    return Promise.resolve({ status: 202 });
  }

  beacon(url: string, body: string): boolean {
    if (!this.beaconAccepts) return false;
    this.beacons.push({ url, body: JSON.parse(body) });
    return true;
  }

  /** Every event sent, by name. */
  names(): string[] {
    return [...this.posts, ...this.beacons].flatMap((p) => p.body.events.map((e) => e.name));
  }
}

function telemetry(opts: { sampleRate?: number; random?: number; token?: string | null; endpoint?: string | null } = {}) {
  const world = new World();
  const tab = world.addTab();
  const sender = new RecordingSender();
  const env = { ...tab.env, random: () => opts.random ?? 0.5 };
  const t = new Telemetry(
    { sampleRate: opts.sampleRate ?? 1, endpoint: opts.endpoint ?? null },
    { env, token: () => (opts.token === undefined ? 'tok' : opts.token), baseUrl: () => 'http://edge-a.test/', sender },
  );
  t.start();
  return { world, tab, sender, t };
}

describe('Telemetry', () => {
  it('samples per session: one draw decides whether the tab reports at all', () => {
    expect(telemetry({ sampleRate: 0.02, random: 0.019 }).t.sampled).toBe(true);
    const off = telemetry({ sampleRate: 0.02, random: 0.02 });
    expect(off.t.sampled).toBe(false);
    off.t.record('reconnect', 1);
    expect(off.t.pending()).toHaveLength(0);
    expect(off.tab.listenerCount()).toBe(0); // costs nothing: no listener, no timer
    expect(off.world.clock.pending()).toBe(0);
    expect(telemetry({ sampleRate: 0, random: 0 }).t.sampled).toBe(false);
    expect(telemetry({ sampleRate: 1, random: 0.999 }).t.sampled).toBe(true);
  });

  it('batches events and sends them every 30 s with the token in the header', async () => {
    const { world, sender, t } = telemetry();
    t.record('leader_acquired', 1);
    t.record('reconnect', 1, { transport: 'sse' });
    await world.clock.advance(FLUSH_MS - 1);
    expect(sender.posts).toHaveLength(0);
    await world.clock.advance(1);
    expect(sender.posts).toHaveLength(1);
    const p = sender.posts[0]!;
    expect(p.url).toBe('http://edge-a.test/v2/telemetry/client');
    expect(p.headers).toEqual({ Authorization: 'Bearer tok', 'Content-Type': 'application/json' });
    expect(p.body).toEqual({
      events: [
        { name: 'leader_acquired', value: 1 },
        { name: 'reconnect', value: 1, attrs: { transport: 'sse' } },
      ],
    });
    expect(p.body.token).toBeUndefined();
    await world.clock.advance(FLUSH_MS);
    expect(sender.posts).toHaveLength(1); // nothing new: no empty request
  });

  it('sends at most one batch of MAX_BATCH per request, the rest at the next flush', async () => {
    const { world, sender, t } = telemetry();
    for (let i = 0; i < MAX_BATCH + 5; i++) t.record('fast_empty', i);
    await world.clock.advance(FLUSH_MS);
    expect(sender.posts[0]!.body.events).toHaveLength(MAX_BATCH);
    await world.clock.advance(FLUSH_MS);
    expect(sender.posts[1]!.body.events).toHaveLength(5);
  });

  it('keeps a bounded queue, dropping the oldest', () => {
    const { t } = telemetry();
    for (let i = 0; i < MAX_QUEUE + 10; i++) t.record('fast_empty', i);
    expect(t.pending()).toHaveLength(MAX_QUEUE);
    expect(t.pending()[0]!.value).toBe(10);
    expect(t.dropped).toBe(10);
  });

  it('samples delivery latency at most once a second, and clamps negative or drops non-finite values', async () => {
    const { world, t } = telemetry();
    t.record('delivery_latency_ms', 40);
    t.record('delivery_latency_ms', 50);
    await world.clock.advance(1_000);
    t.record('delivery_latency_ms', -3);
    t.record('reconnect', Number.NaN);
    expect(t.pending()).toEqual([
      { name: 'delivery_latency_ms', value: 40 },
      { name: 'delivery_latency_ms', value: 0 },
    ]);
  });

  it('sends everything with sendBeacon when the page is hidden, the token in the body', () => {
    const { tab, sender, t } = telemetry();
    for (let i = 0; i < MAX_BATCH + 1; i++) t.record('reconnect', 1);
    tab.emit('visibilitychange', {}); // still visible: nothing
    expect(sender.beacons).toHaveLength(0);
    tab.visible = false;
    tab.emit('visibilitychange', {});
    expect(sender.beacons).toHaveLength(2);
    expect(sender.beacons[0]!.url).toBe('http://edge-a.test/v2/telemetry/client');
    expect(sender.beacons[0]!.body.token).toBe('tok');
    expect(sender.beacons[0]!.body.events).toHaveLength(MAX_BATCH);
    expect(sender.beacons[1]!.body.events).toHaveLength(1);
    expect(t.pending()).toHaveLength(0);
    t.record('leader_takeover', 1);
    tab.emit('pagehide', {});
    expect(sender.beacons).toHaveLength(3);
    expect(sender.posts).toHaveLength(0);
  });

  it('falls back to a keepalive fetch (header token) when the browser refuses the beacon', () => {
    const { tab, sender, t } = telemetry();
    sender.beaconAccepts = false;
    t.record('reconnect', 1);
    tab.emit('pagehide', {});
    expect(sender.posts).toHaveLength(1);
    expect(sender.posts[0]!.headers.Authorization).toBe('Bearer tok');
    expect(sender.posts[0]!.body.token).toBeUndefined();
  });

  it('waits for a token rather than send without one', async () => {
    let token: string | null = null;
    const world = new World();
    const tab = world.addTab();
    const sender = new RecordingSender();
    const t = new Telemetry({ sampleRate: 1, endpoint: 'https://t.test/collect' }, { env: tab.env, token: () => token, baseUrl: () => 'x', sender });
    t.start();
    t.record('reconnect', 1);
    await world.clock.advance(FLUSH_MS);
    tab.emit('pagehide', {});
    expect(sender.posts).toHaveLength(0);
    expect(sender.beacons).toHaveLength(0);
    token = 'later';
    await world.clock.advance(FLUSH_MS);
    expect(sender.posts).toHaveLength(1);
    expect(sender.posts[0]!.url).toBe('https://t.test/collect');
  });

  it('never throws into the app, whatever the browser does', async () => {
    const { world, tab, sender, t } = telemetry();
    sender.throwOnPost = true;
    sender.beacon = () => {
      throw new Error('beacon exploded');
    };
    t.record('reconnect', 1);
    await world.clock.advance(FLUSH_MS);
    t.record('reconnect', 1);
    expect(() => tab.emit('pagehide', {})).not.toThrow();
    expect(() => t.record('fast_empty', 1, null as unknown as Record<string, string>)).not.toThrow();
    expect(() => t.stop()).not.toThrow();
  });

  it('stop() sends what is left and leaves no listener or timer', () => {
    const { world, tab, sender, t } = telemetry();
    t.record('subscribe_error', 1);
    t.stop();
    expect(sender.names()).toEqual(['subscribe_error']);
    expect(tab.listenerCount()).toBe(0);
    expect(world.clock.pending()).toBe(0);
    t.record('reconnect', 1);
    expect(t.pending()).toHaveLength(0);
  });
});

describe('client telemetry', () => {
  const clients: RealtimeClient[] = [];
  afterEach(() => {
    for (const c of clients.splice(0)) c.close();
  });

  function client(tab: Tab, sender: TelemetrySender, options: Partial<RealtimeOptions> = {}) {
    const c = createClientInternal(
      {
        urls: ['http://edge-a.test', 'http://edge-b.test'],
        getToken: async () => 'tok',
        services: ['finance'],
        telemetry: { sampleRate: 1 },
        ...options,
      },
      { env: tab.env, telemetrySender: sender },
    );
    clients.push(c);
    return c;
  }

  const ack = { type: 'ack', connectionId: 'a-1', nodeId: 'a', epoch: 'E', seq: 41, expiresAt: 0 };

  it('records leader acquisition, delivery latency, reconnects and a refused subscription', async () => {
    const world = new World();
    const tab = world.addTab();
    const sender = new RecordingSender();
    const c = client(tab, sender);
    await flush();
    const socket = tab.lastSocket();
    socket.open();
    socket.receive(ack);
    await flush();
    // Just after the ack: a resume's backlog, not counted as latency.
    socket.receive({ type: 'events', service: 'finance', seq: 42, events: [ev(42, 'finance', { timestamp: world.clock.now - 60_000 })] });
    await world.clock.advance(2_000);
    socket.receive({ type: 'events', service: 'finance', seq: 43, events: [ev(43, 'finance', { timestamp: world.clock.now - 120 })] });
    socket.serverClose(1006);
    await world.clock.advance(10_000);
    const again = tab.lastSocket();
    expect(again).not.toBe(socket);
    again.open();
    again.receive(ack);
    await flush();
    again.serverClose(4003, 'forbidden');
    await flush();
    c.close(); // flushes
    const events = [...sender.posts, ...sender.beacons].flatMap((p) => p.body.events);
    expect(events).toEqual([
      { name: 'leader_acquired', value: 1 },
      { name: 'delivery_latency_ms', value: 120 },
      { name: 'reconnect', value: 1, attrs: { transport: 'websocket' } },
      { name: 'subscribe_error', value: 1, attrs: { transport: 'websocket' } },
    ]);
    expect(sender.beacons[0]?.body.token ?? sender.posts[0]?.headers.Authorization).toBeTruthy();
  });

  it('records a takeover when a follower becomes leader', async () => {
    const world = new World();
    const a = world.addTab();
    const b = world.addTab();
    const sa = new RecordingSender();
    const sb = new RecordingSender();
    const ca = client(a, sa);
    await flush();
    const cb = client(b, sb);
    await world.clock.advance(2_000);
    expect(cb.state().role).toBe('follower');
    ca.close();
    await world.clock.advance(2_000);
    expect(cb.state().role).toBe('leader');
    cb.close();
    expect(sa.names()).toEqual(['leader_acquired']);
    expect(sb.names()).toEqual(['leader_takeover']);
  });

  it('sends nothing with telemetry disabled', async () => {
    const world = new World();
    const tab = world.addTab();
    const sender = new RecordingSender();
    const c = client(tab, sender, { telemetry: { enabled: false, sampleRate: 1 } });
    await flush();
    c.close();
    expect(sender.names()).toEqual([]);
  });
});
