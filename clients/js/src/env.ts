// The browser, seen through narrow interfaces. Every module that touches a
// browser API gets it from an Env, so unit tests drive the same code with
// fakes (sockets, clocks, locks, storage) and no network. `browserEnv()`
// builds the real one and tolerates missing APIs (no Web Locks, no
// BroadcastChannel, storage that throws in private mode).

/** Opaque timer handle. */
export type TimerHandle = unknown;

/** The part of WebSocket the SDK uses. */
export interface SocketLike {
  readonly readyState: number;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

/** The part of EventSource the SDK uses. */
export interface EventSourceLike {
  onerror: ((ev: unknown) => void) | null;
  addEventListener(type: string, listener: (ev: { data: string; lastEventId?: string }) => void): void;
  close(): void;
}

/** The part of a fetch Response the SDK uses. */
export interface ResponseLike {
  readonly status: number;
  readonly ok: boolean;
  readonly headers: { get(name: string): string | null };
  json(): Promise<unknown>;
}

export interface FetchInit {
  method: 'GET';
  headers: Record<string, string>;
  signal: AbortSignal;
  cache: 'no-store';
}

export type FetchLike = (url: string, init: FetchInit) => Promise<ResponseLike>;

/** The part of navigator.locks the SDK uses. */
export interface LocksLike {
  request(
    name: string,
    options: { mode: 'exclusive'; signal?: AbortSignal },
    callback: (lock: unknown) => Promise<void>,
  ): Promise<unknown>;
}

/** A BroadcastChannel. */
export interface BroadcastPort {
  postMessage(msg: unknown): void;
  onmessage: ((ev: { data: unknown }) => void) | null;
  close(): void;
}

/** localStorage, with every call allowed to fail. */
export interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/** A `storage` event. */
export interface StorageEventLike {
  key: string | null;
  newValue: string | null;
}

export interface Env {
  now(): number;
  random(): number;
  setTimeout(fn: () => void, ms: number): TimerHandle;
  clearTimeout(handle: TimerHandle): void;
  openSocket: ((url: string, protocol: string) => SocketLike) | null;
  openEventSource: ((url: string) => EventSourceLike) | null;
  fetch: FetchLike | null;
  locks: LocksLike | null;
  openBroadcast: ((name: string) => BroadcastPort) | null;
  storage: StorageLike | null;
  /**
   * Listens to a page event: `storage`, `online`, `offline`, `pagehide`,
   * `pageshow` (window) or `visibilitychange`, `freeze`, `resume` (document).
   */
  on(type: string, listener: (ev: unknown) => void): () => void;
  /** False only when the browser knows it is offline. */
  online(): boolean;
  visible(): boolean;
  /** The page address, to resolve relative edge URLs. */
  baseHref(): string | undefined;
}

const DOCUMENT_EVENTS = new Set(['visibilitychange', 'freeze', 'resume']);

/** localStorage behind try/catch: Safari private mode and sandboxed frames throw. */
function safeStorage(): StorageLike | null {
  let raw: Storage;
  try {
    raw = globalThis.localStorage;
    if (raw === undefined || raw === null) return null;
  } catch {
    return null;
  }
  return {
    getItem: (k) => {
      try {
        return raw.getItem(k);
      } catch {
        return null;
      }
    },
    setItem: (k, v) => {
      try {
        raw.setItem(k, v);
      } catch {
        // Quota or security error: the fallbacks degrade, the client goes on.
      }
    },
    removeItem: (k) => {
      try {
        raw.removeItem(k);
      } catch {
        // As above.
      }
    },
  };
}

/** The real browser environment. */
export function browserEnv(now?: () => number): Env {
  const g = globalThis as typeof globalThis & { navigator?: Navigator; document?: Document; window?: Window };
  const nav = g.navigator;
  const doc = g.document;
  const win = typeof g.window === 'object' ? g.window : undefined;
  const locks = nav !== undefined && 'locks' in nav && nav.locks ? (nav.locks as unknown as LocksLike) : null;
  return {
    now: now ?? (() => Date.now()),
    random: () => Math.random(),
    setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
    clearTimeout: (h) => globalThis.clearTimeout(h as Parameters<typeof globalThis.clearTimeout>[0]),
    openSocket:
      typeof g.WebSocket === 'function'
        ? (url, protocol) => new g.WebSocket(url, protocol) as unknown as SocketLike
        : null,
    openEventSource:
      typeof g.EventSource === 'function' ? (url) => new g.EventSource(url) as unknown as EventSourceLike : null,
    // Called through a closure: fetch invoked as a method of another object throws "Illegal invocation".
    fetch: typeof g.fetch === 'function' ? (url, init) => g.fetch(url, init) : null,
    locks,
    openBroadcast:
      typeof g.BroadcastChannel === 'function'
        ? (name) => new g.BroadcastChannel(name) as unknown as BroadcastPort
        : null,
    storage: safeStorage(),
    on(type, listener) {
      const target: EventTarget | undefined = DOCUMENT_EVENTS.has(type) ? doc : win;
      if (target === undefined) return () => {};
      target.addEventListener(type, listener);
      return () => target.removeEventListener(type, listener);
    },
    online: () => (nav !== undefined && typeof nav.onLine === 'boolean' ? nav.onLine : true),
    visible: () => (doc === undefined ? true : doc.visibilityState !== 'hidden'),
    baseHref: () => (doc !== undefined ? doc.baseURI : undefined),
  };
}

/**
 * Timers of one component, so that stopping it (close, logout) clears every
 * pending one in a single call.
 */
export class TimerGroup {
  private readonly handles = new Set<TimerHandle>();

  constructor(private readonly env: Pick<Env, 'setTimeout' | 'clearTimeout'>) {}

  set(fn: () => void, ms: number): TimerHandle {
    const handle: TimerHandle = this.env.setTimeout(() => {
      this.handles.delete(handle);
      fn();
    }, Math.max(0, ms));
    this.handles.add(handle);
    return handle;
  }

  clear(handle: TimerHandle | null | undefined): void {
    if (handle === null || handle === undefined) return;
    if (this.handles.delete(handle)) this.env.clearTimeout(handle);
  }

  clearAll(): void {
    for (const h of this.handles) this.env.clearTimeout(h);
    this.handles.clear();
  }
}

/** A random id for tabs and messages. */
export function randomId(random: () => number = Math.random): string {
  const c = (globalThis as { crypto?: { randomUUID?: () => string } }).crypto;
  if (c?.randomUUID !== undefined) {
    try {
      return c.randomUUID();
    } catch {
      // Insecure context: fall through.
    }
  }
  let s = '';
  for (let i = 0; i < 4; i++) s += Math.floor(random() * 0x100000000).toString(16).padStart(8, '0');
  return s;
}
