// Rooms in one tab (contract §6): the handles `client.room(id)` returns, the
// state each room builds from the frames the leader fans out, and the way a
// tab's requests reach the edge: straight into the hub when this tab leads
// (rooms/hub.ts), over the rooms bus to the leader's hub otherwise.
//   rooms/wire.ts      frames and limits      rooms/bus.ts     the tab protocol
//   rooms/room.ts      one room's state       rooms/hub.ts     the leader's side
//   rooms/messages.ts  merge by seq and clientMsgId
//   rooms/typing.ts, presence.ts, receipts.ts  the pure parts
// Invariants: a tab holds a room while any handle of it has not left; a
// `say` stays pending in its tab until its stored copy arrives, an error
// answers it or SAY_TIMEOUT_MS pass, and it is handed to every new hub
// (leader change) with the same clientMsgId.

import { bearerHeader, jwtOrg } from './auth.js';
import { openBus, type Bus } from './channel.js';
import { randomId, TimerGroup, type Env, type TimerHandle } from './env.js';
import { acceptRoomBus, type RoomBusMessage, type RoomRequest } from './rooms/bus.js';
import { RoomHub } from './rooms/hub.js';
import { RoomCore, type Aspect } from './rooms/room.js';
import { Throttle } from './rooms/typing.js';
import { asRoomMessage, isRoomId, MAX_HISTORY, MAX_TEXT_BYTES, parseRoomFrame, utf8Length, type RoomFrame } from './rooms/wire.js';
import { endpoint } from './transport/types.js';
import { RoomRequestError, type ChatMessage, type Room, type RoomError, type RoomMessage } from './types.js';

/** A `say` not confirmed within this long is given up (inside the edge's 2-minute dedup window). */
export const SAY_TIMEOUT_MS = 100_000;
/** A `read` not seen as a receipt within this long is no longer repeated to new hubs. */
const READ_TIMEOUT_MS = 30_000;
/** Tabs re-announce the rooms they hold this often (the hub forgets silent tabs, see hub.ts). */
export const HOLD_REFRESH_MS = 10_000;
/** An HTTP history request gives up after this long. */
const HISTORY_TIMEOUT_MS = 10_000;
/** Pages fetched to close a gap a rejoin left (100 messages each). */
const GAP_PAGES = 5;

export interface RoomsHost {
  env: Env;
  tabId: string;
  channelName: string;
  /** This user's id (the token's `sub`), when known. */
  userId(): string | null;
  /** A token for the HTTP endpoints. */
  token(): Promise<string | null>;
  /** The edge to ask over HTTP. */
  baseUrl(): string;
}

interface PendingSay {
  req: Extract<RoomRequest, { op: 'say' }>;
  resolve(m: RoomMessage): void;
  reject(e: RoomRequestError): void;
  timer: TimerHandle;
  done: Promise<unknown>;
}

interface PendingRead {
  req: Extract<RoomRequest, { op: 'read' }>;
  at: number;
}

export class Rooms {
  private readonly cores = new Map<string, { core: RoomCore; handles: number; typing: Throttle }>();
  private readonly says = new Map<string, PendingSay>();
  private readonly reads = new Map<string, PendingRead>();
  private readonly timers: TimerGroup;
  private bus: Bus<RoomBusMessage> | null = null;
  private hub: RoomHub | null = null;
  private lastHold = -Infinity;
  private stopped = false;

  constructor(private readonly host: RoomsHost) {
    this.timers = new TimerGroup(host.env);
  }

  open(): void {
    if (this.bus !== null || this.stopped) return;
    this.bus = openBus(this.host.env, `${this.host.channelName}:rooms`, (m) => this.receive(m), acceptRoomBus);
  }

  /** Stops: pending messages are rejected, the other tabs forget this one's rooms. */
  close(): void {
    if (this.stopped) return;
    this.stopped = true;
    // The connection goes with a leader: the other tabs' rooms are not joined until the next leader's.
    if (this.hub !== null) this.post({ type: 'down', from: this.host.tabId });
    this.post({ type: 'bye', from: this.host.tabId });
    for (const [id, p] of this.says) {
      this.says.delete(id);
      p.reject(new RoomRequestError('left', 'the client was closed', p.req.room));
    }
    this.reads.clear();
    this.timers.clearAll();
    for (const { core } of this.cores.values()) core.dispose();
    this.cores.clear();
    this.hub = null;
    this.bus?.close();
    this.bus = null;
  }

  /** The page is frozen or hidden for good: the others forget this tab's rooms until it resumes. */
  suspend(): void {
    this.post({ type: 'bye', from: this.host.tabId });
  }

