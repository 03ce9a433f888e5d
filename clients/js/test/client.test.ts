import { afterEach, describe, expect, it, vi } from 'vitest';
import { createClientInternal } from '../src/client.js';
import type { HeraldEvent, RealtimeClient, RealtimeOptions, RealtimeState } from '../src/types.js';
import { ev, flush, World, type Tab } from './fakes.js';

const clients: RealtimeClient[] = [];
afterEach(() => {
  for (const c of clients.splice(0)) c.close();
});

function client(tab: Tab, options: Partial<RealtimeOptions> = {}): RealtimeClient {
  const c = createClientInternal(
    {
      urls: ['http://edge-a.test', 'http://edge-b.test'],
      getToken: async () => 'tok',
      services: ['finance'],
      ...options,
    },
    { env: tab.env },
  );
  clients.push(c);
  return c;
}

const ack = (seq = 41) => ({ type: 'ack', connectionId: 'a-1', nodeId: 'a', epoch: 'E', seq, expiresAt: 0 });

/** A leader tab with an open, acknowledged WebSocket. */
async function liveLeader(world: World, options: Partial<RealtimeOptions> = {}) {
  const tab = world.addTab();
  const c = client(tab, options);
  await flush();
  const socket = tab.lastSocket();
  socket.open();
  socket.receive(ack());
  await flush();
  return { tab, c, socket };
}

describe('client: one tab', () => {
  it('leads, connects over WebSocket and reports live', async () => {
    const world = new World();
    const { c, socket } = await liveLeader(world);
    expect(socket.sentOfType('hello')[0]).toMatchObject({ services: ['finance'] });
    const s = c.state();
    expect(s).toMatchObject({
      status: 'live',
      role: 'leader',
      transport: 'websocket',
      url: 'http://edge-a.test',
      connectionId: 'a-1',
      lastSeq: 41,
      epoch: 'E',
    });
    expect(c.state()).toBe(s); // the same snapshot until something changes
  });

  it('delivers events to handlers and counts them per service', async () => {
    const world = new World();
    const { c, socket } = await liveLeader(world);
    const got: HeraldEvent[] = [];
    c.subscribe('finance', (e) => got.push(e));
    await flush();
    socket.receive({ type: 'events', service: 'finance', events: [ev(42), ev(43)], seq: 43 });
    expect(got.map((e) => e.seq)).toEqual([42, 43]);
    const h = c.state().services.finance;
    expect(h?.delivered).toBe(2);
    expect(h?.lastEventAt).toBe(world.clock.now);
    expect(h?.p95LatencyMs).toBe(50);
    expect(c.state().lastSeq).toBe(43);
  });

  it('suppresses duplicates and counts them', async () => {
    const world = new World();
    const { c, socket } = await liveLeader(world);
    const got: number[] = [];
    c.subscribe('finance', (e) => got.push(e.seq));
    socket.receive({ type: 'events', service: 'finance', events: [ev(42)], seq: 42 });
    socket.receive({ type: 'events', service: 'finance', events: [ev(42), ev(43)], seq: 43 });
    expect(got).toEqual([42, 43]);
    expect(c.state().services.finance?.suppressedDuplicates).toBe(1);
  });

  it('setPropertyFilter updates the socket in place, never reconnects', async () => {
    const world = new World();
    const { c, tab, socket } = await liveLeader(world);
    c.setPropertyFilter('p1');
    await flush();
    expect(socket.sentOfType('update')).toEqual([{ type: 'update', services: ['finance'], filters: { propertyId: 'p1' } }]);
    expect(tab.sockets).toHaveLength(1);
  });

  it('subscribe() adds a service in place and coalesces a burst into one update', async () => {
    const world = new World();
    const { c, socket } = await liveLeader(world);
    c.subscribe('tasks', () => {});
    c.subscribe('guest', () => {});
    c.subscribe('tasks', () => {});
    await flush();
    expect(socket.sentOfType('update')).toEqual([
      { type: 'update', services: ['finance', 'guest', 'tasks'], filters: { propertyId: null } },
    ]);
  });

  it('rejects invalid service names', () => {
    const world = new World();
    const c = client(world.addTab());
    expect(() => c.subscribe('no spaces', () => {})).toThrow(TypeError);
    expect(() => client(world.addTab(), { urls: [] })).toThrow(TypeError);
  });

  it('never opens a socket while getToken gives nothing usable', async () => {
    const world = new World();
    const tab = world.addTab();
    const getToken = vi.fn(async () => '');
    const c = client(tab, { getToken });
    await world.clock.advance(5_000);
    expect(tab.sockets).toHaveLength(0);
    expect(getToken.mock.calls.length).toBeGreaterThan(1);
    expect(c.state().status).toBe('connecting');
  });

  it('falls back to long-poll on 4503 and reports degraded', async () => {
    const world = new World();
    const { c, tab, socket } = await liveLeader(world);
    socket.serverClose(4503, 'realtime disabled');
    await world.clock.advance(1_000);
    const poll = tab.http.last();
    expect(new URL(poll.url).pathname).toBe('/v1/realtime/poll');
    expect(new URL(poll.url).searchParams.get('lastSeq')).toBe('41');
    expect(poll.init.headers.Authorization).toBe('Bearer tok');
    poll.respond(200, { events: [], lastSeq: 41, epoch: 'E', reset: null });
    await flush();
    expect(c.state()).toMatchObject({ status: 'degraded', transport: 'longpoll' });
  });

  it('calls onStale once per outage longer than staleAfterMs', async () => {
    const world = new World();
    const onStale = vi.fn();
    const { tab, socket } = await liveLeader(world, { onStale, staleAfterMs: 10_000 });
    socket.serverClose(1006);
    // Every reconnect fails: the edge is down.
    for (let i = 0; i < 30; i++) {
      await world.clock.advance(1_000);
      const s = tab.lastSocket();
      if (s.onclose !== null) s.serverClose(1006);
    }
    expect(onStale).toHaveBeenCalledTimes(1);
    const s = tab.lastSocket();
    await world.clock.advance(31_000);
    const next = tab.lastSocket();
    expect(next).not.toBe(s);
  });

  it('resumes from a recently persisted cursor, but not from one of an earlier visit', async () => {
    const world = new World();
    world.data.set('herald:cursor', JSON.stringify({ lastSeq: 77, epoch: 'E', at: world.clock.now - 5_000 }));
    const tab = world.addTab();
    client(tab);
    await flush();
    tab.lastSocket().open();
    expect(tab.lastSocket().sentOfType('hello')[0]).toMatchObject({ lastSeq: 77, epoch: 'E' });

    const later = new World();
    later.data.set('herald:cursor', JSON.stringify({ lastSeq: 77, epoch: 'E', at: later.clock.now - 3_600_000 }));
    const tab2 = later.addTab();
    client(tab2);
    await flush();
    tab2.lastSocket().open();
    expect(tab2.lastSocket().sentOfType('hello')[0]).not.toHaveProperty('lastSeq');
  });

  it('exposes window.__realtimeState with debug', async () => {
    const world = new World();
    const { c } = await liveLeader(world, { debug: true });
    const g = globalThis as { __realtimeState?: () => RealtimeState };
    expect(g.__realtimeState?.()).toBe(c.state());
    delete g.__realtimeState;
  });

  it('notifies onStateChange once per task', async () => {
    const world = new World();
    const onStateChange = vi.fn();
    const { socket } = await liveLeader(world, { onStateChange });
    onStateChange.mockClear();
    socket.receive({ type: 'events', service: 'finance', events: [ev(42)], seq: 42 });
    socket.receive({ type: 'events', service: 'finance', events: [ev(43)], seq: 43 });
    await flush();
    expect(onStateChange).toHaveBeenCalledTimes(1);
    expect(onStateChange.mock.calls[0]?.[0]).toMatchObject({ lastSeq: 43 });
  });
});

