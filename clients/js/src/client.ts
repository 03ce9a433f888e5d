// The client: ties election, tab bus, connection loop, dedup and health
// together. Every tab runs one; exactly one (the leader) connects to an edge.
//
//   leader:   server → dedup → cursor → bus 'events' → own handlers
//   follower: bus 'events' → dedup → own handlers
//
// Followers announce their needs (services, property filter, visibility) on
// the bus; every tab keeps the registry, the leader subscribes to the union.
// The leader heartbeats every second with its status and cursor, and persists
// the cursor in localStorage, so a new leader resumes where the old one
// stopped. Logout travels on `auth-control` and stops every tab at once.

import { openAuthControl, TokenManager, type AuthControl } from './auth.js';
import { acceptBusMessage, openBus, type Bus, type BusMessage, type LeaderStatus } from './channel.js';
import { Connection, type ConnectionStatus } from './connection.js';
import { advanceCursor, EMPTY_CURSOR, mergeCursor, parseCursor, type Cursor } from './cursor.js';
import { Deduper } from './dedup.js';
import { browserEnv, randomId, TimerGroup, type Env, type TimerHandle } from './env.js';
import { HealthTracker } from './health.js';
import { createElector, type Elector, type Role } from './leader.js';
import { matchesNeed, NeedsRegistry, type Subscription, type TabNeed } from './routing.js';
import { createLongPollTransport } from './transport/longpoll.js';
import { createSseTransport } from './transport/sse.js';
import type { TransportFactory } from './transport/types.js';
import { createWebSocketTransport } from './transport/websocket.js';
import type {
  HeraldEvent,
  RealtimeClient,
  RealtimeOptions,
  RealtimeState,
  ResetReason,
  TransportKind,
} from './types.js';

const DEFAULT_TRANSPORTS: TransportKind[] = ['websocket', 'sse', 'longpoll'];
const ALL_TRANSPORTS = new Set<TransportKind>(DEFAULT_TRANSPORTS);
/** Leader heartbeat period. */
const HEARTBEAT_MS = 1_000;
/** A leader silent this long is stale (followers stop mirroring its status). */
const LEADER_STALE_MS = 3_000;
/** Followers re-announce their needs this often… */
const NEED_REFRESH_MS = 10_000;
/** …and the registry forgets a tab not heard from for this long. */
const NEED_MAX_AGE_MS = 35_000;
/** A tab whose role is still unknown after this long is a follower (someone else holds the lock). */
const ROLE_SETTLE_MS = 1_500;
/** The leader persists the cursor at most this often (and on leaving)… */
const PERSIST_EVERY_MS = 500;
/** …and at least this often, so its stamp shows it is current. */
const PERSIST_REFRESH_MS = 5_000;
/** Service names the edge accepts (contract §1). */
const SERVICE_RE = /^[A-Za-z0-9_-]{1,64}$/;

type Handler = (e: HeraldEvent) => void;

/** Internal hooks for tests: the environment and the transport factories. */
export interface ClientInternals {
  env?: Env;
  factories?: Partial<Record<TransportKind, TransportFactory>>;
  tabId?: string;
}

/** State listeners by client handle (for the React entry), kept off the public interface. */
const watchers = new WeakMap<RealtimeClient, HeraldClient>();

/** Calls `cb` whenever `client.state()` changes (coalesced per task). Returns the unsubscribe function. */
export function watchState(client: RealtimeClient, cb: (s: RealtimeState) => void): () => void {
  const c = watchers.get(client);
  if (c === undefined) return () => {};
  return c.watch(cb);
}

/** Creates the client of this tab. See the README for the model. */
export function createRealtimeClient(options: RealtimeOptions): RealtimeClient {
  return createClientInternal(options, {});
}

/** As {@link createRealtimeClient}, with injectable internals (tests). */
export function createClientInternal(options: RealtimeOptions, internals: ClientInternals): RealtimeClient {
  const client = new HeraldClient(options, internals);
  const handle: RealtimeClient = {
    subscribe: (service, handler) => client.subscribe(service, handler),
    setPropertyFilter: (propertyId) => client.setPropertyFilter(propertyId),
    logout: () => client.logout(),
    close: () => client.close(),
    state: () => client.state(),
  };
  watchers.set(handle, client);
  client.start(handle);
  return handle;
}

