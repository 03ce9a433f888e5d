// Client telemetry (protocol §9, client telemetry): what this tab's client
// saw (fast-empty polls, leader changes, reconnects, delivery latency,
// refused subscriptions), sampled, batched and sent to
// `POST /v2/telemetry/client`.
//
// Sampling is per session: one draw when the client starts decides whether
// this tab reports at all. A sampled session reports everything, so its
// events stay comparable with each other (reconnects per leader session,
// fast-empty per poll chain), and an unsampled one costs nothing: no queue,
// no timer, no listener, no request.
//
// Invariants: the queue is bounded (the oldest event is dropped when full);
// at most one request is in flight; nothing here ever throws into the app
// (every browser call is guarded, failures are dropped: telemetry is
// best-effort and never retried). Sends every FLUSH_MS with `fetch`
// (`keepalive`, token in `Authorization`), and when the page is hidden or
// left with `navigator.sendBeacon`, which cannot set headers: the token then
// travels in the JSON body (`"token"`), which the edge accepts on this
// endpoint only, and never in the URL (access logs).

import { bearerHeader, isUsableToken } from './auth.js';
import { TimerGroup, type Env } from './env.js';
import { endpoint } from './transport/types.js';

/** The events the edge counts. */
export type TelemetryName =
  | 'fast_empty'
  | 'leader_acquired'
  | 'leader_takeover'
  | 'reconnect'
  | 'delivery_latency_ms'
  | 'subscribe_error';

/** Records one event; never throws. */
export type Report = (name: TelemetryName, value: number, attrs?: Record<string, string>) => void;

/** The edge's path. */
export const TELEMETRY_PATH = '/v2/telemetry/client';
/** Default share of sessions that report. */
export const DEFAULT_SAMPLE_RATE = 0.02;
/** How often a sampled session sends what it has. */
export const FLUSH_MS = 30_000;
/** Events kept while waiting to be sent; older ones are dropped first. */
export const MAX_QUEUE = 200;
/** Events per request (the edge takes at most 100). */
export const MAX_BATCH = 50;
/** Longest wait for a report's answer. */
const POST_TIMEOUT_MS = 10_000;
/** A delivery latency sample at most this often: a busy stream would flood the queue. */
export const LATENCY_EVERY_MS = 1_000;

/** One queued event, as sent. */
export interface TelemetryEvent {
  name: TelemetryName;
  value: number;
  attrs?: Record<string, string>;
}

/** How reports reach the edge; the browser's by default, fakes in tests. */
export interface TelemetrySender {
  /** A `fetch` POST with `keepalive`; resolves whatever the answer. */
  post(url: string, body: string, headers: Record<string, string>): Promise<unknown>;
  /** `navigator.sendBeacon`; false when the browser would not queue it (or has no beacon). */
  beacon(url: string, body: string): boolean;
}

/** The browser's fetch and sendBeacon, or null where there is neither. */
export function browserSender(): TelemetrySender | null {
  const g = globalThis as typeof globalThis & { navigator?: Navigator };
  const hasFetch = typeof g.fetch === 'function';
  const nav = g.navigator;
  const hasBeacon = nav !== undefined && typeof nav.sendBeacon === 'function';
  if (!hasFetch && !hasBeacon) return null;
  return {
    post: (url, body, headers) =>
      hasFetch
        ? g.fetch(url, {
            method: 'POST',
            body,
            headers,
            keepalive: true,
            credentials: 'omit',
            cache: 'no-store',
            // A request that never ends must not hold the next flushes back.
            ...(typeof AbortSignal !== 'undefined' && typeof AbortSignal.timeout === 'function' ? { signal: AbortSignal.timeout(POST_TIMEOUT_MS) } : {}),
          })
        : Promise.resolve(null),
    // A JSON Blob, so the edge's JSON-only rule holds (the browser sends a
    // CORS preflight for it when the edge is cross-origin).
    beacon: (url, body) =>
      hasBeacon ? nav.sendBeacon(url, new Blob([body], { type: 'application/json' })) : false,
  };
}

/** The resolved `telemetry` option. */
export interface TelemetryConfig {
  /** 0 disables; 1 reports every session. */
  sampleRate: number;
  /** Absolute URL of the endpoint, or null for `<current edge>/v2/telemetry/client`. */
  endpoint: string | null;
}

export interface TelemetryDeps {
  env: Pick<Env, 'now' | 'random' | 'setTimeout' | 'clearTimeout' | 'on' | 'visible' | 'baseHref'>;
  /** The tab's current token, or null (then nothing is sent yet). */
  token(): string | null;
  /** The edge base URL to report to (the connected one, else the first). */
  baseUrl(): string;
  sender: TelemetrySender | null;
}

