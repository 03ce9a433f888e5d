// Test doubles for the browser: a manual clock with timers, shared storage
// with `storage` events, BroadcastChannel, Web Locks, WebSocket, EventSource
// and fetch. A World holds what tabs of one profile share; each tab gets its
// own Env from it.

import type {
  BroadcastPort,
  Env,
  EventSourceLike,
  FetchInit,
  FetchLike,
  LocksLike,
  ResponseLike,
  SocketLike,
  StorageLike,
} from '../src/env.js';

/** Lets pending promise callbacks run (a real macrotask turn). */
export const flush = (): Promise<void> => new Promise((r) => setTimeout(r, 0));

interface Timer {
  id: number;
  at: number;
  fn: () => void;
}

/** A manual clock: timers run only when `advance` passes their time. */
export class FakeClock {
  now = 1_700_000_000_000;
  private timers: Timer[] = [];
  private nextId = 1;

  setTimeout = (fn: () => void, ms: number): number => {
    const id = this.nextId++;
    this.timers.push({ id, at: this.now + Math.max(0, ms), fn });
    return id;
  };

  clearTimeout = (id: unknown): void => {
    this.timers = this.timers.filter((t) => t.id !== id);
  };

  /** The clock as the Env parts timers need. */
  env() {
    return { now: () => this.now, setTimeout: this.setTimeout, clearTimeout: this.clearTimeout };
  }

  pending(): number {
    return this.timers.length;
  }

  /** Moves time forward, running due timers in order and letting promises settle between them. */
  async advance(ms: number): Promise<void> {
    const target = this.now + ms;
    await flush();
    for (;;) {
      this.timers.sort((a, b) => a.at - b.at || a.id - b.id);
      const t = this.timers[0];
      if (t === undefined || t.at > target) break;
      this.timers.shift();
      this.now = Math.max(this.now, t.at);
      t.fn();
      await flush();
    }
    this.now = target;
    await flush();
  }
}

type Listener = (ev: unknown) => void;

export class FakeSocket implements SocketLike {
  static CONNECTING = 0;
  readyState = 0;
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  sent: Array<Record<string, unknown>> = [];
  closedByClient: number | null = null;

  constructor(
    readonly url: string,
    readonly protocol: string,
  ) {}

  send(data: string): void {
    this.sent.push(JSON.parse(data) as Record<string, unknown>);
  }

  close(code?: number): void {
    this.closedByClient = code ?? 1000;
    this.readyState = 3;
  }

  // Server side:
  open(): void {
    this.readyState = 1;
    this.onopen?.({});
  }

  receive(frame: Record<string, unknown>): void {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }

  serverClose(code: number, reason = ''): void {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }

  sentOfType(type: string): Array<Record<string, unknown>> {
    return this.sent.filter((f) => f.type === type);
  }
}

export class FakeEventSource implements EventSourceLike {
  onerror: ((ev: unknown) => void) | null = null;
  closed = false;
  private readonly listeners = new Map<string, Array<(ev: { data: string; lastEventId?: string }) => void>>();

  constructor(readonly url: string) {}

  addEventListener(type: string, listener: (ev: { data: string; lastEventId?: string }) => void): void {
    const l = this.listeners.get(type) ?? [];
    l.push(listener);
    this.listeners.set(type, l);
  }

  close(): void {
    this.closed = true;
  }

  // Server side:
  emit(type: string, data: unknown, id?: string): void {
    for (const l of this.listeners.get(type) ?? []) {
      l(id === undefined ? { data: JSON.stringify(data) } : { data: JSON.stringify(data), lastEventId: id });
    }
  }

  fail(): void {
    this.onerror?.({});
  }

  params(): URLSearchParams {
    return new URL(this.url).searchParams;
  }
}

/** A scripted fetch: each request waits for the test to answer it. */
export class FakeFetch {
  requests: Array<{
    url: string;
    init: FetchInit;
    respond: (status: number, body: unknown, headers?: Record<string, string>) => void;
    fail: (err?: unknown) => void;
    aborted: () => boolean;
  }> = [];

  fetch: FetchLike = (url, init) =>
    new Promise<ResponseLike>((resolve, reject) => {
      const onAbort = () => reject(Object.assign(new Error('aborted'), { name: 'AbortError' }));
      init.signal.addEventListener('abort', onAbort);
      this.requests.push({
        url,
        init,
        respond: (status, body, headers = {}) =>
          resolve({
            status,
            ok: status >= 200 && status < 300,
            headers: { get: (n: string) => headers[n] ?? headers[n.toLowerCase()] ?? null },
            json: async () => body,
          }),
        fail: (err = new TypeError('Failed to fetch')) => reject(err),
        aborted: () => init.signal.aborted,
      });
    });

  last() {
    const r = this.requests[this.requests.length - 1];
    if (r === undefined) throw new Error('no request');
    return r;
  }
}

/** Exclusive Web Locks, granted in request order. */
export class FakeLocks implements LocksLike {
  private readonly held = new Set<string>();
  private readonly queues = new Map<string, Array<{ cb: () => Promise<void>; done: (v: unknown) => void; fail: (e: unknown) => void; signal?: AbortSignal | undefined }>>();