describe('client: several tabs', () => {
  async function twoTabs(bOptions: Partial<RealtimeOptions> = {}) {
    const world = new World();
    const a = await liveLeader(world);
    const tabB = world.addTab();
    const b = client(tabB, bOptions);
    await flush();
    await world.clock.advance(1_500);
    return { world, a, tabB, b };
  }

  it('only the leader touches the network; the follower mirrors its state', async () => {
    const { a, tabB, b } = await twoTabs({ services: ['tasks'] });
    expect(tabB.sockets).toHaveLength(0);
    expect(tabB.http.requests).toHaveLength(0);
    expect(b.state()).toMatchObject({ role: 'follower', status: 'live', transport: 'websocket', connectionId: 'a-1', lastSeq: 41 });
    // The leader subscribed to the union, in place.
    expect(a.socket.sentOfType('update')).toEqual([
      { type: 'update', services: ['finance', 'tasks'], filters: { propertyId: null } },
    ]);
  });

  it('broadcasts events; each tab keeps its own services and property filter', async () => {
    const { world, a, b } = await twoTabs({ services: ['finance'], propertyId: 'p2' });
    const gotA: string[] = [];
    const gotB: string[] = [];
    a.c.subscribe('finance', (e) => gotA.push(`${e.seq}:${e.propertyId}`));
    b.subscribe('finance', (e) => gotB.push(`${e.seq}:${e.propertyId}`));
    await flush();
    a.socket.receive({
      type: 'events',
      service: 'finance',
      events: [ev(42, 'finance', { propertyId: 'p1' }), ev(43, 'finance', { propertyId: 'p2' }), ev(44, 'finance', { propertyId: null })],
      seq: 44,
    });
    await flush();
    expect(gotA).toEqual(['42:p1', '43:p2', '44:null']);
    expect(gotB).toEqual(['43:p2', '44:null']);
    expect(b.state().lastSeq).toBe(44);
    expect(b.state().services.finance?.delivered).toBe(2);
    void world;
  });

  it('a new leader resumes from the last cursor when the leader goes away', async () => {
    const { world, a, tabB, b } = await twoTabs();
    a.socket.receive({ type: 'events', service: 'finance', events: [ev(50)], seq: 50 });
    await flush();
    a.c.close();
    await flush();
    expect(a.socket.closedByClient).toBe(1000);
    await world.clock.advance(100);
    expect(b.state().role).toBe('leader');
    const s = tabB.lastSocket();
    s.open();
    expect(s.sentOfType('hello')[0]).toMatchObject({ lastSeq: 50, epoch: 'E' });
  });

  it('the new leader uses the token the old one broadcast', async () => {
    const world = new World();
    const getTokenA = vi.fn(async () => 'tok-from-a');
    const tabA = world.addTab();
    const a = client(tabA, { getToken: getTokenA });
    await flush();
    tabA.lastSocket().open();
    const tabB = world.addTab();
    const getTokenB = vi.fn(async () => 'tok-from-b');
    client(tabB, { getToken: getTokenB });
    await world.clock.advance(1_500);
    a.close();
    await world.clock.advance(100);
    expect(getTokenB).not.toHaveBeenCalled();
    const s = tabB.lastSocket();
    s.open();
    expect(s.sentOfType('hello')[0]).toMatchObject({ token: 'tok-from-a' });
  });

  it('logout in one tab stops every tab at once', async () => {
    const { world, a, tabB, b } = await twoTabs();
    const http = a.tab.http;
    b.logout();
    await flush();
    expect(b.state().status).toBe('stopped');
    expect(a.c.state().status).toBe('stopped');
    expect(a.socket.closedByClient).toBe(1000);
    expect(world.locks.isHeld('herald:leader')).toBe(false);
    expect(a.tab.listenerCount()).toBe(0);
    expect(tabB.listenerCount()).toBe(0);
    const pending = world.clock.pending();
    await world.clock.advance(60_000);
    expect(a.tab.sockets).toHaveLength(1);
    expect(http.requests).toHaveLength(0);
    expect(world.clock.pending()).toBeLessThanOrEqual(pending);
  });

  it('a logout posted by the app on auth-control also stops the client', async () => {
    const world = new World();
    const { c, tab } = await liveLeader(world);
    const port = world.openPort('auth-control');
    port.postMessage({ type: 'logout', id: 'x', ts: 1 });
    await flush();
    expect(c.state().status).toBe('stopped');
    void tab;
  });

  it('a reset reaches onReset in every tab', async () => {
    const onResetA = vi.fn();
    const onResetB = vi.fn();
    const world = new World();
    const a = await liveLeader(world, { onReset: onResetA });
    const tabB = world.addTab();
    const b = client(tabB, { onReset: onResetB });
    await world.clock.advance(1_500);
    a.socket.receive({ type: 'reset', reason: 'history_gone', seq: 500 });
    await flush();
    expect(onResetA).toHaveBeenCalledWith('history_gone');
    expect(onResetB).toHaveBeenCalledWith('history_gone');
    expect(b.state().lastSeq).toBe(500);
  });

  it('a dropped frame reaches onReset with its services in every tab and keeps the cursor', async () => {
    const onResetA = vi.fn();
    const onResetB = vi.fn();
    const world = new World();
    const a = await liveLeader(world, { onReset: onResetA });
    const tabB = world.addTab();
    const b = client(tabB, { onReset: onResetB });
    await world.clock.advance(1_500);
    a.socket.receive({ type: 'ping', seq: 400 });
    await flush();
    a.socket.receive({ type: 'dropped', services: ['analytics'], fromSeq: 401, toSeq: 405 });
    await flush();
    expect(onResetA).toHaveBeenCalledWith('dropped', ['analytics']);
    expect(onResetB).toHaveBeenCalledWith('dropped', ['analytics']);
    expect(a.c.state().lastSeq).toBe(400);
    expect(b.state().lastSeq).toBe(400);
  });

  it('works without Web Locks and BroadcastChannel (lease + storage events)', async () => {
    const world = new World();
    const tabA = world.addTab({ locks: false, broadcast: false });
    const a = client(tabA);
    await world.clock.advance(500);
    const socket = tabA.lastSocket();
    socket.open();
    socket.receive(ack());
    const tabB = world.addTab({ locks: false, broadcast: false });
    const b = client(tabB, { services: ['tasks'] });
    const got: number[] = [];
    b.subscribe('tasks', (e) => got.push(e.seq));
    await world.clock.advance(2_000);
    expect(tabB.sockets).toHaveLength(0);
    expect(b.state().role).toBe('follower');
    socket.receive({ type: 'events', service: 'tasks', events: [ev(42, 'tasks')], seq: 42 });
    await flush();
    expect(got).toEqual([42]);
    // The leader leaves: the follower takes the lease over at once and resumes.
    a.close();
    await world.clock.advance(500);
    expect(b.state().role).toBe('leader');
    tabB.lastSocket().open();
    expect(tabB.lastSocket().sentOfType('hello')[0]).toMatchObject({ lastSeq: 42 });
  });
});