/** One tab's telemetry. */
export class Telemetry {
  /** Whether this session reports (decided once). */
  readonly sampled: boolean;
  private readonly timers: TimerGroup;
  private queue: TelemetryEvent[] = [];
  private inflight = false;
  private lastLatencyAt = -Infinity;
  private off: Array<() => void> = [];
  private started = false;
  private stopped = false;
  /** Events dropped because the queue was full (tests, debugging). */
  dropped = 0;

  constructor(
    private readonly config: TelemetryConfig,
    private readonly deps: TelemetryDeps,
  ) {
    this.timers = new TimerGroup(deps.env);
    let sampled = false;
    try {
      sampled = deps.sender !== null && config.sampleRate > 0 && deps.env.random() < config.sampleRate;
    } catch {
      sampled = false;
    }
    this.sampled = sampled;
  }

  /** Starts the periodic flush and the page-hide beacon (a sampled session only). */
  start(): void {
    if (!this.sampled || this.started || this.stopped) return;
    this.started = true;
    const hide = () => {
      if (!this.deps.env.visible()) this.beacon();
    };
    this.off.push(this.deps.env.on('visibilitychange', hide), this.deps.env.on('pagehide', () => this.beacon()));
    this.schedule();
  }

  /** Queues an event; never throws, costs nothing in an unsampled session. */
  record: Report = (name, value, attrs) => {
    if (!this.sampled || this.stopped) return;
    try {
      if (!Number.isFinite(value)) return;
      if (name === 'delivery_latency_ms') {
        const now = this.deps.env.now();
        if (now - this.lastLatencyAt < LATENCY_EVERY_MS) return;
        this.lastLatencyAt = now;
      }
      const event: TelemetryEvent = { name, value: Math.max(0, value) };
      if (attrs !== undefined) event.attrs = { ...attrs };
      this.queue.push(event);
      if (this.queue.length > MAX_QUEUE) {
        this.queue.splice(0, this.queue.length - MAX_QUEUE);
        this.dropped += 1;
      }
    } catch {
      // Telemetry must never break the app.
    }
  };

  /** Events waiting to be sent (tests). */
  pending(): readonly TelemetryEvent[] {
    return this.queue;
  }

  /** Sends one batch now with fetch (the periodic path; also close and logout). */
  flush(): void {
    if (!this.sampled || this.inflight || this.queue.length === 0) return;
    try {
      const token = this.deps.token();
      const headers = bearerHeader(token);
      const url = this.url();
      if (headers === null || url === null || this.deps.sender === null) return; // try again later
      const batch = this.queue.splice(0, MAX_BATCH);
      this.inflight = true;
      const done = () => {
        this.inflight = false;
      };
      this.deps.sender
        .post(url, JSON.stringify({ events: batch }), { ...headers, 'Content-Type': 'application/json' })
        .then(done, done);
    } catch {
      this.inflight = false;
    }
  }

  /**
   * Sends everything queued with sendBeacon (the page is going away or
   * hidden: a fetch might not finish), the token in the body. Falls back to
   * a keepalive fetch where the browser refuses the beacon.
   */
  beacon(): void {
    if (!this.sampled || this.queue.length === 0) return;
    try {
      const token = this.deps.token();
      const url = this.url();
      if (!isUsableToken(token) || url === null || this.deps.sender === null) return;
      while (this.queue.length > 0) {
        const batch = this.queue.splice(0, MAX_BATCH);
        const body = JSON.stringify({ events: batch, token });
        let queued = false;
        try {
          queued = this.deps.sender.beacon(url, body);
        } catch {
          queued = false;
        }
        if (!queued) {
          void this.deps.sender
            .post(url, JSON.stringify({ events: batch }), { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' })
            .catch(() => {});
        }
      }
    } catch {
      // Dropped: best-effort.
    }
  }

  /** Sends what is left and stops: no timer or listener remains. */
  stop(): void {
    if (this.stopped) return;
    // Whether the page stays (close() of one client) or goes (logout before
    // a redirect), a beacon is the send most likely to arrive.
    this.beacon();
    this.stopped = true;
    this.timers.clearAll();
    for (const off of this.off) off();
    this.off = [];
    this.queue = [];
  }

  private schedule(): void {
    this.timers.set(() => {
      if (this.stopped) return;
      this.flush();
      this.schedule();
    }, FLUSH_MS);
  }

  private url(): string | null {
    try {
      const base = this.config.endpoint ?? endpoint(this.deps.baseUrl(), TELEMETRY_PATH, {}, { pageHref: this.deps.env.baseHref() });
      return new URL(base, this.deps.env.baseHref()).toString();
    } catch {
      return null;
    }
  }
}