  request(
    name: string,
    options: { mode: 'exclusive'; signal?: AbortSignal },
    callback: (lock: unknown) => Promise<void>,
  ): Promise<unknown> {
    return new Promise((done, fail) => {
      const entry = { cb: () => callback({ name }), done, fail, signal: options.signal };
      const q = this.queues.get(name) ?? [];
      q.push(entry);
      this.queues.set(name, q);
      options.signal?.addEventListener('abort', () => {
        const queue = this.queues.get(name) ?? [];
        const i = queue.indexOf(entry);
        if (i >= 0) {
          queue.splice(i, 1);
          fail(Object.assign(new Error('aborted'), { name: 'AbortError' }));
        }
      });
      this.grant(name);
    });
  }

  isHeld(name: string): boolean {
    return this.held.has(name);
  }

  private grant(name: string): void {
    if (this.held.has(name)) return;
    const q = this.queues.get(name) ?? [];
    const next = q.shift();
    if (next === undefined) return;
    this.held.add(name);
    void Promise.resolve()
      .then(next.cb)
      .then(next.done, next.fail)
      .finally(() => {
        this.held.delete(name);
        this.grant(name);
      });
  }
}

/** What the tabs of one browser profile share. */
export class World {
  readonly clock = new FakeClock();
  readonly locks = new FakeLocks();
  readonly data = new Map<string, string>();
  private readonly tabs: Tab[] = [];
  private readonly ports = new Map<string, Set<FakePort>>();

  addTab(opts: { locks?: boolean; broadcast?: boolean; storage?: boolean } = {}): Tab {
    const tab = new Tab(this, opts);
    this.tabs.push(tab);
    return tab;
  }

  /** A storage write, seen by the other tabs as a `storage` event. */
  storageChanged(from: Tab, key: string, newValue: string | null): void {
    for (const t of this.tabs) if (t !== from) t.emit('storage', { key, newValue });
  }

  openPort(name: string): FakePort {
    const set = this.ports.get(name) ?? new Set<FakePort>();
    this.ports.set(name, set);
    const port = new FakePort(name, set);
    set.add(port);
    return port;
  }
}

class FakePort implements BroadcastPort {
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  private closed = false;
  constructor(
    readonly name: string,
    private readonly peers: Set<FakePort>,
  ) {}
  postMessage(msg: unknown): void {
    if (this.closed) throw new Error('closed');
    const data = structuredClone(msg);
    for (const p of this.peers) {
      if (p !== this) queueMicrotask(() => p.onmessage?.({ data: structuredClone(data) }));
    }
  }
  close(): void {
    this.closed = true;
    this.peers.delete(this);
  }
}

/** One tab: its Env plus handles on what its client opened. */
export class Tab {
  readonly sockets: FakeSocket[] = [];
  readonly sources: FakeEventSource[] = [];
  readonly http = new FakeFetch();
  online = true;
  visible = true;
  private readonly listeners = new Map<string, Set<Listener>>();
  readonly env: Env;

  constructor(
    readonly world: World,
    opts: { locks?: boolean; broadcast?: boolean; storage?: boolean },
  ) {
    const storage: StorageLike = {
      getItem: (k) => world.data.get(k) ?? null,
      setItem: (k, v) => {
        world.data.set(k, v);
        world.storageChanged(this, k, v);
      },
      removeItem: (k) => {
        world.data.delete(k);
        world.storageChanged(this, k, null);
      },
    };
    this.env = {
      now: () => world.clock.now,
      random: () => 0.5,
      setTimeout: world.clock.setTimeout,
      clearTimeout: world.clock.clearTimeout,
      openSocket: (url, protocol) => {
        const s = new FakeSocket(url, protocol);
        this.sockets.push(s);
        return s;
      },
      openEventSource: (url) => {
        const s = new FakeEventSource(url);
        this.sources.push(s);
        return s;
      },
      fetch: this.http.fetch,
      locks: opts.locks === false ? null : world.locks,
      openBroadcast: opts.broadcast === false ? null : (name) => world.openPort(name),
      storage: opts.storage === false ? null : storage,
      on: (type, listener) => {
        const set = this.listeners.get(type) ?? new Set<Listener>();
        this.listeners.set(type, set);
        set.add(listener);
        return () => set.delete(listener);
      },
      online: () => this.online,
      visible: () => this.visible,
      baseHref: () => 'http://app.test/',
    };
  }

  emit(type: string, ev: unknown): void {
    for (const l of [...(this.listeners.get(type) ?? [])]) l(ev);
  }

  listenerCount(): number {
    let n = 0;
    for (const s of this.listeners.values()) n += s.size;
    return n;
  }

  lastSocket(): FakeSocket {
    const s = this.sockets[this.sockets.length - 1];
    if (s === undefined) throw new Error('no socket');
    return s;
  }

  lastSource(): FakeEventSource {
    const s = this.sources[this.sources.length - 1];
    if (s === undefined) throw new Error('no event source');
    return s;
  }
}

/** An unsigned JWT with the given exp (seconds). */
export function jwt(claims: Record<string, unknown>): string {
  const b64 = (o: unknown) => btoa(JSON.stringify(o)).replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_');
  return `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}.sig`;
}

/** A delivered event. */
export function ev(seq: number, service = 'finance', extra: Record<string, unknown> = {}) {
  return {
    seq,
    orgId: 'acme',
    service,
    propertyId: 'p1',
    eventId: `e-${seq}`,
    eventType: 'thing.happened',
    timestamp: 1_700_000_000_000 - 50,
    payload: { n: seq },
    ...extra,
  };
}