  resume(): void {
    this.announceHold();
    this.resend();
  }

  // ---- handles -------------------------------------------------------------------

  room(id: string): Room {
    if (!isRoomId(id)) throw new Error(`herald: a room id is 1-64 characters of [A-Za-z0-9_-], got ${JSON.stringify(id)}`);
    if (this.stopped) throw new Error('herald: the client is stopped');
    let entry = this.cores.get(id);
    if (entry === undefined) {
      entry = { core: new RoomCore(id, this.host.env), handles: 0, typing: new Throttle() };
      this.cores.set(id, entry);
      entry.handles += 1;
      this.announceHold();
    } else {
      entry.handles += 1;
    }
    return this.handle(id, entry.core);
  }

  private handle(id: string, core: RoomCore): Room {
    let left = false;
    const on = (aspect: Aspect) => (cb: () => void) => core.on(aspect, cb);
    return {
      id,
      say: (text) => (left ? Promise.reject(new RoomRequestError('not_joined', 'this handle left the room', id)) : this.say(core, text)),
      typing: () => {
        if (!left) this.typing(id);
      },
      read: (seq) => {
        if (!left) this.read(core, seq);
      },
      leave: async () => {
        if (left) return;
        left = true;
        // This tab's messages of the room are settled first: leaving must not drop them.
        await Promise.allSettled([...this.says.values()].filter((p) => p.req.room === id).map((p) => p.done));
        this.release(id, core);
      },
      history: (before, limit) => this.history(core, before, limit),
      messages: () => core.messages(),
      members: () => core.memberStates(),
      typingUsers: () => core.typingUsers(),
      receipts: () => core.receiptSeqs(),
      joined: () => core.joined(),
      lastError: () => core.lastError(),
      onMessages: on('messages'),
      onTyping: on('typing'),
      onPresence: on('presence'),
      onReceipts: on('receipts'),
      onError: (cb) => core.onError(cb),
    };
  }

  private release(id: string, core: RoomCore): void {
    const entry = this.cores.get(id);
    if (entry === undefined || entry.core !== core) return;
    entry.handles -= 1;
    if (entry.handles > 0) return;
    this.cores.delete(id);
    this.reads.delete(id);
    core.disconnected();
    core.dispose();
    this.announceHold();
  }

  // ---- requests ----------------------------------------------------------------------

  private say(core: RoomCore, text: string): Promise<RoomMessage> {
    const room = core.id;
    if (typeof text !== 'string' || text.length === 0) {
      return Promise.reject(new RoomRequestError('bad_request', 'the text is empty', room));
    }
    if (utf8Length(text) > MAX_TEXT_BYTES) {
      return Promise.reject(new RoomRequestError('too_large', `the text is over ${MAX_TEXT_BYTES} bytes`, room));
    }
    const clientMsgId = `c-${randomId(() => this.host.env.random())}`;
    const req = { op: 'say' as const, room, text, clientMsgId };
    const pending: ChatMessage = {
      room,
      seq: null,
      userId: this.host.userId() ?? '',
      text,
      ts: this.host.env.now(),
      clientMsgId,
      status: 'pending',
    };
    core.addPending(pending);
    let resolve!: (m: RoomMessage) => void;
    let reject!: (e: RoomRequestError) => void;
    const promise = new Promise<RoomMessage>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    const timer = this.timers.set(() => {
      this.failSay(clientMsgId, { code: 'timeout', message: `no edge confirmed the message within ${SAY_TIMEOUT_MS / 1000} s` });
    }, SAY_TIMEOUT_MS);
    this.says.set(clientMsgId, { req, resolve, reject, timer, done: promise.catch(() => {}) });
    this.send(clientMsgId, req);
    return promise;
  }

  private failSay(clientMsgId: string, error: RoomError): void {
    const p = this.says.get(clientMsgId);
    if (p === undefined) return;
    this.says.delete(clientMsgId);
    this.timers.clear(p.timer);
    this.cores.get(p.req.room)?.core.failPending(clientMsgId, error);
    p.reject(new RoomRequestError(error.code, error.message, p.req.room));
  }

  private typing(room: string): void {
    const entry = this.cores.get(room);
    if (entry === undefined || !entry.typing.take(this.host.env.now())) return;
    this.send(`t-${randomId(() => this.host.env.random())}`, { op: 'typing', room });
  }

