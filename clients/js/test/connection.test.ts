import { describe, expect, it } from 'vitest';
import { Connection, type ConnectionStatus } from '../src/connection.js';
import type { Subscription } from '../src/routing.js';
import type { CloseReason, OpenInfo, Transport, TransportContext } from '../src/transport/types.js';
import type { TransportKind } from '../src/types.js';
import { flush, World } from './fakes.js';

/** A transport the test opens and closes by hand. */
class ScriptedTransport implements Transport {
  closed = false;
  updates = 0;
  constructor(
    readonly kind: TransportKind,
    readonly ctx: TransportContext,
  ) {}
  start(): void {}
  update(): void {
    this.updates += 1;
  }
  close(): void {
    this.closed = true;
  }
  open(info: Partial<OpenInfo> = {}): void {
    this.ctx.handlers.onOpen({ connectionId: 'c', epoch: 'E', seq: 1, expiresAt: null, ...info });
  }
  fail(reason: CloseReason, opened = false): void {
    this.ctx.handlers.onClose(reason, opened);
  }
}

function setup(opts: { urls?: string[]; transports?: TransportKind[]; token?: () => string | null } = {}) {
  const world = new World();
  const tab = world.addTab();
  const made: ScriptedTransport[] = [];
  const statuses: ConnectionStatus[] = [];
  const tokenCalls: boolean[] = [];
  const sub: { current: Subscription } = { current: { services: ['finance'], propertyId: null } };
  let reconnects = 0;
  const factory = (kind: TransportKind) => (ctx: TransportContext) => {
    const t = new ScriptedTransport(kind, ctx);
    made.push(t);
    return t;
  };
  const conn = new Connection({
    env: tab.env,
    urls: opts.urls ?? ['http://a.test'],
    transports: opts.transports ?? ['websocket', 'sse', 'longpoll'],
    factories: { websocket: factory('websocket'), sse: factory('sse'), longpoll: factory('longpoll') },
    getToken: async (force) => {
      tokenCalls.push(force);
      return opts.token ? opts.token() : 'tok';
    },
    subscription: () => sub.current,
    cursor: () => ({ lastSeq: 7, epoch: 'E' }),
    hidden: () => false,
    onOpen: () => {},
    onEvents: () => {},
    onCursor: () => {},
    onReset: () => {},
    onReconnect: () => {
      reconnects += 1;
    },
    onStatus: (s) => statuses.push(s),
  });
  const last = () => {
    const t = made[made.length - 1];
    if (t === undefined) throw new Error('no transport');
    return t;
  };
  return { world, tab, conn, made, statuses, tokenCalls, sub, last, reconnects: () => reconnects };
}

const retry: CloseReason = { kind: 'retry', detail: 'close 1006' };

describe('Connection: fallback', () => {
  it('falls back websocket → sse → longpoll after two failed connects each', async () => {
    const { conn, made, world, last } = setup();
    conn.start();
    await flush();
    for (let i = 0; i < 4; i++) {
      last().fail(retry);
      await world.clock.advance(31_000);
    }
    expect(made.map((t) => t.kind)).toEqual(['websocket', 'websocket', 'sse', 'sse', 'longpoll']);
    last().fail(retry);
    await world.clock.advance(31_000);
    expect(last().kind).toBe('longpoll'); // the last one keeps trying
  });

  it('tries every URL before giving up on a transport', async () => {
    const { conn, made, world, last } = setup({ urls: ['http://a.test', 'http://b.test', 'http://c.test'] });
    conn.start();
    await flush();
    for (let i = 0; i < 3; i++) {
      last().fail(retry);
      await world.clock.advance(31_000);
    }
    expect(made.map((t) => `${t.kind}@${t.ctx.url}`)).toEqual([
      'websocket@http://a.test',
      'websocket@http://b.test',
      'websocket@http://c.test',
      'sse@http://a.test',
    ]);
  });

  it('a transport that worked before is not abandoned after two failures (outage, not a proxy)', async () => {
    const { conn, made, world, last } = setup();
    conn.start();
    await flush();
    last().open();
    last().fail(retry, true);
    for (let i = 0; i < 4; i++) {
      await world.clock.advance(31_000);
      last().fail(retry);
    }
    await world.clock.advance(31_000);
    expect(made.every((t) => t.kind === 'websocket')).toBe(true);
  });

  it('4503 goes straight to long-poll, and the preferred transport is probed again later', async () => {
    const { conn, made, world, last, statuses } = setup();
    conn.start();
    await flush();
    last().fail({ kind: 'disabled', detail: 'close 4503' });
    await world.clock.advance(1_000);
    expect(last().kind).toBe('longpoll');
    last().open();
    expect(statuses[statuses.length - 1]?.transport).toBe('longpoll');
    const lp = last();
    await world.clock.advance(60_000);
    expect(lp.closed).toBe(true);
    expect(last().kind).toBe('websocket');
    expect(made.map((t) => t.kind)).toEqual(['websocket', 'longpoll', 'websocket']);
  });

  it('a failed probe falls back quickly even though websocket once worked', async () => {
    const { conn, world, last } = setup();
    conn.start();
    await flush();
    last().open();
    last().fail({ kind: 'disabled', detail: 'close 4503' }, true);
    await world.clock.advance(1_000);
    last().open(); // long-poll
    await world.clock.advance(60_000); // probe
    expect(last().kind).toBe('websocket');
    last().fail({ kind: 'disabled', detail: 'close 4503' });
    await world.clock.advance(1_000);
    expect(last().kind).toBe('longpoll');
  });
});

