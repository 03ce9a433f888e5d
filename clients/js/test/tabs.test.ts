import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { TabNeed } from '../src/routing.js';
import {
  acceptBusMessage,
  HEARTBEAT_MS,
  LEADER_STALE_MS,
  NEED_MAX_AGE_MS,
  NEED_REFRESH_MS,
  TabBus,
  type BusMessage,
  type LeaderStatus,
  type TabsHost,
} from '../src/tabs.js';
import type { HeraldEvent, RealtimeState } from '../src/types.js';
import { ev, World } from './fakes.js';

const T0 = 1_700_000_000_000;
/** The fake BroadcastChannel delivers in a microtask (vitest's fake timers leave microtasks alone). */
const micro = async () => {
  for (let i = 0; i < 3; i++) await Promise.resolve();
};

const status = (over: Partial<LeaderStatus> = {}): LeaderStatus => ({
  status: 'live',
  transport: 'websocket',
  url: 'http://edge-a.test',
  connectionId: 'a-1',
  connected: true,
  reconnects: { finance: 2 },
  ...over,
});

/** A TabBus for tab 'me' with a recording host, and a peer port that sees what it posts and talks to it. */
function setup(role: RealtimeState['role'] = 'follower') {
  const world = new World();
  const tab = world.addTab();
  const own = {
    role,
    need: { services: ['finance'], propertyId: null, visible: true } as TabNeed,
    token: null as string | null,
  };
  const host = {
    role: () => own.role,
    ownNeed: () => own.need,
    token: () => own.token,
    leaderSeen: vi.fn(),
    leaderChanged: vi.fn(),
    leaderConnected: vi.fn(),
    reconnectsSeen: vi.fn(),
    statusRequested: vi.fn(),
    needsChanged: vi.fn(),
    cursorSeen: vi.fn(),
    events: vi.fn(),
    reset: vi.fn(),
    tokenSeen: vi.fn(),
  } satisfies TabsHost;
  const bus = new TabBus({ ...tab.env, now: () => Date.now() }, 'herald', 'me', host);
  bus.open();
  const peer = world.openPort('herald');
  const heard: BusMessage[] = [];
  peer.onmessage = (e) => heard.push(e.data as BusMessage);
  const send = async (m: BusMessage) => {
    peer.postMessage(m);
    await micro();
  };
  return { own, host, bus, heard, send };
}

beforeEach(() => {
  vi.useFakeTimers();
  vi.setSystemTime(T0);
});
afterEach(() => {
  vi.useRealTimers();
});