  private read(core: RoomCore, seq: number): void {
    if (!Number.isInteger(seq) || seq < 1) return;
    const self = this.host.userId();
    const stored = self === null ? null : core.receiptOf(self);
    if (stored !== null && seq <= stored) return;
    const queued = this.reads.get(core.id);
    if (queued !== undefined && queued.req.seq >= seq) return;
    const req = { op: 'read' as const, room: core.id, seq };
    this.reads.set(core.id, { req, at: this.host.env.now() });
    this.send(`r-${core.id}`, req);
  }

  /** Hands a request to the hub: this tab's own, or the leader's over the bus. */
  private send(id: string, req: RoomRequest): void {
    if (this.hub !== null) this.hub.request(this.host.tabId, id, req);
    else this.post({ type: 'req', from: this.host.tabId, id, req });
  }

  /** Hands every unsettled request to a new hub. */
  private resend(): void {
    const now = this.host.env.now();
    for (const [id, p] of this.says) this.send(id, p.req);
    for (const [room, r] of this.reads) {
      if (now - r.at > READ_TIMEOUT_MS) this.reads.delete(room);
      else this.send(`r-${room}`, r.req);
    }
  }

  // ---- history ---------------------------------------------------------------------------

  private async history(core: RoomCore, before?: number, limit?: number): Promise<RoomMessage[]> {
    const n = Math.max(1, Math.min(MAX_HISTORY, Math.floor(limit ?? 50)));
    const b = before === undefined ? undefined : Math.floor(before);
    if (b !== undefined && !(b >= 1)) throw new RoomRequestError('bad_request', 'before must be at least 1', core.id);
    const cached = core.log.fromMemory(b, n);
    if (cached !== null) return cached;
    const page = await this.fetchPage(core.id, b, n);
    core.page(page, b, n);
    return page;
  }

  /** GET /v2/rooms/<room>/messages: `limit` messages older than `before`, oldest first. */
  private async fetchPage(room: string, before: number | undefined, limit: number): Promise<RoomMessage[]> {
    const { env } = this.host;
    if (env.fetch === null) throw new RoomRequestError('unavailable', 'fetch is not available', room);
    const token = await this.host.token();
    const auth = bearerHeader(token);
    if (token === null || auth === null) throw new RoomRequestError('unavailable', 'no token', room);
    const url = endpoint(
      this.host.baseUrl(),
      `/v2/rooms/${room}/messages`,
      { before: before ?? null, limit, org: jwtOrg(token) },
      { pageHref: env.baseHref() },
    );
    const abort = new AbortController();
    const timer = this.timers.set(() => abort.abort(), HISTORY_TIMEOUT_MS);
    try {
      const res = await env.fetch(url, { method: 'GET', headers: auth, signal: abort.signal, cache: 'no-store' });
      const body = (await res.json().catch(() => null)) as { messages?: unknown; error?: { code?: unknown; message?: unknown } } | null;
      if (!res.ok) {
        const code = typeof body?.error?.code === 'string' ? body.error.code : `http_${res.status}`;
        const message = typeof body?.error?.message === 'string' ? body.error.message : `the edge answered ${res.status}`;
        throw new RoomRequestError(code, message, room);
      }
      const items = Array.isArray(body?.messages) ? body.messages : [];
      return items.flatMap((m: unknown) => asRoomMessage(m, room) ?? []);
    } catch (err) {
      if (err instanceof RoomRequestError) throw err;
      throw new RoomRequestError('unavailable', `history request failed: ${String(err)}`, room);
    } finally {
      this.timers.clear(timer);
    }
  }

  /** After a rejoin left a gap (more messages than its history while away): fetch them. */
  private async fillGap(core: RoomCore): Promise<void> {
    for (let i = 0; i < GAP_PAGES; i++) {
      const before = core.log.gapBefore();
      if (before === null || this.cores.get(core.id)?.core !== core) return;
      const page = await this.fetchPage(core.id, before, MAX_HISTORY);
      core.page(page, before, MAX_HISTORY);
    }
  }

  // ---- leadership --------------------------------------------------------------------------

  /** This tab leads: its hub sends on the leader's connection (`send` is false when no WebSocket is open). */
  lead(send: (frame: Record<string, unknown>) => boolean): void {
    if (this.hub !== null || this.stopped) return;
    const me = this.host.tabId;
    // Joined on the old leader's connection, not yet on this one.
    this.down();
    this.hub = new RoomHub({
      now: () => this.host.env.now(),
      send,
      fanout: (frame, asked) => {
        this.post({ type: 'frame', from: me, frame, asked });
        this.deliver(frame, asked);
      },
      fail: (to, id, room, error) => {
        if (to === me) this.failed(id, room, error);
        else this.post({ type: 'fail', from: me, to, id, room, code: error.code, message: error.message });
      },
      down: () => {
        this.post({ type: 'down', from: me });
        this.down();
      },
    });
    this.hub.hold(me, [...this.cores.keys()]);
    this.resend();
    this.post({ type: 'hub', from: me });
  }

