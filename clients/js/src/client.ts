// The client of one tab: a thin coordinator. Every tab runs one; exactly one
// (the leader) connects to an edge. The concepts live in their own modules:
//   options.ts     the app's options, checked   leader.ts     election
//   cursor.ts      the resume point, persisted  connection.ts the leader's loop
//   tabs.ts        the bus protocol, needs      delivery.ts   handlers, dedup
//   state.ts       state() and its listeners    stale.ts      onStale
//   telemetry.ts   sampled reports to the edge
//   rooms.ts       chat rooms: handles, state, the leader's hub
//   upload.ts      tus uploads, straight from this tab
// This file decides what happens when: roles, page lifecycle, the once-a-
// second tick, and the two paths of an event:
//   leader:   server → dedup → cursor → bus 'events' → own handlers
//   follower: bus 'events' → cursor → dedup → own handlers
// Invariant: only the leader holds a Connection, subscribed to the union of
// every tab's needs; a stopped client (close, logout) holds no timer,
// listener, socket or lock. Logout travels on `auth-control` and stops every
// tab at once.

import { jwtSub, openAuthControl, TokenManager, type AuthControl } from './auth.js';
import { Connection, type ConnectionStatus } from './connection.js';
import { CursorStore } from './cursor.js';
import { Delivery } from './delivery.js';
import { browserEnv, randomId, TimerGroup, type Env } from './env.js';
import { HealthTracker } from './health.js';
import { createElector, type Elector, type Role } from './leader.js';
import { resolveOptions, type ClientConfig } from './options.js';
import { Rooms } from './rooms.js';
import type { TabNeed } from './routing.js';
import { StaleWatch } from './stale.js';
import { browserSender, Telemetry, type TelemetrySender } from './telemetry.js';
import { Uploads } from './upload.js';
import type { UploadFetch } from './upload/tus.js';
import { buildState, isConnected, StateView, summarizeConnection } from './state.js';
import { HEARTBEAT_MS, TabBus, type LeaderStatus } from './tabs.js';
import { createLongPollTransport } from './transport/longpoll.js';
import { createSseTransport } from './transport/sse.js';
import type { TransportFactory } from './transport/types.js';
import { createWebSocketTransport } from './transport/websocket.js';
import type { HeraldEvent, RealtimeClient, RealtimeOptions, RealtimeState, ResetReason, Room, TransportKind, Upload, UploadOptions } from './types.js';

/**
 * Events received this soon after a connection opened are mostly the backlog
 * of a resume: their age says how long the tab was away, not how fast
 * delivery is, so they are not reported as delivery latency.
 */
const CATCH_UP_MS = 2_000;
/** A tab whose role is still unknown after this long is a follower (someone else holds the lock). */
const ROLE_SETTLE_MS = 1_500;

/** Internal hooks for tests: the environment and the transport factories. */
export interface ClientInternals {
  env?: Env;
  factories?: Partial<Record<TransportKind, TransportFactory>>;
  tabId?: string;
  /** How telemetry is sent; without it (and with an injected env) telemetry sends nothing. */
  telemetrySender?: TelemetrySender | null;
  /** How uploads reach the edge, and their SHA-256 (tests). */
  uploadFetch?: UploadFetch;
  uploadDigest?: ((data: ArrayBuffer) => Promise<ArrayBuffer>) | null;
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
    room: (id) => client.room(id),
    upload: (file, options) => client.upload(file, options),
  };
  watchers.set(handle, client);
  client.start(handle);
  return handle;
}

class HeraldClient {
  private readonly config: ClientConfig;
  private readonly env: Env;
  private readonly tabId: string;
  private readonly factories: Record<TransportKind, TransportFactory>;

  private readonly timers: TimerGroup;
  private readonly health: HealthTracker;
  private readonly tokens: TokenManager;
  private readonly cursor: CursorStore;
  private readonly delivery: Delivery;
  private readonly tabs: TabBus;
  private readonly view: StateView;
  private readonly stale: StaleWatch;
  private readonly telemetry: Telemetry;
  private readonly rooms: Rooms;
  private readonly uploads: Uploads;
  private propertyId: string | null;
  private visible: boolean;

  private auth: AuthControl | null = null;
  private elector: Elector | null = null;
  private connection: Connection | null = null;
  private offPage: Array<() => void> = [];

  private role: RealtimeState['role'] = 'unknown';
  /** When the leader's connection last opened (client clock). */
  private openedAt = -Infinity;
  private stopped = false;
  private suspended = false;
  private needPending = false;