function reportHandlerError(err: unknown): void {
  const g = globalThis as { reportError?: (e: unknown) => void };
  if (typeof g.reportError === 'function') g.reportError(err);
  else console.error('herald: an event handler threw', err);
}

function validateOptions(o: RealtimeOptions): { urls: string[]; transports: TransportKind[] } {
  if (!Array.isArray(o.urls) || o.urls.length === 0 || !o.urls.every((u) => typeof u === 'string' && u.length > 0)) {
    throw new TypeError('herald: `urls` must be a non-empty array of edge base URLs');
  }
  if (typeof o.getToken !== 'function') throw new TypeError('herald: `getToken` must be a function');
  const transports = [...new Set(o.transports ?? DEFAULT_TRANSPORTS)].filter((t) => ALL_TRANSPORTS.has(t));
  if (transports.length === 0) throw new TypeError("herald: `transports` must name 'websocket', 'sse' or 'longpoll'");
  for (const s of o.services ?? []) checkService(s);
  return { urls: [...o.urls], transports };
}

function checkService(service: string): void {
  if (typeof service !== 'string' || !SERVICE_RE.test(service)) {
    throw new TypeError(`herald: invalid service name ${JSON.stringify(service)} (1–64 of [A-Za-z0-9_-])`);
  }
}

class HeraldClient {
  private readonly env: Env;
  private readonly tabId: string;
  private readonly channelName: string;
  private readonly urls: string[];
  private readonly transports: TransportKind[];
  private readonly staleAfterMs: number;
  private readonly factories: Record<TransportKind, TransportFactory>;
  private readonly cursorKey: string;

  private readonly timers: TimerGroup;
  private readonly dedup = new Deduper();
  private readonly health: HealthTracker;
  private readonly needs = new NeedsRegistry();
  private readonly tokens: TokenManager;
  private readonly handlers = new Map<string, Set<Handler>>();
  private readonly initialServices: Set<string>;
  private propertyId: string | null;
  private visible: boolean;

  private bus: Bus<BusMessage> | null = null;
  private auth: AuthControl | null = null;
  private elector: Elector | null = null;
  private connection: Connection | null = null;
  private offPage: Array<() => void> = [];

  private role: RealtimeState['role'] = 'unknown';
  private stopped = false;
  private suspended = false;
  private cursor: Cursor = EMPTY_CURSOR;
  private persistedAt = -Infinity;
  private persistTimer: TimerHandle | null = null;

  /** Leader side: the last status sent to followers. Follower side: the leader's last heartbeat. */
  private leaderStatus: LeaderStatus | null = null;
  private leaderId: string | null = null;
  private lastHeartbeatAt = -Infinity;
  private leaderStaleNoted = false;

  private lastHealthyAt: number;
  private staleFired = false;
  private lastNeedRefresh = -Infinity;

  private snapshot: RealtimeState | null = null;
  private snapshotStale = true;
  private notifyPending = false;
  private needPending = false;
  private readonly listeners = new Set<(s: RealtimeState) => void>();

  constructor(
    private readonly options: RealtimeOptions,
    internals: ClientInternals,
  ) {
    const { urls, transports } = validateOptions(options);
    this.urls = urls;
    this.transports = transports;
    this.env = internals.env ?? browserEnv(options.now);
    this.tabId = internals.tabId ?? randomId(() => this.env.random());
    this.channelName = options.channelName ?? 'herald';
    this.cursorKey = `${this.channelName}:cursor`;
    this.staleAfterMs = options.staleAfterMs ?? 60_000;
    this.factories = {
      websocket: createWebSocketTransport,
      sse: createSseTransport,
      longpoll: createLongPollTransport,
      ...internals.factories,
    };
    this.timers = new TimerGroup(this.env);
    this.health = new HealthTracker(() => this.env.now());
    this.initialServices = new Set(options.services ?? []);
    this.propertyId = options.propertyId ?? null;
    this.visible = this.env.visible();
    this.lastHealthyAt = this.env.now();
    this.tokens = new TokenManager(options.getToken, this.env, (token) => {
      // Only the leader calls getToken(); followers get the result.
      this.post({ type: 'token', from: this.tabId, token });
    });
  }

  // ---- lifecycle -------------------------------------------------------