  /** This tab stopped leading. */
  resign(): void {
    if (this.hub === null) return;
    this.hub = null;
    this.post({ type: 'down', from: this.host.tabId });
    this.down();
  }

  /** The leader's connection: a WebSocket opened (its id) or none (null). */
  connection(connectionId: string | null): void {
    this.hub?.connection(connectionId);
  }

  /** Whether any tab of the profile is visible (the hub tells the edge `away` when none is). */
  visibility(anyVisible: boolean): void {
    this.hub?.visibility(anyVisible);
  }

  /** A frame from the leader's WebSocket. */
  edgeFrame(raw: unknown): void {
    const frame = parseRoomFrame(raw);
    if (frame !== null) this.hub?.frame(frame);
  }

  /** Once a second: re-announce held rooms now and then, and let the hub forget silent tabs. */
  tick(): void {
    if (this.stopped) return;
    if (this.host.env.now() - this.lastHold >= HOLD_REFRESH_MS) this.announceHold();
    this.hub?.prune(this.host.tabId);
    this.hub?.tick();
  }

  private announceHold(): void {
    if (this.stopped) return;
    this.lastHold = this.host.env.now();
    const rooms = [...this.cores.keys()];
    if (this.hub !== null) this.hub.hold(this.host.tabId, rooms);
    else this.post({ type: 'hold', from: this.host.tabId, rooms });
  }

  // ---- incoming ------------------------------------------------------------------------------

  private post(m: RoomBusMessage): void {
    this.bus?.post(m);
  }

  /** A message of another tab; public for tests. */
  receive(m: RoomBusMessage): void {
    if (this.stopped || m.from === this.host.tabId) return;
    switch (m.type) {
      case 'hold':
        this.hub?.hold(m.from, m.rooms);
        return;
      case 'bye':
        this.hub?.forget(m.from);
        return;
      case 'hub':
        if (this.hub !== null) return; // two leaders only during a hand-over
        this.down();
        this.announceHold();
        this.resend();
        return;
      case 'down':
        if (this.hub === null) this.down();
        return;
      case 'req':
        this.hub?.request(m.from, m.id, m.req);
        return;
      case 'fail':
        if (m.to === this.host.tabId) this.failed(m.id, m.room, { code: m.code, message: m.message });
        return;
      case 'frame':
        if (this.hub === null) this.deliver(m.frame, m.asked);
        return;
    }
  }

  /** A failed request of this tab. */
  private failed(id: string, room: string, error: RoomError): void {
    if (this.says.has(id)) {
      this.failSay(id, error);
      return;
    }
    if (this.reads.get(room) !== undefined && id === `r-${room}`) this.reads.delete(room);
    this.cores.get(room)?.core.fault(error);
  }

  private down(): void {
    for (const { core } of this.cores.values()) core.disconnected();
  }

  /** A room frame for this tab. */
  private deliver(frame: RoomFrame, asked: number): void {
    if (frame.room === null) return;
    const entry = this.cores.get(frame.room);
    if (entry === undefined) return;
    const core = entry.core;
    core.apply(frame, asked);
    switch (frame.type) {
      case 'message':
        this.settleSays(core);
        return;
      case 'joined':
        this.settleSays(core);
        this.settleRead(core);
        if (core.log.gapBefore() !== null) {
          this.fillGap(core).catch((err: unknown) => {
            if (!(err instanceof RoomRequestError)) throw err;
            console.warn(`herald: could not fetch the messages missed in room ${core.id}: ${err.message}`);
          });
        }
        return;
      case 'receipt':
        this.settleRead(core);
        return;
      default:
        return;
    }
  }

  /** Resolves the says of this room whose stored copy has arrived. */
  private settleSays(core: RoomCore): void {
    for (const [id, p] of this.says) {
      if (p.req.room !== core.id) continue;
      const stored = core.log.storedById(id, this.host.userId());
      if (stored === null) continue;
      this.says.delete(id);
      this.timers.clear(p.timer);
      p.resolve(stored);
    }
  }

  private settleRead(core: RoomCore): void {
    const r = this.reads.get(core.id);
    const self = this.host.userId();
    if (r === undefined || self === null) return;
    const seq = core.receiptOf(self);
    if (seq !== null && seq >= r.req.seq) this.reads.delete(core.id);
  }
}
