import { afterEach, describe, expect, it, vi } from 'vitest';
import type { ConnectionStatus } from '../src/connection.js';
import { buildState, isConnected, StateView, statusFromConnection, summarizeConnection, type StateInputs } from '../src/state.js';
import type { LeaderStatus } from '../src/tabs.js';
import type { RealtimeState } from '../src/types.js';

const micro = async () => {
  for (let i = 0; i < 3; i++) await Promise.resolve();
};

const conn = (over: Partial<ConnectionStatus> = {}): ConnectionStatus => ({
  phase: 'open',
  transport: 'websocket',
  url: 'http://edge-a.test',
  connectionId: 'a-1',
  everOpened: true,
  lastError: null,
  ...over,
});

const mirrored: LeaderStatus = {
  status: 'degraded',
  transport: 'sse',
  url: 'http://edge-b.test',
  connectionId: 'b-7',
  connected: true,
  reconnects: { finance: 1 },
};

const inputs = (over: Partial<StateInputs> = {}): StateInputs => ({
  stopped: false,
  role: 'follower',
  online: true,
  lastSeq: 41,
  epoch: 'E',
  services: {},
  preferred: 'websocket',
  connection: null,
  mirrored: null,
  ...over,
});

afterEach(() => {
  vi.unstubAllGlobals();
});

describe('state: status of a connection', () => {
  it('maps every phase', () => {
    const s = (over: Partial<ConnectionStatus>) => statusFromConnection(conn(over), 'websocket');
    expect(statusFromConnection(undefined, 'websocket')).toBe('connecting');
    expect(s({ phase: 'open' })).toBe('live');
    expect(s({ phase: 'offline' })).toBe('offline');
    expect(s({ phase: 'refused' })).toBe('offline');
    expect(s({ phase: 'stopped' })).toBe('stopped');
    expect(s({ phase: 'idle' })).toBe('connecting');
    expect(s({ phase: 'connecting', everOpened: false })).toBe('connecting');
    expect(s({ phase: 'waiting', everOpened: false })).toBe('connecting');
    expect(s({ phase: 'connecting', everOpened: true })).toBe('degraded');
    expect(s({ phase: 'waiting', everOpened: true })).toBe('degraded');
  });

  it('long-poll is degraded as a fallback but live when it is the preferred transport', () => {
    expect(statusFromConnection(conn({ transport: 'longpoll' }), 'websocket')).toBe('degraded');
    expect(statusFromConnection(conn({ transport: 'longpoll' }), 'longpoll')).toBe('live');
    expect(statusFromConnection(conn({ transport: 'sse' }), 'websocket')).toBe('live');
  });

  it('is connected only while open or idle', () => {
    expect(isConnected(conn({ phase: 'open' }))).toBe(true);
    expect(isConnected(conn({ phase: 'idle' }))).toBe(true);
    expect(isConnected(conn({ phase: 'waiting' }))).toBe(false);
    expect(isConnected(undefined)).toBe(false);
  });

  it('summarizes the leader’s connection for followers', () => {
    expect(summarizeConnection(conn({ transport: 'longpoll', connectionId: 'x' }), 'websocket', { finance: 3 })).toEqual({
      status: 'degraded',
      transport: 'longpoll',
      url: 'http://edge-a.test',
      connectionId: 'x',
      connected: true,
      reconnects: { finance: 3 },
    });
    expect(summarizeConnection(undefined, 'websocket', {})).toEqual({
      status: 'connecting',
      transport: null,
      url: null,
      connectionId: null,
      connected: false,
      reconnects: {},
    });
  });
});

describe('state: snapshots', () => {
  it('a leader reports its own connection', () => {
    expect(buildState(inputs({ role: 'leader', connection: conn(), mirrored }))).toEqual({
      status: 'live',
      role: 'leader',
      transport: 'websocket',
      url: 'http://edge-a.test',
      connectionId: 'a-1',
      lastSeq: 41,
      epoch: 'E',
      services: {},
    });
  });

  it('a follower mirrors a fresh leader, else it is connecting', () => {
    expect(buildState(inputs({ mirrored }))).toEqual({
      status: 'degraded',
      role: 'follower',
      transport: 'sse',
      url: 'http://edge-b.test',
      connectionId: 'b-7',
      lastSeq: 41,
      epoch: 'E',
      services: {},
    });
    expect(buildState(inputs({ role: 'unknown' }))).toMatchObject({ status: 'connecting', role: 'unknown', transport: null, connectionId: null });
  });

  it('offline overrides the status but keeps the link; stopped overrides everything', () => {
    expect(buildState(inputs({ role: 'leader', connection: conn(), online: false }))).toMatchObject({
      status: 'offline',
      transport: 'websocket',
    });
    expect(buildState(inputs({ stopped: true, role: 'leader', connection: conn(), mirrored, online: false }))).toEqual({
      status: 'stopped',
      role: 'unknown',
      transport: null,
      url: null,
      connectionId: null,
      lastSeq: 41,
      epoch: 'E',
      services: {},
    });
  });
});

describe('StateView', () => {
  function view(onStateChange?: (s: RealtimeState) => void) {
    let n = 0;
    const build = vi.fn(() => buildState(inputs({ lastSeq: ++n })));
    return { v: new StateView(build, onStateChange), build };
  }

  it('returns the same snapshot until something changed, then builds one on demand', () => {
    const { v, build } = view();
    const a = v.get();
    expect(v.get()).toBe(a);
    expect(build).toHaveBeenCalledTimes(1);
    v.changed();
    v.changed();
    expect(build).toHaveBeenCalledTimes(1); // lazily
    const b = v.get();
    expect(b).not.toBe(a);
    expect(b.lastSeq).toBe(2);
    expect(v.get()).toBe(b);
  });

  it('notifies onStateChange and watchers once per task, with the current snapshot', async () => {
    const onStateChange = vi.fn();
    const { v } = view(onStateChange);
    const watcher = vi.fn();
    v.watch(watcher);
    v.changed();
    v.changed();
    v.changed();
    expect(onStateChange).not.toHaveBeenCalled();
    await micro();
    expect(onStateChange).toHaveBeenCalledTimes(1);
    expect(watcher).toHaveBeenCalledTimes(1);
    expect(onStateChange.mock.calls[0]?.[0]).toBe(v.get());
    expect(watcher.mock.calls[0]?.[0]).toBe(v.get());
    v.changed();
    await micro();
    expect(onStateChange).toHaveBeenCalledTimes(2);
    expect((onStateChange.mock.calls[1]?.[0] as RealtimeState).lastSeq).toBe(2);
  });

  it('a throwing listener is reported and the others are still called; unwatch stops calls', async () => {
    const reportError = vi.fn();
    vi.stubGlobal('reportError', reportError);
    const err = new Error('render failed');
    const { v } = view(() => {
      throw err;
    });
    const second = vi.fn();
    const off = v.watch(() => {
      throw err;
    });
    v.watch(second);
    v.changed();
    await micro();
    expect(reportError.mock.calls).toEqual([[err], [err]]);
    expect(second).toHaveBeenCalledTimes(1);
    off();
    v.changed();
    await micro();
    expect(reportError).toHaveBeenCalledTimes(3); // only onStateChange now
    expect(second).toHaveBeenCalledTimes(2);
  });
});