  start(handle: RealtimeClient): void {
    const env = this.env;
    this.cursor = this.storedCursor();
    this.bus = openBus(env, this.channelName, (m) => this.onBus(m), acceptBusMessage);
    this.auth = openAuthControl(env, () => this.shutdown('logout'));
    this.needs.set(this.tabId, this.ownNeed(), env.now());
    this.postNeed();

    this.offPage.push(
      env.on('online', () => {
        this.connection?.online();
        this.touch();
      }),
      env.on('offline', () => {
        this.connection?.offline();
        this.touch();
      }),
      env.on('visibilitychange', () => this.onVisibility()),
      env.on('pagehide', () => this.suspend()),
      env.on('freeze', () => this.suspend()),
      env.on('pageshow', (ev) => {
        if ((ev as { persisted?: boolean }).persisted === true) this.resume();
      }),
      env.on('resume', () => this.resume()),
    );

    this.elector = createElector(env, this.channelName, this.tabId, (role) => this.onRole(role));
    this.tick();
    this.timers.set(() => this.settleRole(), ROLE_SETTLE_MS);
    this.elector.start();

    if (this.options.debug === true) {
      (globalThis as { __realtimeState?: () => RealtimeState }).__realtimeState = () => handle.state();
    }
  }

  private settleRole(): void {
    if (!this.stopped && !this.suspended && this.role === 'unknown') this.setRole('follower');
  }

  /** Page frozen or hidden for good (bfcache, navigation): give up leadership, keep listeners. */
  private suspend(): void {
    if (this.stopped || this.suspended) return;
    this.suspended = true;
    this.post({ type: 'bye', from: this.tabId });
    this.elector?.stop(); // reports 'follower' → resignLeader()
    this.setRole('unknown');
  }

  private resume(): void {
    if (this.stopped || !this.suspended) return;
    this.suspended = false;
    this.needs.set(this.tabId, this.ownNeed(), this.env.now());
    this.postNeed();
    this.timers.set(() => this.settleRole(), ROLE_SETTLE_MS);
    this.elector?.start();
  }

  close(): void {
    this.shutdown('close');
  }

  logout(): void {
    if (this.stopped) return;
    this.auth?.broadcastLogout();
    this.shutdown('logout');
  }

  /**
   * Stops this tab synchronously: aborts requests, closes sockets and event
   * sources, clears timers, releases leadership.
   */
  private shutdown(why: 'close' | 'logout'): void {
    if (this.stopped) return;
    if (why === 'close') {
      this.post({ type: 'bye', from: this.tabId });
      if (this.role === 'leader') this.persistCursor(true);
    }
    this.stopped = true;
    this.connection?.dispose();
    this.connection = null;
    this.elector?.stop();
    this.elector = null;
    this.timers.clearAll();
    this.tokens.dispose();
    for (const off of this.offPage) off();
    this.offPage = [];
    this.bus?.close();
    this.bus = null;
    this.auth?.close();
    this.auth = null;
    // The next user of this browser must not resume the previous user's stream.
    if (why === 'logout') this.env.storage?.removeItem(this.cursorKey);
    this.role = 'unknown';
    this.touch();
  }

  // ---- public API --------------------------------------------------------

