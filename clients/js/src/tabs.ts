// The tab protocol: what the tabs of one profile say to each other on the bus
// (`channelName`). The leader holds the connection; it announces itself,
// heartbeats its status and cursor every second, and fans events, resets and
// tokens out. Followers announce their needs (services, property filter,
// visibility), which every tab keeps in its registry so any new leader
// subscribes to the union at once; they ask for a status when heartbeats lag.
// Invariant: a tab never acts on its own messages; a follower mirrors a
// leader's status only while that leader was heard from within
// LEADER_STALE_MS; the registry always holds this tab's own need, and another
// tab's until it says bye or, silent for NEED_MAX_AGE_MS, the next refresh.

import { openBus, type Bus } from './channel.js';
import type { Env } from './env.js';
import { NeedsRegistry, type Subscription, type TabNeed } from './routing.js';
import type { HeraldEvent, RealtimeState, ResetReason } from './types.js';

/** Leader heartbeat period (and the client's tick). */
export const HEARTBEAT_MS = 1_000;
/** A leader silent this long is stale (followers stop mirroring its status). */
export const LEADER_STALE_MS = 3_000;
/** Followers re-announce their needs this often… */
export const NEED_REFRESH_MS = 10_000;
/** …and the registry forgets a tab not heard from for this long. */
export const NEED_MAX_AGE_MS = 35_000;

/** The leader's view of the connection, mirrored by followers. */
export interface LeaderStatus {
  status: RealtimeState['status'];
  transport: RealtimeState['transport'];
  url: string | null;
  connectionId: string | null;
  /** True while a transport is connected (the stale timer's notion of health). */
  connected: boolean;
  /** Reconnect counts per service. */
  reconnects: Record<string, number>;
}

/** Messages on the client's bus (`channelName`). */
export type BusMessage =
  /** A tab became leader; followers re-announce their needs. */
  | { type: 'leader'; from: string }
  /** The leader is alive (every second), with its connection status and cursor. */
  | { type: 'heartbeat'; from: string; status: LeaderStatus; lastSeq: number | null; epoch: string | null }
  /** A follower missed heartbeats (its own timers ran, the leader's may be throttled): answer now. */
  | { type: 'status?'; from: string }
  /** A tab's subscription. */
  | { type: 'need'; from: string; services: string[]; propertyId: string | null; visible: boolean }
  /** A tab went away. */
  | { type: 'bye'; from: string }
  /** New events (already deduplicated by the leader) and the cursor after them. */
  | { type: 'events'; from: string; events: HeraldEvent[]; lastSeq: number | null; epoch: string | null }
  /** The server reset the cursor: every tab must refetch. */
  | { type: 'reset'; from: string; reason: ResetReason; lastSeq: number | null; epoch: string | null; services?: string[] }
  /** A fresh token from the leader's `getToken()`. */
  | { type: 'token'; from: string; token: string };

const isStr = (v: unknown): v is string => typeof v === 'string';
const isSeq = (v: unknown): v is number | null => v === null || (typeof v === 'number' && Number.isFinite(v));
const isStrOrNull = (v: unknown): v is string | null => v === null || typeof v === 'string';

/** Validates a message of the client's bus (other code of the origin may share the channel name). */
export function acceptBusMessage(raw: unknown): BusMessage | null {
  if (typeof raw !== 'object' || raw === null) return null;
  const m = raw as Record<string, unknown>;
  if (!isStr(m.from)) return null;
  switch (m.type) {
    case 'leader':
    case 'bye':
    case 'status?':
      return m as unknown as BusMessage;
    case 'heartbeat':
      return typeof m.status === 'object' && m.status !== null && isSeq(m.lastSeq) && isStrOrNull(m.epoch)
        ? (m as unknown as BusMessage)
        : null;
    case 'need':
      return Array.isArray(m.services) && m.services.every(isStr) && isStrOrNull(m.propertyId)
        ? (m as unknown as BusMessage)
        : null;
    case 'events':
      return Array.isArray(m.events) && isSeq(m.lastSeq) && isStrOrNull(m.epoch) ? (m as unknown as BusMessage) : null;
    case 'reset':
      return (m.reason === 'history_gone' ||
        m.reason === 'epoch_changed' ||
        (m.reason === 'dropped' && Array.isArray(m.services) && m.services.every(isStr))) &&
        isSeq(m.lastSeq)
        ? (m as unknown as BusMessage)
        : null;
    case 'token':
      return isStr(m.token) ? (m as unknown as BusMessage) : null;
    default:
      return null;
  }
}

