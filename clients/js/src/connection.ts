// The leader's connection loop: which transport, which URL, when to retry.
// - A transport that fails before the server accepted it (twice, or once per
//   URL when there are more) gives way to the next one in the list; a
//   transport that worked earlier in the session gets more chances, since
//   then the failures are more likely an outage than a blocking proxy.
// - 4503 (streams switched off) goes straight to long-poll; while on a
//   fallback, the preferred transport is probed again now and then.
// - Drops reconnect to the next URL with full-jitter backoff (reset once
//   connected), as do 1012 and throttling; 401/4001 fetch a fresh token first,
//   403/4003 stop until the subscription changes.
// - Offline pauses everything; online reconnects at once.
// The cursor and subscription are read from the client at every attempt, so
// they carry across transports and URLs. Room frames (contract §6) pass
// through both ways on an open WebSocket; rooms.ts decides what they mean.

import { Backoff } from './backoff.js';
import { TimerGroup, type Env, type TimerHandle } from './env.js';
import { sameSubscription, type Subscription } from './routing.js';
import type { Report } from './telemetry.js';
import type { CloseReason, OpenInfo, Transport, TransportFactory, TransportHandlers } from './transport/types.js';
import type { HeraldEvent, ResetReason, TransportKind } from './types.js';

/** Connect failures of a never-opened transport before the next transport is tried. */
const FAILURES_BEFORE_FALLBACK = 2;
/** The same, for a transport that has worked in this session. */
const FAILURES_BEFORE_FALLBACK_KNOWN_GOOD = 6;
/** First and largest pause before probing the preferred transport again. */
const UPGRADE_PROBE_MS = 60_000;
const UPGRADE_PROBE_MAX_MS = 15 * 60_000;

export type Phase =
  /** Nothing to subscribe to. */
  | 'idle'
  /** A transport is being opened. */
  | 'connecting'
  /** Connected. */
  | 'open'
  /** Waiting before the next attempt. */
  | 'waiting'
  /** The browser is offline: paused. */
  | 'offline'
  /** The server refused the subscription (403/4003/400): paused until it changes. */
  | 'refused'
  | 'stopped';

export interface ConnectionStatus {
  phase: Phase;
  transport: TransportKind | null;
  url: string | null;
  connectionId: string | null;
  /** Some transport has been open during this loop's life. */
  everOpened: boolean;
  /** Why the last transport ended, for diagnostics. */
  lastError: string | null;
}

export interface ConnectionOptions {
  env: Env;
  urls: string[];
  transports: TransportKind[];
  factories: Record<TransportKind, TransportFactory>;
  /** A usable token (forced fresh when asked), or null. */
  getToken(force: boolean): Promise<string | null>;
  subscription(): Subscription;
  cursor(): { lastSeq: number | null; epoch: string | null };
  hidden(): boolean;
  /** Server traffic, passed through. */
  onOpen(info: OpenInfo): void;
  onEvents(events: HeraldEvent[], cursor: number | null): void;
  onCursor(seq: number, epoch: string | null): void;
  onReset(reason: ResetReason, seq: number | null, epoch: string | null, services?: string[]): void;
  /** A connection was re-established after a loss (per-service reconnect counts). */
  onReconnect(): void;
  onStatus(status: ConnectionStatus): void;
  /** A room frame from the server (WebSocket only). */
  onRoom?(frame: Record<string, unknown>): void;
  /** Client telemetry (absent: not reported). */
  report?: Report;
}

export class Connection {
  private readonly timers: TimerGroup;
  private readonly backoff: Backoff;
  private transport: Transport | null = null;
  /** Bumped for each attempt; handlers of older attempts are ignored. */
  private attempt = 0;
  private tIndex = 0;
  private uIndex = 0;
  private failures = 0;
  private readonly worked = new Set<TransportKind>();
  private forceToken = false;
  private refusedSub: Subscription | null = null;
  private retryTimer: TimerHandle | null = null;
  private probeTimer: TimerHandle | null = null;
  private probeMs = UPGRADE_PROBE_MS;
  /** Trying the preferred transport again from a working fallback: fall back quickly. */
  private probing = false;
  private readonly status: ConnectionStatus = {
    phase: 'idle',
    transport: null,
    url: null,
    connectionId: null,
    everOpened: false,
    lastError: null,
  };