describe('tabs: messages', () => {
  it('accepts well-formed messages and rejects the rest', () => {
    const ok: unknown[] = [
      { type: 'leader', from: 'a' },
      { type: 'heartbeat', from: 'a', status: status(), lastSeq: null, epoch: null },
      { type: 'need', from: 'a', services: ['x'], propertyId: null, visible: true },
      { type: 'events', from: 'a', events: [], lastSeq: 3, epoch: 'E' },
      { type: 'reset', from: 'a', reason: 'dropped', lastSeq: 3, epoch: 'E', services: ['x'] },
      { type: 'token', from: 'a', token: 't' },
    ];
    for (const m of ok) expect(acceptBusMessage(m)).toBe(m);
    const bad: unknown[] = [
      null,
      'leader',
      { type: 'leader' },
      { type: 'heartbeat', from: 'a', status: null, lastSeq: 1, epoch: 'E' },
      { type: 'heartbeat', from: 'a', status: status(), lastSeq: 'x', epoch: 'E' },
      { type: 'need', from: 'a', services: [1], propertyId: null },
      { type: 'events', from: 'a', events: {}, lastSeq: 1, epoch: null },
      { type: 'reset', from: 'a', reason: 'dropped', lastSeq: 1, epoch: null },
      { type: 'reset', from: 'a', reason: 'whatever', lastSeq: 1, epoch: null },
      { type: 'token', from: 'a', token: 5 },
      { type: 'logout', from: 'a' },
    ];
    for (const m of bad) expect(acceptBusMessage(m)).toBeNull();
  });

  it('posts the leader’s messages in their wire shape', async () => {
    const { bus, heard } = setup('leader');
    const e = ev(42) as HeraldEvent;
    bus.announceLeader();
    bus.heartbeat(status(), { lastSeq: 41, epoch: 'E' });
    bus.events([e], { lastSeq: 42, epoch: 'E' });
    bus.reset('history_gone', { lastSeq: 500, epoch: 'E' });
    bus.reset('dropped', { lastSeq: 500, epoch: 'E' }, ['analytics']);
    bus.token('tok-1');
    bus.bye();
    await micro();
    expect(heard).toEqual([
      { type: 'leader', from: 'me' },
      { type: 'heartbeat', from: 'me', status: status(), lastSeq: 41, epoch: 'E' },
      { type: 'events', from: 'me', events: [e], lastSeq: 42, epoch: 'E' },
      { type: 'reset', from: 'me', reason: 'history_gone', lastSeq: 500, epoch: 'E' },
      { type: 'reset', from: 'me', reason: 'dropped', lastSeq: 500, epoch: 'E', services: ['analytics'] },
      { type: 'token', from: 'me', token: 'tok-1' },
      { type: 'bye', from: 'me' },
    ]);
    expect(Object.keys(heard[3] ?? {})).not.toContain('services');
  });

  it('ignores its own messages, and everything once closed', async () => {
    const { bus, host, heard, send } = setup();
    bus.receive({ type: 'leader', from: 'me' });
    bus.receive({ type: 'token', from: 'me', token: 't' });
    expect(host.leaderSeen).not.toHaveBeenCalled();
    expect(host.tokenSeen).not.toHaveBeenCalled();
    bus.close();
    await send({ type: 'leader', from: 'L' });
    await send({ type: 'token', from: 'L', token: 't' });
    bus.announceNeed({ services: ['x'], propertyId: null, visible: true });
    await micro();
    expect(host.leaderSeen).not.toHaveBeenCalled();
    expect(host.tokenSeen).not.toHaveBeenCalled();
    expect(heard).toEqual([]);
  });

  it('hands events, resets and tokens from the leader to the host', async () => {
    const { host, send } = setup();
    const e = ev(44) as HeraldEvent;
    await send({ type: 'events', from: 'L', events: [e], lastSeq: 44, epoch: 'E' });
    await send({ type: 'reset', from: 'L', reason: 'dropped', lastSeq: 400, epoch: 'E', services: ['analytics'] });
    await send({ type: 'reset', from: 'L', reason: 'epoch_changed', lastSeq: 0, epoch: 'F' });
    await send({ type: 'token', from: 'L', token: 'tok-9' });
    await send({ type: 'status?', from: 'F2' });
    expect(host.cursorSeen.mock.calls).toEqual([[44, 'E']]);
    expect(host.events.mock.calls).toEqual([[[e]]]);
    expect(host.reset.mock.calls).toEqual([
      ['dropped', 400, 'E', ['analytics']],
      ['epoch_changed', 0, 'F', undefined],
    ]);
    expect(host.tokenSeen.mock.calls).toEqual([['tok-9']]);
    expect(host.statusRequested).toHaveBeenCalledTimes(1);
  });
});