  constructor(
    private readonly options: RealtimeOptions,
    internals: ClientInternals,
  ) {
    this.config = resolveOptions(options);
    const env = internals.env ?? browserEnv(options.now);
    this.env = env;
    this.tabId = internals.tabId ?? randomId(() => env.random());
    this.factories = {
      websocket: createWebSocketTransport,
      sse: createSseTransport,
      longpoll: createLongPollTransport,
      ...internals.factories,
    };
    this.timers = new TimerGroup(env);
    this.health = new HealthTracker(() => env.now());
    this.propertyId = options.propertyId ?? null;
    this.visible = env.visible();
    const touch = () => this.touch();
    this.view = new StateView(() => this.buildState(), options.onStateChange);
    this.stale = new StaleWatch(() => env.now(), this.config.staleAfterMs, options.onStale);
    this.cursor = new CursorStore(env, `${this.config.channelName}:cursor`, this.config.staleAfterMs, touch);
    this.delivery = new Delivery({
      initialServices: this.config.services,
      health: this.health,
      ...(options.onReset === undefined ? {} : { onReset: options.onReset }),
      active: () => !this.stopped,
    });
    this.tabs = new TabBus(
      env,
      this.config.channelName,
      this.tabId,
      {
        role: () => this.role,
        ownNeed: () => this.ownNeed(),
        token: () => this.tokens.peek(),
        leaderSeen: () => {
          if (this.role !== 'leader' && !this.suspended) this.setRole('follower');
        },
        leaderChanged: touch,
        leaderConnected: () => this.stale.healthy(),
        reconnectsSeen: (service, count) => {
          if (this.health.mirrorReconnects(service, count)) this.touch();
        },
        statusRequested: () => this.heartbeat(),
        needsChanged: (newlyVisible) => {
          this.connection?.subscriptionChanged();
          if (newlyVisible) this.connection?.nudge();
          this.rooms.visibility(this.tabs.anyVisible());
        },
        cursorSeen: (lastSeq, epoch) => this.cursor.merge(lastSeq, epoch),
        events: (events) => this.followerEvents(events),
        reset: (reason, lastSeq, epoch, services) => this.followerReset(reason, lastSeq, epoch, services),
        tokenSeen: (token) => this.tokens.adopt(token),
      },
      options.debug === true,
    );
    // Only the leader calls getToken(); followers get the result.
    this.tokens = new TokenManager(options.getToken, env, (token) => this.tabs.token(token));
    // Tests that inject an env never reach the network unless they pass a sender.
    const sender = internals.telemetrySender !== undefined ? internals.telemetrySender : internals.env === undefined ? browserSender() : null;
    this.rooms = new Rooms({
      env,
      tabId: this.tabId,
      channelName: this.config.channelName,
      userId: () => {
        const t = this.tokens.peek();
        return t === null ? null : jwtSub(t);
      },
      // Only the leader calls getToken(); a follower uses the token it was given.
      token: () => (this.role === 'leader' ? this.tokens.get(false) : Promise.resolve(this.tokens.peek())),
      baseUrl: () => this.connection?.current().url ?? this.tabs.mirroredLeader()?.url ?? this.config.urls[0] ?? '',
    });
    this.uploads = new Uploads({
      env,
      channelName: this.config.channelName,
      endpoint: this.config.urls[0] ?? '',
      // Uploads go from any tab, not only the leader: a follower uses the token
      // the leader shared, and fetches one itself after a 401 (or without one).
      token: (force) => this.tokens.get(force),
      ...(internals.uploadFetch === undefined ? {} : { fetch: internals.uploadFetch }),
      ...(internals.uploadDigest === undefined ? {} : { digest: internals.uploadDigest }),
    });
    this.telemetry = new Telemetry(this.config.telemetry, {
      env,
      token: () => this.tokens.peek(),
      baseUrl: () => this.connection?.current().url ?? this.config.urls[0] ?? '',
      sender,
    });
  }

  // ---- lifecycle -------------------------------------------------------

  start(handle: RealtimeClient): void {
    const env = this.env;
    this.cursor.load();
    this.tabs.open();
    this.rooms.open();
    this.auth = openAuthControl(env, () => this.shutdown('logout'));
    this.tabs.announceNeed(this.ownNeed());

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

    this.telemetry.start();
    this.elector = createElector(env, this.config.channelName, this.tabId, (role) => this.onRole(role));
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
    this.tabs.bye();
    this.rooms.suspend();
    this.elector?.stop(); // reports 'follower' → resignLeader()
    this.setRole('unknown');
  }