describe('Connection: reconnects', () => {
  it('reconnects after a drop within the first backoff step (0–1 s) and counts it', async () => {
    const { conn, made, world, last, reconnects } = setup();
    conn.start();
    await flush();
    last().open();
    last().fail(retry, true);
    expect(conn.current().phase).toBe('waiting');
    await world.clock.advance(1_000);
    expect(made).toHaveLength(2);
    last().open();
    expect(reconnects()).toBe(1);
  });

  it('4001/401 fetch a forced token before reconnecting', async () => {
    const { conn, world, last, tokenCalls } = setup();
    conn.start();
    await flush();
    last().open();
    last().fail({ kind: 'auth', detail: 'close 4001' }, true);
    await world.clock.advance(1_000);
    expect(tokenCalls).toEqual([false, true]);
  });

  it('never opens a transport without a usable token; asks again with backoff', async () => {
    let token: string | null = null;
    const { conn, made, world, tokenCalls } = setup({ token: () => token });
    conn.start();
    await flush();
    expect(made).toHaveLength(0);
    expect(conn.current().phase).toBe('waiting');
    token = 'tok';
    await world.clock.advance(1_000);
    expect(made).toHaveLength(1);
    expect(tokenCalls).toEqual([false, true]);
  });

  it('1012 moves to the next URL', async () => {
    const { conn, world, last } = setup({ urls: ['http://a.test', 'http://b.test'] });
    conn.start();
    await flush();
    last().open();
    last().fail({ kind: 'draining', detail: 'close 1012' }, true);
    await world.clock.advance(1_000);
    expect(last().ctx.url).toBe('http://b.test');
    expect(last().kind).toBe('websocket');
  });

  it('honours Retry-After', async () => {
    const { conn, made, world, last } = setup();
    conn.start();
    await flush();
    last().fail({ kind: 'throttled', detail: 'HTTP 503', retryAfterMs: 5_000 });
    await world.clock.advance(4_999);
    expect(made).toHaveLength(1);
    await world.clock.advance(1);
    expect(made).toHaveLength(2);
  });

  it('403/4003 stops until the subscription changes', async () => {
    const { conn, made, world, last, sub } = setup();
    conn.start();
    await flush();
    last().fail({ kind: 'forbidden', detail: 'close 4003' });
    await world.clock.advance(120_000);
    expect(made).toHaveLength(1);
    expect(conn.current().phase).toBe('refused');
    conn.subscriptionChanged(); // same subscription: still refused
    expect(conn.current().phase).toBe('refused');
    sub.current = { services: ['tasks'], propertyId: null };
    conn.subscriptionChanged();
    await flush();
    expect(made).toHaveLength(2);
  });

  it('pauses while offline and reconnects at once when back online', async () => {
    const { conn, made, world, last, tab } = setup();
    conn.start();
    await flush();
    last().open();
    tab.online = false;
    conn.offline();
    expect(last().closed).toBe(true);
    expect(conn.current().phase).toBe('offline');
    await world.clock.advance(120_000);
    expect(made).toHaveLength(1);
    tab.online = true;
    conn.online();
    await flush();
    expect(made).toHaveLength(2);
  });

  it('updates in place, goes idle without services, and comes back', async () => {
    const { conn, made, last, sub } = setup();
    conn.start();
    await flush();
    last().open();
    sub.current = { services: ['finance', 'tasks'], propertyId: null };
    conn.subscriptionChanged();
    expect(last().updates).toBe(1);
    sub.current = { services: [], propertyId: null };
    conn.subscriptionChanged();
    expect(last().closed).toBe(true);
    expect(conn.current().phase).toBe('idle');
    sub.current = { services: ['guest'], propertyId: null };
    conn.subscriptionChanged();
    await flush();
    expect(made).toHaveLength(2);
  });
});