  subscribe(service: string, handler: Handler): () => void {
    checkService(service);
    if (typeof handler !== 'function') throw new TypeError('herald: handler must be a function');
    let set = this.handlers.get(service);
    if (set === undefined) {
      set = new Set();
      this.handlers.set(service, set);
    }
    // Wrapped so the same function can be subscribed twice and removed once per call.
    const entry: Handler = (e) => handler(e);
    set.add(entry);
    this.needChanged();
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const s = this.handlers.get(service);
      s?.delete(entry);
      if (s !== undefined && s.size === 0) this.handlers.delete(service);
      this.needChanged();
    };
  }

  setPropertyFilter(propertyId: string | null): void {
    const p = propertyId === undefined || propertyId === '' ? null : propertyId;
    if (p === this.propertyId) return;
    this.propertyId = p;
    this.needChanged();
  }

  state(): RealtimeState {
    if (this.snapshot === null || this.snapshotStale) {
      this.snapshot = this.buildState();
      this.snapshotStale = false;
    }
    return this.snapshot;
  }

  watch(cb: (s: RealtimeState) => void): () => void {
    this.listeners.add(cb);
    return () => this.listeners.delete(cb);
  }

  // ---- needs -----------------------------------------------------------

  private ownServices(): string[] {
    const s = new Set(this.initialServices);
    for (const k of this.handlers.keys()) s.add(k);
    return [...s].sort();
  }

  private ownNeed(): TabNeed {
    return { services: this.ownServices(), propertyId: this.propertyId, visible: this.visible };
  }

  /** Coalesces need changes of one task (a render mounting many hooks) into one announcement. */
  private needChanged(): void {
    this.touch();
    if (this.needPending || this.stopped) return;
    this.needPending = true;
    queueMicrotask(() => {
      this.needPending = false;
      if (this.stopped) return;
      this.needs.set(this.tabId, this.ownNeed(), this.env.now());
      this.postNeed();
      this.connection?.subscriptionChanged();
    });
  }

  private postNeed(): void {
    const need = this.ownNeed();
    this.post({ type: 'need', from: this.tabId, ...need });
  }

  private onVisibility(): void {
    const visible = this.env.visible();
    if (visible === this.visible) return;
    this.visible = visible;
    this.needChanged();
    if (visible) this.connection?.nudge();
  }

  private subscription(): Subscription {
    return this.needs.union();
  }

  // ---- roles -----------------------------------------------------------

  private onRole(role: Role): void {
    if (this.stopped) return;
    if (role === 'leader') this.becomeLeader();
    else this.resignLeader();
  }

  private setRole(role: RealtimeState['role']): void {
    if (this.role === role) return;
    this.role = role;
    this.touch();
  }

  private becomeLeader(): void {
    if (this.connection !== null) return;
    this.setRole('leader');
    this.leaderId = this.tabId;
    // Resume from the best cursor any tab left behind.
    this.cursor = mergeCursor(this.cursor, this.storedCursor());
    this.post({ type: 'leader', from: this.tabId });
    this.connection = new Connection({
      env: this.env,
      urls: this.urls,
      transports: this.transports,
      factories: this.factories,
      getToken: (force) => this.tokens.get(force),
      subscription: () => this.subscription(),
      cursor: () => ({ lastSeq: this.cursor.lastSeq, epoch: this.cursor.epoch }),
      hidden: () => !this.needs.anyVisible(),
      onOpen: (info) => {
        if (info.seq !== null) this.advance(info.seq, info.epoch);
        this.persistCursor(false);
      },
      onEvents: (events, cursor) => this.leaderEvents(events, cursor),
      onCursor: (seq, epoch) => {
        this.advance(seq, epoch);
        this.persistCursor(false);
      },
      onReset: (reason, seq, epoch, services) => this.leaderReset(reason, seq, epoch, services),
      onReconnect: () => {
        this.health.reconnected(this.subscription().services);
        this.touch();
      },
      onStatus: (s) => this.leaderConnectionStatus(s),
    });
    this.connection.start();
    this.heartbeat();
  }

  private resignLeader(): void {
    const c = this.connection;
    if (c === null) return;
    this.connection = null;
    c.dispose();
    this.persistCursor(true);
    this.leaderStatus = null;
    this.leaderId = null;
    this.setRole(this.suspended || this.stopped ? 'unknown' : 'follower');
  }

  // ---- leader: server traffic -------------------------------------------

  private advance(seq: number, epoch: string | null): void {
    const next = advanceCursor(this.cursor, seq, epoch, this.env.now());
    if (next !== this.cursor) {
      this.cursor = next;
      this.touch();
    }
  }

  private leaderEvents(events: HeraldEvent[], cursor: number | null): void {
    const fresh: HeraldEvent[] = [];
    let maxSeq = cursor ?? -1;
    for (const e of events) {
      if (e.seq > maxSeq) maxSeq = e.seq;
      if (this.dedup.seen(e)) this.health.suppressed(e.service);
      else fresh.push(e);
    }
    if (maxSeq >= 0) this.advance(maxSeq, null);
    // Broadcast first: a handler that throws must not keep events from other tabs.
    if (fresh.length > 0) {
      this.post({ type: 'events', from: this.tabId, events: fresh, lastSeq: this.cursor.lastSeq, epoch: this.cursor.epoch });
    }
    this.deliver(fresh);
    this.persistCursor(false);
  }

  private leaderReset(reason: ResetReason, seq: number | null, epoch: string | null, services?: string[]): void {
    this.cursor = {
      lastSeq: seq ?? this.cursor.lastSeq,
      epoch: epoch ?? this.cursor.epoch,
      at: this.env.now(),
    };
    // After a new epoch, sequences (and eventIds defaulted from them) start over.
    if (reason === 'epoch_changed') this.dedup.clear();
    this.persistCursor(true);
    this.post({
      type: 'reset',
      from: this.tabId,
      reason,
      lastSeq: this.cursor.lastSeq,
      epoch: this.cursor.epoch,
      ...(services === undefined ? {} : { services }),
    });
    this.touch();
    this.callReset(reason, services);
  }

  private leaderConnectionStatus(s: ConnectionStatus): void {
    if (this.connection === null) return; // the loop being disposed on resign
    this.touch();
    if (s.phase === 'open' || s.phase === 'idle') this.markHealthy();
    // Followers learn of a change at once, not at the next heartbeat.
    this.heartbeat();
  }

  /** What followers mirror. */
  private connectionSummary(): LeaderStatus {
    const c = this.connection?.current();
    const reconnects: Record<string, number> = {};
    for (const s of this.subscription().services) reconnects[s] = this.health.reconnects(s);
    return {
      status: this.statusFromConnection(c),
      transport: c?.transport ?? null,
      url: c?.url ?? null,
      connectionId: c?.connectionId ?? null,
      connected: c !== undefined && (c.phase === 'open' || c.phase === 'idle'),
      reconnects,
    };
  }

  private statusFromConnection(c: Readonly<ConnectionStatus> | undefined): RealtimeState['status'] {
    if (c === undefined) return 'connecting';
    switch (c.phase) {
      case 'open':
        // Long-poll as a fallback works, but with more latency and load: degraded.
        return c.transport === 'longpoll' && this.transports[0] !== 'longpoll' ? 'degraded' : 'live';
      case 'offline':
      case 'refused':
        return 'offline';
      case 'stopped':
        return 'stopped';
      case 'idle':
        return 'connecting';
      case 'connecting':
      case 'waiting':
        return c.everOpened ? 'degraded' : 'connecting';
    }
  }

  private heartbeat(): void {
    if (this.role !== 'leader' || this.stopped) return;
    this.leaderStatus = this.connectionSummary();
    this.post({
      type: 'heartbeat',
      from: this.tabId,
      status: this.leaderStatus,
      lastSeq: this.cursor.lastSeq,
      epoch: this.cursor.epoch,
    });
  }

  /**
   * The persisted cursor, if a leader confirmed it recently. An older one
   * belongs to an earlier visit: the app has fetched fresh state since, and
   * replaying hours of events onto it would do harm, so start at the head.
   */
  private storedCursor(): Cursor {
    const c = parseCursor(this.env.storage?.getItem(this.cursorKey) ?? null);
    return this.env.now() - c.at <= this.staleAfterMs ? c : EMPTY_CURSOR;
  }

  /** Writes the cursor, stamped with the time of writing (a leader confirms it is current). */
  private persistCursor(now: boolean): void {
    const storage = this.env.storage;
    if (storage === null || this.cursor.lastSeq === null) return;
    const write = () => {
      this.persistTimer = null;
      this.persistedAt = this.env.now();
      storage.setItem(this.cursorKey, JSON.stringify({ ...this.cursor, at: this.persistedAt }));
    };
    if (now || this.env.now() - this.persistedAt >= PERSIST_EVERY_MS) {
      this.timers.clear(this.persistTimer);
      write();
    } else if (this.persistTimer === null && !this.stopped) {
      this.persistTimer = this.timers.set(write, PERSIST_EVERY_MS - (this.env.now() - this.persistedAt));
    }
  }

  // ---- bus ---------------------------------------------------------------

  private post(msg: BusMessage): void {
    this.bus?.post(msg);
  }

  private onBus(m: BusMessage): void {
    if (this.stopped || m.from === this.tabId) return;
    const now = this.env.now();
    switch (m.type) {
      case 'leader':
        this.leaderId = m.from;
        this.lastHeartbeatAt = now;
        if (this.role !== 'leader' && !this.suspended) this.setRole('follower');
        this.postNeed(); // the new leader may not have heard of us
        return;
      case 'heartbeat':
        this.onHeartbeat(m, now);
        return;
      case 'status?':
        this.heartbeat();
        return;
      case 'need': {
        const before = this.needs.anyVisible();
        const token = this.tokens.peek();
        // A tab that just arrived has not seen the token yet; it needs one if it becomes leader.
        if (this.role === 'leader' && !this.needs.has(m.from) && token !== null) {
          this.post({ type: 'token', from: this.tabId, token });
        }
        this.needs.set(m.from, { services: m.services, propertyId: m.propertyId, visible: m.visible === true }, now);
        this.connection?.subscriptionChanged();
        if (!before && this.needs.anyVisible()) this.connection?.nudge();
        return;
      }
      case 'bye':
        if (this.needs.remove(m.from)) this.connection?.subscriptionChanged();
        if (m.from === this.leaderId) {
          this.leaderId = null;
          this.leaderStatus = null;
          this.lastHeartbeatAt = -Infinity;
          this.touch();
        }
        return;
      case 'events':
        this.mergeCursor(m.lastSeq, m.epoch, now);
        this.deliver(m.events.filter((e) => !this.dedupSuppressed(e)));
        return;
      case 'reset':
        if (m.reason === 'dropped') {
          // Scoped to a few services: the cursor carries on.
          this.mergeCursor(m.lastSeq, m.epoch, now);
          this.callReset(m.reason, m.services);
          return;
        }
        if (m.reason === 'epoch_changed') this.dedup.clear();
        this.cursor = { lastSeq: m.lastSeq, epoch: m.epoch, at: now };
        this.touch();
        this.callReset(m.reason, m.services);
        return;
      case 'token':
        this.tokens.adopt(m.token);
        return;
    }
  }

  private onHeartbeat(m: Extract<BusMessage, { type: 'heartbeat' }>, now: number): void {
    if (this.role === 'leader') return; // two leaders only during a lease hand-over; it settles
    if (!this.suspended && this.role === 'unknown') this.setRole('follower');
    this.leaderId = m.from;
    this.lastHeartbeatAt = now;
    this.leaderStaleNoted = false;
    const before = JSON.stringify(this.leaderStatus);
    this.leaderStatus = m.status;
    if (JSON.stringify(m.status) !== before) this.touch();
    this.mergeCursor(m.lastSeq, m.epoch, now);
    for (const [service, count] of Object.entries(m.status.reconnects ?? {})) {
      if (typeof count === 'number' && this.health.mirrorReconnects(service, count)) this.touch();
    }
    if (m.status.connected) this.markHealthy();
  }

  private mergeCursor(lastSeq: number | null, epoch: string | null, now: number): void {
    if (lastSeq === null) return;
    const next = mergeCursor(this.cursor, { lastSeq, epoch, at: now });
    if (next.lastSeq !== this.cursor.lastSeq || next.epoch !== this.cursor.epoch) {
      this.cursor = next;
      this.touch();
    }
  }

  // ---- delivery ------------------------------------------------------------

  private dedupSuppressed(e: HeraldEvent): boolean {
    if (!this.dedup.seen(e)) return false;
    this.health.suppressed(e.service);
    this.touch();
    return true;
  }

  /** Hands fresh events to this tab's handlers, filtered by its own subscription. */
  private deliver(events: HeraldEvent[]): void {
    if (events.length === 0) return;
    const need = this.ownNeed();
    for (const e of events) {
      if (this.stopped) return; // a handler may have logged out
      if (!matchesNeed(e, need)) continue;
      this.health.delivered(e.service, e.timestamp);
      const set = this.handlers.get(e.service);
      if (set === undefined) continue;
      for (const h of [...set]) {
        try {
          h(e);
        } catch (err) {
          reportHandlerError(err);
        }
      }
    }
    this.touch();
  }

  private callReset(reason: ResetReason, services?: string[]): void {
    try {
      if (services === undefined) this.options.onReset?.(reason);
      else this.options.onReset?.(reason, services);
    } catch (err) {
      reportHandlerError(err);
    }
  }

  // ---- periodic work ---------------------------------------------------

  /** Once a second: heartbeat, staleness, need refresh. */
  private tick(): void {
    if (this.stopped) return;
    const now = this.env.now();
    if (this.role === 'leader') {
      this.heartbeat();
      // Keep the persisted cursor's stamp fresh while the stream is quiet.
      if (now - this.persistedAt >= PERSIST_REFRESH_MS) this.persistCursor(true);
    } else if (now - this.lastHeartbeatAt > 2 * HEARTBEAT_MS) {
      // Browsers throttle timers of hidden tabs (down to once a minute), so a
      // hidden leader's heartbeats can lag; messages are not throttled, ask.
      this.post({ type: 'status?', from: this.tabId });
    }
    if (
      this.role !== 'leader' &&
      this.leaderId !== null &&
      now - this.lastHeartbeatAt > LEADER_STALE_MS &&
      !this.leaderStaleNoted
    ) {
      // Diagnostics: with Web Locks a frozen leader keeps the lock; a dead one frees it.
      this.leaderStaleNoted = true;
      if (this.options.debug === true) console.debug(`herald: leader ${this.leaderId} silent for ${now - this.lastHeartbeatAt} ms`);
      this.touch();
    }
    if (now - this.lastNeedRefresh >= NEED_REFRESH_MS) {
      this.lastNeedRefresh = now;
      this.needs.set(this.tabId, this.ownNeed(), now);
      if (this.role !== 'leader') this.postNeed();
      if (this.needs.prune(now, NEED_MAX_AGE_MS, this.tabId)) this.connection?.subscriptionChanged();
    }
    this.checkStale(now);
    this.timers.set(() => this.tick(), HEARTBEAT_MS);
  }

  private connected(): boolean {
    if (this.role === 'leader') {
      const c = this.connection?.current();
      return c !== undefined && (c.phase === 'open' || c.phase === 'idle');
    }
    return this.leaderFresh() && this.leaderStatus?.connected === true;
  }

  private leaderFresh(): boolean {
    return this.leaderStatus !== null && this.env.now() - this.lastHeartbeatAt <= LEADER_STALE_MS;
  }

  private markHealthy(): void {
    this.lastHealthyAt = this.env.now();
    this.staleFired = false;
  }

  /** `onStale` once per outage longer than `staleAfterMs`. */
  private checkStale(now: number): void {
    if (this.suspended) return;
    if (this.connected()) {
      this.markHealthy();
      return;
    }
    if (!this.staleFired && now - this.lastHealthyAt > this.staleAfterMs) {
      this.staleFired = true;
      try {
        this.options.onStale?.();
      } catch (err) {
        reportHandlerError(err);
      }
    }
  }

  // ---- state -------------------------------------------------------------

  private buildState(): RealtimeState {
    const services = this.health.snapshot(this.ownServices());
    const base = { lastSeq: this.cursor.lastSeq, epoch: this.cursor.epoch, services };
    if (this.stopped) {
      return { status: 'stopped', role: 'unknown', transport: null, url: null, connectionId: null, ...base };
    }
    let status: RealtimeState['status'];
    let link: Pick<RealtimeState, 'transport' | 'url' | 'connectionId'> = { transport: null, url: null, connectionId: null };
    if (this.role === 'leader' && this.connection !== null) {
      const c = this.connection.current();
      status = this.statusFromConnection(c);
      link = { transport: c.transport, url: c.url, connectionId: c.connectionId };
    } else if (this.leaderFresh() && this.leaderStatus !== null) {
      status = this.leaderStatus.status;
      link = { transport: this.leaderStatus.transport, url: this.leaderStatus.url, connectionId: this.leaderStatus.connectionId };
    } else {
      status = 'connecting';
    }
    if (!this.env.online() && status !== 'stopped') status = 'offline';
    return { status, role: this.role, ...link, ...base };
  }

  /** Something in the state changed: drop the snapshot, notify once per task. */
  private touch(): void {
    this.snapshotStale = true;
    if (this.notifyPending) return;
    this.notifyPending = true;
    queueMicrotask(() => {
      this.notifyPending = false;
      const s = this.state();
      try {
        this.options.onStateChange?.(s);
      } catch (err) {
        reportHandlerError(err);
      }
      for (const cb of [...this.listeners]) {
        try {
          cb(s);
        } catch (err) {
          reportHandlerError(err);
        }
      }
    });
  }
}