  private resume(): void {
    if (this.stopped || !this.suspended) return;
    this.suspended = false;
    this.tabs.announceNeed(this.ownNeed());
    this.rooms.resume();
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
      this.tabs.bye();
      if (this.role === 'leader') this.cursor.persist(true);
    }
    // Before the token is disposed: the last reports need it.
    this.telemetry.stop();
    this.stopped = true;
    this.rooms.close();
    this.uploads.close(why === 'logout');
    this.connection?.dispose();
    this.connection = null;
    this.elector?.stop();
    this.elector = null;
    this.timers.clearAll();
    this.cursor.close();
    this.tokens.dispose();
    for (const off of this.offPage) off();
    this.offPage = [];
    this.tabs.close();
    this.auth?.close();
    this.auth = null;
    // The next user of this browser must not resume the previous user's stream.
    if (why === 'logout') this.cursor.forget();
    this.role = 'unknown';
    this.touch();
  }

  // ---- public API --------------------------------------------------------

  subscribe(service: string, handler: (e: HeraldEvent) => void): () => void {
    const remove = this.delivery.add(service, handler);
    this.needChanged();
    return () => {
      if (remove()) this.needChanged();
    };
  }

  setPropertyFilter(propertyId: string | null): void {
    const p = propertyId === undefined || propertyId === '' ? null : propertyId;
    if (p === this.propertyId) return;
    this.propertyId = p;
    this.needChanged();
  }

  state(): RealtimeState {
    return this.view.get();
  }

  room(id: string): Room {
    return this.rooms.room(id);
  }

  upload(file: Blob, options?: UploadOptions): Upload {
    if (this.stopped) throw new Error('herald: the client is stopped');
    return this.uploads.upload(file, options);
  }

  watch(cb: (s: RealtimeState) => void): () => void {
    return this.view.watch(cb);
  }

  // ---- needs -----------------------------------------------------------

  private ownNeed(): TabNeed {
    return { services: this.delivery.services(), propertyId: this.propertyId, visible: this.visible };
  }

  /** Coalesces need changes of one task (a render mounting many hooks) into one announcement. */
  private needChanged(): void {
    this.touch();
    if (this.needPending || this.stopped) return;
    this.needPending = true;
    queueMicrotask(() => {
      this.needPending = false;
      if (this.stopped) return;
      this.tabs.announceNeed(this.ownNeed());
      this.connection?.subscriptionChanged();
      this.rooms.visibility(this.tabs.anyVisible());
    });
  }

  private onVisibility(): void {
    const visible = this.env.visible();
    if (visible === this.visible) return;
    this.visible = visible;
    this.needChanged();
    if (visible) this.connection?.nudge();
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
    // A follower had seen another leader: that one left or died.
    this.telemetry.record(this.role === 'follower' ? 'leader_takeover' : 'leader_acquired', 1);
    this.setRole('leader');
    // Resume from the best cursor any tab left behind.
    this.cursor.adoptStored();
    this.tabs.announceLeader();
    // Rooms ride on this connection; the hub exists before it opens.
    this.rooms.lead((frame) => this.connection?.send(frame) ?? false);
    this.rooms.visibility(this.tabs.anyVisible());
    this.connection = new Connection({
      env: this.env,
      urls: this.config.urls,
      transports: this.config.transports,
      factories: this.factories,
      getToken: (force) => this.tokens.get(force),
      subscription: () => this.tabs.subscription(),
      cursor: () => {
        const c = this.cursor.current();
        return { lastSeq: c.lastSeq, epoch: c.epoch };
      },
      hidden: () => !this.tabs.anyVisible(),
      onOpen: (info) => {
        this.openedAt = this.env.now();
        if (info.seq !== null) this.cursor.advance(info.seq, info.epoch);
        this.cursor.persist(false);
      },
      onEvents: (events, cursor) => this.leaderEvents(events, cursor),
      onCursor: (seq, epoch) => {
        this.cursor.advance(seq, epoch);
        this.cursor.persist(false);
      },
      onReset: (reason, seq, epoch, services) => this.leaderReset(reason, seq, epoch, services),
      onReconnect: () => {
        this.telemetry.record('reconnect', 1, { transport: this.connection?.current().transport ?? 'unknown' });
        this.health.reconnected(this.tabs.subscription().services);
        this.touch();
      },
      onStatus: (s) => this.leaderConnectionStatus(s),
      onRoom: (frame) => this.rooms.edgeFrame(frame),
      report: this.telemetry.record,
    });
    this.connection.start();
    this.heartbeat();
  }

  private resignLeader(): void {
    const c = this.connection;
    if (c === null) return;
    this.connection = null;
    c.dispose();
    this.rooms.resign();
    this.cursor.persist(true);
    this.tabs.forgetLeader();
    this.setRole(this.suspended || this.stopped ? 'unknown' : 'follower');
  }

  // ---- leader: server traffic -------------------------------------------

  private leaderEvents(events: HeraldEvent[], cursor: number | null): void {
    this.recordLatency(events);
    let maxSeq = cursor ?? -1;
    for (const e of events) if (e.seq > maxSeq) maxSeq = e.seq;
    const fresh = this.freshEvents(events);
    if (maxSeq >= 0) this.cursor.advance(maxSeq, null);
    // Broadcast first: a handler that throws must not keep events from other tabs.
    if (fresh.length > 0) this.tabs.events(fresh, this.cursor.current());
    this.deliver(fresh);
    this.cursor.persist(false);
  }

  /**
   * Receipt time minus the newest event's `timestamp` (set by the publisher,
   * or the storage time, ms): what the user waited, clock offsets included.
   * Only the leader measures it (followers add the tab bus), and not just
   * after a connection opened (catch-up, see CATCH_UP_MS).
   */
  private recordLatency(events: HeraldEvent[]): void {
    if (this.env.now() - this.openedAt < CATCH_UP_MS) return;
    const last = events[events.length - 1];
    const ts = last?.timestamp;
    if (typeof ts === 'number' && Number.isFinite(ts) && ts > 0) {
      this.telemetry.record('delivery_latency_ms', Math.max(0, this.env.now() - ts));
    }
  }

  private leaderReset(reason: ResetReason, seq: number | null, epoch: string | null, services?: string[]): void {
    const c = this.cursor.current();
    this.cursor.reset(seq ?? c.lastSeq, epoch ?? c.epoch);
    // After a new epoch, sequences (and eventIds defaulted from them) start over.
    if (reason === 'epoch_changed') this.delivery.forgetSeen();
    this.cursor.persist(true);
    this.tabs.reset(reason, this.cursor.current(), services);
    this.delivery.reset(reason, services);
  }

  private leaderConnectionStatus(s: ConnectionStatus): void {
    if (this.connection === null) return; // the loop being disposed on resign
    this.touch();
    this.rooms.connection(s.phase === 'open' && s.transport === 'websocket' ? (s.connectionId ?? 'open') : null);
    if (s.phase === 'open' || s.phase === 'idle') this.stale.healthy();
    // Followers learn of a change at once, not at the next heartbeat.
    this.heartbeat();
  }

  /** What followers mirror. */
  private leaderStatus(): LeaderStatus {
    const reconnects: Record<string, number> = {};
    for (const s of this.tabs.subscription().services) reconnects[s] = this.health.reconnects(s);
    return summarizeConnection(this.connection?.current(), this.config.transports[0], reconnects);
  }

  private heartbeat(): void {
    if (this.role !== 'leader' || this.stopped) return;
    this.tabs.heartbeat(this.leaderStatus(), this.cursor.current());
  }

  // ---- follower: bus traffic ---------------------------------------------

  private followerEvents(events: HeraldEvent[]): void {
    this.deliver(this.freshEvents(events));
  }

  private followerReset(reason: ResetReason, lastSeq: number | null, epoch: string | null, services?: string[]): void {
    if (reason === 'dropped') {
      // Scoped to a few services: the cursor carries on.
      this.cursor.merge(lastSeq, epoch);
    } else {
      if (reason === 'epoch_changed') this.delivery.forgetSeen();
      this.cursor.reset(lastSeq, epoch);
    }
    this.delivery.reset(reason, services);
  }

  // ---- delivery ------------------------------------------------------------

  /** Drops duplicates (counted in the health figures). */
  private freshEvents(events: HeraldEvent[]): HeraldEvent[] {
    const fresh = this.delivery.fresh(events);
    if (fresh.length !== events.length) this.touch();
    return fresh;
  }

  /** Hands fresh events to this tab's handlers, filtered by its own need. */
  private deliver(events: HeraldEvent[]): void {
    if (events.length === 0) return;
    this.delivery.deliver(events, this.ownNeed());
    this.touch();
  }

  // ---- periodic work ---------------------------------------------------

  /** Once a second: heartbeat, cursor stamp, the tab protocol's duties, staleness. */
  private tick(): void {
    if (this.stopped) return;
    const leader = this.role === 'leader';
    if (leader) {
      this.heartbeat();
      // Keep the persisted cursor's stamp fresh while the stream is quiet.
      this.cursor.refresh();
    }
    this.tabs.tick(leader);
    this.rooms.tick();
    if (!this.suspended) this.stale.check(this.connected());
    this.timers.set(() => this.tick(), HEARTBEAT_MS);
  }

  private connected(): boolean {
    if (this.role === 'leader') return isConnected(this.connection?.current());
    return this.tabs.mirroredLeader()?.connected === true;
  }

  // ---- state -------------------------------------------------------------

  private buildState(): RealtimeState {
    const c = this.cursor.current();
    return buildState({
      stopped: this.stopped,
      role: this.role,
      online: this.env.online(),
      lastSeq: c.lastSeq,
      epoch: c.epoch,
      services: this.health.snapshot(this.delivery.services()),
      preferred: this.config.transports[0],
      connection: this.role === 'leader' && this.connection !== null ? this.connection.current() : null,
      mirrored: this.tabs.mirroredLeader(),
    });
  }

  /** Something in the state changed: drop the snapshot, notify once per task. */
  private touch(): void {
    this.view.changed();
  }
}