/** A cursor as it travels on the bus. */
export interface BusCursor {
  lastSeq: number | null;
  epoch: string | null;
}

/** What the protocol needs from, and reports to, the rest of the client. */
export interface TabsHost {
  /** This tab's role. */
  role(): RealtimeState['role'];
  /** This tab's current need. */
  ownNeed(): TabNeed;
  /** The token this tab holds, if any (a leader hands it to tabs that just arrived). */
  token(): string | null;

  /** Another tab leads (it announced itself or heartbeated). */
  leaderSeen(): void;
  /** The mirrored leader status changed, went stale or went away. */
  leaderChanged(): void;
  /** The leader reported a working connection. */
  leaderConnected(): void;
  /** The leader's reconnect count of a service. */
  reconnectsSeen(service: string, count: number): void;
  /** A follower asks the leader for its status now. */
  statusRequested(): void;
  /** The union of needs may have changed; `newlyVisible` when the first visible tab appeared. */
  needsChanged(newlyVisible: boolean): void;
  /** Another tab's cursor. */
  cursorSeen(lastSeq: number | null, epoch: string | null): void;
  /** Events fanned out by the leader. */
  events(events: HeraldEvent[]): void;
  /** A reset fanned out by the leader. */
  reset(reason: ResetReason, lastSeq: number | null, epoch: string | null, services: string[] | undefined): void;
  /** A token fetched by the leader. */
  tokenSeen(token: string): void;
}

export class TabBus {
  private readonly needs = new NeedsRegistry();
  private bus: Bus<BusMessage> | null = null;
  /** The leader this tab last heard from (itself while leading). */
  private leaderId: string | null = null;
  /** The leader's last heartbeated status (follower side). */
  private leaderStatus: LeaderStatus | null = null;
  private lastHeartbeatAt = -Infinity;
  private staleNoted = false;
  private lastNeedRefresh = -Infinity;

  constructor(
    private readonly env: Env,
    private readonly channelName: string,
    readonly tabId: string,
    private readonly host: TabsHost,
    private readonly debug = false,
  ) {}

  open(): void {
    if (this.bus !== null) return;
    this.bus = openBus(this.env, this.channelName, (m) => this.receive(m), acceptBusMessage);
  }

  close(): void {
    this.bus?.close();
    this.bus = null;
  }

  // ---- needs ---------------------------------------------------------

  /** What the leader subscribes to: the union of every known tab's need. */
  subscription(): Subscription {
    return this.needs.union();
  }

  anyVisible(): boolean {
    return this.needs.anyVisible();
  }

  /** Records this tab's need and tells the others. */
  announceNeed(need: TabNeed): void {
    this.needs.set(this.tabId, need, this.env.now());
    this.postNeed(need);
  }

  private postNeed(need: TabNeed): void {
    this.post({ type: 'need', from: this.tabId, ...need });
  }

  // ---- leader side -----------------------------------------------------

  announceLeader(): void {
    this.leaderId = this.tabId;
    this.post({ type: 'leader', from: this.tabId });
  }

  heartbeat(status: LeaderStatus, cursor: BusCursor): void {
    this.post({ type: 'heartbeat', from: this.tabId, status, lastSeq: cursor.lastSeq, epoch: cursor.epoch });
  }

  events(events: HeraldEvent[], cursor: BusCursor): void {
    this.post({ type: 'events', from: this.tabId, events, lastSeq: cursor.lastSeq, epoch: cursor.epoch });
  }

  reset(reason: ResetReason, cursor: BusCursor, services?: string[]): void {
    this.post({
      type: 'reset',
      from: this.tabId,
      reason,
      lastSeq: cursor.lastSeq,
      epoch: cursor.epoch,
      ...(services === undefined ? {} : { services }),
    });
  }

  token(token: string): void {
    this.post({ type: 'token', from: this.tabId, token });
  }

  /** This tab goes away (closed, or frozen): the others drop its need, and its leadership if it led. */
  bye(): void {
    this.post({ type: 'bye', from: this.tabId });
  }

  // ---- follower side -----------------------------------------------------