describe('tabs: following a leader', () => {
  it('a leader announcing itself makes this tab a follower that re-announces its need', async () => {
    const { host, heard, send } = setup('unknown');
    await send({ type: 'leader', from: 'L' });
    expect(host.leaderSeen).toHaveBeenCalledTimes(1);
    expect(heard).toEqual([{ type: 'need', from: 'me', services: ['finance'], propertyId: null, visible: true }]);
  });

  it('mirrors the heartbeated status for exactly LEADER_STALE_MS', async () => {
    const { bus, host, send } = setup();
    await send({ type: 'heartbeat', from: 'L', status: status(), lastSeq: 41, epoch: 'E' });
    expect(host.leaderSeen).toHaveBeenCalledTimes(1);
    expect(host.leaderChanged).toHaveBeenCalledTimes(1);
    expect(host.cursorSeen.mock.calls).toEqual([[41, 'E']]);
    expect(host.reconnectsSeen.mock.calls).toEqual([['finance', 2]]);
    expect(host.leaderConnected).toHaveBeenCalledTimes(1);
    expect(bus.mirroredLeader()).toEqual(status());
    vi.advanceTimersByTime(LEADER_STALE_MS);
    expect(bus.mirroredLeader()).toEqual(status());
    vi.advanceTimersByTime(1);
    expect(bus.mirroredLeader()).toBeNull();
  });

  it('reports a status change only when the status differs; a disconnected leader is not healthy', async () => {
    const { host, send } = setup();
    await send({ type: 'heartbeat', from: 'L', status: status(), lastSeq: 41, epoch: 'E' });
    await send({ type: 'heartbeat', from: 'L', status: status(), lastSeq: 41, epoch: 'E' });
    expect(host.leaderChanged).toHaveBeenCalledTimes(1);
    expect(host.leaderConnected).toHaveBeenCalledTimes(2);
    await send({ type: 'heartbeat', from: 'L', status: status({ status: 'degraded', connected: false }), lastSeq: 41, epoch: 'E' });
    expect(host.leaderChanged).toHaveBeenCalledTimes(2);
    expect(host.leaderConnected).toHaveBeenCalledTimes(2);
  });

  it('a leader ignores heartbeats (two leaders only during a hand-over)', async () => {
    const { bus, host, send } = setup('leader');
    await send({ type: 'heartbeat', from: 'L2', status: status(), lastSeq: 41, epoch: 'E' });
    expect(host.leaderSeen).not.toHaveBeenCalled();
    expect(host.cursorSeen).not.toHaveBeenCalled();
    expect(bus.mirroredLeader()).toBeNull();
  });

  it('the leader saying bye ends the mirror at once', async () => {
    const { bus, host, heard, send } = setup();
    await send({ type: 'heartbeat', from: 'L', status: status(), lastSeq: 41, epoch: 'E' });
    await send({ type: 'bye', from: 'someone-else' });
    expect(bus.mirroredLeader()).toEqual(status());
    expect(host.leaderChanged).toHaveBeenCalledTimes(1);
    await send({ type: 'bye', from: 'L' });
    expect(bus.mirroredLeader()).toBeNull();
    expect(host.leaderChanged).toHaveBeenCalledTimes(2);
    // No leader heard from: the next tick asks for a status at once.
    bus.tick(false);
    await micro();
    expect(heard.map((m) => m.type)).toContain('status?');
  });

  it('forgetLeader() drops the mirrored status', async () => {
    const { bus, send } = setup();
    await send({ type: 'heartbeat', from: 'L', status: status(), lastSeq: 41, epoch: 'E' });
    bus.forgetLeader();
    expect(bus.mirroredLeader()).toBeNull();
  });
});

describe('tabs: periodic duties', () => {
  it('a follower asks for a status once heartbeats lag more than two periods', async () => {
    const { bus, heard, send } = setup();
    await send({ type: 'heartbeat', from: 'L', status: status(), lastSeq: 41, epoch: 'E' });
    bus.tick(false); // also the first need refresh
    await micro();
    heard.length = 0;
    vi.advanceTimersByTime(2 * HEARTBEAT_MS);
    bus.tick(false);
    await micro();
    expect(heard).toEqual([]);
    vi.advanceTimersByTime(1);
    bus.tick(false);
    await micro();
    expect(heard).toEqual([{ type: 'status?', from: 'me' }]);
  });

  it('a follower notes a leader silent for more than LEADER_STALE_MS once', async () => {
    const { bus, host, send } = setup();
    await send({ type: 'heartbeat', from: 'L', status: status(), lastSeq: 41, epoch: 'E' });
    expect(host.leaderChanged).toHaveBeenCalledTimes(1);
    vi.advanceTimersByTime(LEADER_STALE_MS);
    bus.tick(false);
    expect(host.leaderChanged).toHaveBeenCalledTimes(1);
    vi.advanceTimersByTime(1);
    bus.tick(false);
    expect(host.leaderChanged).toHaveBeenCalledTimes(2);
    vi.advanceTimersByTime(5_000);
    bus.tick(false);
    expect(host.leaderChanged).toHaveBeenCalledTimes(2);
    // A heartbeat re-arms the note.
    await send({ type: 'heartbeat', from: 'L', status: status(), lastSeq: 41, epoch: 'E' });
    vi.advanceTimersByTime(LEADER_STALE_MS + 1);
    bus.tick(false);
    expect(host.leaderChanged).toHaveBeenCalledTimes(3);
  });

  it('a follower re-announces its need every NEED_REFRESH_MS; a leader only refreshes its registry', async () => {
    const f = setup();
    f.bus.tick(false);
    await micro();
    const need = { type: 'need', from: 'me', services: ['finance'], propertyId: null, visible: true };
    expect(f.heard.filter((m) => m.type === 'need')).toEqual([need]);
    vi.advanceTimersByTime(NEED_REFRESH_MS - 1);
    f.bus.tick(false);
    await micro();
    expect(f.heard.filter((m) => m.type === 'need')).toHaveLength(1);
    vi.advanceTimersByTime(1);
    f.bus.tick(false);
    await micro();
    expect(f.heard.filter((m) => m.type === 'need')).toEqual([need, need]);

    const l = setup('leader');
    l.bus.tick(true);
    await micro();
    expect(l.heard).toEqual([]);
    expect(l.bus.subscription()).toEqual({ services: ['finance'], propertyId: null });
  });

  it('forgets a tab not heard from for more than NEED_MAX_AGE_MS (checked at each refresh)', async () => {
    const { bus, host, send } = setup('leader');
    bus.tick(true);
    await send({ type: 'need', from: 'other', services: ['tasks'], propertyId: null, visible: false });
    expect(bus.subscription()).toEqual({ services: ['finance', 'tasks'], propertyId: null });
    host.needsChanged.mockClear();
    // Refreshes at 10, 20 and 30 s keep it (30 s old); the one at 40 s drops it (40 s > 35 s).
    for (let t = NEED_REFRESH_MS; t <= 3 * NEED_REFRESH_MS; t += NEED_REFRESH_MS) {
      vi.setSystemTime(T0 + t);
      bus.tick(true);
    }
    expect(bus.subscription().services).toEqual(['finance', 'tasks']);
    expect(host.needsChanged).not.toHaveBeenCalled();
    vi.setSystemTime(T0 + 4 * NEED_REFRESH_MS);
    expect(4 * NEED_REFRESH_MS).toBeGreaterThan(NEED_MAX_AGE_MS);
    bus.tick(true);
    expect(bus.subscription().services).toEqual(['finance']);
    expect(host.needsChanged.mock.calls).toEqual([[false]]);
  });
});