  constructor(private readonly o: ConnectionOptions) {
    if (o.urls.length === 0) throw new Error('herald: at least one URL is required');
    if (o.transports.length === 0) throw new Error('herald: at least one transport is required');
    this.timers = new TimerGroup(o.env);
    this.backoff = new Backoff({ random: () => o.env.random() });
  }

  current(): Readonly<ConnectionStatus> {
    return this.status;
  }

  private set(patch: Partial<ConnectionStatus>): void {
    let changed = false;
    for (const [k, v] of Object.entries(patch) as [keyof ConnectionStatus, never][]) {
      if (this.status[k] !== v) {
        this.status[k] = v;
        changed = true;
      }
    }
    if (changed) this.o.onStatus({ ...this.status });
  }

  /** Starts (or restarts) connecting. */
  start(): void {
    if (this.status.phase === 'stopped') return;
    this.connect();
  }

  /** Closes everything; the loop can be started again. */
  stop(): void {
    this.drop();
    this.timers.clearAll();
    this.retryTimer = null;
    this.probeTimer = null;
    this.set({ phase: 'idle', transport: null, url: null, connectionId: null });
  }

  /** Stops for good. */
  dispose(): void {
    this.stop();
    this.set({ phase: 'stopped' });
  }

  /** The subscription changed: update in place, connect, or go idle. */
  subscriptionChanged(): void {
    const phase = this.status.phase;
    if (phase === 'stopped' || phase === 'offline') return;
    const sub = this.o.subscription();
    if (sub.services.length === 0) {
      this.stop();
      return;
    }
    if (phase === 'refused') {
      if (!sameSubscription(sub, this.refusedSub)) this.connect();
      return;
    }
    if (phase === 'idle') {
      this.connect();
      return;
    }
    this.transport?.update();
  }

  /** Sends a room frame on the open WebSocket; false when none is open. */
  send(frame: Record<string, unknown>): boolean {
    if (this.status.phase !== 'open') return false;
    return this.transport?.send?.(frame) ?? false;
  }

  /** Skip a pending backoff wait (the page became visible, the network came back). */
  nudge(): void {
    if (this.status.phase === 'waiting') this.connect();
  }

  offline(): void {
    if (this.status.phase === 'stopped') return;
    this.drop();
    this.timers.clearAll();
    this.retryTimer = null;
    this.probeTimer = null;
    this.set({ phase: 'offline', connectionId: null });
  }

  online(): void {
    if (this.status.phase !== 'offline') return;
    this.backoff.reset();
    this.connect();
  }

  /** Closes the current transport without a report. */
  private drop(): void {
    this.attempt += 1;
    const t = this.transport;
    this.transport = null;
    t?.close();
  }

  private connect(): void {
    this.drop();
    this.timers.clear(this.retryTimer);
    this.retryTimer = null;
    const { env } = this.o;
    if (!env.online()) {
      this.set({ phase: 'offline', connectionId: null });
      return;
    }
    const sub = this.o.subscription();
    if (sub.services.length === 0) {
      this.set({ phase: 'idle', transport: null, url: null, connectionId: null });
      return;
    }
    const attempt = this.attempt;
    const kind = this.o.transports[this.tIndex] ?? 'longpoll';
    const url = this.o.urls[this.uIndex] ?? this.o.urls[0] ?? '';
    this.set({ phase: 'connecting', transport: kind, url, connectionId: null });
    const force = this.forceToken;
    void this.o.getToken(force).then((token) => {
      if (attempt !== this.attempt || this.status.phase !== 'connecting') return;
      if (token === null) {
        // Never connect with an empty or malformed token: wait and ask again.
        this.forceToken = true;
        this.set({ lastError: 'no usable token' });
        this.wait(this.backoff.next());
        return;
      }
      this.forceToken = false;
      const transport = this.o.factories[kind]({
        url,
        token,
        env,
        handlers: this.handlers(attempt, kind),
        subscription: () => this.o.subscription(),
        cursor: () => this.o.cursor(),
        getToken: (f) => this.o.getToken(f),
        hidden: () => this.o.hidden(),
        ...(this.o.report === undefined ? {} : { report: this.o.report }),
      });
      this.transport = transport;
      transport.start();
    });
  }