  /** The status of a leader heard from within LEADER_STALE_MS, else null. */
  mirroredLeader(): LeaderStatus | null {
    return this.leaderStatus !== null && this.env.now() - this.lastHeartbeatAt <= LEADER_STALE_MS ? this.leaderStatus : null;
  }

  /** This tab stopped leading: it knows of no leader until one speaks. */
  forgetLeader(): void {
    this.leaderId = null;
    this.leaderStatus = null;
  }

  /**
   * The periodic duties (every HEARTBEAT_MS): a follower asks for a status
   * when heartbeats lag and notes a silent leader; every tab refreshes its
   * need (followers also announce it) and prunes tabs not heard from.
   */
  tick(leader: boolean): void {
    const now = this.env.now();
    if (!leader && now - this.lastHeartbeatAt > 2 * HEARTBEAT_MS) {
      // Browsers throttle timers of hidden tabs (down to once a minute), so a
      // hidden leader's heartbeats can lag; messages are not throttled, ask.
      this.post({ type: 'status?', from: this.tabId });
    }
    if (!leader && this.leaderId !== null && now - this.lastHeartbeatAt > LEADER_STALE_MS && !this.staleNoted) {
      // Diagnostics: with Web Locks a frozen leader keeps the lock; a dead one frees it.
      this.staleNoted = true;
      if (this.debug) console.debug(`herald: leader ${this.leaderId} silent for ${now - this.lastHeartbeatAt} ms`);
      this.host.leaderChanged();
    }
    if (now - this.lastNeedRefresh >= NEED_REFRESH_MS) {
      this.lastNeedRefresh = now;
      const need = this.host.ownNeed();
      this.needs.set(this.tabId, need, now);
      if (!leader) this.postNeed(need);
      if (this.needs.prune(now, NEED_MAX_AGE_MS, this.tabId)) this.host.needsChanged(false);
    }
  }

  // ---- incoming ----------------------------------------------------------

  private post(msg: BusMessage): void {
    this.bus?.post(msg);
  }

  /** Handles a message of another tab; public for tests. */
  receive(m: BusMessage): void {
    if (this.bus === null || m.from === this.tabId) return;
    const now = this.env.now();
    const host = this.host;
    switch (m.type) {
      case 'leader':
        this.leaderId = m.from;
        this.lastHeartbeatAt = now;
        host.leaderSeen();
        this.postNeed(host.ownNeed()); // the new leader may not have heard of us
        return;
      case 'heartbeat':
        this.onHeartbeat(m, now);
        return;
      case 'status?':
        host.statusRequested();
        return;
      case 'need': {
        const before = this.needs.anyVisible();
        const token = host.token();
        // A tab that just arrived has not seen the token yet; it needs one if it becomes leader.
        if (host.role() === 'leader' && !this.needs.has(m.from) && token !== null) this.token(token);
        this.needs.set(m.from, { services: m.services, propertyId: m.propertyId, visible: m.visible === true }, now);
        host.needsChanged(!before && this.needs.anyVisible());
        return;
      }
      case 'bye':
        if (this.needs.remove(m.from)) host.needsChanged(false);
        if (m.from === this.leaderId) {
          this.leaderId = null;
          this.leaderStatus = null;
          this.lastHeartbeatAt = -Infinity;
          host.leaderChanged();
        }
        return;
      case 'events':
        host.cursorSeen(m.lastSeq, m.epoch);
        host.events(m.events);
        return;
      case 'reset':
        host.reset(m.reason, m.lastSeq, m.epoch, m.services);
        return;
      case 'token':
        host.tokenSeen(m.token);
        return;
    }
  }

  private onHeartbeat(m: Extract<BusMessage, { type: 'heartbeat' }>, now: number): void {
    if (this.host.role() === 'leader') return; // two leaders only during a lease hand-over; it settles
    this.host.leaderSeen();
    this.leaderId = m.from;
    this.lastHeartbeatAt = now;
    this.staleNoted = false;
    const before = JSON.stringify(this.leaderStatus);
    this.leaderStatus = m.status;
    if (JSON.stringify(m.status) !== before) this.host.leaderChanged();
    this.host.cursorSeen(m.lastSeq, m.epoch);
    for (const [service, count] of Object.entries(m.status.reconnects ?? {})) {
      if (typeof count === 'number') this.host.reconnectsSeen(service, count);
    }
    if (m.status.connected) this.host.leaderConnected();
  }
}