describe('tabs: the needs registry', () => {
  it('the leader hands its token to a tab it has not heard of, once', async () => {
    const { own, bus, heard, send } = setup('leader');
    own.token = 'tok-1';
    bus.announceNeed(own.need);
    await micro();
    heard.length = 0;
    const need: BusMessage = { type: 'need', from: 'new', services: ['tasks'], propertyId: 'p1', visible: false };
    await send(need);
    expect(heard).toEqual([{ type: 'token', from: 'me', token: 'tok-1' }]);
    await send(need);
    expect(heard).toHaveLength(1);
    expect(bus.subscription()).toEqual({ services: ['finance', 'tasks'], propertyId: null });
  });

  it('a follower, or a leader without a token, sends none', async () => {
    const f = setup('follower');
    f.own.token = 'tok-1';
    await f.send({ type: 'need', from: 'new', services: ['tasks'], propertyId: null, visible: true });
    expect(f.heard).toEqual([]);
    const l = setup('leader');
    await l.send({ type: 'need', from: 'new', services: ['tasks'], propertyId: null, visible: true });
    expect(l.heard).toEqual([]);
  });

  it('reports when the first visible tab appears, and when a tab leaves', async () => {
    const { own, bus, host, send } = setup('leader');
    own.need = { services: ['finance'], propertyId: 'p1', visible: false };
    bus.announceNeed(own.need);
    expect(bus.anyVisible()).toBe(false);
    await send({ type: 'need', from: 'a', services: ['finance'], propertyId: 'p1', visible: false });
    await send({ type: 'need', from: 'b', services: ['tasks'], propertyId: 'p1', visible: true });
    await send({ type: 'need', from: 'c', services: ['guest'], propertyId: 'p2', visible: true });
    expect(host.needsChanged.mock.calls).toEqual([[false], [true], [false]]);
    expect(bus.anyVisible()).toBe(true);
    // The tabs disagree on the property: the leader asks for every property.
    expect(bus.subscription()).toEqual({ services: ['finance', 'guest', 'tasks'], propertyId: null });
    await send({ type: 'bye', from: 'c' });
    await send({ type: 'bye', from: 'nobody' });
    expect(host.needsChanged.mock.calls).toEqual([[false], [true], [false], [false]]);
    expect(bus.subscription()).toEqual({ services: ['finance', 'tasks'], propertyId: 'p1' });
  });
});