  private handlers(attempt: number, kind: TransportKind): TransportHandlers {
    const current = () => attempt === this.attempt;
    return {
      onOpen: (info) => {
        if (!current()) return;
        if (this.status.phase === 'open') {
          // The same transport renewed its stream (SSE reopens in place): not a reconnect.
          this.set({ connectionId: info.connectionId });
          this.o.onOpen(info);
          return;
        }
        const reconnect = this.status.everOpened;
        this.backoff.reset();
        this.failures = 0;
        this.probing = false;
        this.worked.add(kind);
        this.set({ phase: 'open', connectionId: info.connectionId, everOpened: true, lastError: null });
        this.o.onOpen(info);
        if (reconnect) this.o.onReconnect();
        this.scheduleProbe();
      },
      onEvents: (events, cursor) => current() && this.o.onEvents(events, cursor),
      onCursor: (seq, epoch) => current() && this.o.onCursor(seq, epoch),
      onReset: (reason, seq, epoch, services) => current() && this.o.onReset(reason, seq, epoch, services),
      onUpdated: () => {},
      onRoom: (frame) => {
        if (current()) this.o.onRoom?.(frame);
      },
      onClose: (reason, opened) => {
        if (!current()) return;
        this.transport = null;
        this.closed(reason, opened, kind);
      },
    };
  }

  private closed(reason: CloseReason, opened: boolean, kind: TransportKind): void {
    this.timers.clear(this.probeTimer);
    this.probeTimer = null;
    this.set({ connectionId: null, lastError: `${kind}: ${reason.detail}` });
    switch (reason.kind) {
      case 'retry':
        // Any node serves any client: after a drop, try the next URL too (the
        // node may be gone); before the ack, count towards falling back.
        if (opened) this.nextUrl();
        else this.connectFailed(kind);
        this.wait(this.backoff.next());
        return;
      case 'auth':
        this.forceToken = true;
        this.wait(this.backoff.next());
        return;
      case 'forbidden':
        this.o.report?.('subscribe_error', 1, { transport: kind });
        this.refusedSub = this.o.subscription();
        this.set({ phase: 'refused' });
        console.warn(`herald: the server refused the subscription (${reason.detail}); waiting for it to change`);
        return;
      case 'disabled': {
        const lp = this.o.transports.indexOf('longpoll');
        if (lp > this.tIndex) {
          this.tIndex = lp;
          this.failures = 0;
        }
        this.wait(this.backoff.next());
        return;
      }
      case 'throttled':
        this.nextUrl();
        this.wait(Math.max(this.backoff.next(), reason.retryAfterMs ?? 0));
        return;
      case 'draining':
        this.nextUrl();
        this.wait(this.backoff.next());
        return;
    }
  }

  private nextUrl(): void {
    this.uIndex = (this.uIndex + 1) % this.o.urls.length;
  }

  /** A transport failed before the server accepted it. */
  private connectFailed(kind: TransportKind): void {
    this.failures += 1;
    this.nextUrl();
    const limit = Math.max(
      this.worked.has(kind) && !this.probing ? FAILURES_BEFORE_FALLBACK_KNOWN_GOOD : FAILURES_BEFORE_FALLBACK,
      this.o.urls.length,
    );
    if (this.failures >= limit && this.tIndex < this.o.transports.length - 1) {
      this.tIndex += 1;
      this.failures = 0;
    }
  }

  private wait(ms: number): void {
    this.set({ phase: 'waiting', connectionId: null });
    this.timers.clear(this.retryTimer);
    this.retryTimer = this.timers.set(() => {
      this.retryTimer = null;
      this.connect();
    }, ms);
  }

  /** While on a fallback, try the preferred transport again later. */
  private scheduleProbe(): void {
    this.timers.clear(this.probeTimer);
    this.probeTimer = null;
    if (this.tIndex === 0) {
      this.probeMs = UPGRADE_PROBE_MS;
      return;
    }
    this.probeTimer = this.timers.set(() => {
      this.probeTimer = null;
      if (this.status.phase !== 'open') return;
      this.probeMs = Math.min(this.probeMs * 2, UPGRADE_PROBE_MAX_MS);
      this.tIndex = 0;
      this.failures = 0;
      this.probing = true;
      this.connect();
    }, this.probeMs);
  }
}
